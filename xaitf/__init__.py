"""xaitf: explainability methods for Keras/TensorFlow image classifiers.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, so that
``tf.keras`` is tf-keras (the Keras 2 API that iNNvestigate, tf-explain and tfp.layers need).
Keras 3 models (``import keras``) are still accepted everywhere a model is: see
:mod:`xaitf.keras_bridge`.

It also sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the variable is set already, and applies that level
to the lines TensorFlow's C++ runtime prints while it is imported, before its logging is set up
(absl's "All log messages before absl::InitializeLog()" and the "oneDNN custom operations are on"
info line, twice each, which the variable cannot reach): see :mod:`xaitf._tfimport`. oneDNN stays
on. ``TF_CPP_MIN_LOG_LEVEL=0`` keeps those lines, ``XAITF_TF_IMPORT_FILTER=0`` turns this off.
"""
import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    import warnings

    warnings.warn(
        "tensorflow was imported before xaitf without TF_USE_LEGACY_KERAS=1; tf.keras may be "
        "Keras 3 and the tf-keras backends (inn.*, tfx.*, shap.gradient/shap.deep, Bayesian layers) "
        "may fail. Import xaitf first.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import _tfimport  # noqa: E402

_tfimport.install()    # the first `import tensorflow` drops the import-time lines the level hides

__version__ = "0.1.0"


def __getattr__(name):  # lazy public API: keeps `import xaitf` cheap
    if name == "create_explainer":
        import functools

        from . import budget, registry

        @functools.wraps(registry.create_explainer)
        def create_explainer(method, model, **params):
            # registry.create_explainer, plus one warning where a window method's settings are
            # costly for the input size (budget.warn_if_costly; the command lines scale them)
            explainer = registry.create_explainer(method, model, **params)
            budget.warn_if_costly(explainer)
            return explainer

        globals()["create_explainer"] = create_explainer     # made once
        return create_explainer
    if name in ("list_methods", "get_method"):
        from . import registry

        return getattr(registry, name)
    if name == "load_model":
        from .model_files import load_model

        return load_model
    if name == "model_kind":
        from .keras_bridge import model_kind

        return model_kind
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    if name == "Explainer":
        from .explainer import Explainer

        return Explainer
    raise AttributeError(f"module 'xaitf' has no attribute {name!r}")


__all__ = ["create_explainer", "list_methods", "get_method", "load_model", "model_kind",
           "Explainer", "evaluate", "__version__"]
