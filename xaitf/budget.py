"""What a run will cost before it runs: model evaluations per method, a measured time per
evaluation, the estimate, the budget check, and input-scaled defaults of window methods.

* :func:`cost` (``COSTS``): ``(evals_per_input, backward, note)`` of a built explainer: model
  evaluations (whole images through the model) per input, whether each also needs a backward pass,
  and where the number comes from. This is each method's published algorithm at its settings (what a
  straightforward implementation evaluates); methods with the first-layer or local-window shortcut
  (occlusion, PDA, Shapley sampling on simple chains) can run below it, so estimates are on the safe
  side. The benchmark's floors (``bench/costs.py``) use the same table.
* :func:`measure`: one timed batch forward (and forward + backward when a method needs it) of the
  actual model, after one untimed tracing call: seconds per evaluation.
* :func:`seconds` / :func:`check`: seconds per method = setup (the measured tracing time) +
  inputs x evaluations x seconds per evaluation x 1.25 (``MARGIN``); above the budget, one line naming the most costly
  method, the setting to change and what it would cost then (:func:`suggest`).
* :func:`scaled_defaults`: the window methods' defaults for models other than study 1's
  center-pixel model (see its docstring for the rule).

Nothing here imports TensorFlow at import time.
"""
import math
import time
import types

from .errors import InputError


# -- evaluations per input --------------------------------------------------------------------
def _windows(ex):
    from .methods.perturb import window_grid

    h, w = ex.shape[:2]
    return len(window_grid(h, w, ex.window, ex.stride, "budget"))


def _segments_count(ex, segments):
    """Features of ``segments=`` (a name, a dict or a label map): its number of segments, or the
    segmenter's own target count (``n_segments``, 50 by default; grid: cells)."""
    import numpy as np

    h, w = ex.shape[:2]
    if isinstance(segments, str):
        segments = {"name": segments}
    if isinstance(segments, dict):
        if segments.get("name") == "grid":
            cell = int(segments.get("cell", 4))
            return math.ceil(h / cell) * math.ceil(w / cell)
        return int(segments.get("n_segments", 50))
    try:
        return int(np.max(np.asarray(segments))) + 1
    except (TypeError, ValueError):
        return 50


def _pixels(ex):
    segments = ex.params.get("segments")
    if segments is not None:
        return _segments_count(ex, segments)
    h, w, c = ex.shape
    return h * w * (c if ex.params.get("features") == "channels" else 1)


def _occlusion(ex):
    segments = ex.params.get("segments")
    if segments is not None:
        n = _segments_count(ex, segments)
        return n + 1, False, f"{n} segments + 1"
    n = _windows(ex)
    return n + 1, False, f"{n} windows ({_pair(ex.window)} stride {_pair(ex.stride)}) + 1"


def _backgrounds(ex):
    """DeepLiftShap's background images: ``n_background``, or the images of ``background`` (a
    scalar, a per-channel value or one image: 1; identical images run once, not counted here)."""
    import numpy as np

    p = ex.params
    if p.get("n_background") is not None:
        return int(p["n_background"])
    b = np.shape(p.get("background", 0.0))
    return int(b[0]) if len(b) == 4 else 1


def _pair(p):
    p = tuple(p) if isinstance(p, (tuple, list)) else (p, p)
    return f"{p[0]}" if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _const(n, backward, note):
    return lambda ex: (n, backward, note)


def _param(name, backward, note, extra=0):
    return lambda ex: (int(ex.params[name]) + extra, backward, note.format(**ex.params))


COSTS = {
    # one gradient (or one modified backward pass) per input
    "grad": _const(1, True, "1 gradient"),
    "inpgrad": _const(1, True, "1 gradient"),
    "gb": _const(1, True, "1 modified backward"),
    "deconvnet": _const(1, True, "1 modified backward"),
    "gradcam": _const(1, True, "1 gradient at the explained layer"),
    "gradcampp": _const(1, True, "1 gradient at the explained layer"),
    "deeplift": _const(1, True, "1 modified backward (+ 1 baseline row per chunk)"),
    "deepliftshap": lambda ex: (_backgrounds(ex), True, f"{_backgrounds(ex)} modified backward(s): one per "
                                                        "background image"),
    "ig": _param("steps", True, "steps={steps} gradients"),
    "sg": _param("samples", True, "samples={samples} gradients"),
    "vargrad": _param("samples", True, "samples={samples} gradients"),
    "squaregrad": _param("samples", True, "samples={samples} gradients"),
    # native LRP (every lrp.* / deep_taylor* composite) and the iNNvestigate backend: one forward
    # + one relevance backward per input
    **{k: _const(1, True, "1 forward + 1 relevance backward") for k in (
        "inn.lrp.z", "inn.lrp.epsilon", "inn.lrp.alpha_1_beta_0", "inn.lrp.alpha_2_beta_1", "inn.deep_taylor",
        "inn.deep_taylor.bounded", "inn.gradient", "inn.input_t_gradient", "inn.guided_backprop",
        "inn.deconvnet")},
    "inn.integrated_gradients": _param("steps", True, "steps={steps} gradients"),
    "inn.smoothgrad": _param("samples", True, "samples={samples} gradients"),
    # tf-explain
    "tfx.gradcam": _const(1, True, "1 gradient at the conv layer"),
    "tfx.ig": _param("steps", True, "steps={steps} gradients"),
    "tfx.smoothgrad": _param("samples", True, "samples={samples} gradients"),
    "tfx.occlusion": lambda ex: (math.ceil(ex.shape[0] / int(ex.params["patch_size"]))
                                 * math.ceil(ex.shape[1] / int(ex.params["patch_size"])), False,
                                 f"(H/p) x (W/p) patches, p={ex.params['patch_size']}"),
    # perturbation
    "occlusion": _occlusion,
    "feature_ablation": _occlusion,          # occlusion with 1x1 windows (or segments)
    "feature_permutation": lambda ex: (_pixels(ex) + 1, False,
                                       f"{_pixels(ex)} features (each a permuted copy per input) + 1"),
    "pda": lambda ex: (_windows(ex) * ex.n_samples + 1, False,
                       f"{_windows(ex)} windows ({_pair(ex.window)} stride {_pair(ex.stride)}) "
                       f"x {ex.n_samples} values + 1"),
    "shapley": lambda ex: (ex.samples * (_pixels(ex) + 1), False,
                           f"{ex.samples} permutations x ({_pixels(ex)} features + 1)"),
    "rise": _param("masks", False, "masks={masks} + 1 unmasked", extra=1),
    "mp": _param("max_iterations", True, "max_iterations={max_iterations} sequential (f+b) steps of the N inputs"),
    # surrogates
    "lime": _param("num_samples", False, "num_samples={num_samples}"),
    "lime.lib": _param("num_samples", False, "num_samples={num_samples}"),
    "kernelshap": lambda ex: (_shap_n(ex), False, f"nsamples={ex.params['nsamples']} (+ f(x), f(bg))"),
    "shap.lib": lambda ex: (_shap_n(ex), False, f"nsamples={ex.params['nsamples']} (+ f(x), f(bg))"),
    "shap.gradient": _param("nsamples", True, "nsamples={nsamples} gradients"),
    "shap.deep": _const(1, True, "1 DeepLIFT backward per background image (1)"),
    "shap.partition": _param("max_evals", False, "max_evals={max_evals}"),
    # interventional: attribution from a learned graph = one forward to the conv layer
    "interventional": _const(1, False, "1 forward (graph given; learning timed separately)"),
}


def _shap_n(ex):
    ns = ex.params["nsamples"]
    if ns == "auto":
        ns = 2 * int(ex.params.get("n_segments", 50)) + 2048
    return int(ns) + 2


#: Methods whose evaluations are sequential steps (each depends on the last): an optimisation of N
#: inputs evaluates the model on N inputs per step.
SEQUENTIAL = {"mp"}


def floor_chunk(name, n):
    """Evaluations per floor step for ``n`` inputs of method ``name``: ``n`` for sequential methods,
    else None (the case's batch size)."""
    return n if name in SEQUENTIAL else None


def cost(name, explainer):
    """``(evals_per_input, backward, note)`` of a registry method; KeyError if not in the table.
    Every native LRP composite (``lrp.*``, ``deep_taylor*``) costs one forward and one relevance
    backward, which is dearer than a gradient's for some rules (:func:`lrp_factor`)."""
    if name not in COSTS and (name.startswith("lrp.") or name.startswith("deep_taylor")):
        factor, rule = lrp_factor(explainer)
        more = f" (x{factor:g} of a gradient" + (f": {rule} rule)" if rule else ")")
        return 1, True, "1 forward + 1 relevance backward" + more
    return COSTS[name](explainer)


#: A native LRP backward pass in multiples of a gradient's forward + backward, by its costliest
#: rule: the measured ratios to the gradient floor (docs/performance.md, "Native LRP and Deep
#: Taylor": MNIST CNN x256, CIFAR CNN x64, Keras 3 ResNet50 at 224 x8), rounded up. alpha-beta with
#: beta != 0 takes two linear maps each way where the gradient takes one (2.7-2.9 measured); z+,
#: gamma, z^B and alpha-beta with beta = 0 one and a half (1.5-1.8); z, epsilon, w^2, flat one,
#: plus elementwise passes (1.1-1.4).
LRP_RULE_FACTOR = {"alpha_beta": 3.0, "alpha_beta(beta=0)": 1.8, "gamma": 1.8, "z_box": 1.8}
LRP_BASE_FACTOR = 1.5


def lrp_factor(explainer):
    """``(factor, rule)``: :data:`LRP_RULE_FACTOR` of the costliest rule of a native LRP
    explainer's composite (``(LRP_BASE_FACTOR, None)`` when no rule costs more)."""
    from .graph import rules as R

    rules = getattr(getattr(explainer, "_prop", None), "rules", None) or {}
    best = (LRP_BASE_FACTOR, None)
    for rule in rules.values():
        key = next((c.name for c in (R.AlphaBeta, R.Gamma, R.ZBox) if isinstance(rule, c)), None)
        if key == "alpha_beta" and float(rule.beta) == 0.0:
            key = "alpha_beta(beta=0)"
        f = LRP_RULE_FACTOR.get(key, LRP_BASE_FACTOR)
        if f > best[0]:
            best = (f, key)
    return best


# -- input-scaled defaults of window methods --------------------------------------------------
#: windows per image side of the scaled defaults (224 px -> window 16, a 14 x 14 grid)
WINDOWS_PER_SIDE = 14
#: PDA's marginal intensity levels under the scaled defaults (study 1: 256 on its 1x1 windows)
SCALED_PDA_VALUES = 16
#: Shapley sampling's permutations under the scaled defaults (presets: 100)
SCALED_SHAPLEY_SAMPLES = 25


def default_window(height, width):
    """``max(1, round(min(H, W) / 14))``: window side (= stride) of the scaled defaults."""
    return max(1, int(round(min(int(height), int(width)) / WINDOWS_PER_SIDE)))


def scaled_defaults(name, input_shape):
    """Defaults of window methods for a model other than study 1's center-pixel model.

    Study 1's window-1 presets (one pixel at a time) are exact on its 227x227 gray model, whose
    forward pass is one Dense layer; on a 224x224 ResNet50 occlusion would need 50,177 full
    forward passes (~1 h on 2 CPU cores). The rule, applied by ``heatmap_script.py`` and
    ``python -m xaitf run`` to keys the user did not set with ``--set`` (``--set`` wins):

    * occlusion and PDA: ``window = stride = max(1, round(min(H, W) / 14))``: about a 14 x 14 grid
      of non-overlapping windows whatever the size (224 -> 16, 32 -> 2, 28 -> 2, 8 -> 1);
    * tf-explain occlusion: ``patch_size`` by the same rule;
    * PDA: ``values = 16`` marginal intensity levels instead of 256 (196 windows x 16 values = 3,137
      evaluations on 224x224);
    * Shapley sampling: the features are the cells of the same grid
      (``segments={"name": "grid", "cell": k}``, ~196 instead of H x W pixels) and ``samples = 25``
      permutations instead of 100 (25 x 197 = 4,925 evaluations on 224x224; the estimate's standard
      error falls as 1/sqrt(samples), so 25 has twice that of 100). Not when ``features`` is set.
    * FeatureAblation and FeaturePermutation: the features are the cells of the same grid
      (``segments={"name": "grid", "cell": k}``) instead of single pixels (196 + 1 evaluations per
      input on 224x224 instead of 50,177).

    Returns:
        ``{key: value}`` for method ``name`` (empty for the other methods).
    """
    h, w = int(input_shape[0]), int(input_shape[1])
    k = default_window(h, w)
    if name == "occlusion":
        return {"window": k, "stride": k}
    if name == "pda":
        return {"window": k, "stride": k, "values": SCALED_PDA_VALUES}
    if name == "tfx.occlusion":
        return {"patch_size": k}
    if name == "shapley":
        return {"segments": {"name": "grid", "cell": k}, "samples": SCALED_SHAPLEY_SAMPLES}
    if name in ("feature_ablation", "feature_permutation"):
        return {"segments": {"name": "grid", "cell": k}}
    return {}


def unset_scaled_defaults(name, input_shape, set_keys=()):
    """:func:`scaled_defaults` of ``name`` less the keys the user set: ``set_keys`` holds
    ``(section, key)`` pairs of ``--set`` (the triples of :func:`xaitf.cli.apply_sets` give them)."""
    from . import registry

    section, set_keys = registry.preset_section(name), set(set_keys)
    if (section, "features") in set_keys:      # Shapley over channels or pixels, as the user asked
        set_keys |= {(section, "segments"), (section, "samples")}
    return {p: v for p, v in scaled_defaults(name, input_shape).items() if (section, p) not in set_keys}


#: model evaluations per input above which a window method warns when xaitf.create_explainer makes it
#: (the command lines scale those methods' settings to the input instead; :func:`warn_if_costly`)
COSTLY_EVALUATIONS = 10_000


def warn_if_costly(explainer):
    """Warn, in one line, when a window method (occlusion, PDA, Shapley sampling, feature ablation
    and permutation) made with ``xaitf.create_explainer`` takes more than
    :data:`COSTLY_EVALUATIONS` model evaluations per input, naming the settings the command lines
    scale to the input size (:func:`scaled_defaults`): window 1 on a 224x224 ResNet50 is 50,177
    forward passes per image, about an hour on 2 CPU cores. Study 1's center-pixel model and
    models of any input size are exempt."""
    import warnings

    from .explainer import _caller_stacklevel

    name, shape = explainer.name, explainer.shape
    sized = len(shape) == 3 and None not in shape[:2]
    scaled = scaled_defaults(name, shape[:2]) if name and sized else {}
    if not scaled or is_center_pixel(explainer.model):
        return
    try:
        evals, _, note = cost(name, explainer)
    except (KeyError, AttributeError, TypeError, ValueError):
        return
    if evals > COSTLY_EVALUATIONS:
        kw = ", ".join(f"{k}={v!r}" for k, v in scaled.items())
        warnings.warn(f"{name}: {evals:,} model evaluations per input on {shape[0]}x{shape[1]} inputs ({note}); "
                      f"the command lines scale its settings to the input size, about a {WINDOWS_PER_SIDE} x "
                      f"{WINDOWS_PER_SIDE} grid: create_explainer({name!r}, model, {kw})", UserWarning,
                      stacklevel=_caller_stacklevel())


def is_center_pixel(model):
    """Study 1's center-pixel model, which keeps study 1's window-1 presets: named so, or one gray
    odd square input, 256 classes and only Flatten/Dense/activation layers."""
    if str(getattr(model, "name", "")).startswith("center_pixel"):
        return True
    from .keras_bridge import input_shape, layer_type, output_units

    shape = input_shape(model)
    kinds = {layer_type(l) for l in model.layers}
    return (len(shape) == 3 and shape[-1] == 1 and shape[0] == shape[1] and shape[0] % 2 == 1
            and output_units(model) == 256 and kinds <= {"InputLayer", "Flatten", "Dense", "Softmax",
                                                         "Activation", "ReLU"})


# -- measured time per evaluation -------------------------------------------------------------
def measure(model, backward=False, batch=32, batch_backward=8, warm=False):
    """Seconds per model evaluation on ``model``: one timed batch after one untimed tracing call.

    Returns a dict: ``forward`` (s per image in a batch of ``batch``: perturbation methods and
    surrogates run chunks of hundreds of evaluations), ``forward_1`` (s for a batch of 1),
    ``trace`` (s of the first, tracing call), and when ``backward`` the same for forward +
    backward at ``batch_backward`` (``backward``, ``backward_1``, ``trace_backward``). ``warm``:
    the per-image times are the faster of two calls of the batch (the first also sets up kernels
    for its size; without it the estimate errs on the slow side, most on small models).
    """
    import numpy as np
    import tensorflow as tf

    from .grouped_conv import runner
    from .keras_bridge import input_shape

    model = runner(model)       # what the methods call (Keras 3 grouped convolutions without XLA)
    shape = tuple(int(d) for d in input_shape(model))
    spec = tf.TensorSpec((None,) + shape, tf.float32)
    x = tf.constant(np.random.RandomState(0).rand(max(batch, batch_backward), *shape).astype(np.float32))
    fwd = tf.function(lambda t: model(t, training=False), input_signature=[spec])

    def grad(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = model(t, training=False)
            s = tf.reduce_sum(y[:, 0])
        return tape.gradient(s, t)

    out = {}
    fns = [("forward", fwd)]
    if backward:
        fns.append(("backward", tf.function(grad, input_signature=[spec])))
    for key, fn in fns:
        t0 = time.perf_counter()
        fn(x[:1]).numpy()
        t1 = time.perf_counter()
        fn(x[:1]).numpy()
        t2 = time.perf_counter()
        b = batch if key == "forward" else batch_backward
        fn(x[:b]).numpy()
        t3 = time.perf_counter()
        out[key + "_1"] = t2 - t1
        out[key] = (t3 - t2) / b
        if warm:        # the first call of a batch size also sets up its kernels
            fn(x[:b]).numpy()
            out[key] = min(out[key], (time.perf_counter() - t3) / b)
        out["trace" if key == "forward" else "trace_backward"] = max(0.0, (t1 - t0) - (t2 - t1))
    return out


def measure_segmentation(explainers, image, timing):
    """Time each superpixel explainer's segmenter (LIME's quickshift: ~1 s on a 224x224 photo,
    more than its model evaluations on a small CNN) once on ``image`` (H,W,C) and record the
    seconds per image in ``timing["segment"][name]``, which :func:`seconds` adds per input."""
    seg = timing.setdefault("segment", {})
    for e in explainers:
        if callable(getattr(e, "segments", None)) and "segmenter" in getattr(e, "params", {}):
            t0 = time.perf_counter()
            e.segments(image[None])
            seg[e.name] = time.perf_counter() - t0
    return timing


def measure_imputation(image, kwargs=None, n=1):
    """Seconds per (image, percentage) pair of ROAD's linear imputation (``road`` called with
    ``kwargs`` on ``n`` images), timed on copies of ``image`` (H,W,C) with a central square of the
    median percentage removed: one large hole, the slow case of the conjugate gradients. Up to 64
    copies are solved together (fewer for large images: about 2^18 values), compiled by XLA when
    the run would be (after one untimed call that traces and compiles). The run solves up to ``batch_size``
    pairs of a percentage at once, so this is an upper estimate. 0.0 when ``imputation`` is a
    number (no solve)."""
    import numpy as np

    from .metrics.faithfulness import ROAD_PERCENTAGES
    from .metrics.imputation import linear_impute_batch, noisy_linear_impute, worth_compiling

    kwargs = kwargs or {}
    if kwargs.get("imputation", "linear") != "linear":
        return 0.0
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    percentages = np.asarray(kwargs.get("percentages", ROAD_PERCENTAGES), np.float64).reshape(-1)
    k = max(1, min(h, w, int(round(np.sqrt(float(np.median(percentages)) * h * w)))))
    gone = np.zeros((h, w), bool)
    gone[(h - k) // 2:(h - k) // 2 + k, (w - k) // 2:(w - k) // 2 + k] = True
    gone[0, 0] = False                                   # at least one pixel kept
    if kwargs.get("solver", "cg") == "sparse":         # one pair at a time in the run too
        t0 = time.perf_counter()
        noisy_linear_impute(image, gone, noise=0.0)
        return time.perf_counter() - t0
    b = max(1, min(64, 2 ** 18 // image.size))
    imgs, masks = np.repeat(image[None], b, axis=0), np.repeat(gone[None], b, axis=0)
    jit = worth_compiling(n * percentages.size * image.size)      # as road decides
    linear_impute_batch(imgs, masks, jit=jit)                      # traces (and compiles) it: untimed
    t0 = time.perf_counter()
    linear_impute_batch(imgs, masks, jit=jit)
    return (time.perf_counter() - t0) / b


def metric_host_seconds(name, kwargs, image, n):
    """``(seconds per image, words)`` of the work metric ``name`` (called with ``kwargs`` on ``n``
    images like ``image``) does besides the model, timed here on ``image`` (after an untimed call):
    ROAD's imputations (:func:`measure_imputation`, one per percentage) and IROF's segmentation
    (once per image).
    ``(0.0, None)`` for the other metrics."""
    import numpy as np

    if name == "road":
        from .metrics.faithfulness import ROAD_PERCENTAGES

        pair = measure_imputation(image, kwargs, n)
        count = np.asarray(kwargs.get("percentages", ROAD_PERCENTAGES)).size
        return (count * pair, f"{count} imputations of {pair * 1e3:.3g} ms") if pair else (0.0, None)
    if name == "irof":
        from .metrics.curves import irof_segments

        one = np.asarray(image, np.float32)[None]
        irof_segments(one, kwargs.get("segments"), kwargs.get("segment_params"))   # imports: untimed
        t0 = time.perf_counter()
        irof_segments(one, kwargs.get("segments"), kwargs.get("segment_params"))
        seconds = time.perf_counter() - t0
        return seconds, f"segmentation {seconds * 1e3:.3g} ms"
    return 0.0, None


#: the evaluations' measured time is multiplied by this: chunk overheads (perturbed batches built,
#: maps reduced, segmentation) and a machine shared with other work; the estimate is an upper one
MARGIN = 1.25
#: evaluations of these methods cost more than a plain forward pass of a batch: occlusion / PDA
#: push each window through the leading layers on a crop and paste it into the clean activation
#: (measured on a 224x224 Keras 3 ResNet50, 2 CPU cores: ~2 batched forward passes per window);
#: on small or Dense-first models they cost less, and the estimate is on the safe side
FACTOR = {"occlusion": 2.0, "pda": 2.0, "feature_ablation": 2.0, "feature_permutation": 2.0}
#: ... and these instead when the perturbation engine takes the first-layer shortcut through a Dense
#: layer (study 1's Flatten -> Dense center-pixel model: a window changes a few rows of one matrix
#: product). Measured on the 227x227 model against its 1 ms forward pass: occlusion 6 us per window
#: (0.006), PDA 0.6 us per window x value (0.0006); the factors are ~8x above, on the safe side
DENSE_SHORTCUT_FACTOR = {"occlusion": 0.05, "pda": 0.005, "feature_ablation": 0.05, "feature_permutation": 0.05}


def _factor(name, explainer):
    if getattr(explainer, "_prop", None) is not None:          # native LRP
        return lrp_factor(explainer)[0]
    engine = getattr(explainer, "engine", None)
    chain = getattr(engine, "chain", None)
    first = getattr(chain, "first", None)
    if name in FACTOR and type(first).__name__ in ("Dense", "_DenseFirst"):
        return DENSE_SHORTCUT_FACTOR[name]
    return FACTOR.get(name, 1.0)


def seconds(name, explainer, n_inputs, timing, calls=1, traced=False):
    """Estimated seconds of ``calls`` calls of method ``name`` on ``n_inputs`` inputs: setup (one
    trace; none when ``traced``: the model's programs are cached per model, so a second explainer
    of the same method on the same model, or a call after new weights, does not trace again) +
    ``calls`` x model evaluations x seconds per evaluation x :data:`MARGIN` (x :data:`FACTOR` for
    occlusion and PDA, x :func:`lrp_factor` for native LRP) (sequential methods: per step of
    ``n_inputs``). ``calls=0``: the setup alone.

    Methods over superpixels add ``timing["segment"][name]`` seconds per image and call
    (:func:`measure_segmentation`).

    Returns ``(seconds, evals_per_input, note)``; KeyError when the method is not in ``COSTS``.
    """
    evals, backward, note = cost(name, explainer)
    kind = "backward" if backward and "backward" in timing else "forward"
    setup = 0.0 if traced else timing["trace_backward" if kind == "backward" else "trace"]
    segment = n_inputs * timing.get("segment", {}).get(name, 0.0)     # superpixels, per image
    factor = MARGIN * _factor(name, explainer)
    if name in SEQUENTIAL:
        per_step = timing[kind + "_1"] if n_inputs == 1 else timing[kind] * n_inputs
        return setup + calls * (segment + factor * evals * per_step), evals, note
    return setup + calls * (segment + factor * n_inputs * evals * timing[kind]), evals, note


def randomisation_state_seconds(model, image, n, similarities=None):
    """``(similarities, weights check)``: seconds of a randomisation test's work per randomised
    state besides the explanations, timed here (after an untimed call): the ``similarities``
    (None: all of :data:`xaitf.metrics.randomisation.SIMILARITIES`) of ``n`` maps shaped like
    ``image`` with the original maps (prepared once: :class:`xaitf.metrics.randomisation.Reference`),
    and one weights fingerprint of ``model``, which an
    explainer that keeps copies of the weights (``copies_weights``: native LRP, clones, twins)
    takes on each call (a 224x224 MobileNetV2, 4 images: about 40 ms of similarities and 22 ms
    for the fingerprint against 110 ms of gradients)."""
    import numpy as np

    from .keras_bridge import weights_fingerprint
    from .metrics.randomisation import SIMILARITIES, Reference

    similarities = SIMILARITIES if similarities is None else similarities
    rng = np.random.default_rng(0)
    a, b = (rng.random((1,) + tuple(np.shape(image))[:2]) for _ in range(2))
    reference = Reference(a, tuple(similarities))
    reference.compare(b)
    weights_fingerprint(model)
    t0 = time.perf_counter()
    reference.compare(b)
    t1 = time.perf_counter()
    weights_fingerprint(model)
    return n * (t1 - t0), time.perf_counter() - t1


def state_seconds(parts, explainer):
    """Seconds per randomised state for ``explainer`` from :func:`randomisation_state_seconds`'s
    ``parts``: the weights check only where the explainer takes it."""
    return parts[0] + (parts[1] if getattr(explainer, "copies_weights", True) else 0.0)


def duration(s):
    """``~40 s``, ``~12 min``, ``~3 h``: an estimate in words."""
    if s is None or not math.isfinite(s):
        return "unbounded"
    if s < 90:
        return f"~{max(1, round(s))} s"
    if s < 90 * 60:
        return f"~{round(s / 60)} min"
    if s < 48 * 3600:
        return f"~{s / 3600:.1f} h".replace(".0 h", " h")
    return f"~{s / 86400:.0f} days"


def parse_budget(text):
    """A budget: ``none`` (no limit: None), seconds (``600``) or a number with s/m/min/h
    (``90s``, ``10m``, ``1.5h``); ValueError("expected ...") otherwise."""
    t = str(text).strip().lower()
    if t in ("none", "off", "inf", "unlimited"):
        return None
    units = (("min", 60), ("h", 3600), ("m", 60), ("s", 1))
    factor = 1
    for suffix, f in units:
        if t.endswith(suffix):
            t, factor = t[: -len(suffix)].strip(), f
            break
    try:
        v = float(t) * factor
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"expected 'none' or a duration > 0 such as 600, 90s, 10m, 1h; got {text!r}")
    return v


# -- suggestions ------------------------------------------------------------------------------
#: the sample-count parameter of each sampling method (what a suggestion lowers)
SAMPLE_PARAMS = {
    "ig": "steps", "sg": "samples", "vargrad": "samples", "squaregrad": "samples",
    "inn.integrated_gradients": "steps", "inn.smoothgrad": "samples", "tfx.ig": "steps",
    "tfx.smoothgrad": "samples", "rise": "masks", "mp": "max_iterations", "lime": "num_samples",
    "lime.lib": "num_samples", "kernelshap": "nsamples", "shap.lib": "nsamples",
    "shap.gradient": "nsamples", "shap.partition": "max_evals", "shapley": "samples",
}
_NICE = (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 250, 256, 500, 1000, 2000, 4000)


def _variant(explainer, **params):
    """A stand-in with changed parameters that :func:`cost` can read (nothing is rebuilt)."""
    p = dict(explainer.params, **params)
    ns = types.SimpleNamespace(params=p, shape=explainer.shape)
    for attr in ("n_samples", "samples"):
        if hasattr(explainer, attr):
            setattr(ns, attr, getattr(explainer, attr))
    if "window" in params:
        ns.window = (int(params["window"]),) * 2
    elif hasattr(explainer, "window"):
        ns.window = explainer.window
    if "stride" in params:
        ns.stride = (int(params["stride"]),) * 2
    elif hasattr(explainer, "stride"):
        ns.stride = explainer.stride
    if "values" in params:
        ns.n_samples = int(params["values"])
    if "samples" in params and hasattr(explainer, "samples"):
        ns.samples = int(params["samples"])
    return ns


def _section(name):
    from . import registry

    try:
        return registry.preset_section(name) or name
    except Exception:  # noqa: BLE001 - a name without presets: --set on its key
        return name


def suggest(name, explainer, n_inputs, timing, target):
    """Settings that bring method ``name`` under ``target`` seconds: ``(flags, seconds)`` with
    ``flags`` the ``--set`` words (``"--set occlusion.window=16 --set occlusion.stride=16"``), or
    None when no single setting of the method gets there."""
    sec = _section(name)
    candidates = []
    h, w = explainer.shape[:2]
    if name in ("occlusion", "pda") and explainer.params.get("segments") is None:
        for k in sorted({default_window(h, w), *(2 ** i for i in range(1, 9)), 7, 14, 28, 56}):
            if k <= min(h, w) and k > max(getattr(explainer, "window", (1, 1))):
                candidates.append({"window": k, "stride": k})
        if name == "pda":
            values = [dict(c, values=v) for c in candidates for v in (16, 8)
                      if explainer.params.get("sampling", "marginal") == "marginal"]
            candidates = sorted(candidates + values, key=lambda c: (c["window"], -c.get("values", 257)))
    elif name == "tfx.occlusion":
        candidates = [{"patch_size": k} for k in sorted({default_window(h, w), 8, 16, 32, 64})
                      if int(explainer.params["patch_size"]) < k <= min(h, w)]
    elif name in SAMPLE_PARAMS:
        key = SAMPLE_PARAMS[name]
        now = explainer.params.get(key)
        now = int(now) if isinstance(now, (int, float)) else 10 ** 9
        candidates = [{key: v} for v in reversed(_NICE) if v < now]
    for c in candidates:
        try:
            s, _, _ = seconds(name, _variant(explainer, **c), n_inputs, timing)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if s <= target:
            return " ".join(f"--set {sec}.{k}={v}" for k, v in c.items()), s
    return None


def what(name, explainer):
    """The settings a method's cost depends on, in words (``window 1 stride 1``, ``masks=4000``)."""
    p = explainer.params
    if name in ("occlusion", "pda") and p.get("segments") is None:
        extra = f" values {explainer.n_samples}" if name == "pda" else ""
        return f"window {_pair(p['window'])} stride {_pair(p['stride'])}{extra}"
    if name == "tfx.occlusion":
        return f"patch_size {p['patch_size']}"
    if name in SAMPLE_PARAMS:
        return f"{SAMPLE_PARAMS[name]}={p.get(SAMPLE_PARAMS[name])}"
    return "its settings"


def check(rows, budget, n_inputs, timing, flag="--budget"):
    """Refuse a run whose estimate is above ``budget`` seconds (None: no limit).

    Args:
        rows: ``[(name, explainer, seconds)]`` of the run's methods.

    Raises:
        InputError: one line naming the most costly method, what it costs with its settings, the
            ``--set`` that would bring the total under the budget and what it would cost then.
    """
    total = sum(s for _, _, s in rows)
    if budget is None or total <= budget:
        return total
    name, ex, s = max(rows, key=lambda r: r[2])
    rest = total - s
    target = budget - rest if budget - rest > 0 else budget / max(1, len(rows))
    fix = suggest(name, ex, n_inputs, timing, target)
    head = (f"{name}: {duration(s)} with {what(name, ex)}"
            + (f" ({n_inputs} images)" if n_inputs > 1 else ""))
    if fix:
        tail = f"; {fix[0]} would take {duration(fix[1])}"
    else:
        tail = f"; lower {what(name, ex)} (--set), or drop {name}"
    others = f"; the other methods ~{duration(rest)[1:]}" if len(rows) > 1 else ""
    raise InputError(f"{head}{tail}{others}: the estimate {duration(total)} is above {flag} "
                     f"{duration(budget)[1:]} ({flag} none runs it anyway)")
