"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhyay et al. 2018), native TensorFlow.

Both weight the feature maps ``A_k`` (n,h,w,K) of a convolutional layer by a per-channel weight
from the gradient ``g = d f_c / d A`` of the explained target output (the pre-softmax ``f_c`` by
default, or what ``output=`` says), sum over channels, keep the positive part and upsample
bilinearly to the input size. Maps are (N,H,W), not normalised.

Parameters (preset sections ``GRADCAM`` / ``GRADCAMPP`` of :mod:`xaitf.settings`):
    layer: name of the layer whose output is ``A``, as the user's model names it (also a layer of
        a model nested in it, at any depth: :func:`xaitf.keras_bridge.tapped`; the layer whose
        softmax was replaced in the logits copy is found under its twin, see
        :func:`resolve_layer`); it must have a 4-D (N,h,w,K) output, or a 3-D (N,T,K) output of
        tokens on a grid (a vision transformer, below). ``None`` = the last Conv2D-like layer
        (``keras_bridge.find_last_conv``), or, where layers of tokens on a square grid come after
        it (a ViT's patch embedding is its only convolution), the tokens entering the last
        MultiHeadAttention (its query), else the last token layer. A token layer whose grid the
        gradient does not reach (a class-token head reads no other token after it) gets a warning.
        A model without either, an unknown name or a layer with another output rank raises
        ModelError with one line naming the user's layers that would do.
    grid: for a token layer, the (h, w) grid of its last ``h * w`` tokens (row-major; leading
        tokens beyond them, a class token, are left out). ``None`` = a square grid of all T
        tokens, or of T - 1 after one class token.

Tokens (a ViT's (N, T, K) sequence) are laid out on their patch grid before the same formula, as
pytorch-grad-cam's ``reshape_transform`` does for transformers (Gildenblat et al.); Chefer et al.
2021 ("Transformer Interpretability Beyond Attention Visualization", CVPR) use this Grad-CAM as a
baseline for ViTs.
"""
import math
import warnings

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import ModelError
from ..explainer import _caller_stacklevel
from ..grouped_conv import counterpart
from ..keras_bridge import find_last_conv, find_layer, nested_path, output_in, tapped
from .gradients import INDEX_SPEC, GradientFamily, as_int32, image_spec


def _output_shape(layer):
    """A layer's output shape as a tuple, or None when it has no single output tensor."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def spatial_layers(model, tokens=False):
    """Names of the layers of ``model`` with a 4-D (N,h,w,K) output (with ``tokens``: or a 3-D
    (N,T,K) output whose T tokens, or T - 1, form a square grid), input layers excluded."""
    out = []
    for layer in model.layers:
        shape = _output_shape(layer)
        if shape is None or type(layer).__name__ == "InputLayer":
            continue
        if len(shape) == 4 or (tokens and len(shape) == 3 and square_grid(shape[1]) is not None):
            out.append(layer.name)
    return out


def square_grid(tokens):
    """``(skip, side)``: the T tokens are a side x side grid after ``skip`` leading ones (0, or 1
    for a class token); None when neither T nor T - 1 is a square (or T is unknown)."""
    if tokens is None:
        return None
    for skip in (0, 1):
        side = math.isqrt(max(int(tokens) - skip, 0))
        if side and side * side == int(tokens) - skip:
            return skip, side
    return None


def token_grid(tokens, grid, method):
    """``(skip, h, w)`` of a token layer's T tokens: the given ``grid`` (h, w) of the last h*w
    tokens, or a square grid (:func:`square_grid`); ModelError in one line otherwise."""
    if grid is None:
        found = square_grid(tokens)
        if found is None:
            raise ModelError(f"{method}: the layer's {tokens} tokens form no square grid (nor do {tokens} - 1 after "
                             "a class token); pass grid=(h, w), the patch grid of its last h*w tokens")
        return found[0], found[1], found[1]
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ModelError(f"{method}: grid must be (h, w), two positive integers, got {grid!r}") from None
    if h < 1 or w < 1 or h * w > int(tokens):
        raise ModelError(f"{method}: grid={grid!r} needs h*w <= the layer's {tokens} tokens, h, w >= 1")
    return int(tokens) - h * w, h, w


def _last_attention_query(model):
    """The layer whose output is the query of the last MultiHeadAttention call of ``model`` (the
    tokens entering the last attention: the last block's first normalisation in a pre-norm ViT,
    the layer pytorch-grad-cam recommends, where a class-token head still reaches every token
    through the attention), or None."""
    from ..compat import inbound_node, keras_history, node_inputs
    from ..keras_bridge import attention_call, layer_type

    for layer in reversed(model.layers):
        if layer_type(layer) != "MultiHeadAttention":
            continue
        call = attention_call(layer)
        try:
            hist = None if call is None else keras_history(node_inputs(inbound_node(layer, 0))[call[0][0]])
        except (AttributeError, IndexError):
            hist = None
        return None if hist is None or not any(hist[0] is l for l in model.layers) else hist[0]
    return None


def default_layer(model, method):
    """Grad-CAM's layer when none is named: the last Conv2D-like layer (``find_last_conv``), or,
    where layers of tokens on a square grid come after it (a vision transformer whose patch
    embedding is its only convolution), the query of the last MultiHeadAttention if it is one of
    them, else the last of them; ModelError in one line when there is neither."""
    try:
        conv = find_last_conv(model, method)
    except ModelError:
        conv = None
    tokens = [model.get_layer(name) for name in spatial_layers(model, tokens=True)
              if len(_output_shape(model.get_layer(name))) == 3]
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    if tokens and (conv is None or order[id(tokens[-1])] > order.get(id(conv), -1)):
        query = _last_attention_query(model)
        if query is not None and any(query is t for t in tokens) and order[id(query)] > order.get(id(conv), -1):
            return query
        return tokens[-1]
    if conv is None:
        raise ModelError(f"{method} needs a Conv2D layer or a layer of tokens on a square grid (N,T,K), and the "
                         "model has neither (use grad, ig, occlusion or another model-agnostic method)")
    return conv


def resolve_layer(model, forward, name, method, rank=4):
    """The layer of ``forward`` (the logits copy of ``model``, or ``model`` itself) that the user's
    layer ``name`` of ``model`` is, checked to have a ``rank``-D output (``rank`` may be a tuple
    of allowed ranks; 3 admits token layers).

    Names are the user's: the copy shares every layer with ``model`` except a last layer whose
    softmax was replaced by a linear twin (``<name>_logits``, :func:`keras_bridge.logits_model`),
    which is found under its twin here. An unknown name, or a layer whose output has another rank,
    raises ModelError listing the user's layers that would do.
    """
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    tokens = 3 in ranks
    choices = spatial_layers(model, tokens=tokens)
    what = "a 4-D output or square-grid tokens" if tokens else "a 4-D output"
    hint = (f"layers with {what}: {', '.join(choices)}" if choices
            else f"the model has no layer with {what} (use grad, ig, occlusion or another "
                 "model-agnostic method)")
    try:
        mine = find_layer(model, name)              # nested models searched too
    except ModelError:
        raise ModelError(f"{method}: the model has no layer {name!r}; {hint}") from None
    shape = _output_shape(mine)
    if shape is None or len(shape) not in ranks:
        got = "no single output" if shape is None else f"a {len(shape)}-D output {shape}"
        need = "a 4-D (N,h,w,K) or token (N,T,K)" if tokens else "a 4-D (N,h,w,K)"
        raise ModelError(f"{method}: layer {name!r} has {got}; {method} needs a convolutional "
                         f"layer with {need} output; {hint}")
    if forward is model:
        return mine
    for candidate in (name, f"{name}_logits"):
        try:
            return find_layer(forward, candidate)
        except ModelError:
            continue
    raise ModelError(f"{method}: layer {name!r} is not part of the explained (pre-softmax) model; "
                     f"{hint}")


class GradCam(GradientFamily):
    """Grad-CAM (Selvaraju et al. 2017): ``L = relu(sum_k alpha_k A_k)``, ``alpha_k = mean_ij
    d f_c / d A_ij^k``, upsampled bilinearly to the input size.

    Args:
        model: tf-keras or Keras 3 image classifier with a convolutional layer, or a vision
            transformer.
        layer: name of the layer whose (N,h,w,K) output, or (N,T,K) tokens, is ``A``, as the
            user's model names it; None = the last Conv2D-like layer, or a later layer of
            tokens on a square grid (None). See the module docstring.
        grid: (h, w) of a token layer's patch grid; None = square (None). See the module docstring.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    copies_weights = False      # the model's variables, read live

    key = "gradcam"     # the settings preset section (command lines and studies)
    title_name = "Grad-CAM"

    def __init__(self, model, *, layer=None, grid=None, **common):
        super().__init__(model, params=dict(layer=layer, grid=grid), **common)

    def setup(self):
        name = self.params["layer"]
        if name is None:
            layer = default_layer(self.forward, self.title_name)
        else:
            layer = resolve_layer(self.model, self.forward, name, self.title_name, rank=(3, 4))
        out = output_in(self.forward, layer) if nested_path(self.forward, layer) == [self.forward] else layer.output
        if len(out.shape) not in (3, 4):
            raise ModelError(f"{self.title_name} needs a layer with (N,h,w,K) output or (N,T,K) tokens; "
                             f"{layer.name!r} gives {tuple(out.shape)} (name a Conv2D layer with layer=...)")
        grid = token_grid(out.shape[1], self.params["grid"], self.title_name) if len(out.shape) == 3 else None
        if grid is None and self.params["grid"] is not None:
            raise ModelError(f"{self.title_name}: grid= is for a layer of tokens (N,T,K); {layer.name!r} gives "
                             f"{tuple(out.shape)}")
        self.layer, self._grid = layer, grid
        # a channels_first layer (a model wrapped behind a Permute): its (N,K,h,w) maps read as (N,h,w,K)
        first = len(out.shape) == 4 and getattr(layer, "data_format", None) == "channels_first"
        model, target = self.forward, layer
        if self.runner is not self.forward:     # the same function without Keras's XLA detour
            same = counterpart(self.runner, layer)
            if same is not None:
                model, target = self.runner, same
        sub = tapped(model, target)             # (A, outputs); A may be inside a nested model
        weigh, select = self.channel_weights, self.select

        def build():
            @tf.function(input_signature=[image_spec(self.shape), INDEX_SPEC], autograph=False)
            def fn(x, t):
                with tf.GradientTape() as tape:
                    acts, outputs = sub(x, training=False)
                    total = tf.reduce_sum(select(outputs, t))
                grads = tf.cast(tape.gradient(total, acts), acts.dtype)
                if first:
                    acts, grads = (tf.transpose(v, (0, 2, 3, 1)) for v in (acts, grads))
                if grid is not None:            # tokens on their patch grid, leading ones left out
                    skip, h, w = grid
                    acts, grads = (tf.reshape(v[:, skip:, :], (-1, h, w, v.shape[-1])) for v in (acts, grads))
                w = weigh(acts, grads)                                   # (n, 1, 1, K)
                cam = tf.nn.relu(tf.reduce_sum(w * acts, axis=-1, keepdims=True))
                cam = tf.image.resize(tf.cast(cam, tf.float32), tf.shape(x)[1:3], method="bilinear")
                return cam[..., 0], tf.reduce_any(tf.not_equal(grads, 0), axis=[1, 2, 3])   # reached A

            return fn

        self._fn = self._compiled(model, f"{self.key}:{layer.name}:{grid}:{first}", build)

    @staticmethod
    def channel_weights(acts, grads):
        return tf.reduce_mean(grads, axis=[1, 2], keepdims=True)

    def explain_batch(self, x, targets):
        maps, reached = self._fn(tf.constant(x), as_int32(targets))
        missed = int(np.sum(~reached.numpy()))
        if self._grid is not None and missed:
            warnings.warn(f"{self.title_name}: the gradient reaches none of the grid tokens of layer "
                          f"{self.layer.name!r} for {missed} of {len(x)} images, whose maps are all 0: after it the "
                          "output reads only other tokens (a class token); name a layer before the last attention "
                          "with layer=", stacklevel=_caller_stacklevel())
        return maps.numpy()


class GradCamPlusPlus(GradCam):
    """Grad-CAM++: ``alpha_k = sum_ij a_ij^k relu(g_ij^k)`` with
    ``a_ij^k = g^2 / (2 g^2 + sum_ab A_ab^k g^3)`` (0 where the denominator is 0).

    This is the closed form for an exponential output ``Y = exp(f_c)``; the positive factor
    ``exp(f_c)`` is common to all channels and dropped (it scales the map only)
    (Chattopadhyay et al. 2018).

    Args:
        model: tf-keras or Keras 3 image classifier with a convolutional layer, or a vision
            transformer.
        layer: name of the layer whose (N,h,w,K) output, or (N,T,K) tokens, is ``A``; None = the
            last Conv2D-like layer, or a later token layer on a square grid (None). See
            :class:`GradCam`.
        grid: (h, w) of a token layer's patch grid; None = square (None). See :class:`GradCam`.
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
