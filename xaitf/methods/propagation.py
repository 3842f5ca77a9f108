"""iNNvestigate backend: LRP, Deep Taylor and iNNvestigate's gradient family, on any Keras model.

iNNvestigate 2.1.2 (Alber et al. 2019, JMLR 20(93)) runs only on tf-keras models in graph mode.
:class:`InnvestigateExplainer` rebuilds the model as a float32 tf-keras twin inside a private
``tf.Graph`` (:func:`xaitf.twin.graph_twin`; eager execution stays on everywhere else), strips the
final softmax there, builds the analyzer once per (model, analyzer, parameters) with
``neuron_selection_mode="index"`` and reuses it for every later call and batch.

Analyzers (the ``analyzer`` fixed parameter; registry names in brackets):

* ``lrp.z`` [lrp.z] LRP-0 (Bach et al. 2015): ``R_i = sum_j x_i w_ij / z_j R_j``, ``z_j = sum_i x_i
  w_ij + b_j``; the bias is a constant input, so relevance is conserved up to the bias share.
* ``lrp.epsilon`` [lrp.epsilon]: ``R_i = sum_j x_i w_ij / (z_j + eps sign(z_j)) R_j`` (sign(0) = 1);
  parameter ``epsilon`` (default 1.0, study 1; preset section LRP).
* ``lrp.alpha_1_beta_0``, ``lrp.alpha_2_beta_1``: ``R_i = sum_j (alpha (x_i w_ij)^+ / z_j^+ - beta
  (x_i w_ij)^- / z_j^-) R_j`` with alpha - beta = 1 (biases counted in z^+ and z^-).
* ``deep_taylor`` (Montavon et al. 2017, Pattern Recognition 65): z+ rule on ReLU layers, w^2 rule on
  the others, applied to relu(output); ``deep_taylor.bounded`` uses the z^B rule with the input
  bounds ``low``/``high`` (defaults 0.0 / 1.0; preset section DEEP_TAYLOR) at the first layer.
* ``gradient``, ``input_t_gradient``, ``guided_backprop``, ``deconvnet`` [inn.*]: iNNvestigate's
  own versions of the native ``grad``, ``inpgrad``, ``gb`` and ``deconvnet``.
* ``integrated_gradients`` [inn.integrated_gradients] (Sundararajan et al. 2017): ``(x - x0) *
  mean_k grad f(x0 + k/m (x - x0))``, k = 0..m-1 (always the left Riemann sum: the native ``ig``
  with ``rule="left"`` computes the same); ``steps`` m (default 64) and ``baseline`` x0 (a scalar
  or one image; default 0.0), the native ``ig``'s defaults.
* ``smoothgrad`` [inn.smoothgrad] (Smilkov et al. 2017): ``mean_k grad f(x + n_k)``. iNNvestigate
  2.1.2 stores ``noise_scale`` but never uses it: the noise is always N(0, 1). It is exposed for
  comparison at its real noise 1.0 only (``noise_scale`` must be 1.0); use the native ``sg`` for
  study 1's noise 0.1. ``samples`` (default 16, as the native ``sg``) noisy copies per input;
  ``postprocess`` none|abs|square (default none) is applied to each gradient before averaging. The
  noise comes from a TF1 op in the private graph, seeded through the graph seed: maps repeat for a
  fresh process and seed, not from one call to the next.

Every analyzer explains the pre-softmax output ``f_c`` of the target class and returns
per-channel (N,H,W,C) maps (channel reduction by the Explainer base). Like LRP and Deep Taylor,
iNNvestigate's ``guided_backprop`` and ``deconvnet`` start their backward pass from the value
``f_c`` rather than from 1: where ``f_c > 0`` their maps are ``f_c`` times the native ``gb`` and
``deconvnet`` maps; where ``f_c <= 0`` they differ (the flipped starting signal passes through the
ReLU rules) or vanish. ``gradient``, ``input_t_gradient`` and ``integrated_gradients`` start from 1
and equal the native methods.
"""
import re
import time
import warnings

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from ..errors import MethodError, ModelError
from ..explainer import COMMON, Explainer
from ..keras_bridge import activation_name, is_softmax_layer, layer_type
from .. import twin as T

RELU_ONLY = ("deep_taylor", "deep_taylor.bounded", "guided_backprop", "deconvnet")
# analyzer -> the xaitf.settings preset section of its parameters (None: no preset section)
SECTIONS = {
    "lrp.z": None, "lrp.epsilon": "lrp", "lrp.alpha_1_beta_0": None, "lrp.alpha_2_beta_1": None,
    "deep_taylor": None, "deep_taylor.bounded": "deep_taylor",
    "gradient": None, "input_t_gradient": None, "guided_backprop": None, "deconvnet": None,
    "integrated_gradients": None, "smoothgrad": None,
}
ANALYZERS = tuple(SECTIONS)
# analyzer -> the keys of its ``params``, in order (the other parameters of the signature are not its own)
ANALYZER_PARAMS = {
    "lrp.epsilon": ("epsilon", "analyzer"), "deep_taylor.bounded": ("low", "high", "analyzer"),
    "integrated_gradients": ("analyzer", "steps", "baseline"),
    "smoothgrad": ("analyzer", "samples", "noise_scale", "postprocess"),
}
_LINEAR_ACTS = ("linear", "relu", None)

# module-wide count of analyzers built (tests and benchmarks read it)
STATS = {"builds": 0, "build_seconds": 0.0}


def _relu_only_violation(model):
    """The first layer whose activation is neither linear nor ReLU (final softmax/sigmoid excepted)."""
    last = T._history(model.outputs[0])[0]
    for layer, kind in T.check_layers(model):
        if layer is last and (is_softmax_layer(layer) or activation_name(layer) == "sigmoid"):
            continue
        if kind == "Activation" or kind in ("Conv2D", "Dense"):
            act = activation_name(layer)
            if act not in _LINEAR_ACTS:
                return layer, act
        if kind == "ReLU":
            cfg = layer.get_config()
            if cfg.get("negative_slope") or cfg.get("threshold") or cfg.get("max_value") is not None:
                return layer, "relu with slope/threshold/max_value"
    return None


def _same(value, default):
    """Whether a parameter was left at its default (arrays never count as a scalar default)."""
    if value is default:
        return True
    if isinstance(value, (bool, np.ndarray)) or isinstance(default, (bool, np.ndarray)):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):
        return False


def _inner_softmax(model):
    """The first softmax that is not the model's final one (iNNvestigate cannot analyze it)."""
    out_layer = T._history(model.outputs[0])[0]
    for layer, kind in T.check_layers(model):
        if layer is out_layer:
            continue
        if kind == "Softmax" or activation_name(layer) == "softmax":
            return layer
    return None


class InnvestigateExplainer(Explainer):
    """One iNNvestigate analyzer on the pre-softmax output (see the module docstring).

    Each analyzer takes only its own parameters (:data:`ANALYZER_PARAMS`); a value other than the
    default for another analyzer's parameter (``epsilon=0.1`` with ``lrp.z``) raises MethodError.

    Args:
        model: tf-keras or Keras 3 model of the layers in :data:`xaitf.twin.SUPPORTED`.
        analyzer: one of :data:`ANALYZERS` (the registry passes it) (None: refused).
        epsilon: LRP-epsilon stabiliser (``lrp.epsilon``), > 0 (1.0, study 1).
        low: lower input bound of ``deep_taylor.bounded``, low < high (0.0).
        high: upper input bound of ``deep_taylor.bounded`` (1.0).
        steps: integration steps of ``integrated_gradients``, an integer >= 1 (64).
        baseline: baseline x0 of ``integrated_gradients``: a scalar, one value per channel or one
            image (0.0).
        samples: noisy copies per input of ``smoothgrad``, an integer >= 1 (16).
        noise_scale: ``smoothgrad``'s noise_scale; must be 1.0, iNNvestigate's real noise (1.0,
            see the module docstring).
        postprocess: ``smoothgrad``'s per-gradient postprocessing, "none" | "abs" | "square"
            ("none").
        **common: batch_size (inputs x steps/samples per analyzer call), channel_reduce, seed,
            progress, output (see :class:`xaitf.explainer.Explainer`).
        seed: ``smoothgrad`` only: seeds the library's own generator (the TF1 graph seed of
            iNNvestigate's noise op); its noise follows the batch, so an input's map may depend
            on batch_size and on the other inputs (unlike the native ``sg``).

    Returns (from ``__call__``): maps (N,H,W) after channel reduction, or (N,H,W,C) with
    ``channel_reduce="none"``.
    """

    outputs = ("logits",)   # iNNvestigate selects one pre-softmax neuron (neuron_selection "index")

    def __init__(self, model, analyzer=None, *, epsilon=1.0, low=0.0, high=1.0, steps=64, baseline=0.0,
                 samples=16, noise_scale=1.0, postprocess="none", **common):
        name = str(analyzer).strip().lower() if analyzer is not None else None
        if name not in SECTIONS:
            raise MethodError(f"unknown iNNvestigate analyzer {analyzer!r}; valid: {', '.join(ANALYZERS)}")
        given = dict(analyzer=name, epsilon=epsilon, low=low, high=high, steps=steps, baseline=baseline,
                     samples=samples, noise_scale=noise_scale, postprocess=postprocess)
        own = ANALYZER_PARAMS.get(name, ("analyzer",))
        defaults = InnvestigateExplainer.parameters()
        foreign = [k for k in given if k not in own and not _same(given[k], defaults[k])]
        if foreign:
            valid = ", ".join(k for k in own if k != "analyzer") or "none"
            raise MethodError(f"InnvestigateExplainer ({name}) got unknown parameter(s) {', '.join(foreign)}; "
                              f"valid for {name}: {valid} (plus {', '.join(COMMON)})")
        self.analyzer_name = name
        self.key = SECTIONS[name]
        super().__init__(model, params={k: given[k] for k in own}, **common)

    @staticmethod
    def preset_section(analyzer=None, **_):
        """The :mod:`xaitf.settings` section of ``analyzer``'s presets (:data:`SECTIONS`; None: none)."""
        name = str(analyzer).strip().lower() if analyzer is not None else None
        return SECTIONS.get(name)

    # -- setup: cheap checks first, then the twin and the analyzer ---------------------------
    def setup(self):
        p = self.params
        name = self.analyzer_name
        kwargs = {}
        if name == "lrp.epsilon":
            if not float(p["epsilon"]) > 0:
                raise MethodError(f"lrp.epsilon needs epsilon > 0, got {p['epsilon']!r}")
            kwargs["epsilon"] = float(p["epsilon"])
        elif name == "deep_taylor.bounded":
            if not float(p["low"]) < float(p["high"]):
                raise MethodError(f"deep_taylor.bounded needs low < high, got {p['low']!r}, {p['high']!r}")
            kwargs.update(low=float(p["low"]), high=float(p["high"]))
        elif name == "integrated_gradients":
            from .. import params as _params

            steps = _params.integer(p["steps"], "steps", "integrated_gradients", low=1)
            if len(self.shape) == 3:
                base = _params.parse_baseline(p["baseline"], self.shape, owner="integrated_gradients")
            else:                               # not an image: a scalar or one input
                base = np.asarray(p["baseline"], dtype=np.float32)
                if base.ndim not in (0, len(self.shape)) or (base.ndim and base.shape != tuple(self.shape)):
                    raise MethodError(f"integrated_gradients needs baseline to be a scalar or an array "
                                      f"shaped {tuple(self.shape)}, got shape {base.shape}")
                base = base.reshape((1,) * (len(self.shape) + 1) if base.ndim == 0 else (1,) + base.shape)
            if len(base) > 1:
                raise MethodError("integrated_gradients (iNNvestigate) takes one baseline: a scalar, one "
                                  "value per channel or an image; use 'ig' for one image per input")
            scalar = base.size == 1
            kwargs.update(steps=steps, reference_inputs=float(base.flat[0]) if scalar else
                          np.broadcast_to(base, (1,) + tuple(self.shape)).copy())
        elif name == "smoothgrad":
            if float(p["noise_scale"]) != 1.0:
                raise MethodError(
                    f"inn.smoothgrad noise_scale must be 1.0, got {p['noise_scale']!r}: iNNvestigate 2.1.2 "
                    "ignores noise_scale and always adds N(0, 1) noise; use the native 'sg' method for "
                    "other noise levels")
            if p["postprocess"] not in ("none", None, "abs", "square"):
                raise MethodError(f"inn.smoothgrad postprocess must be none, abs or square, "
                                  f"got {p['postprocess']!r}")
            if int(p["samples"]) < 1:
                raise MethodError(f"inn.smoothgrad needs samples >= 1, got {p['samples']!r}")
            kwargs.update(augment_by_n=int(p["samples"]), noise_scale=1.0,
                          postprocess=None if p["postprocess"] in ("none", None) else p["postprocess"])
        self._kwargs = kwargs
        self._check_model()                 # cheap: names the offending layer, builds nothing
        self.twin = T.graph_twin(self.model)
        self.analyzer = self._get_analyzer()

    def _check_model(self):
        layers = T.check_layers(self.model)           # every layer, nested models' included
        if self.analyzer_name in ("integrated_gradients", "smoothgrad"):
            # iNNvestigate's wrapper analyzers call the model on new graph inputs, which fails inside
            # tf-keras' graph-mode BatchNormalization (a resource-dtype TypeError deep in TF)
            bn = next((l for l, kind in layers if kind == "BatchNormalization"), None)
            if bn is not None:
                raise ModelError(
                    f"iNNvestigate's {self.analyzer_name} cannot run models with BatchNormalization "
                    f"(layer {bn.name!r}); use the native {'ig' if self.analyzer_name[0] == 'i' else 'sg'} "
                    f"method, which handles it")
        inner = _inner_softmax(self.model)
        if inner is not None:
            raise ModelError(
                f"iNNvestigate cannot analyze softmax layer {inner.name!r} (type {layer_type(inner)}) inside "
                f"the model (only a final softmax is stripped); use grad, ig, sg, occlusion or another "
                f"native method")
        if self.analyzer_name in RELU_ONLY:
            bad = _relu_only_violation(self.model)
            if bad is not None:
                layer, act = bad
                raise ModelError(
                    f"{self.analyzer_name} needs ReLU networks, but layer {layer.name!r} (type "
                    f"{layer_type(layer)}) uses activation {act!r}; use lrp.z, lrp.epsilon, "
                    f"lrp.alpha_2_beta_1 or a native gradient method instead")

    def _cache_key(self):
        return (self.analyzer_name, tuple(sorted(
            (k, np.asarray(v).tobytes() if isinstance(v, np.ndarray) else v) for k, v in self._kwargs.items())),
            self.seed if self.analyzer_name == "smoothgrad" else None)

    def _get_analyzer(self):
        key = self._cache_key()
        hit = self.twin.analyzers.get(key)
        if hit is not None:
            self.build_seconds = 0.0
            return hit
        try:
            import innvestigate
            from innvestigate.analyzer.base import NotAnalyzeableModelException
        except (AttributeError, ImportError):
            # keras imported before xaitf: iNNvestigate's own import then fails on Keras 3's tf.keras
            # (no LocallyConnected1D); say so in one line
            T.require_tf_keras()
            raise
        T.require_tf_keras()

        t0 = time.perf_counter()
        with self.twin.scope(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")     # recorded, not shown: _unimplemented reads them
            if self.analyzer_name == "smoothgrad":
                tf.compat.v1.set_random_seed(self.seed)
            try:
                analyzer = innvestigate.create_analyzer(self.analyzer_name, self.twin.logits,
                                                        neuron_selection_mode="index", **self._kwargs)
                analyzer.create_analyzer_model()
            except NotAnalyzeableModelException as e:
                msg = " ".join(str(e).split())
                raise ModelError(f"iNNvestigate cannot run {self.analyzer_name} on model "
                                 f"{self.model.name!r}: {msg}; the native methods still work: "
                                 f"{T.NATIVE_METHODS}") from None
            except NotImplementedError as e:        # e.g. capped ReLU(6) layers (iNNvestigate 2.1.2)
                raise _unimplemented(self.analyzer_name, self.model.name, e, caught) from None
            except tf.errors.InvalidArgumentError as e:
                if "must feed a value for placeholder" not in str(e):
                    raise
                raise _unfed_placeholder(self.analyzer_name, self.model.name) from None
        self.build_seconds = time.perf_counter() - t0
        STATS["builds"] += 1
        STATS["build_seconds"] += self.build_seconds
        self.twin.analyzers[key] = analyzer
        return analyzer

    # -- running ---------------------------------------------------------------------------------
    def chunk_size(self):
        per = 1
        if self.analyzer_name == "integrated_gradients":
            per = int(self.params["steps"])
        elif self.analyzer_name == "smoothgrad":
            per = int(self.params["samples"])
        return max(1, self.batch_size // per)

    def explain_batch(self, x, targets):
        with self.twin.scope(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")     # recorded, not shown: _unimplemented reads them
            try:
                maps = self.analyzer.analyze(np.asarray(x, np.float32),
                                             neuron_selection=np.asarray(targets, np.int64))
            except NotImplementedError as e:        # e.g. capped ReLU(6) layers (iNNvestigate 2.1.2)
                raise _unimplemented(self.analyzer_name, self.model.name, e, caught) from None
            except tf.errors.InvalidArgumentError as e:
                if "must feed a value for placeholder" not in str(e):
                    raise
                raise _unfed_placeholder(self.analyzer_name, self.model.name) from None
        return np.asarray(maps, dtype=np.float32).reshape(x.shape)


def _unimplemented(analyzer_name, model_name, err, caught):
    """The one-line ModelError for iNNvestigate's NotImplementedError. iNNvestigate 2.1.2 raises it
    bare after warning about the layers its model checks refuse ("... Check triggered by layers:
    [...]"): the recorded warning ``caught`` names them."""
    said = [str(w.message) for w in caught if "Check triggered by" in str(w.message)]
    where = " ".join((str(err).strip() or (said[-1] if said else "")).split())
    where = re.sub(r"<[\w.]+\.(\w+) object at 0x[0-9a-fA-F]+>", r"\1", where)     # layer reprs: their class
    where = f" ({where})" if where else ""
    return ModelError(f"iNNvestigate cannot run {analyzer_name} on model {model_name!r}: a layer it does not "
                      f"implement{where}; the native lrp.* / deep_taylor* methods still work")


def _unfed_placeholder(analyzer_name, model_name):
    """iNNvestigate built a reverse graph that reads a tensor it never feeds (seen with deep_taylor
    on the study-4 VGG: BatchNormalization after ReLU and in-model standardisation)."""
    return ModelError(f"iNNvestigate's {analyzer_name} cannot analyse model {model_name!r}: its analyzer "
                      "graph reads an input it never feeds; lrp.z / lrp.epsilon may still work, and the "
                      f"native methods do: {T.NATIVE_METHODS}")
