"""Localisation (pointing game, relevance mass/rank, top-k intersection), complexity and sensitivity
metrics against values worked out by hand on 6x6 maps and against analytic oracles."""
import math
import subprocess
import sys

import numpy as np
import pytest

import xaitf
from xaitf import metrics as M
from xaitf.errors import InputError, MethodError

H = W = 6


def one_mask(*pixels):
    """A (1,6,6) bool mask with the given (row, column) pixels set."""
    b = np.zeros((1, H, W), bool)
    for r, c in pixels:
        b[0, r, c] = True
    return b


def one_map(values):
    """A (1,6,6) float map: zero except ``{(row, column): value}``."""
    m = np.zeros((1, H, W))
    for (r, c), v in values.items():
        m[0, r, c] = v
    return m


SQUARE = one_mask((0, 0), (0, 1), (1, 0), (1, 1))          # the top-left 2x2 block, |B| = 4


# ------------------------------------------------------------------------------------------------
# pointing game
# ------------------------------------------------------------------------------------------------
def test_pointing_game_by_hand():
    block = np.zeros((1, H, W), bool)
    block[0, :3, :3] = True                                   # rows 0-2, columns 0-2
    maps = np.concatenate([
        one_map({(1, 1): 5, (5, 5): 4}),                      # maximum inside: hit
        one_map({(1, 1): 4, (5, 5): 5}),                      # maximum outside: miss
        one_map({(0, 5): 3, (2, 2): 3}),                      # tie, one of the maxima inside: hit
        -1.0 - one_map({(4, 4): 1}) + one_map({(2, 0): 0.5}),  # all negative, maximum (-0.5) at (2,0)
    ])
    masks = np.repeat(block, 4, axis=0)
    np.testing.assert_array_equal(M.pointing_game(maps, masks), [1.0, 0.0, 1.0, 1.0])
    out = M.pointing_game(maps, masks)
    assert out.dtype == np.float64 and out.shape == (4,)


def test_pointing_game_tolerance_dilates_by_a_disk():
    mask = one_mask((2, 2))
    straight = one_map({(2, 4): 1.0})                         # 2 pixels right of the mask pixel
    diagonal = one_map({(3, 3): 1.0})                         # distance sqrt(2)
    far = one_map({(5, 5): 1.0})                              # distance sqrt(18) = 4.24
    maps = np.concatenate([straight, diagonal, far])
    masks = np.repeat(mask, 3, axis=0)
    np.testing.assert_array_equal(M.pointing_game(maps, masks), [0, 0, 0])
    np.testing.assert_array_equal(M.pointing_game(maps, masks, tolerance=1), [0, 0, 0])  # cross only
    np.testing.assert_array_equal(M.pointing_game(maps, masks, tolerance=2), [1, 1, 0])
    np.testing.assert_array_equal(M.pointing_game(maps, masks, tolerance=4), [1, 1, 0])
    np.testing.assert_array_equal(M.pointing_game(maps, masks, tolerance=5), [1, 1, 1])
    # a mask on the border dilates without wrapping around
    edge = one_mask((0, 5))
    wrap = one_map({(0, 0): 1.0})
    assert M.pointing_game(wrap, edge, tolerance=1)[0] == 0
    assert M.pointing_game(one_map({(1, 5): 1.0}), edge, tolerance=1)[0] == 1


# ------------------------------------------------------------------------------------------------
# relevance mass and rank, top-k intersection
# ------------------------------------------------------------------------------------------------
def test_relevance_mass_by_hand():
    # inside 1+2+3+4 = 10; outside +10 at (5,5) and -5 at (4,4)
    m = one_map({(0, 0): 1, (0, 1): 2, (1, 0): 3, (1, 1): 4, (5, 5): 10, (4, 4): -5})
    np.testing.assert_allclose(M.relevance_mass(m, SQUARE), [10 / 15])                # Quantus
    np.testing.assert_allclose(M.relevance_mass(m, SQUARE, positive_only=True), [10 / 20])
    # negative relevance inside the mask: signed (7-1+2)/18, positive only 9/19
    m2 = one_map({(0, 0): 7, (0, 1): -1, (1, 0): 2, (5, 5): 10})
    np.testing.assert_allclose(M.relevance_mass(m2, SQUARE), [8 / 18])
    np.testing.assert_allclose(M.relevance_mass(m2, SQUARE, positive_only=True), [9 / 19])
    # uniform map: the share of the mask in the image; all-zero map: undefined
    ones = np.ones((1, H, W))
    np.testing.assert_allclose(M.relevance_mass(ones, SQUARE), [4 / 36])
    assert np.isnan(M.relevance_mass(np.zeros((1, H, W)), SQUARE)[0])
    # (N,H,W,1) masks as maps may come
    np.testing.assert_allclose(M.relevance_mass(ones, SQUARE[..., None]), [4 / 36])


def test_relevance_rank_by_hand():
    # K = 4; the 4 highest: 9 (0,0), 8 (0,1), 7 (5,5), 6 (1,0) -> 3 in the mask
    m = one_map({(0, 0): 9, (0, 1): 8, (5, 5): 7, (1, 0): 6, (1, 1): 1})
    np.testing.assert_allclose(M.relevance_rank(m, SQUARE), [3 / 4])
    # a constant map: ties go in row-major order, (0,0) (0,1) (0,2) (0,3) -> 2 of 4
    np.testing.assert_allclose(M.relevance_rank(np.ones((1, H, W)), SQUARE), [2 / 4])
    # K = 1: the single mask pixel holds the maximum, or not
    np.testing.assert_allclose(M.relevance_rank(np.concatenate([m, m]),
                                                np.concatenate([one_mask((0, 0)), one_mask((5, 5))])),
                               [1.0, 0.0])
    # signed: strongly negative pixels in the mask do not rank high
    neg = one_map({(0, 0): -9, (0, 1): -8, (1, 0): -7, (1, 1): -6, (3, 3): 1})
    np.testing.assert_allclose(M.relevance_rank(neg, SQUARE), [0.0])


def test_top_k_intersection_by_hand():
    m = one_map({(0, 0): 9, (0, 1): 8, (5, 5): 7, (1, 0): 6, (1, 1): 1})
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=1), [1.0])
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=2), [1.0])
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=3), [2 / 3])
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=5), [4 / 5])
    # k = 1000 (the default) is clipped to the 36 pixels: the share of the mask, 4/36
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE), [4 / 36])
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=36), [4 / 36])
    # a fraction: 0.25 * 36 = 9 pixels: 9 8 7 6 1, then zeros in row-major order (0,2)..(0,5)
    np.testing.assert_allclose(M.top_k_intersection(m, SQUARE, k=0.25), [4 / 9])
    # several maps at once, each with its own mask
    two = np.concatenate([m, np.flip(m, axis=(1, 2))])
    masks = np.concatenate([SQUARE, np.flip(SQUARE, axis=(1, 2))])
    np.testing.assert_allclose(M.top_k_intersection(two, masks, k=3), [2 / 3, 2 / 3])


# ------------------------------------------------------------------------------------------------
# complexity
# ------------------------------------------------------------------------------------------------
def test_complexity_entropy_oracles():
    M.sparseness(np.ones((1, H, W)))      # imports the module xaitf.metrics.complexity first
    n = H * W
    maps = np.stack([
        np.full((H, W), 2.5),                                  # uniform: ln 36
        one_map({(3, 4): -7.0})[0],                            # one-hot (negative): 0
        one_map({(0, 0): -1.0, (5, 5): 1.0})[0],               # two equal |values|: ln 2
        one_map({(0, 0): 2.0, (1, 1): 1.0, (2, 2): -1.0})[0],  # p = 1/2, 1/4, 1/4: 1.5 ln 2
        np.zeros((H, W)),                                      # zero map: ln 36 (uniform limit)
    ])
    np.testing.assert_allclose(M.complexity(maps),
                               [math.log(n), 0.0, math.log(2), 1.5 * math.log(2), math.log(n)],
                               rtol=1e-12, atol=1e-15)
    # scale-free, and the natural log (as scipy.stats.entropy)
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, H, W))
    p = np.abs(r).reshape(3, -1) / np.abs(r).reshape(3, -1).sum(1, keepdims=True)
    np.testing.assert_allclose(M.complexity(r), -(p * np.log(p)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(M.complexity(1e-3 * r), M.complexity(r), rtol=1e-12)
    from xaitf.metrics.complexity import complexity
    np.testing.assert_array_equal(complexity(r), M.complexity(r))


def test_effective_complexity_counts():
    # |values| / max: 1, 1e-6 (below eps), 2e-5 (above), 0.5 (above), 0 -> 3
    m = one_map({(0, 0): 1.0, (0, 1): 1e-6, (2, 3): -2e-5, (5, 0): -0.5})
    np.testing.assert_array_equal(M.effective_complexity(m), [3.0])
    # Quantus normalises by max |a| first: a scaled map counts the same ...
    np.testing.assert_array_equal(M.effective_complexity(0.1 * m), [3.0])
    # ... raw values against eps: 0.1 and 0.05 only
    np.testing.assert_array_equal(M.effective_complexity(0.1 * m, normalise=False), [2.0])
    np.testing.assert_array_equal(M.effective_complexity(m, eps=0), [4.0])
    np.testing.assert_array_equal(M.effective_complexity(m, eps=0.6), [1.0])
    assert M.effective_complexity(np.zeros((1, H, W)))[0] == 0.0
    assert M.effective_complexity(np.ones((2, H, W))).tolist() == [36.0, 36.0]


# ------------------------------------------------------------------------------------------------
# sensitivities
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def images():
    return np.random.default_rng(4).random((5, H, W, 2)).astype(np.float32) + 0.1


def test_sensitivity_of_a_constant_explainer_is_zero(images):
    const = np.random.default_rng(1).normal(size=(H, W))

    def explainer(xb, targets):
        return np.broadcast_to(const, (len(xb), H, W))

    for f in (M.max_sensitivity, M.avg_sensitivity):
        np.testing.assert_array_equal(f(explainer, images, 0), np.zeros(5))
        np.testing.assert_array_equal(f(explainer, images, 0, denominator="input", norm="inf"),
                                      np.zeros(5))


def test_sensitivity_of_the_gradient_of_a_linear_model_is_zero(linear_model):
    x = np.random.default_rng(0).random((3, 6, 6, 1)).astype(np.float32)
    grad = xaitf.create_explainer("grad", linear_model, progress=False)
    assert np.all(M.max_sensitivity(grad, x, None, samples=4) < 1e-6)
    assert np.all(M.avg_sensitivity(grad, x, [0, 1, 2], samples=4) < 1e-6)
    # input x gradient does move: (x + d) * w
    ixg = xaitf.create_explainer("inpgrad", linear_model, progress=False)
    assert np.all(M.max_sensitivity(ixg, x, 1, samples=4) > 1e-3)


def test_sensitivity_of_the_identity_explainer_against_the_analytic_value(images):
    from xaitf.metrics.robustness import uniform_noise

    calls = []

    def identity(xb, targets):                  # maps = the first channel of the image itself
        calls.append((len(xb), None if targets is None else list(targets)))
        return xb[..., 0]

    samples, radius, seed = 7, 0.2, 11
    out = M.max_sensitivity(identity, images, [0, 1, 2, 3, 4], samples=samples, radius=radius,
                            seed=seed, batch_size=20)
    avg = M.avg_sensitivity(identity, images, [0, 1, 2, 3, 4], samples=samples, radius=radius,
                            seed=seed, batch_size=20)
    # 20 // 8 = 2 inputs per call, each with its 7 noisy copies; targets repeated per copy
    assert [c[0] for c in calls[:3]] == [16, 16, 8]
    assert calls[0][1] == [0, 1] + [0] * 7 + [1] * 7
    oracle_max, oracle_avg, oracle_in = [], [], []
    for i in range(5):
        d = uniform_noise(images.shape[1:], i, samples, radius, seed)      # (7, 6, 6, 2)
        assert d.dtype == np.float32 and np.abs(d).max() <= radius and d.min() < 0 < d.max()
        a0 = images[i, ..., 0].astype(np.float64)
        a1 = (images[i] + d)[..., 0].astype(np.float64)                    # what the explainer saw
        ratios = [np.linalg.norm(a - a0) / np.linalg.norm(a0) for a in a1]
        oracle_max.append(max(ratios))
        oracle_avg.append(np.mean(ratios))
        steps = (images[i] + d).astype(np.float64) - images[i]
        oracle_in.append(max(np.linalg.norm(s[..., 0]) for s in steps) / np.linalg.norm(images[i].astype(np.float64)))
    np.testing.assert_allclose(out, oracle_max, rtol=1e-10)
    np.testing.assert_allclose(avg, oracle_avg, rtol=1e-10)
    assert np.all(avg < out)
    # every |d| <= radius: ||d[...,0]|| <= radius sqrt(HW)
    bound = radius * math.sqrt(H * W) / np.linalg.norm(images[..., 0].reshape(5, -1), axis=1)
    assert np.all(out <= bound * (1 + 1e-6)) and np.all(out > 0.3 * bound)
    # Quantus' denominator ||x|| (both channels)
    np.testing.assert_allclose(M.max_sensitivity(identity, images, 0, samples=samples, radius=radius,
                                                 seed=seed, denominator="input"),
                               oracle_in, rtol=1e-10)
    # the L_inf norm: max |d| / max |x[...,0]| <= radius / max |x[...,0]|
    inf = M.max_sensitivity(identity, images, 0, samples=samples, radius=radius, seed=seed, norm="inf")
    assert np.all(inf <= radius / images[..., 0].reshape(5, -1).max(1) * (1 + 1e-6))


def test_sensitivity_seed_and_chunking(images):
    def explainer(xb, targets):                 # a non-linear map of the image
        return np.tanh(3 * xb[..., 0] * xb[..., 1]) + xb[..., 1] ** 2

    for f in (M.max_sensitivity, M.avg_sensitivity):
        a = f(explainer, images, 0, samples=5, seed=3, batch_size=1)
        b = f(explainer, images, 0, samples=5, seed=3, batch_size=1000)
        c = f(explainer, images, 0, samples=5, seed=3, batch_size=13)
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12)
        np.testing.assert_array_equal(b, f(explainer, images, 0, samples=5, seed=3, batch_size=1000))
        assert not np.allclose(b, f(explainer, images, 0, samples=5, seed=4, batch_size=1000))
        # the first input's score does not depend on the others
        np.testing.assert_allclose(f(explainer, images[:1], 0, samples=5, seed=3), b[:1], rtol=1e-12)
    # max >= avg on the same draws
    assert np.all(M.max_sensitivity(explainer, images, 0, samples=5, seed=3)
                  >= M.avg_sensitivity(explainer, images, 0, samples=5, seed=3))


def test_sensitivity_with_a_zero_explanation():
    x = np.zeros((2, H, W, 1), np.float32)
    # e(x) = 0 and it moves: undefined (NaN); e = 0 everywhere: 0
    assert np.all(np.isnan(M.max_sensitivity(lambda xb, t: xb[..., 0], x, 0, samples=3)))
    np.testing.assert_array_equal(M.avg_sensitivity(lambda xb, t: 0 * xb[..., 0], x, 0, samples=3),
                                  [0.0, 0.0])


# ------------------------------------------------------------------------------------------------
# bad input, exports
# ------------------------------------------------------------------------------------------------
def test_bad_input_gives_one_line_errors(images):
    maps = np.random.default_rng(0).random((2, H, W))
    masks = np.zeros((2, H, W), bool)
    masks[:, 1:3, 1:3] = True
    bad_maps = maps.copy()
    bad_maps[1, 2, 2] = np.nan
    half_empty = masks.copy()
    half_empty[1] = False
    nan_masks = masks.astype(float)
    nan_masks[0, 0, 0] = np.nan
    ident = lambda xb, t: xb[..., 0]  # noqa: E731
    loc = (M.pointing_game, M.relevance_mass, M.relevance_rank, M.top_k_intersection)
    cases = []
    for f in loc:
        cases += [
            (InputError, "got None", lambda f=f: f(maps, None)),
            (InputError, "do not match", lambda f=f: f(maps, masks[:, :5])),
            (InputError, "do not match", lambda f=f: f(maps, np.ones((3, H, W), bool))),
            (InputError, "expected ground truth for 2 images", lambda f=f: f(maps, masks[0])),
            (InputError, "got shape", lambda f=f: f(maps, [])),
            (InputError, r"image\(s\) 1 is empty", lambda f=f: f(maps, half_empty)),
            (InputError, "NaN", lambda f=f: f(maps, nan_masks)),
            (InputError, "NaN", lambda f=f: f(bad_maps, masks)),
            (InputError, "maps must be", lambda f=f: f(maps[0], masks)),
        ]
    cases += [
        (MethodError, "tolerance", lambda: M.pointing_game(maps, masks, tolerance=-1)),
        (MethodError, "tolerance", lambda: M.pointing_game(maps, masks, tolerance=1.5)),
        (MethodError, "positive_only", lambda: M.relevance_mass(maps, masks, positive_only="yes")),
        (MethodError, "k must", lambda: M.top_k_intersection(maps, masks, k=0)),
        (MethodError, "k must", lambda: M.top_k_intersection(maps, masks, k=1.5)),
        (InputError, "NaN", lambda: M.complexity(bad_maps)),
        (InputError, "one map per image", lambda: M.complexity(np.ones((2, H, W, 3)))),
        (InputError, "NaN", lambda: M.effective_complexity(bad_maps)),
        (MethodError, "eps", lambda: M.effective_complexity(maps, eps=-1)),
        (MethodError, "eps", lambda: M.effective_complexity(maps, eps=np.inf)),
        (MethodError, "normalise", lambda: M.effective_complexity(maps, normalise="max")),
    ]
    for f in (M.max_sensitivity, M.avg_sensitivity):
        cases += [
            (MethodError, "radius", lambda f=f: f(ident, images, 0, radius=0)),
            (MethodError, "radius", lambda f=f: f(ident, images, 0, radius=-0.1)),
            (MethodError, "norm", lambda f=f: f(ident, images, 0, norm="l3")),
            (MethodError, "denominator", lambda f=f: f(ident, images, 0, denominator="output")),
            (MethodError, "seed", lambda f=f: f(ident, images, 0, seed=-1)),
            (MethodError, "samples", lambda f=f: f(ident, images, 0, samples=0)),
            (MethodError, "batch_size", lambda f=f: f(ident, images, 0, batch_size=0)),
            (MethodError, "unknown normalise", lambda f=f: f(ident, images, 0, normalise="abs")),
            (MethodError, "callable", lambda f=f: f("grad", images, 0)),
            (InputError, "explainer returned", lambda f=f: f(lambda xb, t: xb[:1, ..., 0], images, 0)),
            (InputError, "NaN", lambda f=f: f(ident, np.full((1, H, W, 1), np.nan), 0)),
            (InputError, "targets", lambda f=f: f(ident, images, [0, 1])),
        ]
    for kind, pattern, call in cases:
        with pytest.raises(kind, match=pattern) as e:
            call()
        assert "\n" not in str(e.value), str(e.value)


def test_exports_and_no_tensorflow_for_map_only_metrics():
    names = ("pointing_game", "relevance_mass", "relevance_rank", "top_k_intersection",
             "complexity", "effective_complexity", "max_sensitivity", "avg_sensitivity")
    for name in names:
        assert name in M.__all__ and callable(getattr(M, name))
        assert f"``{name}``" in M.__doc__
    code = ("import sys, numpy as np, xaitf.metrics as M; m = np.eye(6)[None]; b = m > 0; "
            "M.pointing_game(m, b, tolerance=2); M.relevance_mass(m, b); M.relevance_rank(m, b); "
            "M.top_k_intersection(m, b); M.sparseness(m); M.complexity(m); M.effective_complexity(m); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
