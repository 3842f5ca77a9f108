"""Reproduced studies: ``python -m xaitf.studies <name> [--quick]`` regenerates a study's figures,
tables and numbers under ``results/<name>/<YYYYmmdd-HHMMSS>/`` (see ``docs/reproduction.md``).

``STUDIES`` maps a study's name to the module that runs it; every such module has a
``run(args) -> dict`` function (``args``: the parsed command line of :mod:`xaitf.studies.__main__`)
and a one-line docstring summary shown by ``--list``. Modules are imported only when their study
runs, so listing the studies costs nothing.

:func:`run_study` is the one way a study runs: its files go to a hidden work folder that is renamed
into place, and ``latest`` moved, only once ``run(args)`` has returned (write-then-move, see
:mod:`xaitf.studies.common`); a failed study leaves the earlier runs and ``latest`` as they were.
"""
import importlib

STUDIES = {
    "center_pixel": "xaitf.studies.center_pixel",      # study 1: SAM center-pixel model
    "interventional": "xaitf.studies.interventional",  # study 2: causal path graphs on LeNet
    "xainn": "xaitf.studies.xainn",                    # study 3: XAINN, three CIFAR-10 architectures
    "mnist_cifar": "xaitf.studies.mnist_cifar",        # study 4: LIME/SHAP/LRP, degradation, Bayesian MLP
    "svhn_iou": "xaitf.studies.svhn_iou",              # study 5: SVHN target digit, IoU of heatmaps
    "sanity": "xaitf.studies.sanity",                  # sanity checks: model parameter randomisation
}


def get_study(name):
    """The module of study ``name`` (imported on first use); KeyError lists the valid names."""
    try:
        module = STUDIES[name]
    except KeyError:
        raise KeyError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}") from None
    return importlib.import_module(module)


def run_study(name, args):
    """Run study ``name`` with the parsed command line ``args`` inside a
    :func:`~xaitf.studies.common.study_session` (``args.out``; ``args.debug`` keeps a failed run's
    files, hidden). Returns ``(result, folder)``: the study's result dict with its paths made final,
    and the published run folder (None if the study wrote none)."""
    from . import common

    module = get_study(name)
    with common.study_session(getattr(args, "out", "results"), name,
                              keep_failed=bool(getattr(args, "debug", False))) as session:
        result = common.final_paths(module.run(args))
    return result, session.final
