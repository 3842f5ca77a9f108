"""The native TensorFlow gradient family: Gradient, Input x Gradient, Integrated Gradients,
SmoothGrad (SquareGrad, VarGrad), Guided Backprop and DeconvNet.

Every method explains the pre-softmax output ``f_c`` of the target class ``c`` (one target per
input) and returns per-channel maps (N,H,W,C), which the base class reduces over channels. Each
method runs ONE ``tf.function`` per (model, method), traced once with a batch-free input signature
and batched over inputs x steps/samples; one call never evaluates more than ``batch_size`` model
inputs. Plain ``tf.GradientTape`` code, so tf-keras and Keras 3 models are handled alike.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..compat import concrete_flat_call
from ..errors import InputError, MethodError
from ..explainer import Explainer, chunks
from .. import params as _params
from ..keras_bridge import model_cache
from ._modified_grad import modified_clone
from ._random import hashed_normal  # noqa: F401  (re-exported: the SmoothGrad noise)


class FlatCall:
    """A ``tf.function`` with an input signature, called through its one concrete function with the
    arguments flattened: that skips tf.function's matching of the (nested) arguments against the
    signature, ~0.5-0.9 ms per call on a 2-core CPU (5% of a CIFAR-10 batch of 64). Callers pass
    tensors of the signature's dtypes and shapes (the explainers build them so)."""

    def __init__(self, fn):
        self.concrete = fn.get_concrete_function()
        self._flat = concrete_flat_call(self.concrete)     # None: the structured call

    def __call__(self, *args):
        if self._flat is None:
            return self.concrete(*args)
        return self._flat(tf.nest.flatten(args), self.concrete.captured_inputs)


def cached_function(model, tag, build):
    """The tf.function ``build()`` for (model, tag), built once and reused by later explainers;
    one with an input signature comes back as a :class:`FlatCall`. Kept in the model's own cache
    (:func:`xaitf.keras_bridge.model_cache`): freed with the model."""
    cache = model_cache(model)
    key = ("function", tag)
    fn = cache.get(key)
    if fn is None:
        fn = build()
        if getattr(fn, "input_signature", None) is not None:
            fn = FlatCall(fn)
        cache[key] = fn
    return fn


def image_spec(shape):
    return tf.TensorSpec([None, *shape], tf.float32)


INDEX_SPEC = tf.TensorSpec([None], tf.int32)
VECTOR_SPEC = tf.TensorSpec([None], tf.float32)


def target_gradients(model, x, targets, select=None):
    """d f_{t_i}(x_i) / d x_i for a batch: the gradient of the sum of the selected outputs.

    ``select(outputs, targets) -> (N,)`` picks the explained score (an explainer's
    :meth:`~xaitf.explainer.Explainer.select`); None = the target's output as it is (the logit
    when ``model`` is the logit model). Works for float64 heads too (the gradient comes back in
    the input's dtype).
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x, training=False)
        sel = tf.gather(out, targets, axis=1, batch_dims=1) if select is None else select(out, targets)
        total = tf.reduce_sum(sel)
    return tape.gradient(total, x)


def as_int32(t):
    return tf.constant(np.asarray(t, dtype=np.int32))


def parse_baseline(value, shape, method):
    """A baseline as float32: (1,1,1,1) (scalar), (1,1,1,C) (one value per channel), (1,H,W,C)
    (one image; (H,W) when C == 1) or (N,H,W,C) (one per input): :func:`xaitf.params.parse_baseline`.
    """
    return _params.parse_baseline(value, shape, owner=method)


class GradientFamily(Explainer):
    """Shared plumbing: the explained output, input offsets (for per-input baselines), the baseline."""

    def _selector(self):
        """``select`` for :func:`target_gradients`: None for logits (the target's output as it is)."""
        return None if self.output_spec.kind == "logits" else self.select

    def _compiled(self, owner, tag, build):
        """:func:`cached_function` keyed by the explained output too; a user's output callable gets
        its own function (not shared through the model's cache)."""
        out = self.output_spec.tag
        if out is None:
            fn = build()
            return FlatCall(fn) if getattr(fn, "input_signature", None) is not None else fn
        return cached_function(owner, tag if out == "logits" else f"{tag}|{out}", build)

    def __call__(self, x, targets=None):
        self._offset = 0
        base = getattr(self, "_baseline", None)
        if base is not None and len(base) > 1:
            n = len(np.asarray(x)) if np.ndim(x) == 4 else 1
            if len(base) != n:
                raise InputError(f"{type(self).__name__}: {len(base)} baselines given for {n} inputs; "
                                 "give one baseline or one per input")
        return super().__call__(x, targets)

    def _take(self, n):
        """Global indices of the next ``n`` inputs of this call (chunks arrive in order)."""
        start = getattr(self, "_offset", 0)
        self._offset = start + n
        return start, start + n

    def _baseline_for(self, start, stop):
        b = self._baseline
        return b if len(b) == 1 else b[start:stop]

    def _positive_int(self, name):
        return _params.integer(self.params[name], name, type(self).__name__, low=1)


class Gradient(GradientFamily):
    """Saliency as the signed gradient (Simonyan et al. 2014): ``a = d f_c(x) / d x``.

    Args:
        model: tf-keras or Keras 3 image classifier.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    copies_weights = False      # the model's variables, read live

    key = "grad"

    def setup(self):
        fwd, select = self.runner, self._selector()

        def build():
            @tf.function(input_signature=[image_spec(self.shape), INDEX_SPEC], autograph=False)
            def fn(x, t):
                return target_gradients(fwd, x, t, select)

            return fn

        self._fn = self._compiled(fwd, "grad", build)

    def explain_batch(self, x, targets):
        return self._fn(tf.constant(x), as_int32(targets))


class InputXGradient(Gradient):
    """Input x Gradient (Shrikumar et al. 2016): ``a = x * d f_c(x) / d x``.

    Args:
        model: tf-keras or Keras 3 image classifier.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "inpgrad"

    def explain_batch(self, x, targets):
        return x * self._fn(tf.constant(x), as_int32(targets)).numpy()


def path_points(steps, rule):
    """Quadrature nodes ``alpha_k`` in [0,1] and weights ``w_k`` (sum 1) for IG's path integral."""
    k = np.arange(steps, dtype=np.float64)
    if rule == "midpoint":
        a, w = (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    elif rule == "left":
        a, w = k / steps, np.full(steps, 1.0 / steps)
    elif rule == "right":
        a, w = (k + 1) / steps, np.full(steps, 1.0 / steps)
    elif rule == "trapezoid":
        if steps == 1:
            a, w = np.array([0.5]), np.array([1.0])
        else:
            a = k / (steps - 1)
            w = np.full(steps, 1.0 / (steps - 1))
            w[[0, -1]] *= 0.5
    else:
        raise MethodError(f"unknown IG rule {rule!r}; valid: midpoint, trapezoid, left, right")
    return a.astype(np.float32), w.astype(np.float32)


class IntegratedGradients(GradientFamily):
    """Integrated Gradients (Sundararajan et al. 2017).

    ``a = (x - x0) * sum_k w_k d f_c(x0 + alpha_k (x - x0)) / d x``, a quadrature of
    ``(x - x0) * int_0^1 grad f_c(x0 + alpha (x - x0)) d alpha``, so that (completeness)
    ``sum(a) ~ f_c(x) - f_c(x0)``.

    Args:
        model: tf-keras or Keras 3 image classifier.
        steps: number of gradient evaluations on the path, an integer >= 1 (64).
        baseline: x0, a scalar, one value per channel (C,), an image (H,W,C) or one image per input
            (N,H,W,C) (0.0).
        rule: quadrature rule, "midpoint" | "trapezoid" | "left" | "right" ("midpoint").
            ``"midpoint"``: alpha_k = (k + 1/2)/steps, equal weights; ``"trapezoid"``: alpha_k =
            k/(steps-1), end points weighted 1/2; ``"left"`` / ``"right"``: Riemann sums.
            Midpoint is the default: on smooth networks it and the trapezoid rule converge as
            1/steps^2 (left/right sums as 1/steps) and midpoint has the smaller error constant and
            never spends an evaluation on the baseline; on ReLU networks the integrand is
            piecewise constant, every rule converges as 1/steps, and midpoint had the smallest
            median completeness error in our measurements on small CNNs.
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).

    Each call evaluates at most ``batch_size`` interpolated images: ``batch_size // steps`` inputs
    at a time, or one input with its steps split in groups when ``steps > batch_size``.
    """

    copies_weights = False      # the model's variables, read live

    key = "ig"     # the settings preset section (command lines and studies)

    def __init__(self, model, *, steps=64, baseline=0.0, rule="midpoint", **common):
        super().__init__(model, params=dict(steps=steps, baseline=baseline, rule=rule), **common)

    def setup(self):
        steps = self._positive_int("steps")
        self._alphas, self._weights = path_points(steps, self.params["rule"])
        self._baseline = parse_baseline(self.params["baseline"], self.shape, "IntegratedGradients")
        fwd, select = self.runner, self._selector()

        def build():
            base_spec = tf.TensorSpec([None] * 4, tf.float32)  # broadcast against x

            @tf.function(input_signature=[image_spec(self.shape), base_spec, INDEX_SPEC, VECTOR_SPEC,
                                          VECTOR_SPEC], autograph=False)
            def fn(x, x0, t, alphas, weights):
                n, m = tf.shape(x)[0], tf.shape(alphas)[0]
                x0 = tf.broadcast_to(x0, tf.shape(x))
                delta = x - x0
                a = tf.reshape(alphas, [1, -1, 1, 1, 1])
                path = x0[:, None] + a * delta[:, None]                  # (n, m, H, W, C)
                path = tf.reshape(path, tf.concat([[n * m], tf.shape(x)[1:]], 0))
                g = target_gradients(fwd, path, tf.repeat(t, m), select)
                g = tf.reshape(g, tf.concat([[n, m], tf.shape(x)[1:]], 0))
                return tf.einsum("nmhwc,m->nhwc", g, weights), delta

            return fn

        self._fn = self._compiled(fwd, "ig", build)

    def chunk_size(self):
        return max(1, self.batch_size // len(self._alphas))

    def explain_batch(self, x, targets):
        start, stop = self._take(len(x))
        x0 = tf.constant(self._baseline_for(start, stop))
        xt, t = tf.constant(x), as_int32(targets)
        total = None
        for s in chunks(len(self._alphas), self.batch_size):  # one piece unless steps > batch_size
            avg, delta = self._fn(xt, x0, t, tf.constant(self._alphas[s]), tf.constant(self._weights[s]))
            total = avg if total is None else total + avg
        return (delta * total).numpy()


POSTPROCESS = ("none", "square", "variance")


class SmoothGrad(GradientFamily):
    """SmoothGrad (Smilkov et al. 2017) and its SquareGrad / VarGrad variants.

    With ``g_j = d f_c(x + e_j) / dx``, ``e_j ~ N(0, sigma^2)``, ``sigma = noise_scale *
    (max(x) - min(x))`` per image, ``j = 1..samples``:

    * ``postprocess="none"``: SmoothGrad ``mean_j g_j``;
    * ``"square"``: SquareGrad ``mean_j g_j^2`` (Hooker et al. 2019);
    * ``"variance"``: VarGrad ``mean_j (g_j - mean g)^2`` (Adebayo et al. 2018).

    Args:
        model: tf-keras or Keras 3 image classifier.
        samples: noisy copies per input, an integer >= 1 (16, study 1's augment_by_n).
        noise_scale: sigma as a fraction of each input's range max(x) - min(x), >= 0 (0.1).
        postprocess: "none" (SmoothGrad) | "square" (SquareGrad) | "variance" (VarGrad) ("square").
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).

    seed: the noise (counter-based: independent of batch_size and of the other inputs).
    noise ``e_j`` = Box-Muller normals of a hash of (seed, sample j, element)
    (:func:`~xaitf.methods._random.hashed_normal` with id j), the same pattern for every input of
    a call (scaled by the input's own sigma), as the surrogates and RISE share their masks: an
    input's map depends on the seed and on that input only, not on ``batch_size``, its position
    or the other inputs. Each call evaluates at most ``batch_size`` noisy images.
    The registry names ``vargrad`` and ``squaregrad`` are this class with ``postprocess`` fixed.
    """

    copies_weights = False      # the model's variables, read live

    key = "sg"     # the settings preset section (command lines and studies)
    stochastic = True

    def __init__(self, model, *, samples=16, noise_scale=0.1, postprocess="square", **common):
        super().__init__(model, params=dict(samples=samples, noise_scale=noise_scale,
                                            postprocess=postprocess), **common)

    def setup(self):
        self._samples = self._positive_int("samples")
        self._scale = float(self.params["noise_scale"])
        if not np.isfinite(self._scale) or self._scale < 0:
            raise MethodError(f"SmoothGrad needs noise_scale >= 0, got {self.params['noise_scale']!r}")
        if self.params["postprocess"] not in POSTPROCESS:
            raise MethodError(f"unknown SmoothGrad postprocess {self.params['postprocess']!r}; "
                              f"valid: {', '.join(POSTPROCESS)}")
        fwd, shape, post = self.runner, self.shape, self.params["postprocess"]
        select = self._selector()

        def build():
            @tf.function(input_signature=[image_spec(shape), INDEX_SPEC, tf.TensorSpec([None], tf.int64),
                                          tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32)], autograph=False)
            def fn(x, t, ids, seed, scale):
                """Per input over samples ``ids``: (mean g, 0) | (mean g^2, 0) | (mean g, sum (g-mean)^2)."""
                n = tf.shape(x)[0]
                m = tf.shape(ids)[0]
                img = tf.shape(x)[1:]
                sigma = scale * (tf.reduce_max(x, axis=[1, 2, 3]) - tf.reduce_min(x, axis=[1, 2, 3]))
                noise = hashed_normal(ids, seed, img)          # (m, H, W, C), shared by the inputs
                xs = x[:, None] + sigma[:, None, None, None, None] * noise[None]
                g = target_gradients(fwd, tf.reshape(xs, tf.concat([[n * m], img], 0)), tf.repeat(t, m),
                                     select)
                g = tf.reshape(g, tf.concat([[n, m], img], 0))
                if post == "square":
                    return tf.reduce_mean(tf.square(g), axis=1), tf.zeros([])
                mean = tf.reduce_mean(g, axis=1)
                if post == "none":
                    return mean, tf.zeros([])
                return mean, tf.reduce_sum(tf.square(g - mean[:, None]), axis=1)

            return fn

        self._fn = self._compiled(fwd, f"sg:{post}", build)

    def chunk_size(self):
        return max(1, self.batch_size // self._samples)

    def explain_batch(self, x, targets):
        xt, t = tf.constant(x), as_int32(targets)
        seed = tf.constant(self.seed, tf.int64)
        scale = tf.constant(self._scale, tf.float32)
        groups = chunks(self._samples, self.batch_size)  # one group unless samples > batch_size
        count, stat, m2 = 0, None, None
        for s in groups:
            j = np.arange(s.start, s.stop, dtype=np.int64)      # the noise is keyed by sample index
            sb, m2b = self._fn(xt, t, tf.constant(j), seed, scale)
            nb = len(j)
            if len(groups) == 1:
                count, stat, m2 = nb, sb.numpy(), m2b.numpy()
                break
            sb, m2b = sb.numpy().astype(np.float64), m2b.numpy().astype(np.float64)
            if stat is None:
                count, stat, m2 = nb, sb, m2b
            else:  # merge group statistics (Chan et al. 1979 for the sum of squared deviations)
                d = sb - stat
                tot = count + nb
                stat = stat + d * nb / tot
                m2 = m2 + m2b + d * d * count * nb / tot
                count = tot
        return m2 / count if self.params["postprocess"] == "variance" else stat


class _ModifiedReLUGradient(GradientFamily):
    rule = None

    def setup(self):
        clone, select = modified_clone(self.forward, self.rule), self._selector()

        def build():
            @tf.function(input_signature=[image_spec(self.shape), INDEX_SPEC], autograph=False)
            def fn(x, t):
                return target_gradients(clone, x, t, select)

            return fn

        self._fn = self._compiled(clone, self.rule, build)

    def explain_batch(self, x, targets):
        return self._fn(tf.constant(x), as_int32(targets))


class GuidedBackprop(_ModifiedReLUGradient):
    """Guided Backpropagation (Springenberg et al. 2015).

    The gradient of ``f_c`` where every ReLU passes back ``relu(g) * 1[z > 0]``: only positive
    gradient, only through units active in the forward pass. Works on any Sequential or functional
    ReLU model (ReLU as a layer's activation, ``Activation('relu')`` or a ``ReLU`` layer) via a
    cached clone with custom-gradient ReLUs; other layers (pooling, batch norm in inference mode)
    keep their ordinary gradient.

    Args:
        model: tf-keras or Keras 3 image classifier (ReLU network).
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "gb"
    rule = "guided"


class DeconvNet(_ModifiedReLUGradient):
    """DeconvNet (Zeiler & Fergus 2014) as a modified gradient (Springenberg et al. 2015).

    The gradient of ``f_c`` where every ReLU passes back ``relu(g)``, whatever its input was
    (max pooling keeps its switches). Same model support as :class:`GuidedBackprop`.

    Args:
        model: tf-keras or Keras 3 image classifier (ReLU network).
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "deconvnet"
    rule = "deconvnet"
