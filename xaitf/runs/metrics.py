"""``--metrics`` of ``python -m xaitf run``: :mod:`xaitf.metrics` functions run on a finished
store, and the overview figure (inputs and each method's first maps) that ``--track`` logs.
"""
import importlib
import importlib.util

import numpy as np

from ..errors import XaitfError


def _metric_form(fn):
    """``"model"`` for f(model, x, maps, targets|labels, ...), ``"maps"`` for f(maps, ...), else None."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    if params[:3] == ["model", "x", "maps"] and len(params) > 3 and params[3] in ("targets", "labels"):
        return "model"
    if params[:1] == ["maps"]:
        rest = list(inspect.signature(fn).parameters.values())[1:]
        if all(q.default is not q.empty or q.kind in (q.VAR_POSITIONAL, q.VAR_KEYWORD) for q in rest):
            return "maps"
    return None


def _evaluation_metric(name):
    """The :data:`xaitf.evaluation.METRICS` entry of ``name`` when it can run on stored maps (the
    forms ``model`` and ``maps``: they need no method to run again, and no masks), else None."""
    from ..evaluation import METRICS

    spec = METRICS.get(name)
    return spec if spec is not None and spec.form in ("model", "maps") else None


def find_metric(name):
    """What ``--metrics NAME`` runs on a finished store: a metric of :func:`xaitf.evaluate`
    (``xaitf.evaluation.METRICS``, forms ``model`` and ``maps``), or a function of
    :mod:`xaitf.metrics` (the package or one of its modules) shaped ``f(model, x, maps,
    targets_or_labels, ...)`` or ``f(maps, ...)``."""
    import pkgutil

    if _evaluation_metric(name) is not None:
        from ..evaluation import metric_function

        return metric_function(name)

    if importlib.util.find_spec("xaitf.metrics") is None:
        raise XaitfError("--metrics needs xaitf.metrics, which this installation lacks")
    pkg = importlib.import_module("xaitf.metrics")
    fn = getattr(pkg, name, None) if not name.startswith("_") else None
    usable = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"xaitf.metrics.{info.name}")
        usable |= {k for k, v in vars(mod).items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", "") == mod.__name__ and _metric_form(v)}
        if fn is None and not name.startswith("_") and callable(getattr(mod, name, None)):
            fn = getattr(mod, name)
    if fn is None or _metric_form(fn) is None:
        what = "unknown metric" if fn is None else "metric that cannot run on a store"
        from ..evaluation import METRICS

        usable |= {k for k in METRICS if _evaluation_metric(k)}
        raise XaitfError(f"{what} {name!r}; usable with --metrics: {', '.join(sorted(usable)) or 'none'}")
    return fn


def needs_labels(name):
    """Whether metric ``name`` reads true labels (``f(model, x, maps, labels, ...)``)."""
    import inspect

    params = list(inspect.signature(find_metric(name)).parameters)
    return len(params) > 3 and params[3] == "labels"


def _scalars(result):
    """The scalar summary of a metric's result: a dict's numbers, a curve's mean AUC, an array's mean."""
    if isinstance(result, dict):
        return {k: float(v) for k, v in result.items()
                if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    if hasattr(result, "auc"):
        return {"auc": float(np.mean(result.auc))}
    a = np.asarray(result, dtype=np.float64)
    return {"value": float(a.mean())}


def compute_metrics(store, model, keys, names, batch_size):
    """``{method: {metric.key: value}}`` for every method whose maps are all done."""
    import inspect

    fns = {name: find_metric(name) for name in names}
    x = store.array("inputs")
    labels, targets = store.array("labels"), store.array("targets")
    out = {}
    for m in keys:
        if m not in store.done or not store.done[m].all():
            continue
        maps = store.maps(m)
        if maps.ndim != 3:
            continue
        out[m] = {}
        for name, fn in fns.items():
            params = list(inspect.signature(fn).parameters)
            if _evaluation_metric(name) is not None:       # the same code as xaitf.evaluate
                from ..evaluation import evaluate, metric_scaled_defaults

                scaled = metric_scaled_defaults(name, x.shape[1:3])   # pixel flipping: <= ~1,024 steps
                table = evaluate(model, x, targets, {m: maps}, [name], batch_size=batch_size,
                                 metric_kwargs={name: scaled} if scaled else None)
                out[m][f"{name}.value"] = float(np.nanmean(table.values()))
                continue
            if _metric_form(fn) == "maps":
                result = fn(maps)
            else:
                classes = labels if params[3] == "labels" else targets
                kw = {"batch_size": batch_size} if "batch_size" in params else {}
                result = fn(model, x, maps, classes, **kw)
            for k, v in _scalars(result).items():
                out[m][f"{name}.{k}"] = v
    return out


# -- figures ------------------------------------------------------------------------------------
def overview_figure(store, keys, count=6):
    """Inputs (top row) and each method's maps for the first ``count`` images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if k in store.done][:10]
    count = min(count, store.n)
    x = store.f["inputs"][:count]
    fig, axes = plt.subplots(len(keys) + 1, count, figsize=(1.4 * count, 1.4 * (len(keys) + 1)),
                             squeeze=False)
    for j in range(count):
        img = x[j][..., 0] if x.shape[-1] == 1 else np.clip(x[j], 0, 1)
        axes[0, j].imshow(img, cmap="gray")
        axes[0, j].set_title(f"#{j} t={int(store.f['targets'][j])}", fontsize=7)
    for i, k in enumerate(keys, 1):
        maps = store.f["maps"][k][:count]
        for j in range(count):
            m = maps[j] if maps.ndim == 3 else maps[j].sum(-1)
            lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
            axes[i, j].imshow(m, cmap="seismic", vmin=-lim or -1, vmax=lim or 1)
        axes[i, 0].set_ylabel(k, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
