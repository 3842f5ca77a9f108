"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), native TensorFlow.

DeepLIFT's multipliers are a modified gradient (Ancona et al. 2018): linear layers (Dense, Conv,
batch norm in inference mode, pooling by averaging, additions) keep their Jacobian, and every
elementwise nonlinearity ``y = f(z)`` passes back ``m = (f(z) - f(z0)) / (z - z0)`` instead of
``f'(z)``, with ``z0`` the pre-activation of the baseline ``x0`` (``f'(z)`` where ``z ~ z0``). The
attribution is ``a = (x - x0) * m_x``, with ``m_x`` the chained multiplier of the target output
``f_c``. Summation-to-delta, ``sum(a) = f_c(x) - f_c(x0)``, holds exactly for networks of linear
layers and elementwise nonlinearities (max pooling and products keep their gradient, so it holds
only approximately there).

The inputs and the baseline run stacked in one batch through a cached clone of the model whose
nonlinearities carry the rescale gradient (:mod:`xaitf.methods._modified_grad`): ``[x_1..x_n, x0]``
when one baseline is shared (n + 1 model inputs), ``[x_1..x_n, x0_1..x0_n]`` for one baseline per
input (2n model inputs).

Parameters (settings ``DEEPLIFT``):
    baseline: x0, a scalar, an image (H,W,C) or one image per input (default 0.0).

A call evaluates ``batch_size`` images plus the shared baseline row (``batch_size + 1`` model
inputs: one row more than a batch, rather than a second call for the last image, which costs
about a tenth of a whole batch), or ``batch_size // 2`` pairs for per-input baselines.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ._modified_grad import modified_clone
from .gradients import (INDEX_SPEC, GradientFamily, as_int32, cached_function, image_spec,
                        parse_baseline)


class DeepLift(GradientFamily):
    """DeepLIFT rescale: ``a = (x - x0) * m``, m the rescale multiplier of ``f_c`` (see module)."""

    key = "deeplift"

    def setup(self):
        self._baseline = parse_baseline(self.params["baseline"], self.shape, "DeepLift")
        self._shared = len(self._baseline) == 1
        rule = "rescale" if self._shared else "rescale_pairs"
        clone = modified_clone(self.forward, rule)

        def build():
            spec = image_spec(self.shape)

            @tf.function(input_signature=[spec, spec, INDEX_SPEC], autograph=False)
            def fn(x, x0, t):
                n = tf.shape(x)[0]
                both = tf.concat([x, x0], axis=0)
                with tf.GradientTape() as tape:
                    tape.watch(both)
                    out = clone(both, training=False)
                    total = tf.reduce_sum(tf.gather(out[:n], t, axis=1, batch_dims=1))
                g = tape.gradient(total, both)[:n]
                return (x - x0) * g

            return fn

        self._fn = cached_function(clone, "deeplift", build)

    def chunk_size(self):
        if self._shared:
            return self.batch_size
        return max(1, self.batch_size // 2)

    def explain_batch(self, x, targets):
        start, stop = self._take(len(x))
        x0 = self._baseline_for(start, stop)
        x0 = np.broadcast_to(x0, (len(x0), *x.shape[1:])).astype(np.float32)
        return self._fn(tf.constant(x), tf.constant(x0), as_int32(targets))
