"""Model input preprocessing by name: what a model expects, from images with 0..255 values.

``preprocess(x, name)`` takes float32 images in 0..255 (any shape ending in channels, e.g. (N,H,W,C)
or (H,W,C)) and returns float32 inputs for the model. Names (:data:`PREPROCESS_NAMES`):

* ``scale``: ``x / 255`` (0..1; what the zoo's models and study 1 use; ``heatmap_script.py --scale``
  changes the divisor);
* ``none``: 0..255 unchanged (a model that records its own preprocessing, see
  :func:`model_preprocessing`);
* the keras.applications families (``resnet50``, ``resnet``, ``resnet_v2``, ``vgg16``, ``vgg19``,
  ``mobilenet``, ``mobilenet_v2``, ``mobilenet_v3``, ``efficientnet``, ``efficientnet_v2``,
  ``inception_v3``, ``inception_resnet_v2``, ``densenet``, ``convnext``, ``xception``, ``nasnet``):
  Keras' own ``keras.applications.<family>.preprocess_input`` (RGB input expected);
* the modes ``caffe`` (RGB -> BGR, ImageNet mean subtracted), ``tf`` (-1..1) and ``torch`` (0..1,
  ImageNet mean/std), through ``keras.applications.imagenet_utils.preprocess_input(mode=...)``.

Some families' ``preprocess_input`` is the identity (mobilenet_v3, efficientnet, efficientnet_v2,
convnext): their models rescale inside. Keras is imported only when a Keras function is needed, so
the names can be listed and checked before TensorFlow starts.
"""
import numpy as np

from ..errors import InputError

#: family -> (keras.applications module, what its preprocess_input does, for headers)
FAMILIES = {
    "resnet50": ("resnet50", "caffe: RGB->BGR, ImageNet mean subtracted"),
    "resnet": ("resnet", "caffe: RGB->BGR, ImageNet mean subtracted"),
    "resnet_v2": ("resnet_v2", "tf: x/127.5 - 1"),
    "vgg16": ("vgg16", "caffe: RGB->BGR, ImageNet mean subtracted"),
    "vgg19": ("vgg19", "caffe: RGB->BGR, ImageNet mean subtracted"),
    "mobilenet": ("mobilenet", "tf: x/127.5 - 1"),
    "mobilenet_v2": ("mobilenet_v2", "tf: x/127.5 - 1"),
    "mobilenet_v3": ("mobilenet_v3", "identity: the model rescales inside"),
    "efficientnet": ("efficientnet", "identity: the model rescales inside"),
    "efficientnet_v2": ("efficientnet_v2", "identity: the model rescales inside"),
    "inception_v3": ("inception_v3", "tf: x/127.5 - 1"),
    "inception_resnet_v2": ("inception_resnet_v2", "tf: x/127.5 - 1"),
    "densenet": ("densenet", "torch: x/255, ImageNet mean/std"),
    "convnext": ("convnext", "identity: the model rescales inside"),
    "xception": ("xception", "tf: x/127.5 - 1"),
    "nasnet": ("nasnet", "tf: x/127.5 - 1"),
}
MODES = {"caffe": "RGB->BGR, ImageNet mean subtracted", "tf": "x/127.5 - 1",
         "torch": "x/255, ImageNet mean/std"}
OWN = {"scale": "x/255", "none": "0..255 as is"}

#: every valid name, in the order error messages list them
PREPROCESS_NAMES = tuple(OWN) + tuple(FAMILIES) + tuple(MODES)

#: layer classes that mean "this model preprocesses its own 0..255 input"
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")


def check_name(name):
    """The canonical (lower-case) preprocessing name, or InputError listing the valid ones."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in PREPROCESS_NAMES:
        raise InputError(f"unknown preprocessing {name!r}; valid: {', '.join(PREPROCESS_NAMES)}")
    return key


def describe(name, scale=255.0):
    """A few words on what ``name`` does (figure headers, printed lines)."""
    key = check_name(name)
    if key == "scale":
        return f"scale: x/{scale:g}"
    if key in OWN:
        return f"{key}: {OWN[key]}"
    if key in MODES:
        return f"{key}: {MODES[key]}"
    return f"{key} ({FAMILIES[key][1]})"


def intensity_range(name, channels, scale=255.0):
    """``(low, high)``: the model inputs of a black and a white pixel under preprocessing ``name``
    (PDA's ``value_range``); each a number, or a tuple per channel where channels differ
    (caffe: ``(-mean_BGR, 255 - mean_BGR)``). Values are float32's shortest decimals."""
    ends = []
    for v in (0.0, 255.0):
        e = preprocess(np.full((1, 1, 1, int(channels)), v, np.float32), name, scale=scale).reshape(-1)
        ends.append(float(str(e[0])) if np.all(e == e[0]) else tuple(float(str(c)) for c in e))
    return tuple(ends)


def preprocess(x, name, scale=255.0):
    """Turn images with 0..255 values into model inputs, by preprocessing name.

    Args:
        x: float32 array in 0..255 ending in channels, e.g. (N,H,W,C) or (H,W,C); not modified.
        name: one of :data:`PREPROCESS_NAMES` (case-insensitive).
        scale: divisor of ``"scale"`` (255 gives 0..1).

    Returns:
        float32 array of the same shape.

    Raises:
        InputError: unknown name (one line listing the valid ones), non-numeric or non-finite
            values, or a family/mode that needs 3 channels given another count.
    """
    key = check_name(name)
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"preprocess expects a numeric image array, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float32, copy=True)
    if a.ndim < 3:
        raise InputError(f"preprocess expects images ending in channels (H,W,C) or (N,H,W,C), "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("preprocess: the images contain NaN or infinite values")
    if key == "none":
        return a
    if key == "scale":
        if not scale or not np.isfinite(scale):
            raise InputError(f"preprocess: scale must be a non-zero finite number, got {scale!r}")
        return (a / np.float32(scale)).astype(np.float32)
    if a.shape[-1] != 3:
        raise InputError(f"preprocessing {key!r} expects RGB images (3 channels), got {a.shape[-1]}; "
                         "use 'scale' or 'none' for other channel counts")
    from ..keras_bridge import keras3

    apps = keras3().applications
    if key in MODES:
        out = apps.imagenet_utils.preprocess_input(a, data_format="channels_last", mode=key)
    else:
        out = getattr(apps, FAMILIES[key][0]).preprocess_input(a, data_format="channels_last")
    return np.asarray(out, dtype=np.float32)


def _affine_takes_0_255(scale, shift):
    """Whether ``x * scale + shift`` at a model's input expects 0..255 values: a scale of at most
    0.05 (1/255, 1/127.5) or a shift above 1.5 (caffe's mean subtraction, ~104)."""
    return bool(np.max(np.abs(np.asarray(scale, np.float64))) <= 0.05
                or np.max(np.abs(np.asarray(shift, np.float64))) > 1.5)


def takes_0_255(layer):
    """Whether an input Rescaling / Normalization layer expects 0..255 pixel values rather than
    [0, 1] ones, from its numbers: a Rescaling as an operation ``x * scale + offset``
    (:func:`_affine_takes_0_255`), a Normalization mean or standard deviation above 1.5
    (keras.applications' ConvNeXt: 0.485 * 255; [0, 1] data have mean <= 1 and std <= 0.5).
    Numbers it cannot read: True (0..255)."""
    from ..keras_bridge import layer_type

    try:
        if layer_type(layer) == "Rescaling":
            return _affine_takes_0_255(layer.scale, getattr(layer, "offset", 0.0))
        mean, var = getattr(layer, "mean", None), getattr(layer, "variance", None)
        if mean is None or var is None:
            return True
        mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        return bool(np.max(np.abs(mean)) > 1.5 or np.sqrt(np.max(var)) > 1.5)
    except (TypeError, ValueError, AttributeError):
        return True


# operations that only move values (channel indexing, stacking): caffe's BGR reversal
_LAYOUT_KINDS = ("Gather", "Stack", "Concatenate", "Transpose", "Reshape", "Permute")


def _operation(layer):
    """What an operation written in a model's code computes (keras_bridge.read_operation), or None
    for a layer."""
    from ..keras_bridge import is_operation, read_operation

    return read_operation(layer) if is_operation(layer) else None


def _scalar_operation(op):
    """``{"scale": [...], "shift": [...]}`` of an operation ``x * a + b`` (:func:`_operation`;
    ``preprocess_input`` inside a Keras 3 model, ``x / 127.5 - 1``), else None."""
    if not op or op.get("kind") != "Scalar":
        return None
    return {k: [float(v) for v in np.ravel(op[k])] for k in ("scale", "shift")}


def _short(values):
    return f"{values[0]:.4g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def model_preprocessing(model, depth=4):
    """The preprocessing layer a model records near its input, or None.

    Looks at the first ``depth`` layers after the input layer(s) (nested models entered) for a
    Keras ``Rescaling`` or ``Normalization`` layer, as keras.applications' EfficientNet,
    MobileNetV3 and ConvNeXt have (``include_preprocessing``), or an operation ``x * a + b`` in the
    model's code (a ``preprocess_input`` called inside a Keras 3 model: ``x / 127.5 - 1``, caffe's
    mean subtraction; 0..255 when |a| <= 0.05 or |b| > 1.5). Such a model takes 0..255 pixels:
    it needs the preprocessing ``"none"``, unless the layer's own numbers say it expects [0, 1]
    values (:func:`takes_0_255`: a Rescaling by 2 then -1, a Normalization adapted on x / 255).

    Returns:
        ``"<Class> layer '<name>'"`` of the first one found when it takes 0..255 values, else None.
    """
    from ..keras_bridge import layer_type

    seen = 0
    # Keras 3 lists the operations of a model's code (x / 127.5) in ``operations``, not ``layers``
    for layer in getattr(model, "operations", None) or getattr(model, "layers", []):
        kind = layer_type(layer)
        if kind == "InputLayer":
            continue
        if kind in PREPROCESSING_LAYERS:
            return f"{kind} layer {layer.name!r}" if takes_0_255(layer) else None
        op = _operation(layer)
        if op is not None and op.get("kind") in _LAYOUT_KINDS:
            continue                          # caffe's channel reversal: not counted in ``depth``
        scalar = _scalar_operation(op)
        if scalar is not None:                # x / 127.5 - 1 or a mean subtracted, in the model's code
            if _affine_takes_0_255(scalar["scale"], scalar["shift"]):
                return (f"preprocessing operation {layer.name!r} ({kind}: x * {_short(scalar['scale'])} + "
                        f"{_short(scalar['shift'])})")
            return None
        if hasattr(layer, "layers"):          # a nested model: look inside it first
            found = model_preprocessing(layer, depth - seen)
            if found:
                return found
        seen += 1
        if seen >= depth:
            break
    return None
