"""Dataset-scale explanation runs (``python -m xaitf run``): resumable, crash-safe, optionally on Ray.

One module per responsibility; this package re-exports their public names:

==================  ===========================================================================
``store.py``        the HDF5 store (``<out>/store.h5``: layout, crash safety), hashing, the
                    run's identity and settings checks, the ``--out`` lock
``local.py``        the local engine and what both engines share: one chunk explained, the
                    explainers and their settings, the session, the writer, progress bars,
                    SIGINT/SIGTERM handling (:class:`StopFlag`)
``ray_engine.py``   the Ray engine: actors holding the model and explainers, the driver loop
``metrics.py``      ``--metrics`` on a finished store, the overview figure
``track.py``        ``--track``: what a session logs through :mod:`xaitf.tracking`
``cli.py``          the ``run`` command: argparse, :func:`main`, the summary
==================  ===========================================================================

Nothing in these modules imports ``xaitf.runs`` itself, so the package can be imported from any
of them without a circle.
"""
from ..extras import ExtraMissing, require_extra
from .cli import DEFAULT_CHUNK, add_parser, main, settings_overrides
from .local import (Bars, Session, StopFlag, Writer, build_explainers, explain_chunk,
                    explainer_settings, plan_chunks, preset_arguments, run_local)
from .metrics import compute_metrics, find_metric, overview_figure
from .ray_engine import WORKER_ENV, RayWorker, run_ray
from .store import (FORMAT, IDENTITY_KEYS, STORE_NAME, Store, StoreError, array_sha256,
                    check_identity, check_method_settings, file_sha256, out_lock, versions)

__all__ = [
    "Bars", "DEFAULT_CHUNK", "ExtraMissing", "FORMAT", "IDENTITY_KEYS", "RayWorker", "STORE_NAME",
    "Session", "StopFlag", "Store", "StoreError", "WORKER_ENV", "Writer", "add_parser",
    "array_sha256", "build_explainers", "check_identity", "check_method_settings",
    "compute_metrics", "explain_chunk", "explainer_settings", "file_sha256", "find_metric", "main",
    "out_lock", "overview_figure", "plan_chunks", "preset_arguments", "require_extra", "run_local", "run_ray",
    "settings_overrides", "versions",
]
