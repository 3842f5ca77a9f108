"""``xaitf.evaluate``: every metric of :mod:`xaitf.metrics` on every method, as one tidy table.

A metric is registered in :data:`METRICS` by name with the *form* of its function, which says what
it needs:

==============  ====================================================  ============================
form            call                                                  metrics
==============  ====================================================  ============================
``model``       ``f(model, x, maps, targets, **kw)``                  faithfulness (pixel flipping,
                                                                      deletion, ROAD, ...)
``maps``        ``f(maps, **kw)``                                     complexity
``masks``       ``f(maps, masks, **kw)``                              localisation
``explainer``   ``f(explainer, x, targets, **kw)``: the method runs   robustness
                again on perturbed inputs
``method``      ``f(model, x, targets, method, **kw)``: the method    randomisation
                runs on other models / classes
==============  ====================================================  ============================

Metrics of the last two forms need a method (a registry name or an :class:`xaitf.Explainer`), not
only its maps. Curves (:class:`xaitf.metrics.Curve`) give their area (``auc``) per image; the
randomisation test gives one row per randomised layer and similarity (``detail``).
"""
import collections
import csv
import importlib
import math
import warnings

import numpy as np

from .errors import InputError, MethodError
from .explainer import _caller_stacklevel

Spec = collections.namedtuple("Spec", "module function form value kwargs")


def _spec(module, function, form, value="value", **kwargs):
    return Spec(module, function, form, value, kwargs)


#: name -> where the function lives, its form, what is read from its result, fixed keywords
METRICS = {
    # faithfulness (model evaluations on perturbed copies of x)
    "pixel_flipping": _spec("faithfulness", "pixel_flipping", "model", "auc"),
    "region_perturbation": _spec("faithfulness", "region_perturbation", "model", "auc"),
    "deletion": _spec("curves", "deletion_curve", "model", "auc"),
    "insertion": _spec("curves", "insertion_curve", "model", "auc"),
    "irof": _spec("curves", "irof", "model"),          # its function returns the (N,) areas
    "faithfulness_correlation": _spec("faithfulness", "faithfulness_correlation", "model"),
    "infidelity": _spec("faithfulness", "infidelity", "model"),
    "road": _spec("faithfulness", "road", "model", "auc"),
    "mufidelity": _spec("faithfulness", "mufidelity", "model"),
    # robustness (the method on perturbed inputs)
    "max_sensitivity": _spec("robustness", "max_sensitivity", "explainer"),
    "avg_sensitivity": _spec("robustness", "avg_sensitivity", "explainer"),
    "local_lipschitz": _spec("robustness", "local_lipschitz", "explainer"),
    # randomisation (the method on randomised models / other classes)
    "mprt": _spec("randomisation", "model_parameter_randomisation", "method", "layers", order="cascading"),
    "mprt_independent": _spec("randomisation", "model_parameter_randomisation", "method", "layers",
                              order="independent"),
    "random_logit": _spec("randomisation", "random_logit", "method"),
    # complexity (the maps alone)
    "sparseness": _spec("complexity", "sparseness", "maps"),
    "complexity": _spec("complexity", "complexity", "maps"),
    "effective_complexity": _spec("complexity", "effective_complexity", "maps"),
    # localisation (the maps and ground-truth masks)
    "pointing_game": _spec("localization", "pointing_game", "masks"),
    "relevance_mass": _spec("localization", "relevance_mass", "masks"),
    "relevance_rank": _spec("localization", "relevance_rank", "masks"),
    "top_k_intersection": _spec("localization", "top_k_intersection", "masks"),
    "iou": _spec("localization", "iou_1", "masks", k="gt"),
}

COLUMNS = ("image", "method", "metric", "detail", "value")


# -- what a metric costs, and its defaults on large images ----------------------------------------
#: pixel flipping's scaled default keeps at most about this many steps (curve points) per image
PIXEL_FLIPPING_STEPS = 1024


def metric_scaled_defaults(name, input_shape):
    """Defaults of metrics whose own default grows with the image, for ``python -m xaitf evaluate``
    and ``run --metrics`` (keys the user sets with ``--metric-set`` win).

    * pixel flipping: ``features_in_step = ceil(H*W / 1024)`` when H*W > 1024 (its default 1, as
      Quantus, costs H*W + 1 model evaluations per image: 50,177 on 224x224, ~40 min per method
      for 4 images on 2 CPU cores with MobileNetV2). 28x28 and 32x32 keep 1; 224x224 gets 49
      (1,025 evaluations).

    Returns ``{key: value}`` (empty for the other metrics and small inputs).
    """
    p = int(input_shape[0]) * int(input_shape[1])
    if name == "pixel_flipping" and p > PIXEL_FLIPPING_STEPS:
        return {"features_in_step": math.ceil(p / PIXEL_FLIPPING_STEPS)}
    return {}


def _kw(fn, kwargs):
    """The keyword values a call of ``fn(**kwargs)`` uses: its defaults, updated by ``kwargs``."""
    import inspect

    out = {k: p.default for k, p in inspect.signature(fn).parameters.items()
           if p.default is not inspect.Parameter.empty}
    out.update(kwargs or {})
    return out


def metric_cost(name, kwargs, input_shape, randomised_layers=0):
    """``(forward evaluations, explanations)`` per image of metric ``name`` of :data:`METRICS`
    called with ``kwargs`` (its defaults for the rest) on images of ``input_shape``, besides the
    method's own maps. ``randomised_layers``: the layers MPRT randomises. ROAD's imputation and
    IROF's segmentation run besides (not counted here; the command line's estimate times them with
    :func:`xaitf.budget.metric_host_seconds`)."""
    spec = METRICS[name]
    kw = {**spec.kwargs, **_kw(metric_function(name), kwargs)}
    h, w = int(input_shape[0]), int(input_shape[1])
    if name == "pixel_flipping":
        return math.ceil(h * w / max(1, int(kw["features_in_step"]))) + 1, 0
    if name == "region_perturbation":
        ps = kw["patch_size"]
        ph, pw = (ps[0], ps[1]) if isinstance(ps, (tuple, list)) else (ps, ps)
        regions = kw["regions"] if kw["regions"] is not None else math.ceil(h / ph) * math.ceil(w / pw)
        return int(regions) + 1, 0
    if name in ("deletion", "insertion"):
        return int(kw["steps"]) + 1, 0
    if name == "irof":                                # a removal per segment (and none removed)
        from .metrics.curves import IROF_SEGMENTS

        seg = kw["segments"]
        if seg is not None and not isinstance(seg, str) and not callable(seg):       # label maps
            return max(len(np.unique(s)) for s in np.asarray(seg)) + 1, 0
        params = {**IROF_SEGMENTS, **(kw.get("segment_params") or {})}
        return int(params["n_segments"]) + 1, 0
    if name == "faithfulness_correlation":
        return int(kw["runs"]) + 1, 0
    if name == "infidelity":
        return int(kw["samples"]) + 1, 0
    if name == "mufidelity":
        return int(kw["nb_samples"]) + 1, 0
    if name == "road":
        return len(kw["percentages"]) + 1, 0
    if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz"):
        return 0, int(kw["samples"])
    if name in ("mprt", "mprt_independent"):
        layers = kw.get("layers")
        return 0, (len([layers] if isinstance(layers, str) else layers) if layers is not None
                   else int(randomised_layers))
    if name == "random_logit":
        return 0, 1
    return 0, 0          # the maps alone (complexity, localisation)


def metric_function(name):
    """The function of metric ``name``; one line listing the valid names otherwise."""
    spec = METRICS.get(name)
    if spec is None:
        raise MethodError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")
    return getattr(importlib.import_module(f"xaitf.metrics.{spec.module}"), spec.function)


class Table:
    """The tidy result of :func:`evaluate`: one row per image, method, metric (and detail: the
    randomised layer and similarity of ``mprt``), value. ``rows`` is a list of tuples in
    :data:`COLUMNS` order."""

    def __init__(self, rows=(), results=None, interrupted=None, failed=None):
        self.rows = list(rows)
        #: ``{(method label, metric or None for the method itself): exception}`` of the parts that
        #: raised (``keep_going``); the rows hold the others
        self.failed = dict(failed or {})
        #: ``{(method label, metric): what the metric's function returned}`` (curves, the
        #: randomisation result with its maps when asked for: figures reuse it, nothing runs twice)
        self.results = dict(results or {})
        #: None, or ``(method label, metric)`` of the pair that Ctrl-C stopped (``keep_on_interrupt``):
        #: the rows hold the pairs finished before it
        self.interrupted = interrupted

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def column(self, name):
        i = COLUMNS.index(name)
        return [r[i] for r in self.rows]

    def select(self, **where):
        """Rows whose columns equal the given values, as a new Table."""
        idx = {COLUMNS.index(k): v for k, v in where.items()}
        return Table(r for r in self.rows if all(r[i] == v for i, v in idx.items()))

    def values(self, **where):
        """The ``value`` column of :meth:`select` as a float64 array (image order)."""
        return np.array(self.select(**where).column("value"), np.float64)

    def summary(self):
        """``{(method, metric, detail): (mean, std, n)}`` over images (NaN values left out)."""
        groups = collections.defaultdict(list)
        for _, method, metric, detail, value in self.rows:
            groups[(method, metric, detail)].append(value)
        out = {}
        for key, vals in groups.items():
            v = np.asarray(vals, np.float64)
            v = v[np.isfinite(v)]
            out[key] = (float(v.mean()) if len(v) else float("nan"),
                        float(v.std()) if len(v) else float("nan"), len(v))
        return out

    def to_csv(self, path):
        """Write the rows as CSV (header :data:`COLUMNS`), through a temporary file."""
        from .cli import atomic_write

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(COLUMNS)
                for r in self.rows:
                    w.writerow([r[0], r[1], r[2], r[3], repr(float(r[4]))])

        return atomic_write(path, write)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def __repr__(self):
        return f"Table({len(self.rows)} rows; methods {sorted(set(self.column('method')))}; metrics " \
               f"{sorted(set(self.column('metric')))})"


def _methods(model, methods, x, targets, method_kwargs, failed=None):
    """``{label: (explainer or None, maps (N,H,W) float64)}``. With a ``failed`` dict, a method
    that raises is recorded there (``{(label, None): exception}``) and left out."""
    from . import registry
    from .explainer import Explainer
    from .metrics._checks import check_maps

    if isinstance(methods, (str, Explainer)):
        methods = [methods]
    if isinstance(methods, dict):
        items = list(methods.items())
    else:
        items = [(m if isinstance(m, str) else getattr(m, "name", type(m).__name__), m) for m in methods]
    if not items:
        raise MethodError("evaluate needs at least one method (a name, an Explainer or precomputed maps)")
    out = {}
    for label, m in items:
        try:
            if isinstance(m, str):
                m = registry.create_explainer(m, model, **{"progress": False, **(method_kwargs or {}).get(label, {})})
            if isinstance(m, Explainer):
                maps = np.asarray(m(x, targets))
                maps = maps.sum(-1) if maps.ndim == 4 else maps
                out[label] = (m, check_maps(maps, x.shape[:3], name=f"{label} maps"))
                zero = int(np.sum(~np.any(out[label][1].reshape(len(x), -1), axis=1)))
                if zero:
                    warnings.warn(f"{label}: {zero} of {len(x)} maps are all 0 (the explained output gives the "
                                  "method nothing to attribute); their scores say nothing about the method",
                                  stacklevel=_caller_stacklevel())
            else:
                out[label] = (None, check_maps(m, x.shape[:3], name=f"{label} maps"))
        except Exception as e:       # noqa: BLE001 - kept for the caller when it asked to go on
            if failed is None:
                raise
            failed[(label, None)] = e
    return out


def evaluate(model, x, targets, methods, metrics, *, masks=None, batch_size=256, seed=0,
             method_kwargs=None, metric_kwargs=None, progress=False, keep_on_interrupt=False, keep_going=False):
    """Score explanations with metrics of :data:`METRICS`: one tidy :class:`Table`.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C) as the model takes them.
        targets: classes explained and scored (ints (N,); None: the predicted classes).
        methods: a method name, an :class:`xaitf.Explainer`, a list of them, or a dict
            ``{label: name | Explainer | maps (N,H,W)}`` (precomputed maps serve every metric but
            the robustness and randomisation ones, which run the method again).
        metrics: names of :data:`METRICS`.
        masks: (N,H,W) ground-truth masks for the localisation metrics.
        batch_size: perturbed images per model call of the model-based metrics.
        seed: seed of every stochastic metric.
        method_kwargs: ``{label: {keyword: value}}`` for methods given by name.
        metric_kwargs: ``{metric: {keyword: value}}`` passed to the metric's function.
        progress: a line per (method, metric) pair and the progress lines of the long metrics.
        keep_on_interrupt: on Ctrl-C while the metrics run, return the pairs finished so far
            (``Table.interrupted`` names the one stopped) instead of raising KeyboardInterrupt.
        keep_going: a method or (method, metric) pair that raises is recorded in
            ``Table.failed`` and the others go on (default: the exception propagates).

    Returns:
        :class:`Table` with columns image, method, metric, detail, value; ``Table.results`` keeps
        each metric's own result per (method, metric).
    """
    from .explainer import as_batch
    from .keras_bridge import output_units

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    fns = {name: metric_function(name) for name in metrics}
    metric_kwargs = dict(metric_kwargs or {})
    unknown = sorted(set(metric_kwargs) - set(metrics))
    if unknown:
        raise MethodError(f"metric_kwargs names {unknown[0]!r}, which is not among the metrics: {', '.join(metrics)}")
    if masks is None:
        wanting = [m for m in metrics if METRICS[m].form == "masks"]
        if wanting:
            raise InputError(f"{', '.join(wanting)} need ground-truth masks (masks=, (N,H,W) booleans)")
    x = as_batch(x, model)
    if targets is None:
        targets = np.asarray(model(x, training=False)).argmax(-1)
    from .explainer import as_targets

    targets = as_targets(targets, len(x), max(2, output_units(model)))
    failed = {} if keep_going else None
    explained = _methods(model, methods, x, targets, method_kwargs, failed)
    rows, results = [], {}
    pairs = [(label, name) for label in explained for name in metrics]
    for k, (label, name) in enumerate(pairs):
        explainer, maps = explained[label]
        try:
            if progress:
                print(f"[{k + 1}/{len(pairs)}] {label} x {name}", flush=True)
            pair_rows, result = _score(model, x, targets, masks, explainer, maps, label, name, fns[name],
                                       metric_kwargs.get(name, {}), batch_size, seed, progress)
        except KeyboardInterrupt:
            if not keep_on_interrupt:
                raise
            return Table(rows, results, interrupted=(label, name), failed=failed)
        except Exception as e:       # noqa: BLE001 - recorded, the other pairs go on
            if failed is None:
                raise
            failed[(label, name)] = e
            continue
        rows.extend(pair_rows)
        results[(label, name)] = result
    return Table(rows, results, failed=failed)


def _score(model, x, targets, masks, explainer, maps, label, name, fn, kwargs, batch_size, seed, progress):
    """Rows and result of one (method, metric) pair."""
    import inspect

    spec = METRICS[name]
    accepted = inspect.signature(fn).parameters
    kw = dict(spec.kwargs)
    for key, value in (("batch_size", batch_size), ("seed", seed), ("progress", progress)):
        if key in accepted:
            kw[key] = value
    kw.update(kwargs)
    if spec.form in ("explainer", "method") and explainer is None:
        raise MethodError(f"{name} runs the method again and needs a method name or an Explainer, "
                          f"not precomputed maps ({label})")
    if spec.form == "model":
        result = fn(model, x, maps, targets, **kw)
    elif spec.form == "maps":
        result = fn(maps, **kw)
    elif spec.form == "masks":
        result = fn(maps, masks, **kw)
    elif spec.form == "explainer":
        result = fn(explainer, x, targets, **kw)
    else:
        result = fn(model, x, targets, explainer, **kw)
    return list(_rows(label, name, spec, result)), result


def _rows(label, name, spec, result):
    if spec.value == "layers":            # Randomisation: one row per layer and similarity
        for sim, scores in result.scores.items():
            for layer, per_image in zip(result.layers, scores):
                for i, v in enumerate(per_image):
                    yield (i, label, name, f"{layer}:{sim}", float(v))
        return
    values = getattr(result, spec.value) if spec.value != "value" else result
    for i, v in enumerate(np.asarray(values, np.float64).reshape(-1)):
        yield (i, label, name, "", float(v))
