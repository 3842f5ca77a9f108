"""Study 3 (XAINN): three CIFAR-10 architectures that share one convolutional trunk.

Trunk: eight 3x3 'valid' convolutions take the [0, 1] 32x32x3 image to 16x16x10:
Conv 3->60 ReLU BN; Conv 60->60 BN ReLU; Conv 60->180, 180->180, 180->90, 90->90, 90->60, each ReLU
then BN; Conv 60->10 (layer ``class_maps``) then BN (layer ``class_maps_bn``). The trunk output, the
output of ``class_maps_bn``, holds one 16x16 map per class (read it with
:func:`class_maps_model`).

* ``xainn_baseline`` (model 1): trunk, ReLU, Flatten (2,560), Dense 1200 BN ReLU, Dense 600 BN ReLU,
  Dense 10 (``logits``), separate ``softmax``.
* ``xainn_softmax`` (model 2): trunk, softmax over the 10 channels at every pixel
  (``pixel_softmax``), GlobalAveragePooling (``class_probs``): the output is already a probability
  vector (the mean of the per-pixel class distributions) and has no separate softmax to strip.
* ``xainn_poollinear`` (model 3): trunk, per-pixel softmax, AvgPool 2, Flatten (640), Dense 600 BN
  ReLU, Dense 300 BN ReLU, Dense 10 (``logits``), separate ``softmax``.

Study 3 trained each with flips + affine augmentation, batch 64, SGD lr 5e-3, 50 epochs:
test accuracy 83.6% / 63.8% / 79.0%. Its BatchNorm layers were PyTorch's (momentum 0.1, eps 1e-5);
the builders use the same (Keras ``momentum=0.9, epsilon=1e-5``), which also lets short CPU
schedules end with usable moving statistics.
"""
from ..keras_bridge import tfk

XAINN_VARIANTS = ("baseline", "softmax", "poollinear")


def _bn(name, momentum=0.9):
    return tfk.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, name=name)


def xainn_trunk(inp, bn_momentum=0.9):
    """The shared trunk applied to ``inp``; returns the (N, 16, 16, 10) class-map tensor."""
    L = tfk.layers
    h = L.Conv2D(60, 3, activation="relu", name="conv1")(inp)
    h = _bn("bn1", bn_momentum)(h)
    h = L.Conv2D(60, 3, name="conv2")(h)
    h = _bn("bn2", bn_momentum)(h)
    h = L.ReLU(name="relu2")(h)
    for i, width in enumerate((180, 180, 90, 90, 60), start=3):
        h = L.Conv2D(width, 3, activation="relu", name=f"conv{i}")(h)
        h = _bn(f"bn{i}", bn_momentum)(h)
    h = L.Conv2D(10, 3, name="class_maps")(h)
    return _bn("class_maps_bn", bn_momentum)(h)


def _dense_bn_relu(h, units, name, bn_momentum=0.9):
    L = tfk.layers
    h = L.Dense(units, name=name)(h)
    h = _bn(f"{name}_bn", bn_momentum)(h)
    return L.ReLU(name=f"{name}_relu")(h)


def build_xainn(variant="baseline", input_shape=(32, 32, 3), num_classes=10, bn_momentum=0.9):
    """One of the three study-3 models (tf-keras).

    Args:
        variant: "baseline" (model 1), "softmax" (model 2) or "poollinear" (model 3).
        input_shape: (H, W, C) of the [0, 1] input; 32x32 gives 16x16 class maps.
        num_classes: must be 10 for the trunk as published (its last conv has 10 channels); kept as
            an argument so a mismatch fails loudly.
        bn_momentum: Keras momentum of every BatchNormalization (0.9 = PyTorch's 0.1).
    """
    if variant not in XAINN_VARIANTS:
        raise ValueError(f"unknown xainn variant {variant!r}; expected one of {', '.join(XAINN_VARIANTS)}")
    if num_classes != 10:
        raise ValueError("the XAINN trunk produces exactly 10 class maps (num_classes must be 10)")
    L = tfk.layers
    inp = tfk.Input(input_shape, name="image")
    maps = xainn_trunk(inp, bn_momentum)
    if variant == "baseline":
        h = L.ReLU(name="trunk_relu")(maps)
        h = L.Flatten(name="flatten")(h)
        h = _dense_bn_relu(h, 1200, "fc1", bn_momentum)
        h = _dense_bn_relu(h, 600, "fc2", bn_momentum)
        h = L.Dense(num_classes, name="logits")(h)
        out = L.Softmax(name="softmax")(h)
    elif variant == "softmax":
        h = L.Softmax(axis=-1, name="pixel_softmax")(maps)
        out = L.GlobalAveragePooling2D(name="class_probs")(h)
    else:
        h = L.Softmax(axis=-1, name="pixel_softmax")(maps)
        h = L.AveragePooling2D(2, name="pool")(h)
        h = L.Flatten(name="flatten")(h)
        h = _dense_bn_relu(h, 600, "fc1", bn_momentum)
        h = _dense_bn_relu(h, 300, "fc2", bn_momentum)
        h = L.Dense(num_classes, name="logits")(h)
        out = L.Softmax(name="softmax")(h)
    return tfk.Model(inp, out, name=f"xainn_{variant}")


def build_xainn_baseline(**kw):
    """XAINN model 1 (trunk + MLP head); see :func:`build_xainn`."""
    return build_xainn("baseline", **kw)


def build_xainn_softmax(**kw):
    """XAINN model 2 (per-pixel softmax + global average pooling); see :func:`build_xainn`."""
    return build_xainn("softmax", **kw)


def build_xainn_poollinear(**kw):
    """XAINN model 3 (per-pixel softmax, AvgPool 2, MLP head); see :func:`build_xainn`."""
    return build_xainn("poollinear", **kw)


def class_maps_model(model):
    """A model from the input to the trunk's (N, 16, 16, 10) class maps (layer ``class_maps_bn``)."""
    from ..keras_bridge import find_layer, submodel

    return submodel(model, find_layer(model, "class_maps_bn").output)
