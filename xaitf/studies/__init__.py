"""Reproduced studies: ``python -m xaitf.studies <name> [--quick]`` regenerates a study's figures,
tables and numbers under ``results/<name>/<YYYYmmdd-HHMMSS>/`` (see ``docs/reproduction.md``).

``STUDIES`` maps a study's name to the module that runs it; every such module has a
``run(args) -> dict`` function (``args``: the parsed command line of :mod:`xaitf.studies.__main__`)
and a one-line docstring summary shown by ``--list``. Modules are imported only when their study
runs, so listing the studies costs nothing.
"""
import importlib

STUDIES = {
    "center_pixel": "xaitf.studies.center_pixel",      # study 1: SAM center-pixel model
    "interventional": "xaitf.studies.interventional",  # study 2: causal path graphs on LeNet
    "xainn": "xaitf.studies.xainn",                    # study 3: XAINN, three CIFAR-10 architectures
    "mnist_cifar": "xaitf.studies.mnist_cifar",        # study 4: LIME/SHAP/LRP, degradation, Bayesian MLP
    "svhn_iou": "xaitf.studies.svhn_iou",              # study 5: SVHN target digit, IoU of heatmaps
}


def get_study(name):
    """The module of study ``name`` (imported on first use); KeyError lists the valid names."""
    try:
        module = STUDIES[name]
    except KeyError:
        raise KeyError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}") from None
    return importlib.import_module(module)
