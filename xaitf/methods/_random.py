"""Counter-based random bits for the stochastic native methods.

No method draws from a stateful generator (numpy's or TensorFlow's global streams, ``tf.random``
ops with op seeds): every random number is a fixed function of its coordinates,

    bits = hash(seed, stream id, sample index, element index)

where the *stream id* names what the bits are for (LIME's masks, Kernel SHAP's coalition sizes,
Kernel SHAP's permutations, SmoothGrad's noise), the *sample index* is the index of the mask /
coalition / noise sample (0 .. samples-1) and the *element index* is the index of the feature or
pixel inside the sample. The input's position in the call is NOT a coordinate: every input of a
call gets the same masks / noise pattern (like RISE's shared masks), so an input's map depends
on the seed and on that input only, not on ``batch_size``, on how the samples are split into
chunks nor on the other inputs of the call, and the bits are the same on every device (the hashes
are exact integer arithmetic, on CPU, GPU and under XLA).

Two hash families live here (kept separate because each one's stream is pinned by tests and by
users' stored results):

* MurmurHash3's 32-bit finaliser on int64 tensors holding 32-bit values (:func:`fmix`,
  :func:`hash_bits`, keyed by :func:`stream_key`), used by the native LIME and Kernel SHAP
  (:mod:`xaitf.methods.surrogates_native`) for their mask and coalition bits;
* "lowbias32" (xor-shift-multiply) on uint32 tensors (:func:`lowbias32`), used by SmoothGrad's
  normal noise (:func:`hashed_normal`): two 24-bit uniforms per element pair, Box-Muller. Its
  integer part runs as one XLA loop where XLA is available (the same bits). The metrics' noise
  (:mod:`xaitf.metrics`: infidelity's perturbations, ROAD's imputation noise) is the same
  generator under its own stream constants, keyed by (input index, sample index) through
  :func:`pair_ids`: a metric's input position is a coordinate, as in its per-input results.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ._xla import fused

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1
# stream ids of the Murmur family (do not renumber: they fix LIME's / Kernel SHAP's masks)
LIME_BITS, SHAP_SIZE, SHAP_PERM = 1, 2, 3
# streams of the lowbias32 family: the constant added to the seed before hashing (SmoothGrad's, then
# the metrics'; do not renumber: they fix stored results)
SG_NOISE = 0x9E3779B9
INFIDELITY_NOISE = 0x7F4A7C15
ROAD_NOISE = 0x3C6EF372


# ------------------------------------------------------------------------------------------------
# MurmurHash3 finaliser family: int64 tensors holding 32-bit values (native LIME / Kernel SHAP)
# ------------------------------------------------------------------------------------------------
def fmix_py(h):
    """MurmurHash3's 32-bit finaliser (a bijection of 32-bit integers), on Python ints."""
    h &= M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def stream_key(seed, stream):
    """The 32-bit key of stream ``stream`` under ``seed`` (a Python int; seed modulo 2**32)."""
    return fmix_py((int(seed) & M32) ^ fmix_py(stream * GOLDEN))


def mul32(a, c):
    """``(a * c) mod 2^32`` for int64 tensors ``a`` in [0, 2^32) without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    mask16 = tf.constant(0xFFFF, tf.int64)
    return tf.bitwise.bitwise_and(a * lo + tf.bitwise.bitwise_and(a * hi, mask16) * 65536,
                                  tf.constant(M32, tf.int64))


def fmix(h):
    """:func:`fmix_py` on int64 tensors holding 32-bit values."""
    x, r = tf.bitwise.bitwise_xor, tf.bitwise.right_shift
    h = x(h, r(h, tf.constant(16, tf.int64)))
    h = mul32(h, 0x85EBCA6B)
    h = x(h, r(h, tf.constant(13, tf.int64)))
    h = mul32(h, 0xC2B2AE35)
    return x(h, r(h, tf.constant(16, tf.int64)))


def hash_bits(key, a):
    """32-bit hash of the int tensor ``a`` under ``key`` (an int or an int64 tensor); int64 out.

    Chained as ``hash_bits(hash_bits(stream_key(seed, stream), sample)[:, None],
    mul32(element, GOLDEN))`` it gives the bits of (seed, stream, sample, element)."""
    key = tf.constant(key, tf.int64) if isinstance(key, int) else tf.cast(key, tf.int64)
    return fmix(tf.bitwise.bitwise_xor(tf.cast(a, tf.int64), key))


# ------------------------------------------------------------------------------------------------
# lowbias32 family: uint32 tensors (SmoothGrad's normal noise)
# ------------------------------------------------------------------------------------------------
_U32 = tf.uint32


def _u32(v):
    return tf.constant(v, _U32)


def lowbias32(h):
    """A bijective 32-bit integer mix (xor-shift-multiply, "lowbias32") on uint32 tensors."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(16)))
    h = h * _u32(0x7FEB352D)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(15)))
    h = h * _u32(0x846CA68B)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(16)))


def hashed_uniforms(ids, seed, half, stream=SG_NOISE):
    """The two 24-bit uniforms of :func:`hashed_normal` for element pairs ``0 .. half-1`` of each
    id: ``u1`` in (0, 1) and the angle ``theta`` in [0, 2 pi)."""
    he = lowbias32(tf.cast(tf.range(half), _U32))[None]
    seed_key = lowbias32(tf.cast(tf.cast(seed, tf.int64) & M32, _U32) + _u32(stream))
    hs = lowbias32(tf.bitwise.bitwise_xor(tf.cast(ids & M32, _U32), seed_key))[:, None]
    h1 = lowbias32(tf.bitwise.bitwise_xor(hs, he))
    h2 = lowbias32(h1 + _u32(0x632BE5AB))
    scale = 1.0 / 16777216.0
    u1 = (tf.cast(tf.bitwise.right_shift(h1, _u32(8)), tf.float32) + 0.5) * scale   # (0, 1)
    theta = tf.cast(tf.bitwise.right_shift(h2, _u32(8)), tf.float32) * (2.0 * np.pi * scale)
    return u1, theta


# the integer hashing as one fused loop (exact: the same bits); TF's own log/sin/cos stay faster
HASHED_UNIFORMS = fused(hashed_uniforms)


def hashed_normal(ids, seed, shape, stream=SG_NOISE):
    """Standard normal noise (len(ids), *shape) that depends only on (seed, stream, id, element).

    A counter-based generator: the key of element pair k of sample ``id`` is
    ``hash(hash(id ^ hash(seed + stream)) ^ hash(k))`` (``stream``: a Python int, SmoothGrad's
    :data:`SG_NOISE` by default); it and a second hash of it give two
    24-bit uniforms, and Box-Muller turns them into two normals (cosine and sine branch).
    Deterministic on any device and independent of batching. ``ids`` and ``seed`` are used modulo
    2**32. The hashing runs as one XLA loop where XLA is available (2.1 vs 3.4 ms for 256
    MNIST-sized images, the same numbers).
    """
    numel = tf.reduce_prod(shape)
    half = (numel + 1) // 2
    u1, theta = HASHED_UNIFORMS(ids, seed, half, stream)
    r = tf.sqrt(-2.0 * tf.math.log(u1))
    z = tf.concat([r * tf.cos(theta), r * tf.sin(theta)], axis=1)[:, :numel]
    return tf.reshape(z, tf.concat([[-1], tf.cast(shape, tf.int32)], 0))


def pair_ids(i, j):
    """int64 ids in [0, 2**32) of the pairs (``i``, ``j``) of int tensors (e.g. input index, sample
    index) for :func:`hashed_normal`: ``lowbias32(lowbias32(i + 1) ^ j)``, one-to-one in ``j`` for
    each ``i`` (so a longer run's first samples are the shorter run's draws)."""
    key = lowbias32(tf.cast(tf.cast(i, tf.int64) & M32, _U32) + _u32(1))
    return tf.cast(lowbias32(tf.bitwise.bitwise_xor(key, tf.cast(tf.cast(j, tf.int64) & M32, _U32))), tf.int64)
