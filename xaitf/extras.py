"""Optional extras (``pip install 'xaitf[ray]'``, ``'xaitf[track]'``): import one or say how to install it.

Used by the Ray engine of ``python -m xaitf run`` (:mod:`xaitf.runs.ray_engine`) and by
:mod:`xaitf.tracking`; it imports nothing of xaitf but its errors, so both can use it.
"""
import importlib
import importlib.util

from .errors import XaitfError

RAY = ("ray", "ray", "ray[data]==2.60.*")                     # module, extra, pins
MLFLOW = ("mlflow", "track", "mlflow-skinny==3.17.*")


class ExtraMissing(XaitfError):
    """An optional extra (ray, mlflow) is not installed."""


def require_extra(module, extra, pins):
    """Import ``module`` or raise ExtraMissing with the pip command that installs it."""
    if importlib.util.find_spec(module) is None:
        raise ExtraMissing(f"{module} is not installed; install it with: pip install 'xaitf[{extra}]' "
                           f"(or pip install '{pins}')")
    return importlib.import_module(module)
