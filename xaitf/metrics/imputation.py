"""ROAD's noisy linear imputation (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML; their ``NoisyLinearImputer``).

Every removed pixel ``p`` takes the weighted mean of its 8 neighbours ``q`` (weight ``w_pq`` = 1/6
for the 4 direct ones, 1/12 for the diagonal ones, renormalised over the neighbours inside the
image), removed neighbours being unknowns themselves. With ``d_p = sum_q w_pq`` that is, for the
removed pixels ``U``, one linear system per image and channel::

    d_p v_p - sum_{q in U} w_pq v_q = sum_{q not in U} w_pq x_q          (p in U)

``A = D - W_UU`` is symmetric (``w_pq = w_qp``) and positive definite as soon as one pixel is
kept, so conjugate gradients solve it. Then ``noise * N(0, 1)`` is added to every imputed value.

* :func:`noisy_linear_impute`: one image, a sparse direct solve (``scipy.sparse.linalg.spsolve``),
  as the paper's code: the reference.
* :func:`linear_impute_batch`: many images at once, conjugate gradients in one TensorFlow
  program (the operator ``A`` is a 3x3 stencil, XLA-compiled), float32, to a relative residual of
  ``tol``; images that do not converge within ``max_iter`` steps are solved by the sparse solver.
  No noise (:func:`xaitf.metrics.faithfulness.road` adds it on the device).
"""
import functools

import numpy as np

from ..errors import InputError

# weights of the 8 neighbours, (row offset, column offset) -> weight
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_impute(image, removed, noise=0.01, rng=None):
    """ROAD's noisy linear imputation of one image, by a sparse direct solve (see the module).

    One sparse linear system for all removed pixels and all channels
    (``scipy.sparse.linalg.spsolve``), then ``noise * N(0, 1)`` added to every imputed value (per
    channel, drawn in the row-major order of the removed pixels). Kept pixels are unchanged.

    Args:
        image: (H,W,C). removed: (H,W) bool, not all True. noise: std of the added noise (0.01,
            ROAD's ``NoisyLinearImputer`` default). rng: a numpy Generator for the noise
            (None: ``numpy.random.default_rng(0)``).

    Returns:
        (H,W,C) float64.
    """
    out = _sparse_solve(np.asarray(image, np.float64), np.asarray(removed, bool))
    if noise:
        gone = np.asarray(removed, bool)
        rng = np.random.default_rng(0) if rng is None else rng
        out[gone] += float(noise) * rng.standard_normal((int(gone.sum()), out.shape[-1]))
    return out


def _sparse_solve(img, gone2d):
    """The imputed (H,W,C) float64 image, no noise (sparse direct solve)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w, c = img.shape
    gone = gone2d.ravel()
    unknown = np.flatnonzero(gone)
    out = img.reshape(h * w, c).copy()
    u = len(unknown)
    if u == 0:
        return out.reshape(h, w, c)
    if u == h * w:
        raise InputError("noisy linear imputation needs at least one kept pixel")
    var = np.full(h * w, -1, np.int64)
    var[unknown] = np.arange(u)
    r, col = np.divmod(unknown, w)
    diag = np.zeros(u)
    rhs = np.zeros((u, c))
    ai, aj, av = [], [], []
    for (dr, dc), wt in NEIGHBOURS:
        rr, cc = r + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        eq = np.flatnonzero(inside)
        q = rr[inside] * w + cc[inside]
        diag[eq] += wt
        known = ~gone[q]
        rhs[eq[known]] += wt * out[q[known]]
        ai.append(eq[~known])
        aj.append(var[q[~known]])
        av.append(np.full(int((~known).sum()), -wt))
    ai = np.concatenate(ai + [np.arange(u)])
    aj = np.concatenate(aj + [np.arange(u)])
    av = np.concatenate(av + [diag])
    a = coo_matrix((av, (ai, aj)), shape=(u, u)).tocsc()
    out[unknown] = np.asarray(spsolve(a, rhs)).reshape(u, c)
    return out.reshape(h, w, c)


def _neighbour_sums(v, h, w):
    """``sum_q w_pq v_q`` for every pixel of (B,H,W,C) ``v`` (zero outside the image).

    The 8-neighbour kernel is ``([1,2,1]^T [1,2,1] - 4 e_centre) / 12`` (1/12 diagonal, 1/6 direct),
    so it runs as two 3-tap passes over the padded image instead of a depthwise convolution, which
    is about 5x slower on CPU for these few channels."""
    import tensorflow as tf

    p = tf.pad(v, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = p[:, :, 0:w] + 2.0 * p[:, :, 1:w + 1] + p[:, :, 2:w + 2]
    full = rows[:, 0:h] + 2.0 * rows[:, 1:h + 1] + rows[:, 2:h + 2]
    return (full - 4.0 * v) * (1.0 / 12.0)


@functools.lru_cache(maxsize=16)
def _cg_program(h, w, c, jit=True):
    """Conjugate gradients for the imputation of (B,H,W,C) images: one tf.function per image shape.

    ``(x, m, tol, max_iter) -> (imputed, converged (B,), steps)``; ``m`` (B,H,W,1) is 1 on removed
    pixels. Each image channel is shifted and scaled by its kept pixels (mean and max deviation, the
    system being linear and constants exact) before the solve, so ``tol`` is relative for every
    image. The channels' systems share one step size (one solve of the block-diagonal system).
    ``jit``: compiled by XLA (the loop's elementwise passes fused: about 3x faster on CPU; one
    compilation per batch size, which :func:`_run_cg` keeps to a few).
    """
    import tensorflow as tf

    axes = [1, 2, 3]

    def program(x, m, tol, max_iter):
        keep = 1.0 - m
        kept = tf.maximum(tf.reduce_sum(keep, [1, 2], keepdims=True), 1.0)
        mean = tf.reduce_sum(x * keep, [1, 2], keepdims=True) / kept           # (B,1,1,C)
        scale = tf.reduce_max(tf.abs(x - mean) * keep, [1, 2], keepdims=True)
        scale = tf.where(scale > 0, scale, tf.ones_like(scale))
        xn = (x - mean) / scale * keep
        md = m * _neighbour_sums(tf.ones_like(m), h, w)    # d_p (the weights of the pixels inside), removed p
        rhs = m * _neighbour_sums(xn, h, w)

        def op(v):                                             # A v on the removed pixels (v = 0 elsewhere)
            return md * v - m * _neighbour_sums(v, h, w)

        bound = tol * tol * tf.reduce_sum(rhs * rhs, axes)    # per image: ||r||^2 <= tol^2 ||b||^2

        def cond(i, v, r, p, rr):
            return tf.logical_and(i < max_iter, tf.reduce_any(rr > bound))

        def step(v, r, p, rr):
            ap = op(p)
            alpha = tf.math.divide_no_nan(rr, tf.reduce_sum(p * ap, axes))[:, None, None, None]
            v = v + alpha * p
            r = r - alpha * ap
            rr_new = tf.reduce_sum(r * r, axes)
            p = r + tf.math.divide_no_nan(rr_new, rr)[:, None, None, None] * p
            return v, r, p, rr_new

        def body(i, v, r, p, rr):                              # two steps per test of convergence
            return (i + 2,) + step(*step(v, r, p, rr))

        v0 = tf.zeros_like(xn)
        i, v, r, _, rr = tf.while_loop(cond, body, [tf.constant(0), v0, rhs, rhs, tf.reduce_sum(rhs * rhs, axes)])
        out = x * keep + (v * scale + mean) * m
        return out, rr <= bound, i

    sig = [tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None, h, w, 1], tf.float32),
           tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)]
    return tf.function(program, input_signature=sig, autograph=False, jit_compile=bool(jit))


# XLA compiles the solver once per image shape and batch size (0.3 to 1 s on 2 CPU cores) and then
# saves about 7 ns per value and step (~50 steps), so it pays off from about this many values solved
# in one run (ROAD's 50 fractions of 256 MNIST images are 10 M)
JIT_MIN_VALUES = 2 ** 20


def worth_compiling(values):
    """Whether a run solving ``values`` values in all should compile the solver (:data:`JIT_MIN_VALUES`)."""
    return values >= JIT_MIN_VALUES


def _run_cg(x, gone, tol, limit, jit=None):
    """Run :func:`_cg_program` on (B,H,W,C) float32 ``x`` and (B,H,W) bool ``gone``.

    ``jit`` (None: when ``x`` has at least ``JIT_MIN_VALUES`` values): XLA-compiled where XLA works
    here (:func:`xaitf.methods._xla.xla_available`; else the same program uncompiled), the batch
    padded by repeats of its last image (which converge with it) to a size with at most four
    significant bits (1, ..., 16, 18, 20, ..., 32, 36, ...: less than 1/8 more work), so that few
    batch sizes are compiled. Returns (imputed (B,H,W,C), converged (B,)) as numpy arrays."""
    import tensorflow as tf

    from ..methods._xla import xla_available

    b, h, w, c = x.shape
    jit = (worth_compiling(x.size) if jit is None else bool(jit)) and xla_available()
    step = 1 << max(0, int(b).bit_length() - 4)
    size = -(-b // step) * step if jit else b
    if size > b:
        x = np.concatenate([x, np.repeat(x[-1:], size - b, axis=0)])
        gone = np.concatenate([gone, np.repeat(gone[-1:], size - b, axis=0)])
    out, ok, _ = _cg_program(h, w, c, jit)(tf.constant(x), tf.constant(gone[..., None].astype(np.float32)),
                                           tf.constant(float(tol), tf.float32), tf.constant(limit, tf.int32))
    return np.array(out[:b]), np.array(ok[:b])


def linear_impute_batch(images, removed, tol=1e-5, max_iter=None, jit=None):
    """ROAD's linear imputation (no noise) of a batch, by conjugate gradients in TensorFlow.

    The residual of every image (its channels together) ends below ``tol`` times its right-hand
    side (after shifting and scaling each channel by its kept pixels); on MNIST digits the imputed values are
    within 5e-5 of :func:`noisy_linear_impute`'s sparse direct solution. Images not converged
    after ``max_iter`` steps (default ``4 * (H + W) + 100``; conjugate gradients need about
    ``H + W`` on a Laplacian-like system) are solved by the sparse direct solver instead.

    Args:
        images: (B,H,W,C). removed: (B,H,W) bool, every image keeping at least one pixel.
        tol: relative residual (1e-5; float32 reaches about 1e-6).
        max_iter: step limit (None: ``4 * (H + W) + 100``).
        jit: compile the solver with XLA (None: if ``images`` has at least ``JIT_MIN_VALUES``
            values; a caller solving many batches of one shape, as :func:`road`, decides for all).

    Returns:
        (B,H,W,C) float32; kept pixels unchanged.
    """
    x = np.asarray(images, np.float32)
    gone = np.asarray(removed, bool)
    b, h, w, c = x.shape
    if gone.shape != (b, h, w):
        raise InputError(f"removed: expected a (B,H,W) = {(b, h, w)} mask, got {gone.shape}")
    if b and gone.reshape(b, -1).all(axis=1).any():
        raise InputError("noisy linear imputation needs at least one kept pixel")
    if b == 0:
        return x.copy()
    limit = int(max_iter if max_iter is not None else 4 * (h + w) + 100)
    out, ok = _run_cg(x, gone, tol, limit, jit)
    for k in np.flatnonzero(~ok):                     # rare: float32 stalled; the exact solver
        out[k] = _sparse_solve(x[k].astype(np.float64), gone[k])
    return out
