"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhyay et al. 2018), native TensorFlow.

Both weight the feature maps ``A_k`` (n,h,w,K) of a convolutional layer by a per-channel weight
from the gradient ``g = d f_c / d A`` of the explained target output (the pre-softmax ``f_c`` by
default, or what ``output=`` says), sum over channels, keep the positive part and upsample
bilinearly to the input size. Maps are (N,H,W), not normalised.

Parameters (preset sections ``GRADCAM`` / ``GRADCAMPP`` of :mod:`xaitf.settings`):
    layer: name of the layer whose output is ``A``, as the user's model names it (the layer whose
        softmax was replaced in the logits copy is found under its twin, see
        :func:`resolve_layer`); it must have a 4-D (N,h,w,K) output. ``None`` = the last
        Conv2D-like layer (``keras_bridge.find_last_conv``). A model without one, an unknown name
        or a layer with another output rank raises ModelError with one line naming the user's
        layers that would do.
"""
import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import ModelError
from ..grouped_conv import counterpart
from ..keras_bridge import find_last_conv, output_in, submodel
from .gradients import INDEX_SPEC, GradientFamily, as_int32, image_spec


def _output_shape(layer):
    """A layer's output shape as a tuple, or None when it has no single output tensor."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def spatial_layers(model):
    """Names of the layers of ``model`` with a 4-D (N,h,w,K) output, input layers excluded."""
    out = []
    for layer in model.layers:
        shape = _output_shape(layer)
        if shape is not None and len(shape) == 4 and type(layer).__name__ != "InputLayer":
            out.append(layer.name)
    return out


def resolve_layer(model, forward, name, method, rank=4):
    """The layer of ``forward`` (the logits copy of ``model``, or ``model`` itself) that the user's
    layer ``name`` of ``model`` is, checked to have a ``rank``-D output.

    Names are the user's: the copy shares every layer with ``model`` except a last layer whose
    softmax was replaced by a linear twin (``<name>_logits``, :func:`keras_bridge.logits_model`),
    which is found under its twin here. An unknown name, or a layer whose output is not 4-D,
    raises ModelError listing the user's layers with a 4-D output.
    """
    choices = spatial_layers(model)
    hint = (f"layers with a 4-D output: {', '.join(choices)}" if choices
            else "the model has no layer with a 4-D output (use grad, ig, occlusion or another "
                 "model-agnostic method)")
    try:
        mine = model.get_layer(name)
    except ValueError:
        raise ModelError(f"{method}: the model has no layer {name!r}; {hint}") from None
    shape = _output_shape(mine)
    if shape is None or len(shape) != rank:
        got = "no single output" if shape is None else f"a {len(shape)}-D output {shape}"
        raise ModelError(f"{method}: layer {name!r} has {got}; {method} needs a convolutional "
                         f"layer with a 4-D (N,h,w,K) output; {hint}")
    if forward is model:
        return mine
    for candidate in (name, f"{name}_logits"):
        try:
            return forward.get_layer(candidate)
        except ValueError:
            continue
    raise ModelError(f"{method}: layer {name!r} is not part of the explained (pre-softmax) model; "
                     f"{hint}")


class GradCam(GradientFamily):
    """Grad-CAM (Selvaraju et al. 2017): ``L = relu(sum_k alpha_k A_k)``, ``alpha_k = mean_ij
    d f_c / d A_ij^k``, upsampled bilinearly to the input size.

    Args:
        model: tf-keras or Keras 3 image classifier with a convolutional layer.
        layer: name of the layer whose (N,h,w,K) output is ``A``, as the user's model names it;
            None = the last Conv2D-like layer (None). See the module docstring.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "gradcam"     # the settings preset section (command lines and studies)
    title_name = "Grad-CAM"

    def __init__(self, model, *, layer=None, **common):
        super().__init__(model, params=dict(layer=layer), **common)

    def setup(self):
        name = self.params["layer"]
        if name is None:
            layer = find_last_conv(self.forward, self.title_name)
        else:
            layer = resolve_layer(self.model, self.forward, name, self.title_name)
        out = output_in(self.forward, layer)
        if len(out.shape) != 4:
            raise ModelError(f"{self.title_name} needs a layer with (N,h,w,K) output; {layer.name!r} "
                             f"gives {tuple(out.shape)} (name a Conv2D layer with layer=...)")
        self.layer = layer
        model = self.forward
        if self.runner is not self.forward:     # the same function without Keras's XLA detour
            same = counterpart(self.runner, layer)
            if same is not None:
                model, out = self.runner, output_in(self.runner, same)
        sub = submodel(model, [out, model.outputs[0]])
        weigh, select = self.channel_weights, self.select

        def build():
            @tf.function(input_signature=[image_spec(self.shape), INDEX_SPEC], autograph=False)
            def fn(x, t):
                with tf.GradientTape() as tape:
                    acts, outputs = sub(x, training=False)
                    total = tf.reduce_sum(select(outputs, t))
                grads = tf.cast(tape.gradient(total, acts), acts.dtype)
                w = weigh(acts, grads)                                   # (n, 1, 1, K)
                cam = tf.nn.relu(tf.reduce_sum(w * acts, axis=-1, keepdims=True))
                cam = tf.image.resize(tf.cast(cam, tf.float32), tf.shape(x)[1:3], method="bilinear")
                return cam[..., 0]

            return fn

        self._fn = self._compiled(model, f"{self.key}:{layer.name}", build)

    @staticmethod
    def channel_weights(acts, grads):
        return tf.reduce_mean(grads, axis=[1, 2], keepdims=True)

    def explain_batch(self, x, targets):
        return self._fn(tf.constant(x), as_int32(targets))


class GradCamPlusPlus(GradCam):
    """Grad-CAM++: ``alpha_k = sum_ij a_ij^k relu(g_ij^k)`` with
    ``a_ij^k = g^2 / (2 g^2 + sum_ab A_ab^k g^3)`` (0 where the denominator is 0).

    This is the closed form for an exponential output ``Y = exp(f_c)``; the positive factor
    ``exp(f_c)`` is common to all channels and dropped (it scales the map only)
    (Chattopadhyay et al. 2018).

    Args:
        model: tf-keras or Keras 3 image classifier with a convolutional layer.
        layer: name of the layer whose (N,h,w,K) output is ``A``; None = the last Conv2D-like
            layer (None). See :class:`GradCam`.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "gradcampp"     # the settings preset section (command lines and studies)
    title_name = "Grad-CAM++"

    @staticmethod
    def channel_weights(acts, grads):
        g2 = tf.square(grads)
        g3 = g2 * grads
        denom = 2.0 * g2 + tf.reduce_sum(acts, axis=[1, 2], keepdims=True) * g3
        safe = tf.where(denom != 0, denom, tf.ones_like(denom))
        alpha = tf.where(denom != 0, g2 / safe, tf.zeros_like(denom))
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=[1, 2], keepdims=True)
