"""Shared pieces of the metrics: input checks, pixel orders, fill images and the scoring engine.

The perturbation metrics (degradation, deletion/insertion curves, IROF) all ask the same question
many times: what does the model output when the pixels of ``x`` that come first in an *order* are
replaced by a *base* image (deletion), or when only those pixels are kept on top of the base
(insertion / keep)? :class:`Scorer` answers it as one batched TensorFlow program per chunk:

* ``order`` (N,H,W) int32: rank of every pixel (0 = first to be removed / inserted);
* a list of pairs ``(image i, count t)``: pixel p of image i is switched when ``order[i,p] < t``;
* the perturbed chunk ``where(order < t, base, x)`` (deletion) or ``where(order < t, x, base)``
  (insertion) is built on the device from gathered rows and goes through the model at once.

Only one chunk of ``batch_size`` perturbed images exists at a time.
"""
import collections

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from ..errors import InputError, MethodError
from ..explainer import as_batch, as_targets, chunks, progress
from ..grouped_conv import runner
from ..keras_bridge import logits_model, model_cache, model_kind, output_units, probability_head
from ._checks import check_fraction, check_int, check_maps, count_of, pixel_order  # noqa: F401

OUTPUTS = ("probabilities", "logits", "raw")
FILLS = ("mean", "blur", "salt_pepper")


# ------------------------------------------------------------------------------------------------
# fills
# ------------------------------------------------------------------------------------------------
def blur(x, sigma=5.0, radius=5):
    """Gaussian blur of every image over H and W (channels apart): Petsiuk et al.'s insertion start,
    an 11x11 kernel (``radius`` 5) with ``sigma`` 5; image edges repeat the nearest pixel."""
    from scipy.ndimage import gaussian_filter

    if float(sigma) <= 0:
        raise MethodError(f"blur_sigma must be > 0, got {sigma!r}")
    return gaussian_filter(np.asarray(x, np.float32), sigma=(0, float(sigma), float(sigma), 0),
                           mode="nearest", truncate=float(radius) / float(sigma)).astype(np.float32)


def fill_image(x, fill, seed=0, blur_sigma=5.0):
    """The image that removed pixels take, shaped (N or 1, H or 1, W or 1, C) float32.

    ``fill``: a number (every channel), a sequence of one value per channel, an array that
    broadcasts to ``x`` ((H,W,C), (N,H,W,C), ...), or a name:

    * ``"mean"``: each image's own mean value per channel;
    * ``"blur"``: each image blurred (:func:`blur`, sigma ``blur_sigma``);
    * ``"salt_pepper"``: every pixel independently 0 or 1 with probability 1/2 (the same value
      in all channels), drawn with ``numpy.random.default_rng(seed)`` for the whole batch at once.
      On images scaled to [0, 1] these are black and white, 0 and 255 of the 8-bit scale (study 4's
      README: "0 or 255, salt and pepper").
    """
    n, h, w, c = x.shape
    if isinstance(fill, str):
        name = fill.lower()
        if name == "mean":
            return x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
        if name == "blur":
            return blur(x, blur_sigma)
        if name in ("salt_pepper", "salt-pepper", "saltpepper"):
            rng = np.random.default_rng(int(seed))
            return rng.integers(0, 2, size=(n, h, w, 1)).astype(np.float32)
        raise MethodError(f"unknown fill {fill!r}; valid: a number, one value per channel, an image, "
                          f"or one of {', '.join(FILLS)}")
    try:
        f = np.asarray(fill, dtype=np.float32)
    except (TypeError, ValueError):
        raise MethodError(f"fill must be a number, one value per channel or a name ({', '.join(FILLS)}), "
                          f"got {fill!r}") from None
    if f.ndim > 4:
        raise InputError(f"fill shaped {f.shape} does not broadcast to the images {x.shape}")
    if f.ndim == 2 and c == 1 and f.shape == (h, w):     # a gray image (H,W), as the methods take it
        f = f[..., None]
    f = f.reshape((1,) * (4 - f.ndim) + f.shape)
    try:
        ok = np.broadcast_shapes(f.shape, x.shape) == x.shape    # [0, 1] on gray images: refused
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"fill shaped {np.shape(fill)} does not broadcast to the images {x.shape} "
                         f"(a number, {c} value(s) per channel, or an image)")
    if not np.all(np.isfinite(f)):
        raise InputError("fill contains NaN or infinite values")
    return np.ascontiguousarray(f)


# ------------------------------------------------------------------------------------------------
# the model side
# ------------------------------------------------------------------------------------------------
def output_transform(model, output):
    """``(forward model, transform, note)``: what a metric scores (the forward model to call:
    :func:`xaitf.grouped_conv.runner`).

    * ``"probabilities"``: the model's output when it ends in softmax (or sigmoid); otherwise the
      softmax of its output (sigmoid for a one-unit output): :func:`xaitf.keras_bridge.probability_head`.
    * ``"logits"``: the pre-softmax/pre-sigmoid output (:func:`xaitf.keras_bridge.logits_model`).
    * ``"raw"``: the model's output as it is.

    A one-unit output (a binary classifier such as study 5's) is scored as two classes:
    ``[1 - p, p]`` for probabilities, ``[-z, z]`` for logits/raw, so targets are 0 or 1.
    """
    if output not in OUTPUTS:
        raise MethodError(f"unknown output {output!r}; valid: {', '.join(OUTPUTS)}")
    model_kind(model)  # ModelError for anything that is not a Keras model
    k = output_units(model)
    if output == "logits":
        fwd, note = logits_model(model)
        post = None
    else:
        fwd, note = model, "model output"
        post = None
        if output == "probabilities":
            name, note = probability_head(model)
            post = {None: None, "softmax": tf.nn.softmax, "sigmoid": tf.nn.sigmoid}[name]
    two = output == "probabilities"

    def transform(out):
        out = tf.cast(out, tf.float64)
        if post is not None:
            out = post(out)
        if k == 1:
            out = tf.concat([1.0 - out, out], axis=-1) if two else tf.concat([-out, out], axis=-1)
        return out

    return runner(fwd), transform, note      # the same function, faster for Keras 3 grouped convolutions


class Scorer:
    """Scores of perturbed copies of a batch, chunk by chunk (see the module docstring)."""

    def __init__(self, model, output="probabilities"):
        self.model = model
        self.output = output
        self.forward, self.transform, self.note = output_transform(model, output)
        self.num_classes = max(2, output_units(model))
        self._programs = {}

    def _compiled(self, shape):
        """One tf.function per image shape (H,W,C), traced once: every argument has a signature."""
        if shape not in self._programs:
            h, w, c = shape
            vec = tf.TensorSpec([None], tf.int32)
            sig = [tf.TensorSpec([None, h, w, c], tf.float32),
                   tf.TensorSpec([None, None, None, None], tf.float32),
                   tf.TensorSpec([None, h, w], tf.int32), vec, vec, vec, vec, tf.TensorSpec([], tf.bool)]
            self._programs[shape] = tf.function(self._program, input_signature=sig, autograph=False)
        return self._programs[shape]

    def _program(self, x_all, base_all, order_all, idx, idx_b, thr, tgt, insert):
        xs = tf.gather(x_all, idx)
        bs = tf.broadcast_to(tf.gather(base_all, idx_b), tf.shape(xs))
        switch = (tf.gather(order_all, idx) < thr[:, None, None])[..., None]
        # deletion: the switched pixels take the base; insertion: only the switched pixels stay
        xp = tf.where(tf.not_equal(switch, insert), bs, xs)
        out = self.transform(self.forward(xp, training=False))
        score = tf.gather(out, tgt, batch_dims=1)
        return score, tf.argmax(out, axis=-1, output_type=tf.int32), tf.reduce_max(out, axis=-1)

    def run(self, x, base, order, idx, thr, targets, insert=False, batch_size=256, desc="metric",
            show_progress=True):
        """Scores of ``len(idx)`` perturbed images.

        Args:
            x: (N,H,W,C) float32 images. base: fill image from :func:`fill_image`.
            order: (N,H,W) int32 pixel order. idx: (P,) image of each pair. thr: (P,) pixel counts.
            targets: (N,) classes scored. insert: keep pixels ``order < thr`` (else remove them).
            batch_size: perturbed images per model call.
            show_progress: progress over the chunks (shown once the work has run 2 s).

        Returns:
            ``(score, predicted, top)``: (P,) target score, (P,) argmax class, (P,) max score.
        """
        idx = np.asarray(idx, np.int32)
        thr = np.asarray(thr, np.int32)
        per_image = base.shape[0] != 1
        x_t = tf.constant(x, tf.float32)
        base_t = tf.constant(base, tf.float32)
        order_t = tf.constant(order, tf.int32)
        tgt = np.asarray(targets, np.int32)[idx]
        show = bool(show_progress)
        run = self._compiled(tuple(int(d) for d in x.shape[1:]))
        ins = tf.constant(bool(insert))
        out = ([], [], [])
        for s in progress(chunks(len(idx), batch_size), show, desc=desc):
            i = idx[s]
            res = run(x_t, base_t, order_t, tf.constant(i),
                      tf.constant(i if per_image else np.zeros_like(i)),
                      tf.constant(thr[s]), tf.constant(tgt[s]), ins)
            for acc, r in zip(out, res):
                acc.append(r.numpy())
        return tuple(np.concatenate(a) for a in out)


def scorer(model, output="probabilities"):
    """A cached :class:`Scorer` per (model, output)."""
    cache = model_cache(model)
    key = ("scorer", output)
    if key not in cache:
        cache[key] = Scorer(model, output)
    return cache[key]


def prepare(model, x, maps, targets=None, output="probabilities", batch_size=256, name="targets"):
    """Checked ``(scorer, x float32 (N,H,W,C), maps float64 (N,H,W), targets int (N,), batch_size)``.

    ``targets=None`` means the model's predicted class on ``x``.
    """
    sc = scorer(model, output)
    x = as_batch(x, model)
    m = check_maps(maps, x.shape[:3])
    bs = check_int(batch_size, "batch_size")
    if targets is None:
        n = len(x)
        z = np.zeros(n, np.int32)
        _, pred, _ = sc.run(x, np.zeros((1, 1, 1, 1), np.float32), np.zeros(x.shape[:3], np.int32),
                            np.arange(n), z, z, batch_size=bs)
        t = pred.astype(np.int64)
    else:
        try:
            t = as_targets(targets, len(x), sc.num_classes)
        except InputError as e:
            raise InputError(f"{name}: {e}") from None
    return sc, x, m, t, bs


Curve = collections.namedtuple("Curve", "fractions scores auc")
Curve.__doc__ = """A perturbation curve: ``fractions`` (S+1,) of pixels changed, ``scores`` (N,S+1) of the
target output at each fraction, ``auc`` (N,) trapezoid area under ``scores`` over ``fractions``."""
