"""Faithfulness metrics (xaitf.metrics.faithfulness) against analytic answers.

A linear model ``logits = sum(w * x) + b`` with fill 0 has exact answers: removing a pixel set S
lowers the target logit by ``sum_S w_p x_p``, so the map ``w * x`` (gradient x input) is exact.
"""
import functools
import itertools

import numpy as np
import pytest

import xaitf  # noqa: F401  (tf-keras before tensorflow)
import tensorflow as tf

from conftest import make_cnn
from xaitf.errors import InputError, MethodError
from xaitf.metrics import faithfulness as F

H = W = 6
K = 3
LOGITS = {"output": "logits", "progress": False}


def linear(shape=(H, W, 1), classes=K, seed=0):
    """(model, w (H,W,C,K), b (K,)) of ``logits = flatten(x) . w + b`` (tf-keras)."""
    rs = np.random.RandomState(seed)
    model = tf.keras.Sequential([tf.keras.Input(shape), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(classes)])
    w = rs.randn(int(np.prod(shape)), classes).astype(np.float32)
    b = rs.randn(classes).astype(np.float32)
    model.layers[-1].set_weights([w, b])
    return model, w.reshape(shape + (classes,)).astype(np.float64), b.astype(np.float64)


@pytest.fixture(scope="module")
def lin():
    model, w, b = linear()
    x = np.random.RandomState(1).rand(4, H, W, 1).astype(np.float32)
    t = np.array([0, 1, 2, 0])
    wt = np.moveaxis(w[..., t], -1, 0)                        # (N,H,W,C)
    exact = (wt * x).sum(-1)                                   # w * x per pixel
    f0 = (wt * x).sum(axis=(1, 2, 3)) + b[t]
    return model, x, t, wt, exact, f0


@pytest.fixture(scope="module")
def lin_rgb():
    model, w, b = linear(shape=(5, 5, 3), seed=2)
    x = np.random.RandomState(3).rand(3, 5, 5, 3).astype(np.float32)
    t = np.array([2, 0, 1])
    wt = np.moveaxis(w[..., t], -1, 0)
    return model, x, t, wt


def one_line(exc):
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------
# pixel flipping
# ------------------------------------------------------------------------------------------------
def test_pixel_flipping_is_the_cumulative_sum_of_the_sorted_contributions(lin):
    model, x, t, wt, exact, f0 = lin
    curve = F.pixel_flipping(model, x, exact, t, **LOGITS)
    contrib = -np.sort(-exact.reshape(len(x), -1), axis=1)                  # highest first
    want = f0[:, None] - np.concatenate([np.zeros((len(x), 1)), contrib.cumsum(1)], axis=1)
    assert curve.scores.shape == (4, H * W + 1) and curve.fractions.shape == (H * W + 1,)
    np.testing.assert_allclose(curve.scores, want, atol=2e-5)
    np.testing.assert_allclose(curve.fractions, np.arange(H * W + 1) / (H * W))
    np.testing.assert_allclose(curve.auc, np.trapezoid(want, curve.fractions, axis=1), atol=2e-5)
    # several pixels per step; 36 = 7 * 5 + 1: the last step removes the one pixel left
    c5 = F.pixel_flipping(model, x, exact, t, features_in_step=5, **LOGITS)
    counts = np.array([0, 5, 10, 15, 20, 25, 30, 35, 36])
    np.testing.assert_allclose(c5.fractions, counts / 36)
    np.testing.assert_allclose(c5.scores, want[:, counts], atol=2e-5)


def test_pixel_flipping_of_the_exact_map_is_optimal(lin):
    model, x, t, wt, exact, f0 = lin
    best = F.pixel_flipping(model, x, exact, t, **LOGITS).scores
    rs = np.random.RandomState(5)
    for _ in range(5):
        other = F.pixel_flipping(model, x, rs.randn(*exact.shape), t, **LOGITS).scores
        assert np.all(best <= other + 2e-5)
        np.testing.assert_allclose(other[:, 0], best[:, 0], atol=1e-6)      # same start
        np.testing.assert_allclose(other[:, -1], best[:, -1], atol=2e-5)    # same end: all removed


def test_pixel_flipping_fill_value(lin):
    model, x, t, wt, exact, f0 = lin
    curve = F.pixel_flipping(model, x, exact, t, features_in_step=36, fill=0.5, **LOGITS)
    # all pixels at 0.5: logit = 0.5 * sum(w) + b
    np.testing.assert_allclose(curve.scores[:, 1], f0 + (wt * (0.5 - x)).sum(axis=(1, 2, 3)), atol=2e-5)


# ------------------------------------------------------------------------------------------------
# region perturbation
# ------------------------------------------------------------------------------------------------
def grid_cells(a, p):
    """(N, cells) sums of (N,H,W) over the p x p tiling (H, W multiples of p), row-major cells."""
    n, h, w = a.shape
    return a.reshape(n, h // p, p, w // p, p).sum(axis=(2, 4)).reshape(n, -1)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_aopc_is_analytic(lin, order):
    model, x, t, wt, exact, f0 = lin
    rs = np.random.RandomState(7)
    maps = rs.randn(*exact.shape)                              # any map: its order is what counts
    c = 0.25
    curve = F.region_perturbation(model, x, maps, t, patch_size=2, order=order, fill=c, **LOGITS)
    rank = np.argsort(-grid_cells(maps, 2) if order == "morf" else grid_cells(maps, 2), axis=1,
                      kind="stable")
    change = grid_cells((wt * (c - x)).sum(-1), 2)             # logit change per removed cell
    steps = np.take_along_axis(change, rank, axis=1).cumsum(1)
    want = np.concatenate([f0[:, None], f0[:, None] + steps], axis=1)
    assert curve.scores.shape == (4, 10)
    np.testing.assert_allclose(curve.scores, want, atol=2e-5)
    np.testing.assert_allclose(curve.auc, (want[:, :1] - want).sum(1) / 10, atol=2e-5)
    np.testing.assert_allclose(curve.fractions, np.arange(10) / 9)
    # fewer regions: the first steps of the same curve
    short = F.region_perturbation(model, x, maps, t, patch_size=2, regions=3, order=order, fill=c,
                                  **LOGITS)
    np.testing.assert_allclose(short.scores, want[:, :4], atol=2e-5)


def test_region_perturbation_morf_of_the_exact_map_beats_lerf(lin):
    model, x, t, wt, exact, f0 = lin
    morf = F.region_perturbation(model, x, exact, t, patch_size=3, fill=0.0, **LOGITS).auc
    lerf = F.region_perturbation(model, x, exact, t, patch_size=3, fill=0.0, order="lerf", **LOGITS).auc
    assert np.all(morf > lerf)


def quantus_regions(a, p, regions, order="morf"):
    """Quantus' RegionPerturbation patch choice, written as its loop: pad by p-1, a patch at every
    top-left corner in the image, sums, greedy non-overlapping selection. (N,H,W) ranks."""
    h, w = a.shape
    pad = p - 1
    a_pad = np.pad(a, pad)
    sums, slices = [], []
    for r, c in itertools.product(range(pad, h + pad), range(pad, w + pad)):
        sl = (slice(r, r + p), slice(c, c + p))
        sums.append(a_pad[sl].sum())
        slices.append(sl)
    idx = np.argsort(-np.array(sums) if order == "morf" else np.array(sums), kind="stable")
    blocked = np.zeros(a_pad.shape, bool)
    ranks = np.full(a_pad.shape, h * w)
    k = 0
    for j in idx:
        m = np.zeros(a_pad.shape, bool)
        m[slices[j]] = True
        if not (blocked & m).any():
            ranks[m] = k
            blocked |= m
            k += 1
        if k >= regions:
            break
    return ranks[pad:pad + h, pad:pad + w]


def test_sliding_regions_are_quantus_choice(lin):
    rs = np.random.RandomState(11)
    maps = rs.randn(3, 7, 9)
    for p, regions in [(2, 5), (3, 6), (4, 4)]:
        got = F._sliding_ranks(maps, p, "morf", regions)
        for i in range(3):
            np.testing.assert_array_equal(got[i], quantus_regions(maps[i], p, regions))
        got = F._sliding_ranks(maps, p, "lerf", regions)
        np.testing.assert_array_equal(got[0], quantus_regions(maps[0], p, regions, "lerf"))
    # a single hot pixel: the first patch is the first (row-major) one that holds it
    model, x, t, wt, exact, f0 = lin
    hot = np.zeros((4, H, W))
    hot[:, 3, 3] = 1.0
    curve = F.region_perturbation(model, x, hot, t, patch_size=2, regions=1, fill=0.0,
                                  layout="sliding", **LOGITS)
    want = f0 - (wt * x)[:, 2:4, 2:4].sum(axis=(1, 2, 3))
    np.testing.assert_allclose(curve.scores[:, 1], want, atol=2e-5)


def test_region_perturbation_uniform_fill_is_seeded_per_input(lin):
    model, x, t, wt, exact, f0 = lin
    a = F.region_perturbation(model, x, exact, t, patch_size=3, seed=4, **LOGITS)
    # the fill is default_rng([seed, i]).uniform(0, 1, (H,W,C)) of each input: an image fill
    base = np.stack([np.random.default_rng([4, i]).uniform(0, 1, (H, W, 1)) for i in range(4)])
    b = F.region_perturbation(model, x, exact, t, patch_size=3, fill=base.astype(np.float32), **LOGITS)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    c = F.region_perturbation(model, x[:2], exact[:2], t[:2], patch_size=3, seed=4, **LOGITS)
    np.testing.assert_allclose(a.scores[:2], c.scores, atol=1e-6)     # input i's stream: [seed, i]
    d = F.region_perturbation(model, x, exact, t, patch_size=3, seed=5, **LOGITS)
    assert not np.allclose(a.scores, d.scores)


# ------------------------------------------------------------------------------------------------
# faithfulness correlation and MuFidelity
# ------------------------------------------------------------------------------------------------
def test_faithfulness_correlation_of_the_exact_map_is_one(lin):
    model, x, t, wt, exact, f0 = lin
    r = F.faithfulness_correlation(model, x, exact, t, subset_size=8, runs=30, **LOGITS)
    assert r.shape == (4,)
    np.testing.assert_allclose(r, 1.0, atol=1e-6)
    np.testing.assert_allclose(F.faithfulness_correlation(model, x, exact, t, subset_size=8, runs=30,
                                                          correlation="spearman", **LOGITS), 1.0,
                               atol=1e-6)


def test_faithfulness_correlation_of_a_random_map_is_the_analytic_correlation(lin):
    model, x, t, wt, exact, f0 = lin
    rand = np.random.RandomState(3).randn(*exact.shape)
    r = F.faithfulness_correlation(model, x, rand, t, subset_size=8, runs=40, seed=9, **LOGITS)
    want = []
    for i in range(4):          # the subsets: the 8 smallest 16-bit keys of default_rng([seed, i]), ties
        rng = np.random.default_rng([9, i])          # at the 8th broken by a fresh uniform draw per pixel
        u = rng.integers(0, 1 << 16, (40, H * W), dtype=np.uint16)
        sub = [np.lexsort((rng.random(H * W), row))[:8] if np.sum(row <= np.sort(row)[7]) > 8
               else np.argsort(row)[:8] for row in u]
        att = [rand[i].ravel()[s].sum() for s in sub]
        drop = [exact[i].ravel()[s].sum() for s in sub]                # exact output drops
        want.append(np.corrcoef(att, drop)[0, 1])
    np.testing.assert_allclose(r, want, atol=1e-5)
    assert np.all(r < 0.8) and np.abs(r).mean() < 0.5


def test_subset_masks_hold_exactly_k_pixels_even_with_equal_draws():
    from xaitf.metrics.faithfulness import _smallest_mask

    u = np.random.default_rng(0).random((50, 30))
    m = _smallest_mask(u, 7)
    assert m.dtype == np.float32 and np.all(m.sum(axis=1) == 7)
    np.testing.assert_array_equal(m.astype(bool), u <= np.sort(u, axis=1)[:, 6:7])
    tied = np.array([[0.1, 0.5, 0.5, 0.5, 0.9], [0.5, 0.5, 0.5, 0.5, 0.5]])
    m = _smallest_mask(tied, 2)       # the threshold value drawn 3 (5) times: the first in sorted order
    np.testing.assert_array_equal(m, [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    # with a generator, ties are broken at random: each of the 3 (5) tied pixels equally often
    counts = sum(_smallest_mask(tied, 2, np.random.default_rng(s)) for s in range(3000))
    assert np.all(counts.sum(axis=1) == 2 * 3000) and counts[0, 0] == 3000 and counts[0, 4] == 0
    np.testing.assert_allclose(counts[0, 1:4] / 3000, 1 / 3, atol=0.04)
    np.testing.assert_allclose(counts[1] / 3000, 2 / 5, atol=0.04)


def test_spearman_ranks_outputs_equal_within_rounding_as_ties():
    from scipy.stats import rankdata
    from xaitf.metrics.faithfulness import _rank_ties_within

    v = np.random.default_rng(1).integers(0, 6, (5, 12)).astype(np.float64)    # exact ties
    np.testing.assert_array_equal(_rank_ties_within(v, np.zeros(5)), rankdata(v, axis=1))
    near = np.array([[2.3202119, 2.3202114, 1.0, 5.0]])    # one input scored in two batches: 5e-7 apart
    np.testing.assert_array_equal(_rank_ties_within(near, [1e-5 * 5.0]), [[2.5, 2.5, 1, 4]])
    np.testing.assert_array_equal(_rank_ties_within(near, [0.0]), [[3, 2, 1, 4]])


def test_mufidelity_of_the_exact_map_is_one(lin):
    model, x, t, wt, exact, f0 = lin
    for corr in ("spearman", "pearson"):
        r = F.mufidelity(model, x, exact, t, grid_size=3, nb_samples=40, correlation=corr, **LOGITS)
        assert r.shape == (4,)
        np.testing.assert_allclose(r, 1.0, atol=1e-6)
    rand = np.random.RandomState(3).randn(*exact.shape)
    assert np.abs(F.mufidelity(model, x, rand, t, grid_size=3, nb_samples=40, **LOGITS)).mean() < 0.6


def test_mufidelity_masks_are_the_nearest_upsampled_grid_and_the_analytic_correlation(lin):
    for size, g in [(6, 4), (10, 3), (9, 9), (7, 2), (12, 5)]:
        grid = np.arange(g * g, dtype=np.float32).reshape(1, g, g, 1)
        tf_up = tf.image.resize(grid, (size, size), method="nearest").numpy()[0, :, :, 0]
        cells = F._cells(size, g)
        np.testing.assert_array_equal(cells[:, None] * g + cells[None, :], tf_up)
    model, x, t, wt, exact, f0 = lin
    rand = np.random.RandomState(4).randn(*exact.shape)
    g, samples = 4, 30
    r = F.mufidelity(model, x, rand, t, grid_size=g, subset_percent=0.3, nb_samples=samples,
                     correlation="pearson", seed=2, **LOGITS)
    cells = F._cells(H, g)
    cell = cells[:, None] * g + cells[None, :]
    want = []
    for i in range(4):
        cut = np.random.default_rng([2, i]).random((samples, g * g), dtype=np.float32) <= 0.3
        removed = cut[:, cell].reshape(samples, -1)
        want.append(np.corrcoef(removed @ rand[i].ravel(), removed @ exact[i].ravel())[0, 1])
    np.testing.assert_allclose(r, want, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# infidelity
# ------------------------------------------------------------------------------------------------
def test_infidelity_of_the_exact_maps_is_zero(lin, lin_rgb):
    model, x, t, wt, exact, f0 = lin
    for std in (0.05, 0.5):
        inf = F.infidelity(model, x, exact, t, std=std, samples=20, **LOGITS)
        assert inf.shape == (4,) and np.all(inf < 1e-6)
    # the gradient map with additive noise
    grad = wt.sum(-1)
    assert np.all(F.infidelity(model, x, grad, t, samples=20, multiply_by_inputs=False, **LOGITS) < 1e-6)
    # relative noise around a baseline: the map w * (x - baseline)
    assert np.all(F.infidelity(model, x, (wt * (x - 0.3)).sum(-1), t, baseline=0.3, samples=20,
                               **LOGITS) < 1e-6)
    # three channels: the map sums the channels, the noise is the same in every channel
    model3, x3, t3, wt3 = lin_rgb
    assert np.all(F.infidelity(model3, x3, (wt3 * x3).sum(-1), t3, samples=20, **LOGITS) < 1e-6)
    assert np.all(F.infidelity(model3, x3, wt3.sum(-1), t3, samples=20, multiply_by_inputs=False,
                               **LOGITS) < 1e-6)


def test_infidelity_of_a_scaled_map_is_analytic_and_normalize_removes_the_scale(lin):
    model, x, t, wt, exact, f0 = lin
    inf = F.infidelity(model, x, 2 * exact, t, std=0.3, samples=25, seed=6, **LOGITS)
    # I . (2 wx) - I . wx = I . wx, with I = infidelity_noise (the draws of the device program)
    eps = F.infidelity_noise(range(4), 25, (H, W), std=0.3, seed=6)
    assert eps.shape == (4, 25, H, W) and eps.dtype == np.float32
    assert abs(eps.mean()) < 0.02 and abs(eps.std() - 0.3) < 0.02 and not np.allclose(eps[0], eps[1])
    want = [np.mean((eps[i].reshape(25, -1).astype(np.float64) @ exact[i].ravel()) ** 2) for i in range(4)]
    np.testing.assert_allclose(inf, want, rtol=1e-5)
    assert np.all(inf > 1e-3)
    norm = F.infidelity(model, x, 2 * exact, t, std=0.3, samples=25, seed=6, normalize=True, **LOGITS)
    assert np.all(norm < 1e-6)


# ------------------------------------------------------------------------------------------------
# ROAD
# ------------------------------------------------------------------------------------------------
def test_noisy_linear_imputation():
    rs = np.random.RandomState(0)
    removed = rs.rand(8, 9) < 0.6
    # a constant image stays constant (noise 0)
    const = np.full((8, 9, 2), 0.37)
    np.testing.assert_allclose(F.noisy_linear_impute(const, removed, noise=0.0), 0.37, atol=1e-12)
    # a linear ramp is reproduced where every neighbour lies inside the image
    r, c = np.mgrid[:8, :9]
    ramp = np.stack([0.1 * r + 0.03 * c, 0.5 - 0.02 * r], axis=-1)
    inner = np.zeros((8, 9), bool)
    inner[2:6, 3:7] = True
    np.testing.assert_allclose(F.noisy_linear_impute(ramp, inner, noise=0.0), ramp, atol=1e-12)
    # one removed pixel: the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal)
    img = rs.rand(5, 5, 1)
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    nb = img[1:4, 1:4, 0]
    want = ((nb[0, 1] + nb[2, 1] + nb[1, 0] + nb[1, 2]) / 6
            + (nb[0, 0] + nb[0, 2] + nb[2, 0] + nb[2, 2]) / 12)
    out = F.noisy_linear_impute(img, one, noise=0.0)
    assert out[2, 2, 0] == pytest.approx(want, abs=1e-12)
    np.testing.assert_array_equal(out[~one], img[~one])
    # at a corner the weights of the neighbours inside are renormalised
    corner = np.zeros((5, 5), bool)
    corner[0, 0] = True
    want = (img[0, 1, 0] / 6 + img[1, 0, 0] / 6 + img[1, 1, 0] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert F.noisy_linear_impute(img, corner, noise=0.0)[0, 0, 0] == pytest.approx(want, abs=1e-12)
    # the noise: std `noise` on the removed pixels only
    big = np.zeros((60, 60), bool)
    big[10:50, 10:50] = True
    flat = np.full((60, 60, 1), 0.5)
    noisy = F.noisy_linear_impute(flat, big, noise=0.01, rng=np.random.default_rng(0))
    assert np.std(noisy[big] - 0.5) == pytest.approx(0.01, rel=0.05)
    np.testing.assert_array_equal(noisy[~big], 0.5)


@pytest.mark.parametrize("multigrid", [False, True])
def test_batched_conjugate_gradients_equal_the_sparse_solve(multigrid):
    """linear_impute_batch (conjugate gradients, float32; plain and multigrid-preconditioned on
    levels 10x9, 5x5, 3x3) against noisy_linear_impute (scipy's sparse direct solve, float64) on
    masks from one pixel to all but one, 1 and 3 channels, values on a 0..255 scale; the kept
    pixels stay bit-identical."""
    def impute(img, gone, **kw):
        return F.linear_impute_batch(img, gone, multigrid=multigrid, **kw)

    rs = np.random.RandomState(5)
    for c, scale in ((1, 1.0), (3, 255.0)):
        img = (rs.rand(12, 10, 9, c) * scale).astype(np.float32)
        frac = np.linspace(0.01, 0.999, 12)[:, None, None]
        gone = rs.rand(12, 10, 9) < frac
        gone[0] = False
        gone[0, 4, 4] = True                                  # one pixel: the neighbours' mean
        gone[-1] = True
        gone[-1, 9, 8] = False                                # one kept pixel: the image becomes it
        out = impute(img, gone)
        assert out.dtype == np.float32
        ref = np.stack([F.noisy_linear_impute(im, g, noise=0.0) for im, g in zip(img, gone)])
        np.testing.assert_allclose(out, ref, atol=2e-5 * scale, rtol=0)
        np.testing.assert_array_equal(out[~gone], img[~gone])
        np.testing.assert_allclose(out[-1], np.broadcast_to(img[-1, 9, 8], (10, 9, c)), rtol=1e-5)
        # a step limit too small for any image: every image falls back to the exact sparse solve
        np.testing.assert_allclose(impute(img, gone, max_iter=1), ref, rtol=1e-5, atol=1e-6 * scale)
    # nothing removed: the images themselves
    np.testing.assert_array_equal(impute(img, np.zeros((12, 10, 9), bool)), img)


def test_multigrid_preconditioner_is_symmetric_positive_definite():
    """Preconditioned conjugate gradients need an SPD preconditioner: the V-cycle, written out as a
    matrix over the unknowns of a 7x6 grid (levels 7x6, 4x3), equals its transpose and has positive
    eigenvalues; so does the operator A, and M A has its eigenvalues in a narrower range than A."""
    import tensorflow as tf

    from xaitf.metrics import imputation as I

    h, w = 7, 6
    gone = np.random.RandomState(3).rand(h, w) < 0.7
    gone[0, 0] = False
    idx = np.flatnonzero(gone)
    basis = np.zeros((len(idx), h * w), np.float32)
    basis[np.arange(len(idx)), idx] = 1.0
    basis = tf.constant(basis.reshape(-1, h, w, 1))
    m = tf.constant(np.broadcast_to(gone[None, :, :, None], basis.shape).astype(np.float32))
    assert I._levels(h, w) == [(7, 6), (4, 3)]
    op, vcycle = I._system(m, I._levels(h, w))
    M = vcycle(basis).numpy().reshape(len(idx), -1)[:, idx]
    A = op(basis).numpy().reshape(len(idx), -1)[:, idx]
    np.testing.assert_allclose(M, M.T, atol=1e-6)
    np.testing.assert_allclose(A, A.T, atol=1e-6)
    assert np.linalg.eigvalsh(M).min() > 0 and np.linalg.eigvalsh(A).min() > 0
    ev = np.sort(np.linalg.eigvals(M @ A).real)
    ea = np.linalg.eigvalsh(A)
    assert ev[-1] / ev[0] < ea[-1] / ea[0]


def test_multigrid_needs_few_steps_on_large_holes_and_is_chosen_for_large_images(monkeypatch):
    """On 61x50 images (odd sides: levels 61x50, 31x25, 16x13, 8x7, 4x4) with a large hole, the
    V-cycle-preconditioned solve agrees with the sparse one and needs a few times fewer steps than
    plain conjugate gradients; linear_impute_batch picks it from MULTIGRID_MIN_SIDE on."""
    import tensorflow as tf

    from xaitf.metrics import imputation as I

    rs = np.random.RandomState(2)
    h, w = 61, 50
    yy, xx = np.mgrid[:h, :w]
    img = (np.sin(yy / 7.0)[..., None] * np.cos(xx / 5.0)[..., None] + rs.rand(2, h, w, 2)).astype(np.float32)
    gone = np.stack([(yy - 30) ** 2 + (xx - 25) ** 2 < 20 ** 2, rs.rand(h, w) < 0.9])
    ref = np.stack([F.noisy_linear_impute(im, g, noise=0.0) for im, g in zip(img, gone)])
    args = (tf.constant(img), tf.constant(gone[..., None].astype(np.float32)), tf.constant(1e-5),
            tf.constant(1000))
    steps = {}
    for mg in (False, True):
        out, ok, steps[mg] = I._cg_program(h, w, 2, False, mg)(*args)
        assert ok.numpy().all()
        np.testing.assert_allclose(out.numpy(), ref, atol=3e-5)
    assert int(steps[True]) * 3 < int(steps[False])
    asked = []
    real = I._cg_program
    monkeypatch.setattr(I, "_cg_program", lambda *a: asked.append(a[-1]) or real(*a))
    F.linear_impute_batch(img, gone)
    F.linear_impute_batch(img[:, :40], gone[:, :40])
    assert asked == [True, False] and I.MULTIGRID_MIN_SIDE == 48


def test_conjugate_gradients_compiled_padded_and_uncompiled_agree(monkeypatch):
    """The XLA-compiled solver (batch padded from 19 to 20 by a repeat of the last image), the
    uncompiled one, and what runs where XLA is missing all give the sparse solution."""
    from xaitf.metrics import imputation as I
    from xaitf.methods import _xla

    rs = np.random.RandomState(7)
    img = rs.rand(19, 10, 9, 2).astype(np.float32)
    gone = rs.rand(19, 10, 9) < np.linspace(0.05, 0.95, 19)[:, None, None]
    gone[:, 0, 0] = False
    ref = np.stack([F.noisy_linear_impute(im, g, noise=0.0) for im, g in zip(img, gone)])
    real, asked = I._cg_program, []

    def spy(h, w, c, jit, multigrid):
        asked.append(jit)
        assert not multigrid                             # 10x9 images: plain conjugate gradients
        return real(h, w, c, jit, multigrid)

    monkeypatch.setattr(I, "_cg_program", spy)
    for jit in (True, False):
        out, ok = I._run_cg(img, gone, 1e-5, 200, jit=jit)
        assert out.shape == img.shape and ok.shape == (19,) and ok.all()
        np.testing.assert_allclose(out, ref, atol=2e-5)
    # the automatic choice: a batch below JIT_MIN_VALUES values runs uncompiled, a larger one compiled
    np.testing.assert_allclose(F.linear_impute_batch(img, gone), ref, atol=2e-5)
    monkeypatch.setattr(I, "JIT_MIN_VALUES", img.size)
    np.testing.assert_allclose(F.linear_impute_batch(img, gone), ref, atol=2e-5)
    assert asked == [True, False, False, True]
    # without XLA (a TensorFlow build without it) even jit=True runs uncompiled
    monkeypatch.setattr(_xla, "_AVAILABLE", [False])
    np.testing.assert_allclose(I._run_cg(img, gone, 1e-5, 200, jit=True)[0], ref, atol=2e-5)
    assert asked[-1] is False


def test_road_solvers_agree(lin_rgb):
    """road with the batched conjugate gradients and with the per-pair sparse solve: the same noise,
    scores within the solver's tolerance; the result does not depend on batch_size."""
    model, x, t, wt = lin_rgb
    maps = (wt * x).sum(-1)
    kw = dict(percentages=(0.0, 0.3, 0.6, 0.9), score="output", output="logits", progress=False, seed=3)
    cg = F.road(model, x, maps, t, solver="cg", **kw)
    sparse = F.road(model, x, maps, t, solver="sparse", **kw)
    np.testing.assert_allclose(cg.scores, sparse.scores, atol=1e-4)
    np.testing.assert_allclose(F.road(model, x, maps, t, solver="cg", batch_size=5, **kw).scores,
                               cg.scores, atol=1e-5)
    assert not np.allclose(F.road(model, x, maps, t, solver="cg", **dict(kw, seed=4)).scores, cg.scores)


def test_road_curves(lin):
    model, x, t, wt, exact, f0 = lin
    pct = (0.0, 0.25, 0.5, 0.75)
    # constant imputation with a number: the linear model's analytic drop
    c = F.road(model, x, exact, t, percentages=pct, imputation=0.0, score="output", **LOGITS)
    contrib = np.concatenate([np.zeros((4, 1)), (-np.sort(-exact.reshape(4, -1), axis=1)).cumsum(1)], 1)
    np.testing.assert_allclose(c.scores, f0[:, None] - contrib[:, [0, 9, 18, 27]], atol=2e-5)
    np.testing.assert_allclose(c.fractions, pct)
    np.testing.assert_allclose(c.auc, np.trapezoid(c.scores, pct, axis=1))
    # accuracy: the argmax class of the linear model on the same images
    acc = F.road(model, x, exact, t, percentages=pct, imputation=0.0, **LOGITS)
    xs = np.stack([np.where((F.pixel_order(exact) < k)[..., None], 0.0, x) for k in (0, 9, 18, 27)], 1)
    pred = model.predict(xs.reshape(-1, H, W, 1), verbose=0).argmax(-1).reshape(4, 4)
    np.testing.assert_array_equal(acc.scores, (pred == t[:, None]).astype(float))
    # noisy linear imputation: morf and lerf differ, and morf lowers the target logit more
    morf = F.road(model, x, exact, t, percentages=pct, score="output", **LOGITS)
    lerf = F.road(model, x, exact, t, percentages=pct, score="output", order="lerf", **LOGITS)
    assert morf.scores.shape == (4, 4) and not np.allclose(morf.scores, lerf.scores)
    np.testing.assert_allclose(morf.scores[:, 0], f0, atol=2e-5)                # nothing removed
    assert np.mean(morf.scores[:, 1:]) < np.mean(lerf.scores[:, 1:])
    # the imputed images are the linear imputation plus 0.01 road_noise(i, j) on the removed pixels
    i, j = 2, 2
    gone = F.pixel_order(exact)[i] < 18
    img = F.noisy_linear_impute(x[i], gone, 0.0) + 0.01 * gone[..., None] * F.road_noise([i], [j], (H, W, 1))[0]
    want = (wt[i] * img).sum() + (f0[i] - (wt[i] * x[i]).sum())
    assert morf.scores[i, j] == pytest.approx(want, abs=2e-5)


# ------------------------------------------------------------------------------------------------
# determinism, batch size
# ------------------------------------------------------------------------------------------------
STOCHASTIC = {
    "region_perturbation": lambda m, x, a, t, **k: F.region_perturbation(
        m, x, a, t, patch_size=2, **k).scores,
    "faithfulness_correlation": lambda m, x, a, t, **k: F.faithfulness_correlation(
        m, x, a, t, subset_size=5, runs=10, **k),
    "mufidelity": lambda m, x, a, t, **k: F.mufidelity(m, x, a, t, grid_size=3, nb_samples=12, **k),
    "infidelity": lambda m, x, a, t, **k: F.infidelity(m, x, a, t, samples=7, **k),
    "road": lambda m, x, a, t, **k: F.road(
        m, x, a, t, percentages=(0.2, 0.6), score="output", **k).scores,
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_same_seed_same_result_and_batch_size_does_not_matter(lin, name):
    model, x, t, wt, exact, f0 = lin
    fn = STOCHASTIC[name]
    rand = np.random.RandomState(8).randn(*exact.shape)
    a = fn(model, x, rand, t, seed=3, batch_size=7, **LOGITS)
    np.testing.assert_array_equal(a, fn(model, x, rand, t, seed=3, batch_size=7, **LOGITS))
    np.testing.assert_allclose(a, fn(model, x, rand, t, seed=3, batch_size=1000, **LOGITS),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, fn(model, x, rand, t, seed=3, batch_size=1, **LOGITS),
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(a, fn(model, x, rand, t, seed=4, batch_size=7, **LOGITS))


def test_pixel_flipping_batch_size_does_not_matter(lin):
    model, x, t, wt, exact, f0 = lin
    a = F.pixel_flipping(model, x, exact, t, features_in_step=4, batch_size=3, **LOGITS)
    b = F.pixel_flipping(model, x, exact, t, features_in_step=4, batch_size=500, **LOGITS)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input_is_one_clear_line(lin):
    model, x, t, wt, exact, f0 = lin
    nan = exact.copy()
    nan[0, 0, 0] = np.nan
    args = (model, x, exact, t)
    pf, rp, fc, mu, inf, road = (functools.partial(f, *args) for f in (
        F.pixel_flipping, F.region_perturbation, F.faithfulness_correlation, F.mufidelity, F.infidelity,
        F.road))
    cases = [
        (InputError, "do not match", lambda: F.pixel_flipping(model, x, exact[:, :5], t)),
        (InputError, "NaN", lambda: F.faithfulness_correlation(model, x, nan, t, subset_size=4)),
        (InputError, "reduce the channels", lambda: F.infidelity(model, x, np.ones((4, H, W, 3)), t)),
        (InputError, "targets", lambda: F.mufidelity(model, x, exact, t[:2])),
        (MethodError, "features_in_step", lambda: pf(features_in_step=0)),
        (MethodError, "features_in_step", lambda: pf(features_in_step=37)),
        (MethodError, "order to be one of morf, lerf", lambda: rp(order="random")),
        (MethodError, "patch_size", lambda: rp(patch_size=0)),
        (MethodError, "regions to be at most the 9 patches", lambda: rp(patch_size=2, regions=10)),
        (MethodError, "layout", lambda: rp(layout="tiles")),
        (MethodError, "noise_range", lambda: rp(noise_range=(1, 0))),
        (MethodError, "needs fill to be 'uniform'", lambda: rp(fill="gauss")),
        (InputError, "pixel_flipping fill: .*does not broadcast", lambda: pf(fill=[0, 1])),
        (MethodError, "subset_size to be at most the 36 pixels", lambda: fc()),
        (MethodError, "runs", lambda: fc(subset_size=4, runs=1)),
        (MethodError, "correlation", lambda: fc(subset_size=4, correlation="kendall")),
        (MethodError, "seed", lambda: fc(subset_size=4, seed=-1)),
        (MethodError, "grid_size", lambda: mu(grid_size=0)),
        (MethodError, "subset_percent", lambda: mu(grid_size=3, subset_percent=0)),
        (MethodError, "nb_samples", lambda: mu(grid_size=3, nb_samples=1.5)),
        (MethodError, "perturbation", lambda: inf(perturbation="square")),
        (MethodError, "std", lambda: inf(std=0)),
        (MethodError, "samples", lambda: inf(samples=0)),
        (MethodError, "multiply_by_inputs", lambda: inf(multiply_by_inputs="yes")),
        (MethodError, "infidelity baseline: unknown fill", lambda: inf(baseline="zero")),
        (InputError, "infidelity baseline: .*does not broadcast", lambda: inf(baseline=[0, 1])),
        (MethodError, "normalize", lambda: inf(normalize=None)),
        (MethodError, r"percentages to be increasing fractions in \[0, 1\)",
         lambda: road(percentages=(0.5, 1.0))),
        (MethodError, "percentages", lambda: road(percentages=(0.5, 0.2))),
        (MethodError, "percentages", lambda: road(percentages=())),
        (MethodError, "imputation to be 'linear' or a number", lambda: road(imputation="mean")),
        (MethodError, "score", lambda: road(score="top1")),
        (MethodError, "noise", lambda: road(noise=-1)),
        (MethodError, "unknown output", lambda: road(output="p")),
        (MethodError, "solver to be one of cg, sparse", lambda: road(solver="lu")),
        (InputError, "at least one kept pixel",
         lambda: F.noisy_linear_impute(x[0], np.ones((H, W), bool), noise=0.0)),
        (InputError, "at least one kept pixel",
         lambda: F.linear_impute_batch(x[:2], np.ones((2, H, W), bool))),
        (InputError, "removed: expected a", lambda: F.linear_impute_batch(x[:2], np.ones((H, W), bool))),
    ]
    for kind, match, call in cases:
        with pytest.raises(kind, match=match) as e:
            call()
        one_line(e)


# ------------------------------------------------------------------------------------------------
# Keras 3 and a softmax CNN
# ------------------------------------------------------------------------------------------------
def keras3_cnn(shape=(12, 12, 3), classes=4):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input(shape)
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = L.MaxPooling2D(2)(h)
    h = L.Flatten()(h)
    out = L.Dense(classes, activation="softmax")(h)
    return keras.Model(inp, out)


@pytest.mark.parametrize("kind", ["keras3", "tf-keras"])
def test_every_metric_runs_on_a_cnn(kind):
    model = keras3_cnn() if kind == "keras3" else make_cnn(shape=(12, 12, 3), classes=4, seed=1)
    assert xaitf.model_kind(model) == kind
    rs = np.random.RandomState(0)
    x = rs.rand(2, 12, 12, 3).astype(np.float32)
    maps = rs.rand(2, 12, 12)
    kw = {"batch_size": 16, "progress": False}
    c = F.pixel_flipping(model, x, maps, None, features_in_step=16, **kw)
    assert c.scores.shape == (2, 10) and c.auc.shape == (2,)
    assert np.all((c.scores >= 0) & (c.scores <= 1))                           # probabilities
    c = F.region_perturbation(model, x, maps, [0, 1], patch_size=4, **kw)
    assert c.scores.shape == (2, 10) and np.all(np.isfinite(c.auc))
    c = F.region_perturbation(model, x, maps, [0, 1], patch_size=4, layout="sliding", regions=5, **kw)
    assert c.scores.shape == (2, 6) and np.all(np.isfinite(c.auc))
    c = F.road(model, x, maps, [0, 1], percentages=(0.1, 0.5), **kw)
    assert c.scores.shape == (2, 2) and set(np.unique(c.scores)) <= {0.0, 1.0}
    for r in (F.faithfulness_correlation(model, x, maps, [0, 1], subset_size=20, runs=10, **kw),
              F.mufidelity(model, x, maps, [0, 1], grid_size=4, nb_samples=10, **kw),
              F.infidelity(model, x, maps, [0, 1], samples=6, **kw),
              F.infidelity(model, x, maps, [0, 1], samples=6, normalize=True, **kw)):
        assert r.shape == (2,) and r.dtype == np.float64 and np.all(np.isfinite(r))


def test_exported_from_xaitf_metrics():
    import xaitf.metrics as M

    for name in ("pixel_flipping", "region_perturbation", "faithfulness_correlation", "mufidelity",
                 "infidelity", "road", "noisy_linear_impute"):
        assert getattr(M, name) is getattr(F, name) and name in M.__all__
