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
optimisations), and the whole loop runs inside one ``tf.function`` (a ``tf.while_loop``).

The returned map is the deletion mask ``1 - m`` of the full-resolution mask, normalised per image
by ``normalize``: ``"study1"`` (default) ``1 - (m - min m) / max m`` as study 1 does; ``"minmax"``
``1 - (m - min m) / (max m - min m)``, in [0, 1]; ``"none"`` ``1 - m``. Study 1 divides by the
maximum, not the range: the two agree when min m = 0, and differ by an affine map otherwise (e.g. a
mask that only needs to dip to 0.97 at one pixel gives a study-1 map in [0.97, 1]); study 1 z-scores
the map afterwards, which removes the difference. High values = pixels whose deletion destroys
the class.

The class probability is the softmax of the pre-softmax output (``keras_bridge.logits_model``),
computed in the model's own precision (the center-pixel model's float64 head keeps its precision).
The blur uses ``scipy.ndimage.median_filter`` with edge replication (``mode="nearest"``, as
OpenCV's medianBlur).
"""
import os

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import MethodError
from ..explainer import Explainer
from .rise import _number, class_probabilities

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
NORMALIZE = ("study1", "minmax", "none")


def median_blur(x, size):
    """Median filter of ``size x size`` pixels over each image and channel of (N,H,W,C).

    The images are split over one thread per core (scipy's filter releases the GIL; an 11x11
    median of 256 MNIST-sized images takes about a second on one core).
    """
    from concurrent.futures import ThreadPoolExecutor
    from scipy.ndimage import median_filter

    x = np.asarray(x, np.float32)
    if size <= 1:
        return np.array(x)
    blur = lambda a: median_filter(a, size=(1, size, size, 1), mode="nearest")  # noqa: E731
    workers = min(len(x), os.cpu_count() or 1)
    if workers <= 1:
        return blur(x)
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(blur, np.array_split(x, workers))))


def tv_norm(m, beta):
    """Per-image total variation: mean |d_row m|^beta + mean |d_col m|^beta over (n,h,w,1) masks."""
    dr = tf.abs(m[:, 1:, :, :] - m[:, :-1, :, :]) ** beta
    dc = tf.abs(m[:, :, 1:, :] - m[:, :, :-1, :]) ** beta
    return tf.reduce_mean(dr, axis=[1, 2, 3]) + tf.reduce_mean(dc, axis=[1, 2, 3])


class MeaningfulPerturbation(Explainer):
    """Meaningful Perturbation (Fong & Vedaldi 2017).

    Parameters (``xaitf.settings.MP``, study-1 defaults):
        tv_beta: exponent of the total-variation term (3; at least 1).
        lr: Adam learning rate (0.1).
        max_iterations: optimisation steps (1000).
        l1_coeff: weight of the mask-area term mean|1 - m| (0.01).
        tv_coeff: weight of the total-variation term (0.2).
        category_coeff: weight of the class probability (1).
        blur_size: side of the median filter that makes the "deleted" image (11).
        mask_scale: the mask has (H/mask_scale, W/mask_scale) cells, upsampled bilinearly (1 = full
            resolution); must divide H and W.
        normalize: "study1" | "minmax" | "none" (see the module docstring).
        batch_size: images optimised together (one model evaluation per image and step).
        seed: seed of the random {0,1} initial mask.

    Returns (N,H,W) maps in [0,1]: the normalised deletion mask.
    """

    key = "mp"
    stochastic = True

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
        h, w = self.shape[:2]
        if h is None or w is None:
            raise MethodError(f"{name} needs a model with a fixed input size (H and W)")
        if h % self.mask_scale or w % self.mask_scale:
            raise MethodError(f"{name} mask_scale must divide the image size {h}x{w}, got {self.mask_scale} "
                              "(use 1 for a full-resolution mask)")
        self.mask_shape = (h // self.mask_scale, w // self.mask_scale)
        if min(self.mask_shape) < 2:
            raise MethodError(f"{name} mask_scale {self.mask_scale} leaves a {self.mask_shape[0]}x{self.mask_shape[1]} "
                              "mask; the total-variation term needs at least 2x2")
        if p["normalize"] not in NORMALIZE:
            raise MethodError(f"{name} normalize must be one of {', '.join(NORMALIZE)}, got {p['normalize']!r}")
        self._fn = tf.function(self._optimise, reduce_retracing=True, autograph=False)
        self.output_note = f"softmax probabilities of the pre-softmax output ({self.output_note})"

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
        prob = class_probabilities(self.forward(perturbed, training=False))
        area = tf.reduce_mean(tf.abs(1.0 - m), axis=[1, 2, 3])
        return area, tv_norm(m, self.tv_beta), tf.reduce_sum(prob * onehot, axis=-1)

    def _optimise(self, x, blurred, onehot, m0):
        lr, b1, b2 = self.lr, ADAM_BETA1, ADAM_BETA2

        def body(i, m, mom, vel):
            with tf.GradientTape() as tape:
                tape.watch(m)
                area, tv, prob = self.losses(x, blurred, onehot, m)
                loss = tf.reduce_sum(self.l1_coeff * area + self.tv_coeff * tv + self.category_coeff * prob)
            g = tape.gradient(loss, m)
            t = tf.cast(i + 1, tf.float32)
            mom = b1 * mom + (1.0 - b1) * g
            vel = b2 * vel + (1.0 - b2) * tf.square(g)
            step = lr * (mom / (1.0 - b1 ** t)) / (tf.sqrt(vel / (1.0 - b2 ** t)) + ADAM_EPS)
            return i + 1, tf.clip_by_value(m - step, 0.0, 1.0), mom, vel

        zeros = tf.zeros_like(m0)
        _, m, _, _ = tf.while_loop(lambda i, *_: i < self.iterations, body,
                                   (tf.constant(0), m0, zeros, zeros))
        return self._upsample(m)[..., 0]

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
        m = self._fn(tf.constant(x), tf.constant(blurred), onehot, tf.constant(self.initial_masks(len(x))))
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
