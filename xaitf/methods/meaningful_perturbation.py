"""Meaningful Perturbation (Fong & Vedaldi, ICCV 2017), in TensorFlow.

Learn the smallest, smoothest deletion mask that destroys the class probability. With a mask ``m``
in [0,1] (1 = keep the pixel) and a blurred copy of the image::

    perturbed = x * m + blur(x) * (1 - m),   blur = median filter of blur_size x blur_size per channel
    loss(m)   = l1_coeff * mean|1 - m|
              + tv_coeff * (mean |m[i+1,j] - m[i,j]|^tv_beta + mean |m[i,j+1] - m[i,j]|^tv_beta)
              + category_coeff * softmax_c(f(perturbed))

minimised with Adam (PyTorch's update rule and defaults beta = (0.9, 0.999), eps = 1e-8, as study 1's
PyTorch code) for ``max_iterations`` steps, clamping ``m`` to [0, 1] after every step. The mask
starts from random {0,1} values drawn from the seed (the same draw for every image). With ``mask_scale = s > 1`` the mask lives at
(H/s, W/s) (the L1 and TV terms are computed there, as in the reference implementation) and is
upsampled bilinearly to (H, W) for the perturbation.

Every image of a chunk is optimised at once: the masks of all images are one tensor, the summed
loss gives each mask its own gradient (Adam is element-wise, so this is exactly n independent
optimisations); each step is one compiled ``tf.function`` call.

The returned map is the deletion mask ``1 - m`` of the full-resolution mask, normalised per image
by ``normalize``: ``"study1"`` (default) ``1 - (m - min m) / max m`` as study 1 does; ``"minmax"``
``1 - (m - min m) / (max m - min m)``, in [0, 1]; ``"none"`` ``1 - m``. Study 1 divides by the
maximum, not the range: the two agree when min m = 0, and differ by an affine map otherwise (e.g. a
mask that only needs to dip to 0.97 at one pixel gives a study-1 map in [0.97, 1]); study 1 z-scores
the map afterwards, which removes the difference. High values = pixels whose deletion destroys
the class.

The class probability (``output="probabilities"``, the default; ``output=`` takes the logit or a
user's function too, :mod:`xaitf.outputs`) is the softmax of the pre-softmax output
(``keras_bridge.logits_model``), computed in the model's own precision (the center-pixel model's float64 head keeps its precision).
The blur uses ``scipy.ndimage.median_filter`` with edge replication (``mode="nearest"``, as
OpenCV's medianBlur).
"""
import os

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import MethodError
from ..explainer import Explainer
from ._xla import fused
from .rise import _number

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
UNROLL = 5                     # MP steps per compiled call
NORMALIZE = ("study1", "minmax", "none")


def _uint8_levels(x):
    """``x * 255`` as uint8 if every value is exactly ``k / 255`` in float32 (8-bit images), else None."""
    k = np.rint(x * 255)
    if k.size == 0 or k.min() < 0 or k.max() > 255:
        return None
    k = k.astype(np.uint8)
    return k if np.array_equal(k.astype(np.float32) / 255, x) else None


def median_blur(x, size):
    """Median filter of ``size x size`` pixels over each image and channel of (N,H,W,C), edges
    replicated.

    8-bit images (every value ``k / 255``) with an odd ``size`` go through OpenCV's histogram median
    (the same numbers: the median of the levels is the level of the median; 256 MNIST images in
    milliseconds instead of about half a second); others through ``scipy.ndimage.median_filter``,
    split over one thread per core (it releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    x = np.asarray(x, np.float32)
    if size <= 1:
        return np.array(x)
    levels = _uint8_levels(x) if size % 2 else None
    if levels is not None:
        import cv2

        out = np.empty_like(levels)
        for i in range(len(levels)):
            for c in range(levels.shape[-1]):
                out[i, ..., c] = cv2.medianBlur(np.ascontiguousarray(levels[i, ..., c]), size)
        return out.astype(np.float32) / 255
    from scipy.ndimage import median_filter

    blur = lambda a: median_filter(a, size=(1, size, size, 1), mode="nearest")  # noqa: E731
    cores = os.cpu_count() or 1
    if cores <= 1 or len(x) * x.shape[1] < 2 * size:
        return blur(x)
    with ThreadPoolExecutor(cores) as pool:
        if len(x) >= cores:                                  # whole images per thread
            return np.concatenate(list(pool.map(blur, np.array_split(x, cores))))
        # few large images: bands of rows, each filtered with size // 2 rows of context either side
        h, r = x.shape[1], size // 2
        cuts = np.linspace(0, h, cores + 1).astype(int)

        def band(k):
            lo, hi = max(0, cuts[k] - r), min(h, cuts[k + 1] + r)
            return blur(x[:, lo:hi])[:, cuts[k] - lo:cuts[k + 1] - lo]

        return np.concatenate(list(pool.map(band, range(cores))), axis=1)


def tv_norm(m, beta):
    """Per-image total variation: mean |d_row m|^beta + mean |d_col m|^beta over (n,h,w,1) masks."""
    dr = tf.abs(m[:, 1:, :, :] - m[:, :-1, :, :])
    dc = tf.abs(m[:, :, 1:, :] - m[:, :, :-1, :])
    return tf.reduce_mean(dr ** beta, axis=[1, 2, 3]) + tf.reduce_mean(dc ** beta, axis=[1, 2, 3])


def regulariser_gradient(m, l1_coeff, tv_coeff, beta):
    """d/dm of ``l1_coeff * mean|1 - m| + tv_coeff * tv_norm(m, beta)`` for each mask, written out:
    ``-sign(1 - m) / cells`` and ``beta |d|^(beta-1) sign(d) / count`` of each difference ``d``,
    pasted back to both of its cells (the values TF's autodiff gives, sign(0) = 0 included)."""
    dr = m[:, 1:, :, :] - m[:, :-1, :, :]
    dc = m[:, :, 1:, :] - m[:, :, :-1, :]
    shape = tf.cast(tf.shape(m), m.dtype)
    cells = shape[1] * shape[2] * shape[3]
    gr = (tv_coeff * beta / ((shape[1] - 1) * shape[2] * shape[3])) * tf.abs(dr) ** (beta - 1) * tf.sign(dr)
    gc = (tv_coeff * beta / (shape[1] * (shape[2] - 1) * shape[3])) * tf.abs(dc) ** (beta - 1) * tf.sign(dc)
    return (-(l1_coeff / cells) * tf.sign(1.0 - m)
            + tf.pad(gr, [[0, 0], [1, 0], [0, 0], [0, 0]]) - tf.pad(gr, [[0, 0], [0, 1], [0, 0], [0, 0]])
            + tf.pad(gc, [[0, 0], [0, 0], [1, 0], [0, 0]]) - tf.pad(gc, [[0, 0], [0, 0], [0, 1], [0, 0]]))


def mask_update(m, g_class, mom, vel, t, lr, l1_coeff, tv_coeff, beta):
    """One step on the masks: the full gradient (the class term's ``g_class`` from the tape plus
    :func:`regulariser_gradient`), PyTorch's Adam update (bias-corrected moments) and the clamp to
    [0, 1]. Returns (m, mom, vel)."""
    b1, b2 = ADAM_BETA1, ADAM_BETA2
    g = g_class + regulariser_gradient(m, l1_coeff, tv_coeff, beta)
    mom = b1 * mom + (1.0 - b1) * g
    vel = b2 * vel + (1.0 - b2) * tf.square(g)
    step = lr * (mom / (1.0 - b1 ** t)) / (tf.sqrt(vel / (1.0 - b2 ** t)) + ADAM_EPS)
    return tf.clip_by_value(m - step, 0.0, 1.0), mom, vel


MASK_UPDATE = fused(mask_update)


class MeaningfulPerturbation(Explainer):
    """Meaningful Perturbation (Fong & Vedaldi 2017); the defaults are study 1's.

    Args:
        model: tf-keras or Keras 3 image classifier.
        tv_beta: exponent of the total-variation term (3; at least 1).
        lr: Adam learning rate (0.1).
        max_iterations: optimisation steps (1000).
        l1_coeff: weight of the mask-area term mean|1 - m| (0.01).
        tv_coeff: weight of the total-variation term (0.2).
        category_coeff: weight of the class probability (1.0).
        blur_size: side of the median filter that makes the "deleted" image (11).
        mask_scale: the mask has (H/mask_scale, W/mask_scale) cells, upsampled bilinearly (1 = full
            resolution); must divide H and W.
        normalize: "study1" | "minmax" | "none" (see the module docstring) ("study1").
        **common: batch_size (images optimised together: one model evaluation per image and
            step), channel_reduce, seed (of the random {0,1} initial mask), progress, output (see
            :class:`xaitf.explainer.Explainer`).
        seed: the random {0,1} initial mask, the same for every input (counter-based: independent of batch_size and of the other inputs).

    Returns (N,H,W) maps in [0,1]: the normalised deletion mask.
    """

    key = "mp"            # the preset section of xaitf.settings
    default_output = "probabilities"
    stochastic = True

    def __init__(self, model, *, tv_beta=3, lr=0.1, max_iterations=1000, l1_coeff=0.01,
                 tv_coeff=0.2, category_coeff=1.0, blur_size=11, mask_scale=1, normalize="study1",
                 **common):
        super().__init__(model, params=dict(tv_beta=tv_beta, lr=lr, max_iterations=max_iterations,
                                            l1_coeff=l1_coeff, tv_coeff=tv_coeff,
                                            category_coeff=category_coeff, blur_size=blur_size,
                                            mask_scale=mask_scale, normalize=normalize), **common)

    def setup(self):
        p = self.params
        name = type(self).__name__
        self.iterations = _number(p, "max_iterations", int, 1, owner=name)
        self.lr = _number(p, "lr", float, 0.0, low_open=True, owner=name)
        self.tv_beta = _number(p, "tv_beta", float, 1.0, owner=name)  # |d|^beta has no gradient at 0 below 1
        self.l1_coeff = _number(p, "l1_coeff", float, 0.0, owner=name)
        self.tv_coeff = _number(p, "tv_coeff", float, 0.0, owner=name)
        self.category_coeff = _number(p, "category_coeff", float, 0.0, owner=name)
        self.blur_size = _number(p, "blur_size", int, 1, owner=name)
        self.mask_scale = _number(p, "mask_scale", int, 1, owner=name)
        h, w = self.fixed_shape()[:2]
        if h % self.mask_scale or w % self.mask_scale:
            raise MethodError(f"{name} mask_scale must divide the image size {h}x{w}, got {self.mask_scale} "
                              "(use 1 for a full-resolution mask)")
        self.mask_shape = (h // self.mask_scale, w // self.mask_scale)
        if min(self.mask_shape) < 2:
            raise MethodError(f"{name} mask_scale {self.mask_scale} leaves a {self.mask_shape[0]}x{self.mask_shape[1]} "
                              "mask; the total-variation term needs at least 2x2")
        if p["normalize"] not in NORMALIZE:
            raise MethodError(f"{name} normalize must be one of {', '.join(NORMALIZE)}, got {p['normalize']!r}")
        self._step_fns = {}

    def chunk_size(self):
        return self.batch_size

    def _upsample(self, m):
        if self.mask_scale == 1:
            return m
        return tf.image.resize(m, self.shape[:2], method="bilinear")

    def losses(self, x, blurred, onehot, m):
        """Per-image loss terms (area, tv, probability) for masks m (n,h,w,1)."""
        up = self._upsample(m)
        perturbed = x * up + blurred * (1.0 - up)
        score = self.output_spec.select_onehot(self.runner(perturbed, training=False), onehot)
        area = tf.reduce_mean(tf.abs(1.0 - m), axis=[1, 2, 3])
        return area, tv_norm(m, self.tv_beta), score

    def _adam_steps(self, k, i, m, mom, vel, blurred, diff, onehot):
        """``k`` Adam steps (PyTorch's update) of every mask of the chunk, each followed by the clamp
        to [0, 1], unrolled in one graph. The tape covers the model's class term only; the area and
        TV terms' gradient is analytic and joins the update in one fused kernel."""
        for _ in range(k):
            with tf.GradientTape() as tape:
                tape.watch(m)
                up = self._upsample(m)
                # blurred + up * (x - blurred) = x * up + blurred * (1 - up)
                score = self.output_spec.select_onehot(self.runner(blurred + up * diff, training=False),
                                                       onehot)
                loss = self.category_coeff * tf.reduce_sum(score)
            i = i + 1
            m, mom, vel = MASK_UPDATE(m, tape.gradient(loss, m), mom, vel, tf.cast(i, tf.float32), self.lr,
                                 self.l1_coeff, self.tv_coeff, self.tv_beta)
        return i, m, mom, vel

    def _optimise(self, x, blurred, onehot, m0):
        """The optimised masks, upsampled: (n, H, W).

        The loop is Python around compiled blocks of ``UNROLL`` steps: inside a ``tf.while_loop``
        TensorFlow's oneDNN rewrite skips the max-pooling gradient, whose plain kernel made each
        step of the MNIST CNN 2.1x a forward + backward pass; blocks of steps keep Python's share
        of a small step (64 CIFAR images: 9 ms) low.
        """
        diff = x - blurred
        state = (tf.constant(0), m0, tf.zeros_like(m0), tf.zeros_like(m0))
        blocks, rest = divmod(self.iterations, UNROLL)
        for k, count in ((UNROLL, blocks), (1, rest)):
            for _ in range(count):
                state = self._steps(k)(*state, blurred, diff, onehot)
        return self._upsample(state[1])[..., 0]

    def _steps(self, k):
        if k not in self._step_fns:
            self._step_fns[k] = tf.function(lambda *a: self._adam_steps(k, *a), reduce_retracing=True,
                                            autograph=False)
        return self._step_fns[k]

    def initial_masks(self, n):
        """The seed's random {0,1} initial mask (h, w) for each of n images, as (n, h, w, 1) float32.

        Every image starts from the same draw, so an image's map depends on the image and the seed
        only, not on its position in the batch or on ``batch_size``.
        """
        m0 = self.rng().integers(0, 2, size=(*self.mask_shape, 1)).astype(np.float32)
        return np.repeat(m0[None], n, axis=0)

    def optimise(self, x, targets):
        """The optimised full-resolution masks m (n,H,W) (1 = keep) for one chunk."""
        blurred = median_blur(x, self.blur_size)
        onehot = tf.one_hot(np.asarray(targets, np.int32), self.num_classes)
        m = self._optimise(tf.constant(x), tf.constant(blurred), onehot, tf.constant(self.initial_masks(len(x))))
        return m.numpy()

    def explain_batch(self, x, targets):
        m = self.optimise(x, targets)
        how = self.params["normalize"]
        if how == "none":
            return 1.0 - m
        lo = m.min(axis=(1, 2), keepdims=True)
        hi = m.max(axis=(1, 2), keepdims=True)
        scale = hi if how == "study1" else hi - lo
        return 1.0 - (m - lo) / np.where(scale > 0, scale, 1.0)
