"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), native TensorFlow.

DeepLIFT's multipliers are a modified gradient (Ancona et al. 2018): linear layers (Dense, Conv,
batch norm in inference mode, pooling by averaging, additions) keep their Jacobian, and every
elementwise nonlinearity ``y = f(z)`` passes back ``m = (f(z) - f(z0)) / (z - z0)`` instead of
``f'(z)``, with ``z0`` the pre-activation of the baseline ``x0`` (``f'(z)`` where ``z ~ z0``). The
attribution is ``a = (x - x0) * m_x``, with ``m_x`` the chained multiplier of the target output
``f_c``. Summation-to-delta, ``sum(a) = f_c(x) - f_c(x0)``, holds exactly for networks of linear
layers and elementwise nonlinearities (max pooling and products keep their gradient, so it holds
only approximately there).

The multipliers come from a cached clone of the model whose nonlinearities carry the rescale
gradient (:mod:`xaitf.methods._modified_grad`). One shared baseline (the usual case) runs once: its
pre-activations are recorded when the explainer is made and every batch holds only inputs
(``batch_size`` model inputs per call; one input costs one forward and backward pass of one row,
not of two). One baseline per input runs stacked with its inputs, ``[x_1..x_n, x0_1..x0_n]``
(``batch_size // 2`` pairs per call).

Parameters (preset section ``DEEPLIFT`` of :mod:`xaitf.settings`):
    baseline: x0, a scalar, one value per channel (C,), an image (H,W,C) or one image per input
        (N,H,W,C) (default 0.0).

:class:`DeepLiftShap` (preset section ``DEEPLIFTSHAP``) averages DeepLift over a background set of
baselines (Lundberg & Lee 2017), one shared-baseline pass per distinct background image.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ._modified_grad import modified_clone, record_references, use_references
from .gradients import (INDEX_SPEC, GradientFamily, as_int32, cached_function, image_spec,
                        parse_baseline)


# a model of any input size: the baseline's recorded references are kept for this many sizes
MAX_SIZES = 8


class DeepLift(GradientFamily):
    """DeepLIFT rescale (Shrikumar et al. 2017): ``a = (x - x0) * m``, m the rescale multiplier of
    ``f_c`` (see the module docstring); ``sum(a) = f_c(x) - f_c(x0)`` on networks of linear layers
    and elementwise nonlinearities.

    Args:
        model: tf-keras or Keras 3 image classifier.
        baseline: x0, a scalar, one value per channel (C,), an image (H,W,C) or one image per input
            (N,H,W,C) (0.0).
        **common: batch_size, channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
    """

    key = "deeplift"     # the settings preset section (command lines and studies)
    outputs = ("logits",)  # the rescale rule has no multiplier for a softmax or a user's function

    def __init__(self, model, *, baseline=0.0, **common):
        super().__init__(model, params=dict(baseline=baseline), **common)

    def setup(self):
        self._baseline = parse_baseline(self.params["baseline"], self.shape, "DeepLift")
        self._shared = len(self._baseline) == 1
        self._by_size = None
        if self._shared:
            if any(d is None for d in self.shape):   # a model of any input size: the baseline's
                self._by_size = {}                   # references per size, on first use
                return
            self._fn, self._x0, self._refs = self._shared_pass(self._baseline)
            return
        clone = modified_clone(self.forward, "rescale_pairs")
        spec = image_spec(self.shape)

        def build_pairs():
            @tf.function(input_signature=[spec, spec, INDEX_SPEC], autograph=False)
            def fn(x, x0, t):
                n = tf.shape(x)[0]
                both = tf.concat([x, x0], axis=0)
                with tf.GradientTape() as tape:
                    tape.watch(both)
                    out = clone(both, training=False)
                    total = tf.reduce_sum(tf.gather(out[:n], t, axis=1, batch_dims=1))
                return (x - x0) * tape.gradient(total, both)[:n]

            return fn

        self._fn = cached_function(clone, "deeplift.pairs", build_pairs)

    def _shared_pass(self, baseline, clone=None, shape=None):
        """``(fn, x0, refs)`` of one baseline shared by every input: the rescale clone's
        pre-activations at the baseline (``refs``, one forward pass of one row) and the cached
        tf.function ``fn(x, x0, targets, refs) -> (x - x0) * m`` (shared by every baseline of this
        model: the references are its argument). Used by :class:`DeepLiftShap` once per background
        image (``clone``: the rescale clone, when the caller has it already). ``shape``: the
        inputs' (H, W, C) (None: the model's)."""
        clone = clone or modified_clone(self.forward, "rescale")
        shape = tuple(self.shape if shape is None else shape)
        spec = image_spec(shape)
        record = cached_function(clone, f"deeplift.references.{shape}", lambda: tf.function(
            lambda x0: record_references(clone, x0), input_signature=[spec], autograph=False))
        x0 = np.broadcast_to(baseline, (1, *shape)).astype(np.float32)
        refs = record(tf.constant(x0))
        # a uniform baseline enters (x - x0) as a scalar (a broadcast image costs a pass more),
        # a zero baseline not at all
        uniform = bool(np.all(x0 == x0.flat[0]))
        zero = uniform and x0.flat[0] == 0
        ref_spec = tf.nest.map_structure(lambda r: tf.TensorSpec(r.shape, r.dtype), refs)

        def build():
            @tf.function(input_signature=[spec, tf.TensorSpec(None, tf.float32), INDEX_SPEC, ref_spec],
                         autograph=False)
            def fn(x, x0, t, refs):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    with use_references(clone, refs):     # refs: this function's argument
                        out = clone(x, training=False)
                    total = tf.reduce_sum(tf.gather(out, t, axis=1, batch_dims=1))
                return (x if zero else x - x0) * tape.gradient(total, x)

            return fn
        fn = cached_function(clone, f"deeplift.shared.{'zero' if zero else 'any'}.{shape}", build)
        return fn, tf.constant(x0.flat[0] if uniform else x0), refs

    def chunk_size(self):
        if self._shared:
            return self.batch_size
        return max(1, self.batch_size // 2)

    def explain_batch(self, x, targets):
        if self._shared and self._by_size is not None:
            size = tuple(int(d) for d in x.shape[1:])
            if size not in self._by_size:
                if len(self._by_size) >= MAX_SIZES:          # keep the newest few sizes
                    self._by_size.pop(next(iter(self._by_size)))
                self._by_size[size] = self._shared_pass(self._baseline, shape=size)
            fn, x0, refs = self._by_size[size]
            return fn(tf.constant(x), x0, as_int32(targets), refs)
        if self._shared:
            return self._fn(tf.constant(x), self._x0, as_int32(targets), self._refs)
        start, stop = self._take(len(x))
        x0 = self._baseline_for(start, stop)
        x0 = np.broadcast_to(x0, (len(x0), *x.shape[1:])).astype(np.float32)
        return self._fn(tf.constant(x), tf.constant(x0), as_int32(targets))


class DeepLiftShap(DeepLift):
    """DeepLiftShap (Lundberg & Lee 2017, "A unified approach to interpreting model predictions",
    section 4.2; Captum's ``DeepLiftShap``): DeepLIFT (the rescale rule of :class:`DeepLift`)
    averaged over a background set of baselines ``b_1..b_K``::

        a(x) = 1/K sum_k (x - b_k) * m(x; b_k)

    with ``m(x; b_k)`` the rescale multiplier of ``f_c`` for baseline ``b_k`` (one
    :class:`DeepLift` pass per background image, reusing its cached clone and tf.function; only
    the recorded baseline pre-activations differ). Summation-to-delta carries over on average:
    ``sum(a) = f_c(x) - 1/K sum_k f_c(b_k)``, exactly for networks of linear layers and elementwise
    nonlinearities (as for DeepLift). On a linear model ``a = (x - mean_k b_k) * w``. Identical
    background images are run once and weighted by their count, so a background of K zero images
    costs one pass and equals DeepLift with baseline 0. Captum refuses a single baseline; here one
    image (or a scalar) is allowed and gives DeepLift's map.

    Args:
        model: tf-keras or Keras 3 image classifier.
        background: the baselines: a scalar fill (one constant image), one value per channel (C,),
            one image (H,W,C) (or (H,W) when C == 1) or a set of images (K,H,W,C) (0.0).
        n_background: None (every background image) or an integer >= 1: that many images drawn
            without replacement from ``background`` (which must hold at least that many), seeded
            by ``seed`` (None).
        **common: batch_size (inputs per backward pass; each chunk runs one pass per distinct
            background image), channel_reduce, seed, progress, output (logits only, as DeepLift)
            (see :class:`xaitf.explainer.Explainer`).

    Cost: one forward (the references) per background image when built, then K distinct
    background images x one forward and backward per input.

    Returns (N,H,W) maps (channels reduced by ``channel_reduce``).

    Example::

        maps = xaitf.create_explainer("deepliftshap", model, background=x_train, n_background=10)(x)
    """

    key = "deepliftshap"   # the settings preset section

    def __init__(self, model, *, background=0.0, n_background=None, **common):
        GradientFamily.__init__(self, model, params=dict(background=background, n_background=n_background),
                                **common)

    def setup(self):
        from .. import params as _params
        from ..errors import MethodError

        self.fixed_shape()               # background images of the model's one size
        p = self.params
        bg = _params.full_baseline(p["background"], self.shape, name="background", owner="DeepLiftShap")
        if p["n_background"] is not None:
            n = _params.integer(p["n_background"], "n_background", "DeepLiftShap", low=1)
            if n > len(bg):
                raise MethodError(f"DeepLiftShap needs n_background <= the {len(bg)} background image(s) "
                                  f"given, got {n}; pass more images as background or lower n_background")
            bg = bg[np.sort(self.rng().choice(len(bg), n, replace=False))]
        self.background = bg
        flat = bg.reshape(len(bg), -1)
        _, first, counts = np.unique(flat, axis=0, return_index=True, return_counts=True)
        order = np.argsort(first)                      # distinct images in their first order
        self._weights = (counts[order] / float(len(bg))).astype(np.float32)
        clone = modified_clone(self.forward, "rescale")
        self._passes = [self._shared_pass(bg[i][None], clone) for i in first[order]]
        self._shared = True

    def explain_batch(self, x, targets):
        xt, t = tf.constant(x), as_int32(targets)
        total = None
        for (fn, x0, refs), w in zip(self._passes, self._weights):
            a = fn(xt, x0, t, refs) * w
            total = a if total is None else total + a
        return total
