"""xaitf.metrics against hand-computed values, independent reference loops and analytic oracles.

The reference code here builds perturbed images one at a time in numpy and scores them with
``model.predict`` or numpy; it shares nothing with the metrics' TensorFlow engine.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import xaitf
from xaitf import metrics as M
from xaitf.errors import InputError, MethodError
from xaitf.keras_bridge import tfk

from conftest import make_cnn, make_linear


def linear(weights, bias, shape, activation=None):
    """logits = flatten(x) . weights + bias (tf-keras), weights (n, K)."""
    inp = tfk.Input(shape, name="image")
    dense = tfk.layers.Dense(weights.shape[1], activation=activation, name="dense")
    model = tfk.Model(inp, dense(tfk.layers.Flatten()(inp)))
    dense.set_weights([np.asarray(weights, np.float32), np.asarray(bias, np.float32)])
    return model


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def rgb():
    model = make_cnn(shape=(8, 8, 3), seed=1)
    rng = np.random.default_rng(3)
    x = rng.random((7, 8, 8, 3)).astype(np.float32)
    maps = rng.normal(size=(7, 8, 8))
    y = rng.integers(0, 5, 7)
    return model, x, maps, y


# ------------------------------------------------------------------------------------------------
# degradation
# ------------------------------------------------------------------------------------------------
def test_degradation_by_hand():
    # 2x2 gray images of ones; class 0 reads pixel 0 (weight 2), class 1 reads pixel 3 (weight 1)
    # plus a bias of 0.5. Original logits [2, 1.5] -> class 0.
    w = np.zeros((4, 2))
    w[0, 0], w[3, 1] = 2.0, 1.0
    model = linear(w, [0.0, 0.5], (2, 2, 1))
    x = np.ones((3, 2, 2, 1), np.float32)
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 0] = 1  # keeps pixel 0 -> logits [2, 0.5]  -> class 0, p0 = 1/(1+e^-1.5)
    maps[1, 1, 1] = 1  # keeps pixel 3 -> logits [0, 1.5]  -> class 1, p0 = 1/(1+e^1.5)
    maps[2, 0, 1] = 1  # keeps pixel 1 -> logits [0, 0.5]  -> class 1, p0 = 1/(1+e^0.5)
    r = M.degradation(model, x, maps, [0, 0, 0], keep=0.25, fill=0.0)
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert r["kept_pixels"] == 1
    np.testing.assert_array_equal(r["predictions"], [0, 1, 1])
    assert r["accuracy"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(r["p_true"], [s(1.5), s(-1.5), s(-0.5)], rtol=1e-6)
    np.testing.assert_allclose(r["p_predicted"], [s(1.5), s(1.5), s(0.5)], rtol=1e-6)
    assert r["confidence_true"] == pytest.approx((s(1.5) + s(-1.5) + s(-0.5)) / 3, rel=1e-6)
    assert r["confidence_predicted"] == pytest.approx((2 * s(1.5) + s(0.5)) / 3, rel=1e-6)
    assert r["accuracy_original"] == 1.0
    assert r["confidence_true_original"] == pytest.approx(s(0.5), rel=1e-6)
    # fill 1 (= the image itself here) changes nothing; one value per channel works the same
    for fill in (1.0, [1.0]):
        assert M.degradation(model, x, maps, [0, 0, 0], keep=0.25, fill=fill)["accuracy"] == 1.0
    # keep = 1 keeps everything
    assert M.degradation(model, x, maps, [0, 0, 0], keep=1.0)["accuracy"] == 1.0


def test_degradation_matches_reference_loop(rgb):
    model, x, maps, y = rgb
    k = round(0.3 * 64)
    ref = []
    for i in range(len(x)):  # one image at a time, by sorting in numpy
        order = np.argsort(-maps[i].ravel(), kind="stable")
        keep = np.zeros(64, bool)
        keep[order[:k]] = True
        ref.append(np.where(keep.reshape(8, 8, 1), x[i], 0.25))
    p = model.predict(np.stack(ref), verbose=0)
    r = M.degradation(model, x, maps, y, keep=0.3, fill=0.25)
    np.testing.assert_array_equal(r["predictions"], p.argmax(1))
    np.testing.assert_allclose(r["p_true"], p[np.arange(len(x)), y], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r["p_predicted"], p.max(1), rtol=1e-5, atol=1e-7)
    assert r["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))


def test_salt_pepper_seeded_and_reproducible(rgb):
    model, x, maps, y = rgb
    a = M.degrade_images(x, maps, keep=0.25, fill="salt_pepper", seed=7)
    b = M.degrade_images(x, maps, keep=0.25, fill="salt_pepper", seed=7)
    c = M.degrade_images(x, maps, keep=0.25, fill="salt_pepper", seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    kept = M.pixel_order(maps) < 16
    np.testing.assert_array_equal(a[kept], x[kept])                   # top 16 pixels untouched
    removed = a[~kept]                                                   # (pixels, 3)
    assert set(np.unique(removed)) == {0.0, 1.0}                         # black or white
    np.testing.assert_array_equal(removed.min(1), removed.max(1))       # same in every channel
    assert 0.3 < removed[:, 0].mean() < 0.7
    # degradation scores exactly those images, reproducibly
    r1 = M.degradation(model, x, maps, y, keep=0.25, fill="salt_pepper", seed=7)
    r2 = M.degradation(model, x, maps, y, keep=0.25, fill="salt_pepper", seed=7)
    p = model.predict(a, verbose=0)
    np.testing.assert_array_equal(r1["predictions"], p.argmax(1))
    np.testing.assert_array_equal(r1["p_true"], r2["p_true"])
    # deletion with salt and pepper: the seed picks the noise image, the last step is all noise
    d1 = M.deletion_curve(model, x, maps, y, steps=2, fill="salt_pepper", seed=7)
    d2 = M.deletion_curve(model, x, maps, y, steps=2, fill="salt_pepper", seed=8)
    noise7 = np.broadcast_to(M.fill_image(x, "salt_pepper", seed=7), x.shape)
    np.testing.assert_allclose(d1.scores[:, -1], model.predict(noise7, verbose=0)[np.arange(len(x)), y],
                               rtol=1e-5)
    assert not np.allclose(d1.scores[:, -1], d2.scores[:, -1])


def test_ties_are_broken_by_pixel_index():
    order = M.pixel_order(np.zeros((1, 3, 3)))
    np.testing.assert_array_equal(order.ravel(), np.arange(9))
    order = M.pixel_order(np.array([[[1.0, 2.0, 1.0], [2.0, 0.0, 1.0]]]))
    np.testing.assert_array_equal(order.ravel(), [2, 0, 3, 1, 5, 4])


# ------------------------------------------------------------------------------------------------
# deletion / insertion
# ------------------------------------------------------------------------------------------------
def test_deletion_and_insertion_on_linear_logits(linear_model):
    rng = np.random.default_rng(1)
    x = rng.random((4, 6, 6, 1)).astype(np.float32)
    w, b = linear_model.get_weights()
    t = np.array([0, 1, 2, 1])
    contrib = x.reshape(4, 36) * w[:, t].T                       # input x gradient of the target
    maps = contrib.reshape(4, 6, 6)
    dele = M.deletion_curve(linear_model, x, maps, t, steps=36, output="logits")
    ins = M.insertion_curve(linear_model, x, maps, t, steps=36, output="logits")
    srt = -np.sort(-contrib, axis=1)                               # removal order by hand
    cum = np.concatenate([np.zeros((4, 1)), np.cumsum(srt, axis=1)], axis=1)
    total = contrib.sum(1, keepdims=True) + b[t][:, None]
    np.testing.assert_allclose(dele.fractions, np.arange(37) / 36)
    np.testing.assert_allclose(dele.scores, total - cum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ins.scores, b[t][:, None] + cum, rtol=1e-5, atol=1e-5)
    # most relevant first: deletion falls, insertion rises, as long as contributions are positive
    np.testing.assert_allclose(dele.auc, np.trapezoid(total - cum, dele.fractions, axis=1), rtol=1e-5)
    # coarser steps pick the same points: t_s = round(s/S * 36) -> 0, 12, 24, 36
    coarse = M.deletion_curve(linear_model, x, maps, t, steps=3, output="logits")
    np.testing.assert_allclose(coarse.fractions, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(coarse.scores, dele.scores[:, [0, 12, 24, 36]], rtol=1e-6)
    # a map that ranks the pixels best-first deletes with a lower AUC than the reversed map
    worse = M.deletion_curve(linear_model, x, -maps, t, steps=36, output="logits")
    assert np.all(dele.auc < worse.auc)


def test_curve_endpoints_with_probabilities(rgb):
    from scipy.ndimage import gaussian_filter

    model, x, maps, y = rgb
    p_x = model.predict(x, verbose=0)[np.arange(len(x)), y]
    p_0 = model.predict(np.zeros_like(x), verbose=0)[np.arange(len(x)), y]
    d = M.deletion_curve(model, x, maps, y, steps=4)
    np.testing.assert_allclose(d.scores[:, 0], p_x, rtol=1e-5)
    np.testing.assert_allclose(d.scores[:, -1], p_0, rtol=1e-5)
    blurred = gaussian_filter(x, sigma=(0, 5, 5, 0), mode="nearest", truncate=1.0)
    p_b = model.predict(blurred, verbose=0)[np.arange(len(x)), y]
    ins = M.insertion_curve(model, x, maps, y, steps=4, start="blur")
    np.testing.assert_allclose(ins.scores[:, 0], p_b, rtol=1e-5)
    np.testing.assert_allclose(ins.scores[:, -1], p_x, rtol=1e-5)
    # targets=None scores the predicted class
    pred = model.predict(x, verbose=0).argmax(1)
    none = M.deletion_curve(model, x, maps, None, steps=4)
    np.testing.assert_allclose(none.scores, M.deletion_curve(model, x, maps, pred, steps=4).scores)


def test_softmax_applied_to_a_logits_model(linear_model):
    x = np.random.default_rng(0).random((3, 6, 6, 1)).astype(np.float32)
    maps = x[..., 0]
    c = M.deletion_curve(linear_model, x, maps, [0, 1, 2], steps=2)
    p = softmax(linear_model.predict(x, verbose=0).astype(np.float64))
    np.testing.assert_allclose(c.scores[:, 0], p[np.arange(3), [0, 1, 2]], rtol=1e-5)


def test_one_unit_sigmoid_model_is_two_classes():
    # p(class 1) = sigmoid(sum x - 2); keeping 1 of 4 ones (fill 0) -> sigmoid(-1)
    model = linear(np.ones((4, 1)), [-2.0], (2, 2, 1), activation="sigmoid")
    x = np.ones((2, 2, 2, 1), np.float32)
    r = M.degradation(model, x, np.ones((2, 2, 2)), [1, 0], keep=0.25)
    s = 1 / (1 + math.exp(1.0))
    np.testing.assert_allclose(r["p_true"], [s, 1 - s], rtol=1e-6)
    np.testing.assert_array_equal(r["predictions"], [0, 0])
    assert r["accuracy_original"] == 0.5  # sigmoid(2) > 0.5 -> class 1 for both


# ------------------------------------------------------------------------------------------------
# IROF
# ------------------------------------------------------------------------------------------------
def test_irof_model_that_reads_one_segment():
    # 4x4 image, four 2x2 quadrant segments; quadrant 0 holds ones, the rest zeros (mean 0.25).
    # logit 0 = sum over quadrant 0: 4 before, 4 * 0.25 = 1 once quadrant 0 is removed (ratio 1/4).
    w = np.zeros((16, 2))
    q = np.zeros((4, 4), int)
    q[:2, 2:], q[2:, :2], q[2:, 2:] = 1, 2, 3
    w[(q == 0).ravel(), 0] = 1.0
    model = linear(w, [0.0, 0.0], (4, 4, 1))
    x = np.repeat((q == 0)[None, ..., None].astype(np.float32), 3, axis=0)
    seg = np.repeat(q[None], 3, axis=0)
    rank_of_q0 = [0, 1, 3]
    maps = np.zeros((3, 4, 4))
    for i, r in enumerate(rank_of_q0):  # segment means in order: q0 gets rank r
        others = [s for s in range(4) if s != 0]
        ranks = {0: r}
        ranks.update({s: k for s, k in zip(others, [k for k in range(4) if k != r])})
        for s, k in ranks.items():
            maps[i][q == s] = 10 - k
    out = M.irof(model, x, maps, 0, segments=seg, output="logits")
    # curves [1,.25,.25,.25,.25], [1,1,.25,.25,.25], [1,1,1,1,.25] over k/4
    np.testing.assert_allclose(out, [0.34375, 0.53125, 0.90625], rtol=1e-6)
    # labels need not be 0..S-1
    np.testing.assert_allclose(M.irof(model, x, maps, 0, segments=seg * 2 + 5, output="logits"), out)


def test_irof_default_slic(rgb):
    model, x, maps, y = rgb
    out = M.irof(model, x, maps, y, segment_params={"n_segments": 6})
    assert out.shape == (len(x),) and np.all(np.isfinite(out)) and np.all(out > 0)


# ------------------------------------------------------------------------------------------------
# binarize, IoU, boxes
# ------------------------------------------------------------------------------------------------
def test_iou_1_and_iou_2_by_hand():
    # map: a 2x2 block at rows 1-2, cols 1-2 ranks highest; ground truth rows 2-3, cols 2-4
    m = np.zeros((1, 6, 6))
    m[0, 1:3, 1:3] = [[10, 9], [8, 7]]
    mask = np.zeros((1, 6, 6), bool)
    mask[0, 2:4, 2:5] = True
    box = (2, 2, 3, 2)                         # (left, top, width, height)
    digits = [[(1, 2, 2, 1, 2), (7, 3, 2, 2, 2)]]  # SVHN style: (label, left, top, width, height)
    for gt in (mask, [[box]], digits):
        assert M.iou_1(m, gt, k=4)[0] == pytest.approx(1 / 9)  # 1 shared pixel, union 4 + 6 - 1
    iou, pred, truth = M.iou_2(m, digits, k=4, return_boxes=True)
    np.testing.assert_array_equal(pred, [[1, 1, 2, 2]])
    np.testing.assert_array_equal(truth, [[2, 2, 3, 2]])
    assert iou[0] == pytest.approx(1 / 9)        # box overlap 1x1, union 4 + 6 - 1

    # two distant pixels: IoU_1 counts pixels, IoU_2 the box around both
    m2 = np.zeros((1, 6, 6))
    m2[0, 0, 0] = m2[0, 3, 4] = 1.0
    assert M.iou_1(m2, mask, rule="threshold", threshold=0.5)[0] == pytest.approx(1 / 7)
    iou, pred, _ = M.iou_2(m2, np.array([box]), rule="threshold", threshold=0.5, return_boxes=True)
    np.testing.assert_array_equal(pred, [[0, 0, 5, 4]])
    assert iou[0] == pytest.approx(6 / 20)      # the truth box lies inside the 5x4 box

    # k="gt": as many pixels as the truth (6): the block's 4 pixels, then (0,0) and (0,1)
    a = M.binarize(m, k=6)
    assert a.sum() == 6 and a[0, 0, 0] and a[0, 0, 1]
    assert M.iou_1(m, mask, k="gt")[0] == pytest.approx(1 / 11)
    assert M.iou_2(m, [box], k="gt")[0] == pytest.approx(box_iou_by_hand((0, 0, 3, 3), box))


def box_iou_by_hand(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def test_binarize_rules():
    m = np.array([[[0.0, 1.0], [2.0, 4.0]]])   # normalised 0, .25, .5, 1
    np.testing.assert_array_equal(M.binarize(m, "threshold", threshold=0.5), [[[0, 0], [1, 1]]])
    np.testing.assert_array_equal(M.binarize(m, "threshold", threshold=0.0), np.ones((1, 2, 2)))
    np.testing.assert_array_equal(M.binarize(m, k=0.5), [[[0, 0], [1, 1]]])     # 2 of 4 pixels
    np.testing.assert_array_equal(M.binarize(m, k=1), [[[0, 0], [0, 1]]])
    np.testing.assert_array_equal(M.binarize(-m, k=1, absolute=True), [[[0, 0], [0, 1]]])
    np.testing.assert_array_equal(M.binarize(-m, k=1), [[[1, 0], [0, 0]]])
    # a constant map normalises to 0 everywhere
    assert not M.binarize(np.ones((1, 3, 3)), "threshold", threshold=0.5).any()


def test_otsu_agrees_with_skimage():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    maps = np.concatenate([rng.normal(0, 1, (3, 12, 12)),
                           np.where(rng.random((3, 12, 12)) < 0.3, rng.normal(5, 1, (3, 12, 12)),
                                    rng.normal(0, 1, (3, 12, 12)))])
    ours = M.binarize(maps, "otsu")
    for m, a in zip(maps, ours):
        norm = (m - m.min()) / (m.max() - m.min())
        np.testing.assert_array_equal(a, norm > threshold_otsu(norm, nbins=256))
    assert 0.2 < ours[3:].mean() < 0.4   # the bimodal maps split near their 30% bright mode


def test_heatmap_box_and_box_iou():
    b = np.zeros((2, 5, 7), bool)
    b[0, 1:4, 2] = True
    b[0, 2, 5] = True
    np.testing.assert_array_equal(M.heatmap_box(b[0]), [2, 1, 4, 3])
    assert np.isnan(M.heatmap_box(b)[1]).all()
    np.testing.assert_allclose(M.box_iou([[0, 0, 2, 2], [0, 0, 1, 1]], [[1, 1, 2, 2], [2, 2, 1, 1]]),
                               [1 / 7, 0.0])


# ------------------------------------------------------------------------------------------------
# centre mass, sparseness
# ------------------------------------------------------------------------------------------------
def test_centre_mass():
    m = np.zeros((2, 7, 7))
    m[0, 3, 3] = -2.0                 # all mass at the centre (flat index 49 // 2 = 24)
    m[1] = 0.5                        # uniform
    r = M.centre_mass(m, crop=3)
    np.testing.assert_allclose(r["pixel"], [1.0, 1 / 49])
    np.testing.assert_allclose(r["crop"], [1.0, 9 / 49])
    assert M.centre_mass(m, crop=5)["crop"][1] == pytest.approx(25 / 49)
    assert np.unravel_index(49 // 2, (7, 7)) == (3, 3)
    with pytest.raises(MethodError, match="leaves"):
        M.centre_mass(m, crop=9)


def test_sparseness_gini():
    n = 16
    one_hot = np.zeros((1, 4, 4))
    one_hot[0, 2, 1] = -3.0
    assert M.sparseness(one_hot)[0] == pytest.approx(1 - 1 / n)
    assert M.sparseness(np.full((1, 4, 4), 0.7))[0] == pytest.approx(0.0, abs=1e-12)
    assert M.sparseness(np.array([[[0.0, 0.0], [1.0, 1.0]]]))[0] == pytest.approx(0.5)
    assert M.sparseness(np.zeros((1, 2, 2)))[0] == 0.0
    # Hurley & Rickard's form: 1 - 2 sum_k a_(k)/|a|_1 (n - k + 1/2)/n
    a = np.sort(np.abs(np.random.default_rng(0).normal(size=n)))
    ref = 1 - 2 * np.sum(a / a.sum() * (n - np.arange(1, n + 1) + 0.5) / n)
    assert M.sparseness(a.reshape(1, 4, 4))[0] == pytest.approx(ref)


# ------------------------------------------------------------------------------------------------
# local Lipschitz
# ------------------------------------------------------------------------------------------------
def test_local_lipschitz_of_a_linear_explainer():
    from xaitf.metrics.robustness import noise

    rng = np.random.default_rng(2)
    x = rng.random((5, 4, 4, 2)).astype(np.float32)
    w = rng.normal(size=(4, 4, 2)).astype(np.float32)
    calls = []

    def explainer(xb, targets):       # e(x) = W * x, elementwise
        calls.append(len(xb))
        return xb * w

    out = M.local_lipschitz(explainer, x, [0] * 5, samples=4, seed=3, batch_size=10)
    assert calls == [10, 10, 5]        # 2 + 2 + 1 inputs, each with its 4 noisy copies, per call
    oracle = []
    for i in range(5):
        eps = noise(x.shape[1:], i, 4, 0.1, 0.1, 3)
        d = ((x[i] + eps) - x[i]).astype(np.float64)       # the step the explainer saw
        oracle.append(max(np.linalg.norm(w * e) / np.linalg.norm(e) for e in d))
    np.testing.assert_allclose(out, oracle, rtol=1e-5)
    assert np.all(out <= np.abs(w).max() + 1e-6)
    # W = c everywhere: exactly |c|
    c = M.local_lipschitz(lambda xb, t: -2.5 * xb, x, 0, samples=3)
    np.testing.assert_allclose(c, 2.5, rtol=1e-6)


def test_local_lipschitz_of_explainers_on_a_linear_model(linear_model):
    x = np.random.default_rng(0).random((3, 6, 6, 1)).astype(np.float32)
    grad = xaitf.create_explainer("grad", linear_model, progress=False)
    assert np.all(M.local_lipschitz(grad, x, None) < 1e-5)  # the gradient does not move
    ixg = xaitf.create_explainer("inpgrad", linear_model, progress=False)
    w = linear_model.get_weights()[0][:, 1].reshape(6, 6, 1)
    out = M.local_lipschitz(ixg, x, 1, samples=5)
    assert np.all(out > 0.2 * np.abs(w).max()) and np.all(out <= np.abs(w).max() * (1 + 1e-5))


# ------------------------------------------------------------------------------------------------
# chunking, Keras 3, errors
# ------------------------------------------------------------------------------------------------
def test_chunking_changes_nothing(rgb, linear_model):
    model, x, maps, y = rgb

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    small = M.degradation(model, x, maps, y, fill="salt_pepper", batch_size=3)
    big = M.degradation(model, x, maps, y, fill="salt_pepper", batch_size=1000)
    np.testing.assert_array_equal(small["predictions"], big["predictions"])
    close(small["p_true"], big["p_true"])
    for f in (M.deletion_curve, M.insertion_curve):
        a, b = f(model, x, maps, y, steps=5, batch_size=3), f(model, x, maps, y, steps=5, batch_size=1000)
        close(a.scores, b.scores)
        close(a.auc, b.auc)
    seg = np.broadcast_to(np.arange(64).reshape(8, 8) // 16, (len(x), 8, 8)).copy()
    close(M.irof(model, x, maps, y, segments=seg, batch_size=3),
          M.irof(model, x, maps, y, segments=seg, batch_size=1000))
    ixg = xaitf.create_explainer("inpgrad", linear_model, progress=False)
    xl = x[:, :6, :6, :1]
    close(M.local_lipschitz(ixg, xl, 0, samples=3, batch_size=1),
          M.local_lipschitz(ixg, xl, 0, samples=3, batch_size=1000))


def test_keras3_model_gives_the_same_curve(linear_model):
    from xaitf.keras_bridge import keras3

    k = keras3()
    inp = k.Input((6, 6, 1))
    dense = k.layers.Dense(3)
    k3 = k.Model(inp, dense(k.layers.Flatten()(inp)))
    dense.set_weights(linear_model.get_weights())
    x = np.random.default_rng(0).random((3, 6, 6, 1)).astype(np.float32)
    maps = x[..., 0]
    a = M.deletion_curve(linear_model, x, maps, [0, 1, 2], steps=6)
    b = M.deletion_curve(k3, x, maps, [0, 1, 2], steps=6)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_bad_input_is_one_clear_line(rgb):
    model, x, maps, y = rgb
    cases = [
        (InputError, "do not match", lambda: M.degradation(model, x, maps[:, :7], y)),
        (InputError, "reduce the channels", lambda: M.deletion_curve(model, x, np.ones(x.shape), y)),
        (InputError, "NaN", lambda: M.sparseness(np.full((1, 2, 2), np.nan))),
        (MethodError, r"needs keep to be a number in \(0, 1\]",
         lambda: M.degradation(model, x, maps, y, keep=0)),
        (MethodError, "keep", lambda: M.degradation(model, x, maps, y, keep=1.5)),
        (MethodError, "unknown fill", lambda: M.degradation(model, x, maps, y, fill="pepper")),
        (InputError, "does not broadcast", lambda: M.degradation(model, x, maps, y, fill=[0, 1])),
        # two values for one channel broadcast to a 2-channel batch: refused, not a TF shape error
        (InputError, "does not broadcast", lambda: M.fill_image(x[..., :1], [0, 1])),
        (InputError, "labels", lambda: M.degradation(model, x, maps, y[:3])),
        (MethodError, "steps", lambda: M.deletion_curve(model, x, maps, y, steps=0)),
        (MethodError, "unknown start", lambda: M.insertion_curve(model, x, maps, y, start="noise")),
        (MethodError, "unknown output", lambda: M.deletion_curve(model, x, maps, y, output="p")),
        (MethodError, "unknown binarize rule", lambda: M.binarize(maps, "mean")),
        (MethodError, "threshold", lambda: M.binarize(maps, "threshold", threshold=2)),
        (MethodError, "k must", lambda: M.binarize(maps, k=0)),
        (InputError, "ground-truth masks", lambda: M.iou_1(maps, np.ones((7, 3, 3), bool))),
        (InputError, "segments", lambda: M.irof(model, x, maps, y, segments=np.zeros((7, 4, 4), int))),
        (MethodError, "callable", lambda: M.local_lipschitz("grad", x, y)),
    ]
    for kind, pattern, call in cases:
        with pytest.raises(kind, match=pattern) as e:
            call()
        assert "\n" not in str(e.value), str(e.value)


def test_exports_and_no_tensorflow_for_map_only_metrics():
    for name in ("degradation", "deletion_curve", "insertion_curve", "binarize", "iou_1", "iou_2",
                 "heatmap_box", "centre_mass", "local_lipschitz", "irof", "sparseness", "Curve"):
        assert name in M.__all__ and callable(getattr(M, name))
    code = ("import sys, numpy as np, xaitf.metrics as M; m = np.eye(3)[None]; "
            "M.sparseness(m); M.centre_mass(m, 1); M.iou_1(m, m > 0); M.iou_2(m, [(0, 0, 3, 3)]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
