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
  program (the operator ``A`` is a 3x3 stencil, XLA-compiled; on images of 48x48 and more
  preconditioned by a multigrid V-cycle), float32, to a relative residual of ``tol``; images
  that do not converge within ``max_iter`` steps are solved by the sparse solver. No noise (:func:`xaitf.metrics.faithfulness.road` adds it on the device).
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


# the multigrid preconditioner: levels halve the grid down to this side; smoothing is damped Jacobi
COARSEST = 4
JACOBI_WEIGHT = 0.8
# images at least this large on both sides are solved with the preconditioner (measured on 2 CPU cores,
# 3 channels, contiguous holes of 10-90 %: 32x32 0.6-1.3x, 64x64 1.4-3.2x, 224x224 2.6-7.6x the
# speed of plain conjugate gradients)
MULTIGRID_MIN_SIDE = 48


def _levels(h, w):
    """Grid sizes of the multigrid levels: (h, w), then halved (rounded up) down to COARSEST."""
    out = [(h, w)]
    while min(out[-1]) > COARSEST:
        out.append(((out[-1][0] + 1) // 2, (out[-1][1] + 1) // 2))
    return out


def _pad_even(v, h, w, value=0.0):
    import tensorflow as tf

    return tf.pad(v, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]], constant_values=value)


def _restrict(v, h, w):
    """P^T: the sum over each 2x2 block (the last row / column padded with zeros when odd)."""
    import tensorflow as tf

    return 4.0 * tf.nn.avg_pool2d(_pad_even(v, h, w), 2, 2, "VALID")


def _prolong(v, h, w):
    """P: every pixel of the (h, w) grid takes the value of its 2x2 block on the coarse grid."""
    import tensorflow as tf

    return tf.image.resize(v, ((h + 1) // 2 * 2, (w + 1) // 2 * 2), method="nearest")[:, :h, :w]


def _coarse_unknown(m, h, w):
    """A coarse pixel is unknown where all its fine pixels inside the image are (a kept pixel keeps
    its block: kept pixels exist on every level, so every level's system stays definite)."""
    import tensorflow as tf

    return -tf.nn.max_pool2d(-_pad_even(m, h, w, 1.0), 2, 2, "VALID")


def _system(m, shapes):
    """``(op, vcycle)`` of the imputation system whose unknowns are ``m`` (B,H,W,1) = 1: ``op(v)`` is
    ``A v`` (for ``v`` = 0 on the kept pixels), ``vcycle(r)`` the multigrid preconditioner of
    :func:`_cg_program` on the levels ``shapes`` (:func:`_levels`; one level: two Jacobi steps)."""
    import tensorflow as tf

    masks = [m]                   # per level: the unknowns, d_p (the weights inside) on them, 1 / d_p
    for k in range(1, len(shapes)):
        masks.append(_coarse_unknown(masks[-1], *shapes[k - 1]))
    diag = [mk * _neighbour_sums(tf.ones_like(mk), *hw) for mk, hw in zip(masks, shapes)]
    inv = [tf.math.divide_no_nan(mk, d) for mk, d in zip(masks, diag)]

    def op(v, k=0):                                            # A v on the removed pixels (v = 0 elsewhere)
        return diag[k] * v - masks[k] * _neighbour_sums(v, *shapes[k])

    def vcycle(r, k=0):
        z = JACOBI_WEIGHT * inv[k] * r
        if k == len(shapes) - 1:
            return z + JACOBI_WEIGHT * inv[k] * (r - op(z, k))
        coarse = vcycle(_restrict(r - op(z, k), *shapes[k]), k + 1)
        z = z + masks[k] * _prolong(coarse, *shapes[k])
        return z + JACOBI_WEIGHT * inv[k] * (r - op(z, k))

    return op, vcycle


@functools.lru_cache(maxsize=16)
def _cg_program(h, w, c, jit=True, multigrid=False):
    """Conjugate gradients for the imputation of (B,H,W,C) images: one tf.function per image shape.

    ``(x, m, tol, max_iter) -> (imputed, converged (B,), steps)``; ``m`` (B,H,W,1) is 1 on removed
    pixels. Each image channel is shifted and scaled by its kept pixels (mean and max deviation, the
    system being linear and constants exact) before the solve, so ``tol`` is relative for every
    image. The channels' systems share one step size (one solve of the block-diagonal system).
    ``jit``: compiled by XLA (the loop's elementwise passes fused: about 3x faster on CPU; one
    compilation per batch size, which :func:`_run_cg` keeps to a few).

    ``multigrid``: preconditioned by one symmetric V-cycle (Briggs, Henson & McCormick 2000, "A
    Multigrid Tutorial"): on each level one damped Jacobi step (weight :data:`JACOBI_WEIGHT`), the
    residual summed over 2x2 blocks (``P^T``) to the next level's system (the same 8-neighbour
    operator on the halved grid, a block unknown where all its pixels are), its correction copied back
    to the block's unknown pixels (``P``), one Jacobi step again; two on the coarsest grid. The
    same pre- and post-smoothing and ``P^T`` / ``P`` make it symmetric positive definite, as
    preconditioned conjugate gradients need. The number of steps then hardly grows with the size
    of the holes (224x224, 90 % removed: 17 steps instead of 454).
    """
    import tensorflow as tf

    axes = [1, 2, 3]
    shapes = _levels(h, w) if multigrid else [(h, w)]

    def program(x, m, tol, max_iter):
        keep = 1.0 - m
        kept = tf.maximum(tf.reduce_sum(keep, [1, 2], keepdims=True), 1.0)
        mean = tf.reduce_sum(x * keep, [1, 2], keepdims=True) / kept           # (B,1,1,C)
        scale = tf.reduce_max(tf.abs(x - mean) * keep, [1, 2], keepdims=True)
        scale = tf.where(scale > 0, scale, tf.ones_like(scale))
        xn = (x - mean) / scale * keep
        op, vcycle = _system(m, shapes)
        rhs = m * _neighbour_sums(xn, h, w)
        bound = tol * tol * tf.reduce_sum(rhs * rhs, axes)    # per image: ||r||^2 <= tol^2 ||b||^2

        # (preconditioned) conjugate gradients; without the preconditioner r.z is r.r, and two steps
        # run per test of convergence
        per_test = 1 if multigrid else 2

        def step(v, r, p, rz):
            ap = op(p)
            alpha = tf.math.divide_no_nan(rz, tf.reduce_sum(p * ap, axes))[:, None, None, None]
            v = v + alpha * p
            r = r - alpha * ap
            z = vcycle(r) if multigrid else r
            rr = tf.reduce_sum(r * r, axes)
            rz_new = tf.reduce_sum(r * z, axes) if multigrid else rr
            p = z + tf.math.divide_no_nan(rz_new, rz)[:, None, None, None] * p
            return v, r, p, rz_new, rr

        def cond(i, v, r, p, rz, rr):
            return tf.logical_and(i < max_iter, tf.reduce_any(rr > bound))

        def body(i, v, r, p, rz, rr):
            for _ in range(per_test):
                v, r, p, rz, rr = step(v, r, p, rz)
            return i + per_test, v, r, p, rz, rr

        z0 = vcycle(rhs) if multigrid else rhs
        rr0 = tf.reduce_sum(rhs * rhs, axes)
        i, v, r, _, _, rr = tf.while_loop(cond, body, [tf.constant(0), tf.zeros_like(xn), rhs, z0,
                                                       tf.reduce_sum(rhs * z0, axes) if multigrid else rr0, rr0])
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


def _run_cg(x, gone, tol, limit, jit=None, multigrid=None):
    """Run :func:`_cg_program` on (B,H,W,C) float32 ``x`` and (B,H,W) bool ``gone``.

    ``jit`` (None: when ``x`` has at least ``JIT_MIN_VALUES`` values): XLA-compiled where XLA works
    here (:func:`xaitf.methods._xla.xla_available`; else the same program uncompiled), the batch
    padded by repeats of its last image (which converge with it) to a size with at most four
    significant bits (1, ..., 16, 18, 20, ..., 32, 36, ...: less than 1/8 more work), so that few
    batch sizes are compiled. ``multigrid`` (None: images of at least :data:`MULTIGRID_MIN_SIDE`
    pixels a side): precondition by a V-cycle. Returns (imputed (B,H,W,C), converged (B,)) as
    numpy arrays."""
    import tensorflow as tf

    from ..methods._xla import xla_available

    b, h, w, c = x.shape
    jit = (worth_compiling(x.size) if jit is None else bool(jit)) and xla_available()
    multigrid = min(h, w) >= MULTIGRID_MIN_SIDE if multigrid is None else bool(multigrid)
    step = 1 << max(0, int(b).bit_length() - 4)
    size = -(-b // step) * step if jit else b
    if size > b:
        x = np.concatenate([x, np.repeat(x[-1:], size - b, axis=0)])
        gone = np.concatenate([gone, np.repeat(gone[-1:], size - b, axis=0)])
    out, ok, _ = _cg_program(h, w, c, jit, multigrid)(tf.constant(x), tf.constant(gone[..., None].astype(np.float32)),
                                           tf.constant(float(tol), tf.float32), tf.constant(limit, tf.int32))
    return np.array(out[:b]), np.array(ok[:b])


def linear_impute_batch(images, removed, tol=1e-5, max_iter=None, jit=None, multigrid=None):
    """ROAD's linear imputation (no noise) of a batch, by conjugate gradients in TensorFlow.

    The residual of every image (its channels together) ends below ``tol`` times its right-hand
    side (after shifting and scaling each channel by its kept pixels); on MNIST digits the imputed values are
    within 5e-5 of :func:`noisy_linear_impute`'s sparse direct solution. Images not converged
    after ``max_iter`` steps (default ``4 * (H + W) + 100``; conjugate gradients need about
    ``H + W`` on a Laplacian-like system) are solved by the sparse direct solver instead. Images
    of at least :data:`MULTIGRID_MIN_SIDE` pixels a side are preconditioned by a multigrid V-cycle
    (:func:`_cg_program`; 10 to 20 steps whatever the holes' size).

    Args:
        images: (B,H,W,C). removed: (B,H,W) bool, every image keeping at least one pixel.
        tol: relative residual (1e-5; float32 reaches about 1e-6).
        max_iter: step limit (None: ``4 * (H + W) + 100``).
        jit: compile the solver with XLA (None: if ``images`` has at least ``JIT_MIN_VALUES``
            values; a caller solving many batches of one shape, as :func:`road`, decides for all).
        multigrid: precondition by a multigrid V-cycle (None: when H and W are both at least
            ``MULTIGRID_MIN_SIDE``; below that plain conjugate gradients are as fast or faster).

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
    out, ok = _run_cg(x, gone, tol, limit, jit, multigrid)
    for k in np.flatnonzero(~ok):                     # rare: float32 stalled; the exact solver
        out[k] = _sparse_solve(x[k].astype(np.float64), gone[k])
    return out
