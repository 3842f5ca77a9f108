"""The one place where xaitf touches Keras.

Two Kerases live side by side: tf-keras (Keras 2 API, ``tf.keras`` once xaitf has set
``TF_USE_LEGACY_KERAS=1``), which iNNvestigate, tf-explain and tfp.layers need, and Keras 3
(``import keras``), what most users build with today. Everything else in xaitf asks this module
which kind a model is, loads files through it and builds sub-models through it, so the rest of
the code never calls ``tf.keras``/``keras`` APIs directly.
"""
import json
import os
import zipfile

import xaitf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from .errors import ModelError

tfk = tf.keras  # tf-keras, the Keras 2 API


def keras3():
    """The Keras 3 module (imported on first use)."""
    import keras

    return keras


def model_kind(model):
    """``"tf-keras"`` or ``"keras3"`` for an in-memory model; ModelError for anything else."""
    if isinstance(model, tfk.Model):
        return "tf-keras"
    mod = type(model).__module__
    if mod.startswith("keras") and hasattr(model, "layers"):
        try:
            if isinstance(model, keras3().Model):
                return "keras3"
        except ImportError:  # pragma: no cover
            pass
    raise ModelError(f"expected a Keras model (tf-keras or Keras 3), got {type(model).__name__}")


def kmodule(model_or_kind):
    """The Keras module that built a model (``tf.keras`` or ``keras``)."""
    kind = model_or_kind if isinstance(model_or_kind, str) else model_kind(model_or_kind)
    return tfk if kind == "tf-keras" else keras3()


def file_kind(path):
    """Which Keras wrote a model file: ``"tf-keras"`` or ``"keras3"`` (best effort from metadata)."""
    path = os.fspath(path)
    if zipfile.is_zipfile(path):  # .keras archive
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "metadata.json" in names:
                meta = json.loads(zf.read("metadata.json"))
                ver = str(meta.get("keras_version", ""))
                return "keras3" if ver.startswith("3") else "tf-keras"
        return "keras3"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            ver = f.attrs.get("keras_version", b"")
            ver = ver.decode() if isinstance(ver, bytes) else str(ver)
            return "keras3" if ver.startswith("3") else "tf-keras"
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: not an HDF5 (.h5) or .keras archive ({e})") from None


def load_model(path, *, custom_objects=None, safe_mode=True, kind=None):
    """Load a tf-keras or Keras 3 model file (.h5 or .keras) without compiling it.

    ``safe_mode=True`` refuses to run code stored in the file (Lambda layers); pass
    ``safe_mode=False`` only for files you trust. ``kind`` forces "tf-keras" or "keras3";
    by default the file's own metadata decides, and tf-keras is preferred where it can load
    the file (Keras 3 can read tf-keras files, not the reverse).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"model file not found: {path} (build the zoo with `python create_model.py`)")
    if not path.endswith((".h5", ".hdf5", ".keras")):
        raise ModelError(f"unsupported model file {path}: expected .h5 or .keras")
    if path.endswith((".h5", ".hdf5")):  # zoo models saved as weights + builder (tfp layers)
        from .zoo.registry import load_weights_file

        rebuilt = load_weights_file(path)
        if rebuilt is not None:
            return rebuilt
    kind = kind or file_kind(path)
    errors = []
    order = [kind] + [k for k in ("tf-keras", "keras3") if k != kind]
    for k in order:
        try:
            km = kmodule(k)
            kwargs = {"compile": False, "custom_objects": custom_objects}
            if path.endswith(".keras") or k == "keras3":
                kwargs["safe_mode"] = safe_mode
            return km.models.load_model(path, **kwargs)
        except Exception as e:  # noqa: BLE001 - report both attempts below
            errors.append(f"{k}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ModelError(f"cannot load model {path} with tf-keras or Keras 3 ({'; '.join(errors)})")


def input_shape(model):
    """The model's input shape without the batch axis, e.g. ``(28, 28, 1)``."""
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return tuple(None if d is None else int(d) for d in list(shape)[1:])


def output_units(model):
    return int(model.outputs[0].shape[-1])


def layer_type(layer):
    """Class name of a layer, the same for both Kerases (``"Conv2D"``, ``"Dense"``, ...)."""
    return type(layer).__name__


def activation_name(layer):
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return getattr(act, "__name__", type(act).__name__).lower()


def is_softmax_layer(layer):
    """True for a Softmax layer, an Activation('softmax') or any layer with activation=softmax."""
    return layer_type(layer) == "Softmax" or activation_name(layer) == "softmax"


def find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        names = [l.name for l in model.layers]
        raise ModelError(f"model has no layer {name!r}; layers: {', '.join(names)}") from None


def find_last_conv(model, methods="this method"):
    """The last layer with a 4-D (N,H,W,C) output, searched from the output backwards."""
    for layer in reversed(model.layers):
        if layer_type(layer) in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose"):
            return layer
    raise ModelError(f"{methods} needs a Conv2D layer, and the model has none "
                     "(use grad, ig, occlusion or another model-agnostic method)")


def submodel(model, outputs):
    """A model from the original inputs to ``outputs`` (tensors of the same graph)."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return kmodule(model).Model(inputs, outputs)


_LOGIT_CACHE = {}


def logits_model(model):
    """The model's pre-softmax output as a model, and a note of what was stripped.

    Returns ``(model_or_submodel, note)``. A final softmax activation (on the last layer itself or
    as a separate Softmax/Activation layer) is removed; if there is none the output is used as it
    is and the note says so. Cached per model.
    """
    key = id(model)
    if key in _LOGIT_CACHE and _LOGIT_CACHE[key][0] is model:
        return _LOGIT_CACHE[key][1], _LOGIT_CACHE[key][2]
    if len(model.outputs) != 1:
        raise ModelError(f"expected a model with one output, got {len(model.outputs)}")
    last = model.layers[-1]
    if not is_softmax_layer(last):
        result, note = model, "output used as is (no final softmax found)"
    elif layer_type(last) in ("Softmax", "Activation"):
        result, note = submodel(model, last.input), f"stripped final softmax layer {last.name!r}"
    else:
        cfg = last.get_config()
        cfg["activation"] = "linear"
        cfg["name"] = last.name + "_logits"
        twin = type(last).from_config(cfg)
        out = twin(last.input)
        twin.set_weights(last.get_weights())
        result, note = submodel(model, out), f"replaced softmax activation of {last.name!r} by linear"
    _LOGIT_CACHE[key] = (model, result, note)
    return result, note
