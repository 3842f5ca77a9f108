"""Keras 3 models with grouped convolutions, run without Keras's XLA detour.

Keras 3's TensorFlow backend compiles every grouped convolution (a Conv2D with ``groups > 1``:
ConvNeXt's 7x7 depthwise convolutions, the grouped 3x3 convolutions of RegNet- or ResNeXt-style
models) with XLA, on every device. On CPU that is slow: six ConvNeXt-size layers (8 images of
56x56x96) take 1.4 s forward where the same depthwise convolutions take 0.011 s, and ConvNeXtTiny's
whole forward pass takes 5x, its input gradient 6x, the time of the same function written with
TensorFlow's own ops (``python -m bench.grouped_conv``, docs/performance.md). TensorFlow computes
grouped convolutions and their input gradients itself (``tf.nn.depthwise_conv2d`` for one input
channel per group, ``tf.nn.conv2d`` with a kernel of fewer input channels otherwise).

:func:`runner` gives, for such a model, a functional model that computes the same function with
those ops: every grouped Conv2D is replaced by a layer that calls them on that Conv2D's own
variables, and every other layer is the model's own layer, shared. Nothing is copied, so new
weights (``set_weights``, training, a randomisation test) are followed at once. It is checked once
against the model on a probe batch; any difference beyond float32 rounding, or a model it cannot
rebuild, leaves the model itself (slower, never different). Methods call the runner where they
only run the model (gradients, perturbations, surrogates, the metrics' scorer); Grad-CAM finds its
layer in the model and cuts the runner at its :func:`counterpart`; LRP's graph reads grouped
convolutions itself. The modified-gradient clones (:mod:`xaitf.methods._modified_grad`) wrap
their own copies of grouped convolutions with :func:`tf_grouped`.
"""
import functools

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from .keras_bridge import input_shape, keras3, layer_type, model_cache, model_kind, tf_warnings_off

_KEY = "grouped_conv.runner"
TOLERANCE = 1e-5        # relative to the output's scale, as the tf-keras twin's check


def is_grouped_conv(layer):
    """A Keras 3 Conv2D with ``groups > 1`` on channels-last images (what Keras runs through XLA)."""
    if layer_type(layer) != "Conv2D" or not type(layer).__module__.startswith("keras."):
        return False
    return int(getattr(layer, "groups", 1)) > 1 and getattr(layer, "data_format", "channels_last") == "channels_last"


def _has_grouped(model):
    for layer in model.layers:
        if is_grouped_conv(layer) or (hasattr(layer, "layers") and _has_grouped(layer)):
            return True
    return False


@functools.cache
def _layer_class():
    """The Keras 3 layer computing a grouped Conv2D with TensorFlow's ops (defined once, when first
    needed: Keras 3 is imported lazily)."""
    keras = keras3()

    class GroupedConvTF(keras.layers.Layer):
        """``conv``'s function (kernel, bias, activation) by tf.nn ops, on ``conv``'s variables."""

        def __init__(self, conv, **kw):
            super().__init__(name=conv.name, **kw)
            self.conv = conv

        def build(self, input_shape):
            if not self.conv.built:         # a fresh copy (the modified-gradient clones)
                self.conv.build(input_shape)

        def call(self, x):
            c = self.conv
            kernel = tf.convert_to_tensor(c.kernel)
            strides, dilations = tuple(c.strides), tuple(c.dilation_rate)
            padding = c.padding.upper()
            if kernel.shape[2] == 1:        # one input channel per group: depthwise, multiplier m
                kh, kw, _, filters = kernel.shape
                kernel = tf.reshape(kernel, (kh, kw, int(c.groups), filters // int(c.groups)))
                y = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *strides, 1), padding=padding,
                                           dilations=dilations)
            else:                           # groups inferred from the kernel's input depth
                y = tf.nn.conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations)
            if c.use_bias:
                y = tf.nn.bias_add(y, tf.convert_to_tensor(c.bias))
            return c.activation(y)

        def compute_output_shape(self, input_shape):
            return self.conv.compute_output_shape(input_shape)

    return GroupedConvTF


def tf_grouped(conv):
    """A layer computing the grouped Conv2D ``conv`` (kernel, bias, activation as they are when
    called) by TensorFlow's ops on ``conv``'s own variables, under ``conv``'s name."""
    return _layer_class()(conv)


def _rebuilt(model):
    keras = keras3()

    def clone_fn(layer):
        if is_grouped_conv(layer):
            return tf_grouped(layer)
        if hasattr(layer, "layers") and _has_grouped(layer):
            return _rebuilt(layer)
        return layer                    # shared: the same layer, the same variables

    return keras.models.clone_model(model, clone_function=clone_fn)


def runner(model):
    """``model``, or for a Keras 3 model with grouped Conv2D layers the same function without XLA
    (see the module docstring); cached per model."""
    cache = model_cache(model)
    hit = cache.get(_KEY)
    if hit is not None:
        return hit
    out = model
    try:
        if model_kind(model) == "keras3" and _has_grouped(model):
            fast = _rebuilt(model)
            probe = np.random.default_rng(0).uniform(0.0, 1.0, (2, *input_shape(model))).astype(np.float32)
            with tf_warnings_off():     # Keras traces a new XLA function per grouped layer call: "retracing"
                want = np.asarray(model(probe, training=False))
            got = np.asarray(fast(probe, training=False))
            if want.shape == got.shape and np.all(np.abs(got - want) <= TOLERANCE * max(1.0, np.abs(want).max())):
                out = fast
    except Exception:  # noqa: BLE001 - a model the clone cannot rebuild runs as it is
        out = model
    cache[_KEY] = out
    return out


def counterpart(fast, layer):
    """The layer of ``fast`` (a :func:`runner`) that stands for ``layer`` of the model it was made
    from: ``layer`` itself where it is shared, else the layer of the same name that replaced it (a
    grouped convolution's :func:`tf_grouped`, a rebuilt nested model); None if there is none."""
    def walk(model):
        for item in model.layers:
            yield item
            if hasattr(item, "layers"):
                yield from walk(item)

    found = [item for item in walk(fast) if item is layer]
    if found:
        return layer
    named = [item for item in walk(fast) if item.name == layer.name]
    return named[0] if len(named) == 1 else None
