"""LIME and Kernel SHAP as batched TensorFlow programs (no per-image or per-sample Python loop).

Both methods explain a batch of images over superpixels (any integer map per image:
:mod:`xaitf.segmentation`'s quickshift / SLIC / grid, or your own). Image ``i`` has ``M_i``
segments; a sample is a binary vector ``z`` over them and its image keeps the segments with
``z_s = 1``::

    x_z = where(z[segments], x, fill)

One ``tf.function`` walks chunks of ``batch_size`` model evaluations (``k = batch_size // n``
samples of each of the ``n`` images per chunk) with a ``tf.while_loop``. Per chunk it draws the
masks on the device from the seed, gathers each image's segment map to build the perturbed
images, runs the model, and adds the chunk's contribution to each image's weighted sufficient
statistics ``sum w``, ``sum w z``, ``sum w z z^T``, ``sum w y``, ``sum w z y``, ``sum w y^2``
(float64). Only one chunk of images exists at a time, whatever the number of samples. Both
surrogates are weighted least-squares fits, so those statistics are all the solve needs: the
normal equations of every image are solved at once on the device (batched Cholesky / LU).

Images with fewer segments than the largest in the batch are padded: a padded feature is never
on, has its own row and column of the normal matrix replaced by the identity (or the ridge term),
and gets weight 0; it does not change the other weights.

Masks are a deterministic hash of (seed, stream, sample index, feature index)
(:mod:`xaitf.methods._random`), the same for every image:
an image's map depends on the seed and on its own segments only, not on ``batch_size`` nor on the
other images of the batch (like the library paths, which reseed per image).

* :class:`Lime` (Ribeiro, Singh & Guestrin, KDD 2016): lime 0.2.0.1's image explainer, natively.
* :class:`KernelShap` (Lundberg & Lee, NeurIPS 2017): shap's ``KernelExplainer`` over segments
  with ``l1_reg=False``, natively.

The library paths are :mod:`xaitf.methods.surrogates` (registry names ``lime.lib``, ``shap.lib``).
"""
import itertools
import math
import warnings
from functools import lru_cache

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from .. import segmentation
from ..compat import quiet_retracing
from .._tfimport import first_call_quiet
from ..errors import InputError, MethodError
from ..explainer import Explainer, _caller_stacklevel, as_batch, as_targets
from ..explainer import progress as _progress
from ._random import GOLDEN, LIME_BITS, SHAP_PERM, SHAP_SIZE, hash_bits, mul32, stream_key
from .perturb import _DenseFirst, check_int, split_chain
from .surrogates import SuperpixelMixin, _background

# float64 elements of one group's normal equations (images x S x S) before images are split up
_STAT_BUDGET = 1 << 24


# ------------------------------------------------------------------------------------------------
# mask tables: (rows, features) bits packed into int32 words
# ------------------------------------------------------------------------------------------------
def pack_bits(bits, words=None):
    """(R, S) booleans -> (R, W) int32, bit ``s`` of row r at bit ``s % 32`` of word ``s // 32``."""
    bits = np.asarray(bits, dtype=bool)
    r, s = bits.shape
    words = max(1, -(-s // 32)) if words is None else int(words)
    padded = np.zeros((r, 32 * words), dtype=bool)
    padded[:, :s] = bits
    packed = np.packbits(padded, axis=1, bitorder="little")       # (R, 4W) uint8
    return np.ascontiguousarray(packed).view("<u4").view(np.int32).reshape(r, words)


def unpack_bits(codes, num_features):
    """Inverse of :func:`pack_bits` (numpy, for checks)."""
    codes = np.ascontiguousarray(np.asarray(codes, dtype=np.int32))
    b = np.unpackbits(codes.view(np.uint8).reshape(len(codes), -1), axis=1, bitorder="little")
    return b[:, :num_features].astype(bool)


class _Tables:
    """Mask tables of the images of a group, stacked, with each image's first row and row count."""

    def __init__(self, n, words):
        self.words, self.parts, self.rows = words, [], 0
        self.offset = np.zeros(n, np.int32)
        self.length = np.zeros(n, np.int32)
        self._seen = {}

    def add(self, i, key, make):
        """Give image ``i`` the table ``make()`` (shared by every image with the same ``key``)."""
        if key not in self._seen:
            bits = make()
            self._seen[key] = (self.rows, len(bits))
            if len(bits):
                self.parts.append(pack_bits(bits, self.words))
                self.rows += len(bits)
        self.offset[i], self.length[i] = self._seen[key]

    def codes(self):
        if not self.parts:
            return np.zeros((1, self.words), np.int32)
        return np.concatenate(self.parts)


# ------------------------------------------------------------------------------------------------
# Kernel SHAP's sampling plan (shap 0.51 KernelExplainer.explain, done per segment count)
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def shap_plan(m, nsamples):
    """shap's budget split for ``m`` features and ``nsamples`` coalitions.

    Returns a dict: ``total`` coalitions evaluated (``min(nsamples, 2^m - 2)``), ``full`` subset
    sizes enumerated completely (with their complements), ``enumerated`` rows (bool (E, m), in
    shap's order), ``enum_weight`` (m+1,) kernel weight of an enumerated row by its size,
    ``sample_weight`` of each sampled row, ``cdf`` (cumulative probabilities of the remaining
    size classes, paired sizes drawn as a mask and its complement).
    """
    m = int(m)
    total = 2 * m + 2 ** 11 if nsamples == "auto" else int(nsamples)
    if m <= 30:
        total = min(total, 2 ** m - 2)
    total = max(total, 0)
    plan = {"total": total, "full": 0, "enumerated": np.zeros((0, m), bool),
            "enum_weight": np.zeros(m + 1), "sample_weight": 0.0, "cdf": np.zeros(0)}
    if m <= 1 or total == 0:
        plan["total"] = 0
        return plan
    sizes = int(np.ceil((m - 1) / 2.0))
    paired = int(np.floor((m - 1) / 2.0))
    wv = np.array([(m - 1.0) / (k * (m - k)) for k in range(1, sizes + 1)])
    wv[:paired] *= 2
    wv /= wv.sum()
    left, remaining, full = total, wv.copy(), 0
    rows, enum_w = [], np.zeros(m + 1)
    for k in range(1, sizes + 1):
        nsub = math.comb(m, k) * (2 if k <= paired else 1)
        if left * remaining[k - 1] / nsub < 1.0 - 1e-8:
            break
        full += 1
        left -= nsub
        if remaining[k - 1] < 1.0:
            remaining /= 1 - remaining[k - 1]
        w = wv[k - 1] / math.comb(m, k) / (2.0 if k <= paired else 1.0)
        enum_w[k] = enum_w[m - k] = w
        combos = np.array(list(itertools.combinations(range(m), k)), dtype=np.int64)
        sub = np.zeros((len(combos), m), bool)
        sub[np.arange(len(combos))[:, None], combos] = True
        rows.append(np.stack([sub, ~sub], 1).reshape(-1, m) if k <= paired else sub)
    plan["full"] = full
    plan["enum_weight"] = enum_w
    if rows:
        plan["enumerated"] = np.concatenate(rows)
    if full < sizes and left > 0:
        p = wv[full:] / wv[full:].sum()
        cdf = np.cumsum(p)
        cdf[-1] = 2.0                              # rounding never falls off the end
        plan["cdf"] = cdf
        plan["sample_weight"] = float(wv[full:].sum() / left)
    else:
        plan["total"] = total - left
    return plan


def lime_masks(num_samples, num_features, seed):
    """lime 0.2.0.1's image masks: ``RandomState(seed).randint(0, 2, N * S)``, first row all ones."""
    data = np.random.RandomState(int(seed) % (2 ** 32)).randint(0, 2, int(num_samples) * int(num_features))
    data = data.reshape(int(num_samples), int(num_features))
    data[0, :] = 1
    return data.astype(bool)


# ------------------------------------------------------------------------------------------------
# the shared engine
# ------------------------------------------------------------------------------------------------
def _compose(m, segc, xf, ff):
    """Perturbed images, flat: ``where(m[segments], x, fill)`` -> (n,k,P).

    m: (n,k,S) masks; segc: (n,P) segment of each value (P = H*W*C, the map repeated per channel);
    xf: (n,1,P) images; ff: (1 or n,1,P) fills. Gathering k-long rows of the transposed masks is
    ~3x faster than gathering on their last axis, and one 3-D select beats a 5-D broadcast. uint8
    masks: float16 ones (which oneDNN transposes without its one-time notice of an Eigen fallback
    on CPUs without AVX-512, see :func:`xaitf._tfimport.first_call_quiet`) take 1.5x as long.
    """
    keep = tf.gather(tf.transpose(tf.cast(m, tf.uint8), [0, 2, 1]), segc, batch_dims=1)   # (n,P,k)
    return tf.where(tf.cast(tf.transpose(keep, [0, 2, 1]), tf.bool), xf, ff)


# XLA fuses the gather, transposes and select into one pass (4x faster on a CPU for CIFAR-sized
# images); it compiles once per shape (~0.2 s), so "auto" uses it from _XLA_FROM values built.
_compose_xla = tf.function(_compose, jit_compile=True, autograph=False)
_XLA_FROM = 1 << 26
_XLA_STATE = {}


def _segment_changes(first, X, F, segc, S):
    """The first layer's pre-activation of the fills (n or 1, U) and each segment's change of it,
    ``W^T ((x - fill) * [seg = s])``, per image (n, S, U): one pass over W per image."""
    kernel = first.kernel()
    n = tf.shape(X)[0]
    d = tf.cast(tf.reshape(X - F, tf.stack([n, -1])), kernel.dtype)            # (n, P)

    def one(args):
        di, si = args
        return tf.math.unsorted_segment_sum(di[:, None] * kernel, si, S)

    z_seg = tf.map_fn(one, (d, segc), fn_output_signature=kernel.dtype, parallel_iterations=1)
    return first.z(F), z_seg


def _xla_works():
    """Whether XLA compiles here (probed once on a tiny input)."""
    if "ok" not in _XLA_STATE:
        try:
            out = _compose_xla(tf.ones([1, 2, 3], tf.bool), tf.zeros([1, 4], tf.int32),
                               tf.ones([1, 1, 4]), tf.zeros([1, 1, 4]))
            _XLA_STATE["ok"] = bool(np.all(out.numpy() == 1))
        except Exception:  # noqa: BLE001 - no XLA on this build/device: the plain path
            _XLA_STATE["ok"] = False
    return _XLA_STATE["ok"]


def _stat_specs():
    f = tf.float64
    return (tf.TensorSpec([None], f), tf.TensorSpec([None], f), tf.TensorSpec([None], f),
            tf.TensorSpec([None, None], f), tf.TensorSpec([None, None], f),
            tf.TensorSpec([None, None, None], f))


class _Surrogate(SuperpixelMixin, Explainer):
    """Shared plumbing of the native surrogates: parameter checks, segments, the chunked program.

    Both subclasses take, besides their own parameters, ``jit_compile`` ("auto": XLA for large
    plain-path runs when XLA works here | True | False) and ``shortcut`` (True: the exact
    first-layer shortcut after a ``Flatten -> Dense`` first layer | False: always the plain path).
    """

    default_output = "probabilities"

    stochastic = True

    def __call__(self, x, targets=None):
        self._offset = 0
        fill = getattr(self, "_fill", None)
        if fill is not None and len(fill) > 1:
            from ..params import parse_baseline
            parse_baseline(fill, self.shape, len(as_batch(x, self.model)), owner=type(self).__name__,
                           name="hide_color" if self.key == "lime" else "background")
        return super().__call__(x, targets)

    def _fit_rows(self, x, targets):
        """:meth:`fit` of the next chunk of a call (per-input fills are taken at its rows)."""
        self._rows_from = getattr(self, "_offset", 0)
        try:
            return self.fit(x, targets)
        finally:
            self._offset = self._rows_from + len(x)
            self._rows_from = None

    def _fill_rows(self, fill, n):
        """The fill of the ``n`` images being fitted: the shared one, or their rows of one per input."""
        if fill is None or len(fill) == 1:
            return fill
        lo = getattr(self, "_rows_from", None)
        if (lo is None and n != len(fill)) or (lo is not None and lo + n > len(fill)):
            raise InputError(f"{type(self).__name__}: {len(fill)} fill images given for {n} inputs; "
                             "give one or one per input")
        lo = lo or 0
        return fill[lo:lo + n]

    def setup(self):
        self.fixed_shape()
        self._fns = {}
        self.xla = False
        self._check_jit()
        self._chain, why = self._split()
        self.path = (f"shortcut ({self._chain.first.name}: each segment's change of the first layer, "
                     "once per image)") if self._chain is not None else f"plain ({why})"
        self.setup_method()
        self._segmenter()  # validates the segmenter's name and parameters early

    def setup_method(self):
        pass

    def _split(self):
        """The model cut after a ``Flatten -> Dense`` first layer, or ``(None, reason)``.

        That layer is affine, so the pre-activation of a sample is the fill's plus the chosen
        segments' changes: ``z(x_z) = z(fill) + sum_s z_s W^T ((x - fill) * [seg = s])``; each
        sample then costs S x units multiply-adds instead of H*W*C x units (exact up to rounding).
        After a Conv2D the per-segment changes would cost more than the convolution: plain path.
        """
        if self.params["shortcut"] not in (True, False):
            raise MethodError(f"{type(self).__name__} shortcut must be True or False, got {self.params['shortcut']!r}")
        if not self.params["shortcut"]:
            return None, "shortcut=False"
        if not hasattr(self.forward, "layers"):
            return None, "the model is not a Keras model"
        chain, why = split_chain(self.forward)
        if chain is not None and not isinstance(chain.first, _DenseFirst):
            return None, "the first linear layer is a Conv2D"
        return chain, why

    def _check_jit(self):
        if self.params["jit_compile"] not in ("auto", True, False):
            raise MethodError(f"{type(self).__name__} jit_compile must be 'auto', True or False, "
                              f"got {self.params['jit_compile']!r}")

    # -- segments ----------------------------------------------------------------------------
    def _check_segments(self, segments, n):
        seg = np.asarray(segments)
        h, w = self.shape[:2]
        if seg.ndim == 2:
            seg = np.broadcast_to(seg, (n, h, w))
        if seg.shape != (n, h, w) or not np.issubdtype(seg.dtype, np.integer):
            raise InputError(f"segments must be integer maps shaped ({n},{h},{w}) (or one ({h},{w}) map), "
                             f"got {seg.dtype} {np.shape(segments)}")
        return np.stack([segmentation.relabel(s) for s in seg]).astype(np.int32)

    # -- the model ---------------------------------------------------------------------------
    def _scores(self, images, t):
        return self._output_scores(self.runner(images, training=False), t)

    def _output_scores(self, out, t):
        return tf.cast(self.select(out, t), tf.float64)

    def target_scores(self, x, targets):
        """(N,) float64: the explained output of images x at their targets, ``batch_size`` at a time."""
        h, w, c = self.shape
        if "scores" not in self._fns:
            fn = tf.function(self._scores, input_signature=[tf.TensorSpec([None, h, w, c], tf.float32),
                                                             tf.TensorSpec([None], tf.int32)], autograph=False)
            quiet_retracing(fn)
            self._fns["scores"] = fn
        fn = self._fns["scores"]
        x = np.asarray(x, np.float32)
        t = np.asarray(targets, np.int32)
        out = [fn(tf.constant(x[s:s + self.batch_size]), tf.constant(t[s:s + self.batch_size])).numpy()
               for s in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros(0)

    # -- grouping ------------------------------------------------------------------------------
    def _groups(self, counts):
        """Consecutive groups of at most ``batch_size`` images whose statistics fit the budget."""
        groups, cur, smax = [], [], 0
        for i, m in enumerate(counts):
            s = max(smax, int(m))
            if cur and (len(cur) + 1 > self.batch_size or (len(cur) + 1) * s * s > _STAT_BUDGET):
                groups.append(cur)
                cur, s = [], int(m)
            cur.append(i)
            smax = s
        if cur:
            groups.append(cur)
        return [np.array(g) for g in groups]

    # -- the chunked program ------------------------------------------------------------------
    def _program(self, k, xla):
        """The tf.function that runs chunks ``c0..c1-1`` of ``k`` samples per image."""
        key = ("run", k, xla)
        if key in self._fns:
            return self._fns[key]
        h, w, c = self.shape
        rows_fn, extra_spec = self._rows, self._extra_spec()
        compose = _compose_xla if xla else _compose
        chain = self._chain

        def run(X, F, seg, t, M, codes, off, tlen, extra, z_fill, z_seg, stats, c0, c1):
            n = tf.shape(X)[0]
            S = tf.shape(stats[3])[1]
            segc = tf.repeat(seg, c, axis=1) if c > 1 else seg               # (n, H*W*C)
            xf = tf.reshape(X, tf.stack([n, 1, -1]))
            ff = tf.reshape(F, [-1, 1, h * w * c])
            active = tf.range(S)[None, :] < M[:, None]                        # (n,S)
            bit = tf.range(32)
            tt = tf.repeat(t, k)

            def table_bits(j):                                                # (k,) -> (n,k,S)
                last = tf.maximum(tlen - 1, 0)[:, None]
                wds = tf.gather(codes, off[:, None] + tf.minimum(j[None, :], last))   # (n,k,W)
                b = tf.bitwise.bitwise_and(tf.bitwise.right_shift(wds[..., None], bit), 1) > 0
                return tf.reshape(b, tf.stack([n, k, -1]))[:, :, :S]

            def body(ci, st):
                j = ci * k + tf.range(k)
                m, wgt = rows_fn(j, active, M, tlen, table_bits, extra)         # (n,k,S), (n,k)
                if chain is not None:
                    zs = z_fill[:, None, :] + tf.einsum("nks,nsu->nku", tf.cast(m, z_seg.dtype), z_seg)
                    out = chain.head(tf.reshape(zs, tf.stack([n * k, -1])))
                    g = tf.reshape(self._output_scores(out, tt), tf.stack([n, k]))
                else:
                    imgs = tf.reshape(compose(m, segc, xf, ff), [-1, h, w, c])
                    g = tf.reshape(self._scores(imgs, tt), tf.stack([n, k]))
                z = tf.cast(m, tf.float64)
                wz = z * wgt[..., None]
                sw, sg, sgg, sx, sxg, sxx = st
                return ci + 1, (sw + tf.reduce_sum(wgt, 1), sg + tf.reduce_sum(wgt * g, 1),
                                sgg + tf.reduce_sum(wgt * g * g, 1), sx + tf.reduce_sum(wz, 1),
                                sxg + tf.reduce_sum(wz * g[..., None], 1),
                                sxx + tf.matmul(wz, z, transpose_a=True))

            _, stats = tf.while_loop(lambda ci, _: ci < c1, body, (c0, stats), parallel_iterations=1)
            return stats

        i32 = tf.int32
        spec = [tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None, h, w, c], tf.float32),
                tf.TensorSpec([None, h * w], i32), tf.TensorSpec([None], i32), tf.TensorSpec([None], i32),
                tf.TensorSpec([None, None], i32), tf.TensorSpec([None], i32), tf.TensorSpec([None], i32),
                extra_spec, tf.TensorSpec([None, None], self._z_dtype()),
                tf.TensorSpec([None, None, None], self._z_dtype()), _stat_specs(), tf.TensorSpec([], i32),
                tf.TensorSpec([], i32)]
        fn = tf.function(run, input_signature=spec, autograph=False)
        quiet_retracing(fn)
        self._fns[key] = first_call_quiet(fn)       # the uint8 transposes' oneDNN notice
        return self._fns[key]

    def _accumulate(self, x, fill, seg, targets, counts, tables, extra, rows):
        """Run ``rows`` samples of each image (rows past an image's own count must weigh 0)."""
        n, smax = len(x), int(counts.max())
        k = max(1, self.batch_size // n)
        n_chunks = -(-int(rows) // k)
        k = -(-int(rows) // n_chunks) if n_chunks else k   # equal chunks: no padded samples at the end
        stats = (tf.zeros([n], tf.float64),) * 3 + (tf.zeros([n, smax], tf.float64),) * 2 + \
            (tf.zeros([n, smax, smax], tf.float64),)
        if n_chunks == 0:
            return [s.numpy() for s in stats]
        jit = self.params["jit_compile"]
        xla = self._chain is None and (jit is True or (jit == "auto" and n * rows * x[0].size >= _XLA_FROM)) \
            and _xla_works()       # the shortcut builds no images: nothing for XLA to fuse
        fn = self._program(k, xla)
        self.xla = xla
        X, F, segt = tf.constant(x, tf.float32), tf.constant(fill, tf.float32), tf.constant(seg.reshape(n, -1), tf.int32)
        changes = self._changes(X, F, segt, smax)      # once per group, not once per progress call
        args = (X, F, segt, tf.constant(targets, tf.int32),
                tf.constant(counts, tf.int32), tf.constant(tables.codes()),
                tf.constant(tables.offset), tf.constant(tables.length), extra) + changes
        show = self.progress
        # with progress, the chunks run in ~50 calls (one each up to 50), without in one call
        per_call = max(1, math.ceil(n_chunks / 50)) if show else n_chunks
        for c0 in _progress(range(0, n_chunks, per_call), show, desc=self.name or self.key):
            c1 = min(c0 + per_call, n_chunks)
            stats = fn(*args, stats, tf.constant(c0, tf.int32), tf.constant(c1, tf.int32))
        return stats

    def _z_dtype(self):
        return self._chain.first.dtype if self._chain is not None else tf.float32

    def _changes(self, X, F, seg, smax):
        """``(z_fill, z_seg)`` of the first-layer shortcut (:func:`_segment_changes`); empty without it."""
        dt = self._z_dtype()
        if self._chain is None:
            return tf.zeros([0, 0], dt), tf.zeros([0, 0, 0], dt)
        if "changes" not in self._fns:
            c, first = self.shape[2], self._chain.first
            spec = tf.TensorSpec([None, *self.shape], tf.float32)

            def changes(X, F, seg, S):
                segc = tf.repeat(seg, c, axis=1) if c > 1 else seg               # (n, H*W*C)
                return _segment_changes(first, X, F, segc, S)

            self._fns["changes"] = tf.function(changes, autograph=False, input_signature=[
                spec, spec, tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32)])
        return tuple(self._fns["changes"](X, F, seg, tf.constant(smax, tf.int32)))

    # -- shared entry --------------------------------------------------------------------------
    def _prepare(self, x, targets, segments):
        x = as_batch(x, self.model)
        t = as_targets(targets, len(x), self.num_classes,
                       predict=lambda: self.predict(x, probabilities=True).argmax(-1))
        seg = self.segments(x) if segments is None else self._check_segments(segments, len(x))
        counts = seg.reshape(len(x), -1).max(1).astype(np.int32) + 1
        return x, t, seg, counts

    @staticmethod
    def paint(values, seg):
        """Each segment's value painted on its pixels: values (N,S), seg (N,H,W) -> (N,H,W)."""
        return np.take_along_axis(np.asarray(values), seg.reshape(len(seg), -1), axis=1).reshape(seg.shape)


# ------------------------------------------------------------------------------------------------
class Lime(_Surrogate):
    """LIME for images (Ribeiro, Singh & Guestrin, KDD 2016), lime 0.2.0.1's image explainer as
    one batched tensor program.

    For image x with S segments, ``num_samples`` masks z in {0,1}^S (the first all ones, every
    other bit 0 or 1 with probability 1/2, as lime's ``randint(0, 2, N * S)``) give images
    ``x_z`` (segments with z_s = 0 set to ``hide_color``) and outputs ``y = f_c(x_z)``. Each sample
    weighs ``pi(z) = sqrt(exp(-d(z)^2 / kernel_width^2))`` with ``d`` the cosine distance of z to
    the all-ones vector (``d = 1 - sqrt(|z| / S)``; 1 when z = 0), and the segment weights are
    lime's ridge fit (sklearn ``Ridge(alpha=1, fit_intercept=True)`` with sample weights)::

        beta = (Zc^T W Zc + I)^-1 Zc^T W yc,    intercept = ybar_w - zbar_w . beta

    with Z, y centred at their weighted means. lime's default feature selection ("auto") with
    ``num_features`` at least the number of segments (the library path passes 100000) keeps every
    segment, so every segment is fitted here (no selection step).

    Args:
        model: tf-keras or Keras 3 image classifier.
        num_samples: masks per image (study 1: 1000).
        hide_color: value of hidden segments (study 1: 0.0), one value per channel, an image, one
            image per input (N,H,W,C), or None (each segment's mean colour, per channel, as lime).
        kernel_width: width of the exponential kernel on cosine distances (lime default 0.25).
        segmenter: "quickshift" (default) | "slic" | "grid" (see :mod:`xaitf.segmentation`).
        kernel_size, max_dist, ratio: quickshift settings; None (default) = chosen by image size
            (study 1's 4 / 200 / 0.2 at >= 128 px; 1 / 5 / 0.2 below 64 px).
        n_segments, compactness, sigma: SLIC settings (50, 30, 3).
        cell: grid cell side in pixels (4).
        output: "probabilities" (study 1, lime's convention; default) or "logits".
        positive_only, num_features: the mask's selection (study 1: True, 1).
        mask_output: True (study 1): the map is lime's ``get_image_and_mask(label,
            positive_only, num_features, hide_rest=True)`` mask: 1 on the chosen segments (-1 on
            negative ones when positive_only is False), 0 elsewhere; False: each segment's
            weight painted on its pixels.
        jit_compile: "auto" (default: XLA for large plain-path runs, when XLA works here), True
            or False.
        shortcut: True (default): the exact first-layer shortcut after a ``Flatten -> Dense``
            first layer; False: always the plain path.
        sampler: "device" (default) draws the masks on the device from the seed; "lime" uses
            lime's own numpy stream (``RandomState(seed)``, per image), so that with the same
            segments the result equals ``lime.lib``'s.
        **common: batch_size (model evaluations per chunk), channel_reduce, seed (the masks, and
            quickshift's seed), progress (see :class:`xaitf.explainer.Explainer`).
        seed: the masks, hashed from (seed, sample, feature) (counter-based: independent of batch_size and of the other inputs); with
            ``sampler="lime"``, lime's ``RandomState(seed)`` per image (also independent of them).

    Returns (N,H,W). :meth:`fit` gives the weights, intercepts, R^2 and local predictions, and
    takes your own segments and masks.
    """

    key = "lime"          # the preset section of xaitf.settings (shared with ``lime.lib``)

    def __init__(self, model, *, num_samples=1000, hide_color=0.0, kernel_width=0.25,
                 segmenter="quickshift", kernel_size=None, max_dist=None, ratio=None,
                 n_segments=50, compactness=30, sigma=3, cell=4, output="probabilities",
                 positive_only=True, num_features=1, mask_output=True, jit_compile="auto",
                 shortcut=True, sampler="device", **common):
        super().__init__(model, params=dict(
            num_samples=num_samples, hide_color=hide_color, kernel_width=kernel_width,
            segmenter=segmenter, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
            n_segments=n_segments, compactness=compactness, sigma=sigma, cell=cell, output=output,
            positive_only=positive_only, num_features=num_features, mask_output=mask_output,
            jit_compile=jit_compile, shortcut=shortcut, sampler=sampler), **common)

    def setup_method(self):
        check_int(self.params["num_samples"], "num_samples", "Lime", 1)
        check_int(self.params["num_features"], "num_features", "Lime", 1)
        if not float(self.params["kernel_width"]) > 0:
            raise MethodError(f"Lime kernel_width must be > 0, got {self.params['kernel_width']!r}")
        if self.params["sampler"] not in ("device", "lime"):
            raise MethodError(f"Lime sampler must be 'device' or 'lime', got {self.params['sampler']!r}")
        hc = self.params["hide_color"]
        self._fill = None if hc is None else _background(hc, self.shape, "Lime", "hide_color")
        self._key = stream_key(self.seed, LIME_BITS)

    def _extra_spec(self):
        return (tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float64))

    def _rows(self, j, active, M, tlen, table_bits, extra):
        N, width = extra
        s = tf.range(tf.shape(active)[1])
        h = hash_bits(hash_bits(self._key, j)[:, None], mul32(tf.cast(s, tf.int64)[None, :], GOLDEN))
        rnd = (tf.bitwise.right_shift(h, tf.constant(31, tf.int64)) > 0) | (j[:, None] == 0)   # (k,S)
        use = (j[None, :] < tlen[:, None])[..., None]
        m = tf.where(use, table_bits(j), rnd[None]) & active[:, None, :]
        on = tf.reduce_sum(tf.cast(m, tf.float64), -1)
        d = tf.where(on > 0, 1.0 - tf.sqrt(on / tf.cast(M, tf.float64)[:, None]), tf.ones_like(on))
        wgt = tf.sqrt(tf.exp(-(d ** 2) / width ** 2))
        return m, tf.where(j[None, :] < N, wgt, tf.zeros_like(wgt))

    def _fills(self, x, seg, counts):
        if self._fill is not None:
            return self._fill_rows(self._fill, len(x))
        out = np.empty_like(x)
        for i in range(len(x)):           # per-segment mean colour (lime's hide_color=None)
            flat = seg[i].ravel()
            num = np.stack([np.bincount(flat, x[i][..., ch].ravel(), counts[i])
                            for ch in range(x.shape[-1])], -1)
            mean = num / np.bincount(flat, minlength=counts[i])[:, None]
            out[i] = mean[seg[i]]
        return out

    def fit(self, x, targets=None, segments=None, masks=None):
        """LIME's surrogate of every image.

        Args:
            x: images (N,H,W,C); targets: classes (None = predicted).
            segments: (N,H,W) or (H,W) integer maps (None = this explainer's segmenter).
            masks: None (sample them), or your own masks: (R, S') shared by every image or
                (N, R, S') per image, with S' >= the segment count (columns past an image's
                segment count are ignored); R replaces num_samples. Distances are to all-ones.
        Returns:
            dict: ``weights`` (N,S) (0 past each image's segment count), ``intercept``, ``score``
            (lime's weighted R^2), ``local_pred`` (the surrogate at all-ones) (N,), ``segments``
            (N,H,W), ``num_segments`` (N,).
        """
        x, t, seg, counts = self._prepare(x, targets, segments)
        n, smax = len(x), int(counts.max())
        if masks is not None:
            mk = np.asarray(masks)
            if mk.ndim == 2:
                mk = np.broadcast_to(mk, (n,) + mk.shape)
            if mk.ndim != 3 or mk.shape[0] != n or mk.shape[2] < smax or mk.shape[1] < 1:
                raise InputError(f"masks must be (R,S) or ({n},R,S) with S >= {smax} segments, got {np.shape(masks)}")
            mk = mk.astype(bool)
        N = int(mk.shape[1]) if masks is not None else int(self.params["num_samples"])
        fill = self._fills(x, seg, counts)
        res = {k: np.zeros((n, smax)) if k == "weights" else np.zeros(n)
               for k in ("weights", "intercept", "score", "local_pred")}
        for g in self._groups(counts):
            cg = counts[g]
            sg = int(cg.max())
            tables = _Tables(len(g), -(-sg // 32))
            for a, i in enumerate(g):
                if masks is not None:
                    tables.add(a, ("user", int(i)), lambda i=i: mk[i, :, :sg])
                elif self.params["sampler"] == "lime":
                    tables.add(a, ("lime", int(counts[i])),
                               lambda m=int(counts[i]): np.pad(lime_masks(N, m, self.seed), ((0, 0), (0, sg - m))))
            extra = (tf.constant(N, tf.int32), tf.constant(float(self.params["kernel_width"]), tf.float64))
            fg = fill if len(fill) == 1 else fill[g]
            stats = self._accumulate(x[g], fg, seg[g], t[g], cg, tables, extra, N)
            out = _ridge(*stats, tf.constant(cg), tf.constant(1.0, tf.float64))
            for name, v in zip(("weights", "intercept", "score", "local_pred"), out):
                v = v.numpy()
                if name == "weights":
                    res[name][g, :sg] = v
                else:
                    res[name][g] = v
        res.update(segments=seg, num_segments=counts, targets=t)
        return res

    def explain_batch(self, x, targets):
        fit = self._fit_rows(x, targets)
        w, seg = fit["weights"], fit["segments"]
        if not self.params["mask_output"]:
            return self.paint(w, seg).astype(np.float32)
        k = int(self.params["num_features"])
        maps = np.zeros(seg.shape, np.float32)
        for i in range(len(w)):
            wi = w[i, :fit["num_segments"][i]]
            order = np.argsort(-np.abs(wi), kind="stable")         # lime: sorted by |weight|
            value = np.zeros(len(wi), np.float32)
            if self.params["positive_only"]:
                value[[f for f in order if wi[f] > 0][:k]] = 1.0
            else:
                value[order[:k]] = np.where(wi[order[:k]] < 0, -1.0, 1.0)
            maps[i] = value[seg[i]]
        return maps


@tf.function(reduce_retracing=True, autograph=False)
def _ridge(sw, sg, sgg, sx, sxg, sxx, counts, alpha):
    """sklearn's weighted ridge with intercept from the statistics, for all images at once."""
    S = tf.shape(sx)[1]
    act = tf.cast(tf.range(S)[None, :] < counts[:, None], tf.float64)
    both = act[:, :, None] * act[:, None, :]
    eye = tf.eye(S, batch_shape=tf.shape(sx)[:1], dtype=tf.float64)
    sw = tf.maximum(sw, 1e-300)
    xbar, ybar = sx / sw[:, None], sg / sw
    gram = (sxx - sx[:, :, None] * xbar[:, None, :]) * both
    rhs = (sxg - sx * ybar[:, None]) * act
    chol = tf.linalg.cholesky(gram + alpha * eye)
    beta = tf.linalg.cholesky_solve(chol, rhs[..., None])[..., 0] * act
    intercept = ybar - tf.reduce_sum(xbar * beta, 1)
    sst = sgg - sg * ybar
    ssr = sst - 2.0 * tf.reduce_sum(beta * rhs, 1) + tf.reduce_sum(beta * tf.linalg.matvec(gram, beta), 1)
    one, zero = tf.ones_like(sst), tf.zeros_like(sst)
    score = tf.where(sst > 0, one - ssr / tf.where(sst > 0, sst, one), tf.where(ssr <= 0, one, zero))
    return beta, intercept, score, intercept + tf.reduce_sum(beta, 1)


# ------------------------------------------------------------------------------------------------
class KernelShap(_Surrogate):
    """Kernel SHAP over superpixels (Lundberg & Lee, NeurIPS 2017) as one batched tensor program,
    equivalent to shap 0.51's ``KernelExplainer`` with ``l1_reg=False``.

    The game of image x with M segments is ``v(z) = f_c(x_z)``, ``x_z`` keeping the segments with
    z_s = 1 and setting the others to ``background``. Kernel SHAP fits ``v(z) ~ phi_0 + sum_s
    phi_s z_s`` by least squares weighted with the Shapley kernel
    ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` under the efficiency constraint
    ``sum_s phi_s = v(1) - v(0) = f_c(x) - f_c(background)``; as shap, one variable is eliminated
    with the constraint (``phi_M = v(1) - v(0) - sum_{s<M} phi_s``) and the normal equations of
    the rest are solved (LU; least squares if singular).

    Coalitions as shap: ``min(nsamples, 2^M - 2)`` of them; subset sizes taken in order of
    kernel weight (|z| and M - |z| paired) are enumerated completely while the budget covers
    them; the rest is sampled: a size class drawn with probability proportional to its kernel
    weight, a random subset of that size and its complement, each row weighing the remaining
    kernel mass divided by the number of sampled rows. Differences from shap: the draws come from
    the seed on the device (not numpy's global stream), and a coalition drawn twice is evaluated
    twice instead of once with double weight (the same weighted fit); all 2^M - 2 coalitions
    (nsamples >= 2^M - 2) give the exact Shapley values.

    Args:
        model: tf-keras or Keras 3 image classifier.
        nsamples: coalitions per image (study 1: 1000), or "auto" (shap's 2 M + 2048).
        background: fill of removed segments: a number (0.0), one per channel, an image, or one
            image per input (N,H,W,C).
        segmenter: "slic" (default) | "quickshift" | "grid" (see :mod:`xaitf.segmentation`).
        n_segments, compactness, sigma: SLIC settings (50, 30, 3).
        cell: grid cell side in pixels (4).
        kernel_size, max_dist, ratio: quickshift settings; None (default) = chosen by image size.
        output: "probabilities" (study 1; default) or "logits".
        l1_reg: must be False (default) or 0: no feature selection (use ``shap.lib`` for shap's l1
            options).
        jit_compile: "auto" (default: XLA for large plain-path runs, when XLA works here), True
            or False.
        shortcut: True (default): the exact first-layer shortcut after a ``Flatten -> Dense``
            first layer; False: always the plain path.
        **common: batch_size (model evaluations per chunk), channel_reduce, seed (the sampled
            coalitions), progress (see :class:`xaitf.explainer.Explainer`).
        seed: the sampled coalition sizes and permutations, hashed from (seed, sample, feature)
            (counter-based: independent of batch_size and of the other inputs).

    Returns (N,H,W): each segment's SHAP value painted on its pixels. :meth:`fit` gives the values
    with f(x) and f(background), and takes your own segments.
    """

    key = "shap"          # the preset section of xaitf.settings (shared with ``shap.lib``)

    def __init__(self, model, *, nsamples=1000, background=0.0, segmenter="slic", n_segments=50,
                 compactness=30, sigma=3, cell=4, kernel_size=None, max_dist=None, ratio=None,
                 output="probabilities", l1_reg=False, jit_compile="auto", shortcut=True, **common):
        super().__init__(model, params=dict(
            nsamples=nsamples, background=background, segmenter=segmenter, n_segments=n_segments,
            compactness=compactness, sigma=sigma, cell=cell, kernel_size=kernel_size,
            max_dist=max_dist, ratio=ratio, output=output, l1_reg=l1_reg, jit_compile=jit_compile,
            shortcut=shortcut), **common)

    def setup_method(self):
        ns = self.params["nsamples"]
        if ns != "auto":
            check_int(ns, "nsamples", "KernelShap", 1)
        if self.params["l1_reg"] not in (False, 0):
            raise MethodError(f"KernelShap solves without l1 regularisation (l1_reg=False), got "
                              f"l1_reg={self.params['l1_reg']!r}; use 'shap.lib' for shap's feature selection")
        self._fill = _background(self.params["background"], self.shape, "KernelShap")
        self._size_key = stream_key(self.seed, SHAP_SIZE)
        self._perm_key = stream_key(self.seed, SHAP_PERM)

    def _extra_spec(self):
        f, i = tf.float64, tf.int32
        return (tf.TensorSpec([None], i), tf.TensorSpec([None, None], f), tf.TensorSpec([None], f),
                tf.TensorSpec([None, None], f), tf.TensorSpec([None], i))

    def _rows(self, j, active, M, tlen, table_bits, extra):
        total, enum_w, samp_w, cdf, full = extra
        S = tf.shape(active)[1]
        jn = j[None, :]
        enum = jn < tlen[:, None]                                           # (n,k)
        r = tf.maximum(jn - tlen[:, None], 0)
        unit, comp = r // 2, tf.equal(r % 2, 1)
        u01 = tf.cast(hash_bits(self._size_key, unit), tf.float64) * 2.0 ** -32
        idx = tf.reduce_sum(tf.cast(u01[..., None] >= cdf[:, None, :], tf.int32), -1)
        size = full[:, None] + 1 + idx
        # a uniform subset of `size` features: the `size` smallest of random keys (hash, then the
        # feature index to break ties; inactive features last)
        hp = hash_bits(self._perm_key, unit)                                # (n,k)
        s64 = tf.cast(tf.range(S), tf.int64)
        keys = hash_bits(hp[..., None], mul32(s64, GOLDEN)[None, None, :])
        keys = tf.cast(keys, tf.float64) * 2.0 ** 20 + tf.cast(s64, tf.float64)     # < 2^53: exact
        keys = tf.where(active[:, None, :], keys, tf.fill(tf.shape(keys), tf.constant(2.0 ** 60, tf.float64)))
        cut = tf.gather(tf.sort(keys, axis=-1), tf.minimum(size, S)[..., None] - 1, batch_dims=2)
        sub = keys <= cut
        sampled = tf.where(comp[..., None], active[:, None, :] & ~sub, sub)
        m = tf.where(enum[..., None], table_bits(j) & active[:, None, :], sampled)
        count = tf.reduce_sum(tf.cast(m, tf.int32), -1)
        wgt = tf.where(enum, tf.gather(enum_w, count, batch_dims=1),
                       tf.where(jn < total[:, None], samp_w[:, None] + tf.zeros_like(u01), tf.zeros_like(u01)))
        return m, wgt

    def fit(self, x, targets=None, segments=None):
        """Kernel SHAP values of every image.

        Args:
            x: images (N,H,W,C); targets: classes (None = predicted).
            segments: (N,H,W) or (H,W) integer maps (None = this explainer's segmenter).
        Returns:
            dict: ``values`` (N,S) (0 past each image's segment count; they sum to fx - fnull),
            ``fx`` and ``fnull`` (N,) the explained output of x and of the background,
            ``segments`` (N,H,W), ``num_segments`` (N,), ``samples`` (N,) coalitions evaluated.
        """
        x, t, seg, counts = self._prepare(x, targets, segments)
        n, smax = len(x), int(counts.max())
        ns = self.params["nsamples"]
        fx = self.target_scores(x, t)
        fill = self._fill_rows(self._fill, n)
        fnull = self.target_scores(np.broadcast_to(fill, x.shape), t)
        values = np.zeros((n, smax))
        samples = np.zeros(n, np.int64)
        for g in self._groups(counts):
            cg = counts[g]
            sg = int(cg.max())
            tables = _Tables(len(g), -(-sg // 32))
            plans = [shap_plan(int(m), ns) for m in cg]
            kmax = max(1, max(len(p["cdf"]) for p in plans))
            cdf = np.full((len(g), kmax), 2.0)
            enum_w = np.zeros((len(g), sg + 1))
            for a, p in enumerate(plans):
                m = int(cg[a])
                tables.add(a, ("shap", m), lambda p=p, m=m: np.pad(p["enumerated"], ((0, 0), (0, sg - m))))
                cdf[a, :len(p["cdf"])] = p["cdf"]
                enum_w[a, :m + 1] = p["enum_weight"]
            total = np.array([p["total"] for p in plans], np.int32)
            samples[g] = total
            extra = (tf.constant(total), tf.constant(enum_w), tf.constant([p["sample_weight"] for p in plans],
                                                                          tf.float64),
                     tf.constant(cdf), tf.constant([p["full"] for p in plans], tf.int32))
            stats = self._accumulate(x[g], fill if len(fill) == 1 else fill[g], seg[g], t[g], cg, tables,
                                     extra, int(total.max()))
            values[g, :sg] = _shap_solve(stats[3], stats[4], stats[5], cg, fx[g], fnull[g])
        return {"values": values, "fx": fx, "fnull": fnull, "segments": seg, "num_segments": counts,
                "samples": samples, "targets": t}

    def explain_batch(self, x, targets):
        fit = self._fit_rows(x, targets)
        return self.paint(fit["values"], fit["segments"]).astype(np.float32)


def _shap_system(sx, sxg, sxx, counts, fx, fnull):
    """The eliminated normal equations ``A w = b`` of every image from the statistics."""
    S = tf.shape(sx)[1]
    last = counts - 1
    act = tf.cast(tf.range(S)[None, :] < last[:, None], tf.float64)       # features kept free
    col = tf.gather(sxx, last[:, None], axis=2, batch_dims=1)[..., 0]     # sum w z_s z_last
    d = tf.gather(col, last, batch_dims=1)                                 # sum w z_last
    sx_l = tf.gather(sx, last, batch_dims=1)
    sxg_l = tf.gather(sxg, last, batch_dims=1)
    delta = fx - fnull
    A = (sxx - col[:, :, None] - col[:, None, :] + d[:, None, None]) * act[:, :, None] * act[:, None, :]
    A += tf.linalg.diag(1.0 - act)
    b = ((sxg - sxg_l[:, None]) - fnull[:, None] * (sx - sx_l[:, None]) - delta[:, None] * (col - d[:, None])) * act
    return A, b, act, last, delta


SHAP_RCOND = 1e-10   # singular values below this times the largest: A is rank-deficient (too few coalitions)


def _shap_solve(sx, sxg, sxx, counts, fx, fnull):
    """phi (N,S): the eliminated Kernel SHAP system solved for every image; where it is
    rank-deficient (fewer distinct coalitions than free features: its smallest singular values are
    rounding, ~1e-19 of the largest with 64 coalitions of 64 segments), the minimum-norm least
    squares solution (singular values under :data:`SHAP_RCOND` of the largest dropped), with a
    warning. shap's KernelExplainer also falls back to least squares, but only where
    ``np.linalg.solve`` raises; ``tf.linalg.solve`` raises only on exact zeros, and on such a
    system it returned a finite solution made of rounding noise, which moved by up to 60x with the
    batch size."""
    c = tf.convert_to_tensor
    A, b, act, last, delta = _shap_system(c(sx), c(sxg), c(sxx),
                                          tf.constant(counts, tf.int32), tf.constant(fx, tf.float64),
                                          tf.constant(fnull, tf.float64))
    sv = tf.linalg.svd(A, compute_uv=False)                     # descending
    if bool(tf.reduce_all(sv[:, -1] > SHAP_RCOND * sv[:, 0])):
        w = tf.linalg.solve(A, b[..., None])[..., 0]
    else:
        warnings.warn(f"kernelshap: too few coalitions for {int(np.max(counts))} segments (the regression is "
                      "rank-deficient): the minimum-norm solution is used; raise nsamples or use fewer segments",
                      stacklevel=_caller_stacklevel())
        w = tf.linalg.matvec(tf.linalg.pinv(A, rcond=SHAP_RCOND), b)
    w = w * act
    phi = w + tf.one_hot(last, tf.shape(sx)[1], dtype=tf.float64) * (delta - tf.reduce_sum(w, 1))[:, None]
    return phi.numpy()
