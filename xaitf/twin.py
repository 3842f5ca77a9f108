"""A tf-keras "twin" of any Keras model, for the backends that only speak tf-keras.

iNNvestigate 2.1.2 and tf-explain 0.3.1 handle tf-keras (Keras 2 API) models only, and iNNvestigate
only in graph mode. Users bring Keras 3 models (``import keras``, ``.keras`` files that tf-keras
cannot read) and models with float64 layers (:func:`xaitf.zoo.build_center_pixel`, on which
iNNvestigate fails). This module rebuilds such a model layer by layer as a float32 tf-keras model
with the same weights:

* :func:`tf_keras_twin` gives the eager twin (tf-explain). A float32 tf-keras model is its own twin.
* :func:`graph_twin` gives the same rebuilt inside a private ``tf.Graph`` with its own session
  (iNNvestigate), with the final softmax split off (``GraphTwin.logits``); eager execution stays on
  everywhere else.

The rebuild walks the source's graph of layer calls (functional or Sequential, tf-keras or Keras 3,
nested models inlined, shared layers kept shared) and supports the common image-classifier layers
listed in :data:`SUPPORTED`. Every twin is checked once on a seeded probe batch: its pre-softmax
outputs (and, for all-float32 sources, its outputs) must agree with the source's within 1e-5 of the
output scale, else :class:`~xaitf.errors.ModelError`. Twins are cached per source model (a second
method on the same model costs nothing); they copy the weights once, so call :func:`clear_twins`
after changing a model's weights.
"""
import contextlib
import time
import warnings
import weakref

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from .compat import (inbound_node, keras_history, node_inputs, node_outputs, swap_tf_keras_bases,
                     tf_keras_should_use_v2)
from .errors import ModelError
from .keras_bridge import (ATTENTION_CALLS, AUGMENTATION_NOTE, HEADS, INFERENCE_IDENTITY, OPERATIONS_READ,
                           attention_call, input_shape, is_augmentation, is_keras_layer, is_operation, keras3,
                           layer_type, leaf_layers, logits_model, model_cache, model_kind, named_activation,
                           output_head, read_operation, scaled_add, tfk)

# Config keys copied for each supported layer type (the same names in both Kerases; dtype policies,
# initializers, regularizers and constraints are not carried over: the twin is for inference).
SUPPORTED = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
               "groups", "activation", "use_bias"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "depth_multiplier", "data_format",
                        "dilation_rate", "activation", "use_bias"),
    "SeparableConv2D": ("filters", "kernel_size", "strides", "padding", "depth_multiplier", "data_format",
                        "dilation_rate", "activation", "use_bias"),
    "Dense": ("units", "activation", "use_bias"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "AveragePooling2D": ("pool_size", "strides", "padding", "data_format"),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "GlobalMaxPooling2D": ("data_format", "keepdims"),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
    "Dropout": ("rate", "noise_shape", "seed"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Softmax": ("axis",),
    "Rescaling": ("scale", "offset"),
    "Normalization": ("axis",),            # mean and variance: constants of the twin (_layer_config)
    "LayerNormalization": ("axis", "epsilon", "center", "scale"),
    "GroupNormalization": ("groups", "axis", "epsilon", "center", "scale"),
    "LayerScale": (),                      # ConvNeXt's x * gamma: a Rescaling of the twin (_layer_config)
    "CustomScaleLayer": (),                # Inception-ResNet-v2 (Keras 3): x + r * scale, a Rescaling and an Add
    "Add": (),
    "Subtract": (),
    "Multiply": (),
    "Average": (),
    "Maximum": (),
    "Minimum": (),
    "Concatenate": ("axis",),
    "ZeroPadding2D": ("padding", "data_format"),
    "PReLU": ("shared_axes",),
    "LeakyReLU": (),                       # the slope: tf-keras's alpha, Keras 3's negative_slope (_layer_config)
    "ELU": ("alpha",),
    "ThresholdedReLU": ("theta",),         # tf-keras
    "Permute": ("dims",),
    "Resizing": ("height", "width", "interpolation", "crop_to_aspect_ratio"),
    "Cropping2D": ("cropping", "data_format"),
    "UpSampling2D": ("size", "data_format", "interpolation"),
    "UnitNormalization": ("axis",),
    "GlobalAveragePooling1D": ("data_format", "keepdims"),
    "GlobalMaxPooling1D": ("data_format", "keepdims"),
    # called with its query, value and key as the source was (_rebuild; keras_bridge.attention_call)
    "MultiHeadAttention": ("num_heads", "key_dim", "value_dim", "dropout", "use_bias", "output_shape",
                           "attention_axes"),
}
_MULTI_INPUT = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
NATIVE_METHODS = ("grad, ig, sg, gb, deconvnet, inpgrad, deeplift, gradcam, gradcampp, lrp.*, deep_taylor*, "
                  "occlusion, rise, shapley, pda, mp, lime, kernelshap, shap.lib, shap.partition")
TWIN_BACKENDS = "iNNvestigate (inn.*), tf-explain (tfx.*) and shap's TF explainers (shap.gradient, shap.deep)"
TOLERANCE = 1e-5
_GRAPH_SUFFIX = "__xt"  # graph-twin layer names: never equal to names iNNvestigate generates

# Twins live in each model's own cache (keras_bridge.model_cache): freed with the model. The
# weak set only lets clear_twins() find every model that has one.
_EAGER_KEY, _GRAPH_KEY = "twin.eager", "twin.graph"
_TWINNED = weakref.WeakSet()


def clear_twins(model=None):
    """Forget the cached twins of ``model`` (all models when None), e.g. after new weights."""
    for m in (list(_TWINNED) if model is None else [model]):
        cache = model_cache(m)
        cache.pop(_EAGER_KEY, None)
        twin = cache.pop(_GRAPH_KEY, None)
        if twin is not None:
            twin.close()
        _TWINNED.discard(m)


def _cached_twin(model, key):
    """The cached twin, unless the model's weights changed since it was copied (then none)."""
    from .keras_bridge import weights_fingerprint

    hit = model_cache(model).get(key)
    if hit is not None and model_cache(model).get(key + ".weights") != weights_fingerprint(model):
        clear_twins(model)
        return None
    return hit


def _remember_twin(model, key, twin):
    from .keras_bridge import weights_fingerprint

    model_cache(model)[key] = twin
    model_cache(model)[key + ".weights"] = weights_fingerprint(model)
    _TWINNED.add(model)


# -- inspecting the source ---------------------------------------------------------------------
def _is_model(layer):
    if isinstance(layer, tfk.Model):
        return True
    try:
        return model_kind(layer) == "keras3"
    except ModelError:
        return False


def _unsupported(layer, why=""):
    extra = f" ({why})" if why else ""
    return ModelError(
        f"cannot rebuild layer {layer.name!r} (type {layer_type(layer)}){extra} as a tf-keras layer, "
        f"so the {TWIN_BACKENDS} cannot run on this model; supported layers: {', '.join(SUPPORTED)}, "
        f"{', '.join(k for k in INFERENCE_IDENTITY if k not in SUPPORTED)}, {AUGMENTATION_NOTE}; "
        f"the native methods still work: {NATIVE_METHODS}")


# Keras 3 built-in activations that tf-keras defines differently under the same name (Keras 3's
# hard_sigmoid is relu6(x + 3) / 6, tf-keras's clip(0.2 x + 0.5, 0, 1))
_REDEFINED_ACTIVATIONS = ("hard_sigmoid",)


def _keras3_activation(name):
    """Keras 3's built-in activation ``name`` as a function of TF tensors, for a tf-keras
    Activation layer of the twin (which lives in memory only and is never saved)."""
    return named_activation(keras3().activations.get(name), name)


def _activation(layer, value):
    """A built-in activation name usable by tf-keras, or Keras 3's own function where tf-keras
    lacks the name (hard_silu, MobileNetV3's hard swish) or defines it differently (hard_sigmoid);
    else ModelError."""
    if value is None:
        return "linear"
    if isinstance(value, dict):  # Keras 3 serialises custom functions as dicts
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            raise _unsupported(layer, "custom activation")
    name = value if isinstance(value, str) else getattr(value, "__name__", None)
    if not name:
        raise _unsupported(layer, f"activation {value!r}")
    keras3_layer = type(layer).__module__.startswith("keras.")
    try:
        tfk.activations.get(name)
        known = True
    except (ValueError, TypeError):
        known = False
    if keras3_layer and (not known or name in _REDEFINED_ACTIVATIONS):
        try:
            return _keras3_activation(name)
        except (ValueError, TypeError):
            pass
    if not known:
        raise _unsupported(layer, f"activation {name!r} unknown to tf-keras") from None
    return name


def _layer_config(layer, weights=None):
    """The tf-keras layer type and constructor arguments of a supported layer, else ModelError.
    ``weights``: :func:`_source_weights` read beforehand (a graph twin is built where variables
    cannot be read); ConvNeXt's LayerScale becomes a Rescaling by its weights.
    A Keras 3 operation of the model's code (``x + 3.0``, ``x * y``) becomes a Rescaling (``x * a
    + b``), an Add or a Multiply layer (:func:`keras_bridge.read_operation`)."""
    kind = layer_type(layer)
    if is_operation(layer):
        read = read_operation(layer)
        if read is None:
            raise _unsupported(layer, f"an operation written in the model's code; the twin reads {OPERATIONS_READ}")
        if read["kind"] == "Scalar":
            return "Rescaling", {"scale": read["scale"], "offset": read["shift"]}
        if read["kind"] in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            return read["kind"], {"keepdims": read["keepdims"]}
        if read["kind"] in ("Concatenate", "Permute", "Reshape"):
            return read["kind"], {k: v for k, v in read.items() if k != "kind"}
        if read["kind"] == "ReLU":
            return "ReLU", {k: read[k] for k in ("negative_slope", "threshold", "max_value")}
        if read["kind"] == "Activation":      # Keras's activation of the name, or the operation's own function
            return "Activation", {"activation": _activation(layer, read["activation"]) if read["exact"]
                                  else named_activation(read["fn"], read["activation"])}
        if read["kind"] in ("ExtractPatches", "Constant"):     # native LRP reads them; the twin does not
            raise _unsupported(layer, f"the twin reads {OPERATIONS_READ}")
        if read["kind"] not in ("Add", "Multiply", "Subtract", "Maximum", "Minimum"):   # channel indexing
            raise _unsupported(layer, f"channel indexing written in the model's code, as keras.applications' "
                                      f"caffe-style preprocess_input does: apply it to the images before the "
                                      f"model; the twin reads {OPERATIONS_READ}")
        return read["kind"], {}
    if kind == "CustomScaleLayer":      # Inception-ResNet-v2's x + r * scale: two twin layers (_rebuild)
        scale = scaled_add(layer)
        if scale is None:
            raise _unsupported(layer, "only keras.applications' InceptionResNetV2 layer")
        return kind, {"scale": scale}
    if is_augmentation(layer) or (kind in INFERENCE_IDENTITY and kind != "Dropout" and is_keras_layer(layer)):
        return "Activation", {"activation": "linear"}    # RandomFlip, GaussianNoise, ...: the identity at inference
    if kind not in SUPPORTED or not is_keras_layer(layer):
        raise _unsupported(layer)
    cfg = layer.get_config()
    if cfg.get("lora_rank") or cfg.get("quantization_config") or cfg.get("quantization_mode"):
        raise _unsupported(layer, "LoRA or quantized weights")
    if cfg.get("renorm"):
        raise _unsupported(layer, "batch renormalization")
    if kind == "ReLU" and not cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") is None:
        # max(x, 0) itself: iNNvestigate's LRP analyzers and its Deconvnet do not implement ReLU layers
        return "Activation", {"activation": "relu"}
    out = {k: cfg[k] for k in SUPPORTED[kind] if k in cfg}
    if kind == "Resizing" and (cfg.get("pad_to_aspect_ratio") or cfg.get("antialias")):
        raise _unsupported(layer, "pad_to_aspect_ratio or antialias")
    if kind == "LayerNormalization" and cfg.get("rms_scaling"):
        raise _unsupported(layer, "rms_scaling=True")
    if kind == "MultiHeadAttention":
        if attention_call(layer) is None:
            raise _unsupported(layer, f"a call outside what the twin rebuilds: {ATTENTION_CALLS}")
        if out.get("attention_axes") is not None:
            out["attention_axes"] = tuple(np.atleast_1d(out["attention_axes"]).tolist())
    if kind == "LayerScale":
        ws = weights[id(layer)][1] if weights is not None else layer.get_weights()
        if len(ws) != 1 or np.ndim(ws[0]) != 1:
            raise _unsupported(layer, "not one per-channel scale")
        return "Rescaling", {"scale": np.asarray(ws[0], np.float64).tolist(), "offset": 0.0}
    if kind == "LeakyReLU":
        return kind, {"alpha": float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))}
    if kind == "Normalization":
        axis = out.get("axis", -1)
        if cfg.get("invert") or tuple(np.atleast_1d(axis)) not in ((-1,), (3,)):
            raise _unsupported(layer, "invert=True or an axis other than the channels")
        out = {"axis": -1, "mean": np.asarray(layer.mean, np.float64).reshape(-1).tolist(),
               "variance": np.asarray(layer.variance, np.float64).reshape(-1).tolist()}
    if kind == "Conv2D" and int(out.get("groups", 1)) != 1 and tuple(layer.kernel.shape)[2] == 1:
        # one input channel per group (ConvNeXt): a DepthwiseConv2D, whose gradient also builds in
        # graph mode (a grouped Conv2D's does not); _copy_weights reshapes the kernel
        keep = ("kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation", "use_bias")
        kind, out = "DepthwiseConv2D", dict({k: out[k] for k in keep if k in out},
                                            depth_multiplier=int(cfg["filters"]) // int(out["groups"]))
    if "activation" in out:
        out["activation"] = _activation(layer, out["activation"])
    for k in ("kernel_size", "strides", "pool_size", "dilation_rate", "target_shape", "noise_shape", "size"):
        if isinstance(out.get(k), list):
            out[k] = tuple(out[k])
    for k in ("padding", "cropping"):  # ZeroPadding2D / Cropping2D ((t, b), (l, r))
        if isinstance(out.get(k), list):
            out[k] = tuple(tuple(p) if isinstance(p, list) else p for p in out[k])
    return kind, out


def _history(tensor):
    hist = keras_history(tensor)
    if hist is None:
        raise ModelError(f"cannot trace tensor {tensor!r} back to a layer: is the model built?")
    return hist


def _source_io(model):
    ins, outs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not ins or not outs:
        raise ModelError(f"model {getattr(model, 'name', '?')!r} is not built: call it on data or give it "
                         "an Input before explaining it")
    return list(ins), list(outs)


def walk_layer_calls(model, visit):
    """Visit every layer call (layer, node, inputs) needed for the model's outputs, inputs first.

    Nested models are entered (their inputs bound to the outer call's inputs). ``visit`` returns
    the output tensors of the call; the walk returns the model's outputs as visit produced them.
    """
    def run(sub, bound):  # bound: id(source tensor) -> value
        ins, outs = _source_io(sub)
        done = dict(bound)
        stack = [(t, False) for t in outs]
        while stack:
            t, ready = stack.pop()
            if id(t) in done:
                continue
            layer, node_index, tensor_index = _history(t)
            node = inbound_node(layer, node_index)
            srcs = node_inputs(node)
            if not ready:
                stack.append((t, True))
                stack.extend((s, False) for s in srcs if id(s) not in done)
                continue
            if layer_type(layer) == "InputLayer" or not srcs:
                raise ModelError(f"tensor {t!r} comes from input {layer.name!r}, which is not an input of "
                                 f"model {sub.name!r}")
            args = [done[id(s)] for s in srcs]
            if _is_model(layer):
                inner_ins, _ = _source_io(layer)
                if len(inner_ins) != len(args):
                    raise ModelError(f"nested model {layer.name!r} takes {len(inner_ins)} inputs, got {len(args)}")
                results = run(layer, {id(i): a for i, a in zip(inner_ins, args)})
            else:
                results = visit(layer, args)
            for o, r in zip(node_outputs(node), results):
                done[id(o)] = r
        return [done[id(t)] for t in outs]

    ins, _ = _source_io(model)
    return run(model, {id(t): ("input", i, t) for i, t in enumerate(ins)})


def check_layers(model):
    """Raise ModelError naming the first layer the twin cannot rebuild (cheap: builds nothing).

    Also returns the list of (layer, type) the model uses, in call order.
    """
    model_kind(model)
    seen = []

    def visit(layer, args):
        if not any(layer is l for l, _ in seen):
            kind, _ = _layer_config(layer)
            seen.append((layer, kind))
        return [None] * 8

    walk_layer_calls(model, visit)
    if len(_source_io(model)[1]) != 1:
        raise ModelError(f"expected a model with one output, got {len(model.outputs)}")
    return seen


def _all_float32(model):
    """True when every layer (nested models included) stores and computes in float32."""
    return all(str(getattr(l, "dtype", "float32")) == "float32"
               and str(getattr(l, "compute_dtype", "float32")) == "float32" for l in leaf_layers(model))


# -- rebuilding --------------------------------------------------------------------------------
def _rebuild(model, dtype, *, suffix="", split_softmax=False, weights=None):
    """Rebuild ``model`` with tf-keras layers in the current graph/eager context.

    Returns ``(twin, twins, names, logits)``: the tf-keras model, ``id(source layer) -> twin
    layer``, ``twin layer name -> source layer name`` and, with ``split_softmax``, the pre-softmax
    tensor (None when the model ends without a softmax or sigmoid). With ``split_softmax`` a final
    softmax or sigmoid activation inside a Conv2D/Dense layer is rebuilt as a linear layer followed
    by a separate activation layer, so that the logit tensor exists.
    """
    ins, outs = _source_io(model)
    out_layer = _history(outs[0])[0]
    twins = {}       # id(source layer) -> twin layer
    names = {}       # twin name -> source name
    used = set()
    state = {"logits": None}

    def unique(name):
        base, k = name + suffix, 1
        while base in used:
            base, k = f"{name}_{k}{suffix}", k + 1
        used.add(base)
        return base

    twin_inputs = []
    for i, t in enumerate(ins):
        shape = tuple(t.shape)[1:]
        src_name = _history(t)[0].name
        # graph twins get a fixed, unusual name: iNNvestigate's integrated_gradients adds an
        # auto-named Input ("input_1") of its own, and two layers of one name break its model
        name = unique(f"xaitf_input_{i}") if suffix else unique(src_name)
        names[name] = src_name
        twin_inputs.append(tfk.Input(shape=shape, dtype=dtype, name=name))

    def visit(layer, args):
        kind, cfg = _layer_config(layer, weights)
        key = id(layer)
        if kind == "CustomScaleLayer":      # x + r * scale: a Rescaling of r, then an Add
            if len(args) != 2:
                raise _unsupported(layer, f"called on {len(args)} tensors")
            scaled, add = unique(f"{layer.name}_scale"), unique(layer.name)
            names[scaled] = names[add] = layer.name
            r = tfk.layers.Rescaling(cfg["scale"], name=scaled, dtype=dtype)(args[1])
            return [tfk.layers.Add(name=add, dtype=dtype)([args[0], r])]
        head = cfg.get("activation") if cfg.get("activation") in HEADS else None
        split = split_softmax and layer is out_layer and kind in ("Conv2D", "Dense") and head
        if key not in twins:
            if split:
                cfg = dict(cfg, activation="linear")
            name = unique(layer.name)
            names[name] = layer.name
            twins[key] = getattr(tfk.layers, kind)(name=name, dtype=dtype, **cfg)
        tw = twins[key]
        if kind == "MultiHeadAttention":       # the source call's roles, by position
            (query, value, key_), causal = attention_call(layer)
            return [tw(args[query], args[value], args[key_], use_causal_mask=causal)]
        x = args if kind in _MULTI_INPUT else args[0]
        if kind not in _MULTI_INPUT and len(args) != 1:
            raise _unsupported(layer, f"called on {len(args)} tensors")
        y = tw(x)
        if split:
            state["logits"] = y
            sm = unique(f"{layer.name}_{head}")
            names[sm] = layer.name
            y = tfk.layers.Activation(head, name=sm, dtype=dtype)(y)
        elif layer is out_layer and split_softmax and (kind == "Softmax" or (
                kind == "Activation" and head)):
            state["logits"] = x
        return [y]

    def visit_bound(layer, args):
        args = [twin_inputs[a[1]] if isinstance(a, tuple) and a and a[0] == "input" else a for a in args]
        return visit(layer, args)

    out = walk_layer_calls(model, visit_bound)
    if isinstance(out[0], tuple):  # the model is its input (no layer)
        raise ModelError(f"model {model.name!r} has no layers to explain")
    twin = tfk.Model(twin_inputs[0] if len(twin_inputs) == 1 else twin_inputs, out[0],
                     name=f"{model.name}_twin")
    return twin, twins, names, state["logits"]


def _source_weights(model):
    """id(layer) -> (layer, numpy weights) for every layer, nested models included (read eagerly)."""
    return {id(l): (l, [np.asarray(w) for w in l.get_weights()]) for l in leaf_layers(model)}


def _copy_weights(weights, twins):
    """Copy every source layer's weights (cast to the twin's dtype) into its twin layer."""
    for key, tw in twins.items():
        if key not in weights:      # a Keras 3 operation (x + 3.0): no weights
            continue
        src, ws = weights[key]
        if ws and layer_type(src) not in ("Normalization", "LayerScale"):   # their weights are the twin's constants
            want = tw.get_weights()
            if layer_type(src) == "Conv2D" and layer_type(tw) == "DepthwiseConv2D":   # groups: see _layer_config
                ws = [ws[0].reshape(want[0].shape)] + ws[1:]
            if len(ws) != len(want) or any(a.shape != b.shape for a, b in zip(ws, want)):
                raise _unsupported(src, f"weights {[w.shape for w in ws]} do not fit the tf-keras layer "
                                        f"{[w.shape for w in want]}")
            tw.set_weights([np.asarray(w, dtype=b.dtype) for w, b in zip(ws, want)])


def probe_batch(model, n=4, seed=0):
    """The seeded probe inputs: U(0,1) images of the model's input shape (None dims -> 32)."""
    shape = tuple(32 if d is None else d for d in input_shape(model))
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n,) + shape).astype(np.float32)


def _agree(ref, got, what, model):
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    if ref.shape != got.shape or not np.isfinite(err) or err > TOLERANCE * max(scale, 1e-12):
        raise ModelError(
            f"the tf-keras twin of model {model.name!r} does not reproduce its {what}: max difference "
            f"{err:.3g} at output scale {scale:.3g} (tolerance {TOLERANCE:g} relative); a layer's "
            f"config did not carry over; the native methods still work: {NATIVE_METHODS}")


def _source_outputs(model, x):
    logits_m, _ = logits_model(model)
    logits = np.asarray(logits_m(tf.constant(x), training=False))
    full = np.asarray(model(tf.constant(x), training=False)) if _all_float32(model) else None
    return logits, full


def require_tf_keras():
    """Raise one line where ``tf.keras`` is Keras 3 in this process (TensorFlow or Keras 3 imported
    before xaitf without ``TF_USE_LEGACY_KERAS=1``): the twin backends build tf-keras models through
    ``tf.keras`` and fail deep inside their own code otherwise."""
    if not tf.keras.Model.__module__.startswith("tf_keras"):
        raise ModelError(
            f"tf.keras is Keras 3 in this process (TensorFlow or keras was imported before xaitf without "
            f"TF_USE_LEGACY_KERAS=1), so the {TWIN_BACKENDS} cannot run: import xaitf first, or set "
            f"TF_USE_LEGACY_KERAS=1 before Python starts; the native methods still work: {NATIVE_METHODS}")


def tf_keras_twin(model, *, dtype="float32"):
    """An equivalent eager tf-keras model of ``model`` (tf-keras or Keras 3), weights copied.

    Args:
        model: a built functional or Sequential model of the layers in :data:`SUPPORTED`.
        dtype: dtype of every twin layer; float64 layers of the source become float32.

    Returns:
        A tf-keras ``Model`` with the source's layer names; the model itself when it is already an
        all-float32 tf-keras model without nested models. Raises ModelError naming an unsupported
        layer, or when the twin does not reproduce the source (checked once on
        :func:`probe_batch`). Cached per model.
    """
    require_tf_keras()
    hit = _cached_twin(model, _EAGER_KEY)
    if hit is not None:
        return hit
    kind = model_kind(model)
    flat = len(leaf_layers(model)) == len(model.layers)      # nested models are rebuilt flat for tf-explain
    if kind == "tf-keras" and dtype == "float32" and _all_float32(model) and flat:
        twin = model  # any layer will do: nothing is rebuilt
    else:
        check_layers(model)
        twin, twins, _, _ = _rebuild(model, dtype)
        _copy_weights(_source_weights(model), twins)
        x = probe_batch(model)
        logits, full = _source_outputs(model, x)
        _agree(logits, logits_model(twin)[0](tf.constant(x), training=False), "pre-softmax output", model)
        if full is not None:
            _agree(full, twin(tf.constant(x), training=False), "output", model)
    _remember_twin(model, _EAGER_KEY, twin)
    return twin


class GraphTwin:
    """A tf-keras twin of a model living in a private ``tf.Graph`` with its own session.

    Attributes:
        graph, session: the private graph and the session that holds the twin's variables.
        model: the twin (full output); ``logits``: the twin up to the final softmax (the model
            itself when there is none); ``note`` says what was stripped.
        names: twin layer name -> source layer name (for error messages).
        analyzers: a cache that :mod:`xaitf.methods.propagation` keeps its built analyzers in.
        build_seconds: time spent rebuilding and checking.

    Run anything touching ``model``/``logits`` inside ``with twin.scope():``.
    """

    def __init__(self, source, dtype="float32"):
        t0 = time.perf_counter()
        self.source_name = source.name
        weights = _source_weights(source)
        self.graph = tf.Graph()
        # a graph-level seed: with op determinism on (create_model.py turns it on), unseeded random
        # ops such as a Dropout layer's inference-unused branch refuse to be built otherwise
        self.graph.seed = 0
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.scope():
            full, twins, self.names, logits_t = _rebuild(source, dtype, suffix=_GRAPH_SUFFIX,
                                                         split_softmax=True, weights=weights)
            self.model = full
            if logits_t is None:
                self.logits, self.note = full, "output used as is (no final softmax or sigmoid found)"
            else:
                self.logits = tfk.Model(full.inputs, logits_t, name=full.name + "_logits")
                self.note = f"final {output_head(source) or 'softmax'} stripped"
            _copy_weights(weights, twins)
        self.analyzers = {}
        x = probe_batch(source)
        logits, out = _source_outputs(source, x)
        _agree(logits, self.predict(x, logits=True), "pre-softmax output", source)
        if out is not None:
            _agree(out, self.predict(x, logits=False), "output", source)
        self.build_seconds = time.perf_counter() - t0

    def scope(self):
        """Context manager: the private graph and session as defaults."""
        return _Scope(self)

    def predict(self, x, logits=True):
        with self.scope(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf-keras v1: "Model.state_updates will be removed"
            m = self.logits if logits else self.model
            return np.asarray(m.predict_on_batch(np.asarray(x, np.float32)))

    def close(self):
        """Free the session (the twin and its analyzers are unusable afterwards)."""
        self.analyzers.clear()
        self.session.close()

    def source_layer_name(self, twin_name):
        return self.names.get(twin_name, twin_name.replace(_GRAPH_SUFFIX, ""))


# -- graph mode next to eager mode -------------------------------------------------------------
# tf-keras picks a layer's base class (v2 eager ``Layer``/``Model`` or v1 graph ones) when a layer is
# constructed, by rewriting the ``__bases__`` of the layer's class in place
# (``tf_keras.src.utils.version_utils.swap_class``; xaitf's copy is
# :func:`xaitf.compat.swap_tf_keras_bases`). Building a twin in a private graph therefore
# turns Conv2D, Dense, Functional, ... into v1 classes for every existing instance, eager models
# included ("Your Layer or Model is in an invalid state"), and building an eager layer afterwards
# breaks the graph models the other way round. Every private-graph scope switches all tf-keras
# layer classes to v1 on entry and back to v2 on exit (about 10 ms when anything changes), so
# eager code never sees a v1 class and graph code never sees a v2 one.
_DEPTH = [0]


class _Scope:
    def __init__(self, twin):
        self.twin = twin
        self._stack = None

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.twin.graph.as_default())
        self._stack.enter_context(self.twin.session.as_default())
        if _DEPTH[0] == 0:
            swap_tf_keras_bases(use_v2=False)
        _DEPTH[0] += 1
        return self.twin

    def __exit__(self, *exc):
        _DEPTH[0] -= 1
        self._stack.close()
        if _DEPTH[0] == 0:  # back to whatever the surrounding code runs (eager, normally)
            swap_tf_keras_bases(use_v2=tf_keras_should_use_v2())
        return False


def graph_twin(model, *, dtype="float32"):
    """The :class:`GraphTwin` of ``model`` (tf-keras or Keras 3), built once per model.

    Raises ModelError naming an unsupported layer before building anything, or when the twin does
    not reproduce the source's outputs on :func:`probe_batch`.
    """
    require_tf_keras()
    hit = _cached_twin(model, _GRAPH_KEY)
    if hit is not None:
        return hit
    check_layers(model)
    twin = GraphTwin(model, dtype=dtype)
    _remember_twin(model, _GRAPH_KEY, twin)
    return twin
