"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018).

Saliency of class ``c`` at pixel ``u`` is the expected class probability under random masks that
keep ``u``::

    S_c(u) = 1 / (N * p) * sum_i P_c(x * M_i) * M_i(u)

Masks as in the paper: a binary grid of ``cell x cell`` cells, each kept with probability ``p``, is
upsampled bilinearly to ``(cell + 1) * ceil(H / cell)`` x ``(cell + 1) * ceil(W / cell)`` and cropped
to H x W at a random offset in ``[0, ceil(H / cell)) x [0, ceil(W / cell))``, so the masks are
smooth and not aligned to a fixed grid. ``P_c`` is the softmax of the model's pre-softmax output
(the class probability the paper explains).

All the randomness (N grids and N offsets, a few numbers per mask) is drawn once from the seed with
TensorFlow's stateless generators; the full-size masks are made on the device a chunk at a time,
so the same seed gives the same masks whatever ``batch_size`` is. One ``tf.function`` loops over mask
chunks and evaluates ``inputs x masks`` perturbed images per step, never more than ``batch_size``.
That function has an input signature and is built once per (model, cell, probability head) and
kept in the model's cache (:func:`xaitf.methods.gradients.cached_function`): further explainers of
the same model (other seeds, mask counts, batch sizes) reuse it, and since it is called through
its concrete function, building explainers for many models never triggers TensorFlow's
"triggered tf.function retracing" warning.
"""
import math

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from .. import params as _params
from ..errors import MethodError
from ..explainer import Explainer
from .gradients import cached_function, image_spec


def _number(params, name, cls, low, high=None, low_open=False, owner="Rise"):
    """``params[name]`` checked by :func:`xaitf.params.integer` (``cls=int``) or :func:`xaitf.params.number`."""
    if cls is int:
        return _params.integer(params[name], name, owner, low=low, high=high)
    return _params.number(params[name], name, owner, low=low, high=high, low_open=low_open)


def interpolation(cell, cell_side):
    """(size, cell) weights of bilinear upsampling (half-pixel centres, as ``tf.image.resize``) of
    ``cell`` values to ``size = (cell + 1) * cell_side``: the resize of an identity."""
    eye = tf.eye(cell)[..., None]                                            # (cell, cell, 1)
    size = (cell + 1) * cell_side
    return tf.image.resize(eye, (size, cell), method="bilinear")[..., 0]


def upsample(grids, offsets, ry, rx, h, w):
    """(g, cell, cell) grids -> (g, H, W) smooth masks: bilinear upsampling + shifted crop.

    Bilinear upsampling is separable, so each mask is ``Ry[rows] @ grid @ Rx[cols]^T`` with the
    1-D interpolation matrices ``ry``/``rx`` (:func:`interpolation`) cropped at the mask's offset:
    two small matrix products per mask instead of resizing to ((cell+1) x cell_h)^2 and gathering
    twice (which cost more than the model on the 227x227 center-pixel model).
    """
    ay = tf.gather(ry, offsets[:, :1] + tf.range(h)[None])                   # (g, H, cell)
    ax = tf.gather(rx, offsets[:, 1:] + tf.range(w)[None])                   # (g, W, cell)
    return tf.matmul(tf.matmul(ay, grids), ax, transpose_b=True)


def saliency_function(forward, shape, cell, score):
    """The compiled ``sum_i S_t(x * M_i) M_i`` for one model, image shape, cell and explained score
    ``score(outputs, onehot) -> (N,)`` (:meth:`xaitf.outputs.Output.select_onehot`; the class
    probability P_t by default).

    Arguments of the returned function: x (n,H,W,C) float32, onehot (n,K) float32, grids
    (chunks,g,cell,cell) float32, offsets (chunks,g,2) int32, valid (chunks,g) float32 (1 for real
    masks, 0 for padding); it loops over the chunks of g masks and returns (n,H,W).
    """
    h, w = shape[:2]
    cell_h, cell_w = math.ceil(h / cell), math.ceil(w / cell)
    spec = [image_spec(shape), tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None, cell, cell], tf.float32),
            tf.TensorSpec([None, None, 2], tf.int32), tf.TensorSpec([None, None], tf.float32)]

    @tf.function(input_signature=spec)
    def saliency(x, onehot, grids, offsets, valid):
        n = tf.shape(x)[0]
        g = tf.shape(grids)[1]
        total = tf.zeros((n, h, w), tf.float32)
        for j in tf.range(tf.shape(grids)[0]):
            m = upsample(grids[j], offsets[j], interpolation(cell, cell_h),
                         interpolation(cell, cell_w), h, w)                   # (g,H,W)
            pert = x[:, None] * m[None, ..., None]                           # (n,g,H,W,C)
            pert = tf.reshape(pert, tf.concat([[n * g], tf.shape(x)[1:]], 0))
            s = score(forward(pert, training=False), tf.repeat(onehot, g, axis=0))   # (n*g,)
            s = tf.reshape(s, (n, g)) * valid[j][None]
            total += tf.einsum("ng,ghw->nhw", s, m)
        return total

    return saliency


class Rise(Explainer):
    """RISE saliency (Petsiuk et al. 2018).

    Args:
        model: tf-keras or Keras 3 image classifier.
        masks: number of random masks N (4000; paper: 4000 for ResNet50 / 8000 for VGG16).
        cell: the random grid has ``cell x cell`` cells (7; paper: s = 7).
        p: probability of keeping a cell (0.5; paper: 0.5).
        **common: batch_size (perturbed images, inputs x masks, per model evaluation),
            channel_reduce, seed (the same seed gives the same masks and maps), progress, output (see
            :class:`xaitf.explainer.Explainer`).
        seed: the masks' grids and offsets, shared by every input (stateless draws of the seed
            alone) (counter-based: independent of batch_size and of the other inputs).

    Returns (N,H,W): one map per pixel (a mask covers every channel of a pixel).
    """

    key = "rise"          # the preset section of xaitf.settings
    default_output = "probabilities"
    stochastic = True

    def __init__(self, model, *, masks=4000, cell=7, p=0.5, **common):
        super().__init__(model, params=dict(masks=masks, cell=cell, p=p), **common)

    def setup(self):
        self.n_masks = _number(self.params, "masks", int, 1)
        self.cell = _number(self.params, "cell", int, 1)
        self.p = _number(self.params, "p", float, 0.0, 1.0, low_open=True)
        h, w = self.fixed_shape()[:2]
        if self.cell > min(h, w):
            raise MethodError(f"Rise cell must be at most the image side {min(h, w)}, got {self.cell}")
        self.cell_h, self.cell_w = math.ceil(h / self.cell), math.ceil(w / self.cell)
        forward, shape, cell, spec = self.runner, self.shape, self.cell, self.output_spec
        build = lambda: saliency_function(forward, shape, cell, spec.select_onehot)  # noqa: E731
        if spec.tag is None:           # a user's output function: not shared through the cache
            self._fn = build()
        else:
            self._fn = cached_function(forward, f"rise:{cell}:{self.logit_activation}:{spec.tag}", build)

    def chunk_size(self):
        return self.batch_size

    # -- masks -----------------------------------------------------------------------------------
    def random_grids(self):
        """The seed's N grids (N, cell, cell) in {0,1} and offsets (N, 2), drawn on the device."""
        seed = tf.constant([self.seed, 0x5EED], tf.int64)
        u = tf.random.stateless_uniform((self.n_masks, self.cell, self.cell), seed=seed)
        grids = tf.cast(u < self.p, tf.float32)
        oy = tf.random.stateless_uniform((self.n_masks,), seed=seed + [0, 1], minval=0,
                                         maxval=self.cell_h, dtype=tf.int32)
        ox = tf.random.stateless_uniform((self.n_masks,), seed=seed + [0, 2], minval=0,
                                         maxval=self.cell_w, dtype=tf.int32)
        return grids, tf.stack([oy, ox], axis=1)

    def _upsample(self, grids, offsets):
        """(g, cell, cell) grids -> (g, H, W) masks of this explainer's size (:func:`upsample`)."""
        h, w = self.shape[:2]
        return upsample(grids, offsets, interpolation(self.cell, self.cell_h),
                        interpolation(self.cell, self.cell_w), h, w)

    def masks(self, start=0, stop=None):
        """The full-size masks ``start:stop`` (M, H, W) of this seed, as numpy (for inspection)."""
        grids, offsets = self.random_grids()
        stop = self.n_masks if stop is None else stop
        return self._upsample(grids[start:stop], offsets[start:stop]).numpy()

    # -- saliency --------------------------------------------------------------------------------
    def explain_batch(self, x, targets):
        n = len(x)
        g = max(1, min(self.n_masks, self.batch_size // n))
        chunks = -(-self.n_masks // g)
        pad = chunks * g - self.n_masks
        grids, offsets = self.random_grids()
        valid = tf.concat([tf.ones(self.n_masks), tf.zeros(pad)], 0)
        grids = tf.concat([grids, tf.zeros((pad, self.cell, self.cell))], 0)
        offsets = tf.concat([offsets, tf.zeros((pad, 2), tf.int32)], 0)
        onehot = tf.one_hot(np.asarray(targets, np.int32), self.num_classes)
        total = self._fn(tf.constant(x), onehot,
                         tf.reshape(grids, (chunks, g, self.cell, self.cell)),
                         tf.reshape(offsets, (chunks, g, 2)),
                         tf.reshape(valid, (chunks, g)))
        return total.numpy() / (self.n_masks * self.p)
