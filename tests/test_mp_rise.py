"""Meaningful Perturbation and RISE: the center-pixel oracle, seeds, batching, an independent RISE sum."""
import numpy as np
import pytest

import xaitf
from xaitf.errors import MethodError


@pytest.fixture(scope="module")
def centre_images():
    """Two 15x15 images whose centre pixels (class 200 and 60) differ from their median blur."""
    x = np.random.RandomState(0).randint(256, size=(2, 15, 15, 1)).astype(np.float32) / 255
    x[:, 7, 7, 0] = [200 / 255, 60 / 255]
    return x


def argmax2d(a):
    return tuple(int(i) for i in np.unravel_index(np.argmax(a), a.shape))


# -- Meaningful Perturbation --------------------------------------------------------------------
def test_mp_finds_the_centre_pixel(center_pixel_small, centre_images):
    mp = xaitf.create_explainer("mp", center_pixel_small, max_iterations=300, progress=False)
    maps = mp(centre_images)
    assert maps.shape == (2, 15, 15)
    for m in maps:
        assert argmax2d(m) == (7, 7)
        assert m[7, 7] == pytest.approx(1.0)
    masks = mp.optimise(centre_images, [200, 60])
    assert masks.min() >= 0 and masks.max() <= 1
    assert masks[1, 7, 7] < 0.5 and np.median(masks[1]) == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(maps, mp(centre_images))                       # same seed, same map


def test_mp_batch_of_masks_equals_one_image_at_a_time(center_pixel_small, centre_images):
    kw = dict(max_iterations=40, normalize="none", progress=False)
    joint = xaitf.create_explainer("mp", center_pixel_small, **kw)(centre_images)
    single = xaitf.create_explainer("mp", center_pixel_small, batch_size=1, **kw)(centre_images)
    np.testing.assert_allclose(joint, single, atol=1e-5)
    # the loss terms: a keep-everything mask has no area or TV cost and keeps the class probability
    import tensorflow as tf

    mp = xaitf.create_explainer("mp", center_pixel_small, **kw)
    x = tf.constant(centre_images)
    ones = tf.ones((2, 15, 15, 1))
    area, tv, prob = (v.numpy() for v in mp.losses(x, x * 0, tf.one_hot([200, 60], 256), ones))
    p = mp.predict(centre_images, probabilities=True)[[0, 1], [200, 60]]
    assert np.all(area == 0) and np.all(tv == 0)
    np.testing.assert_allclose(prob, p, rtol=1e-5)


def test_mp_mask_scale_and_normalisations(center_pixel_small, centre_images):
    kw = dict(max_iterations=150, progress=False)
    coarse = xaitf.create_explainer("mp", center_pixel_small, mask_scale=5, normalize="minmax", **kw)
    m = coarse(centre_images[1:])[0]
    assert m.min() == pytest.approx(0) and m.max() == pytest.approx(1)
    assert argmax2d(m) == (7, 7)                        # a 3x3 mask upsampled: peak at the middle cell
    raw = xaitf.create_explainer("mp", center_pixel_small, normalize="none", **kw)(centre_images)
    st1 = xaitf.create_explainer("mp", center_pixel_small, **kw)(centre_images)
    keep = 1 - raw
    lo, hi = keep.min((1, 2), keepdims=True), keep.max((1, 2), keepdims=True)
    np.testing.assert_allclose(st1, 1 - (keep - lo) / hi, atol=1e-6)


def test_mp_errors(center_pixel_small):
    cases = [(dict(mask_scale=2), "mask_scale must divide the image size 15x15"),
             (dict(max_iterations=0), "max_iterations"),
             (dict(lr=-1), "lr"),
             (dict(normalize="zscore"), "normalize must be one of"),
             (dict(mask_scale=15), "needs at least 2x2"),
             (dict(tv_beta=0.5), "tv_beta"),
             (dict(blur=3), "unknown parameter")]
    for kw, msg in cases:
        with pytest.raises(MethodError, match=msg) as err:
            xaitf.create_explainer("mp", center_pixel_small, **kw)
        assert "\n" not in str(err.value)


# -- RISE ---------------------------------------------------------------------------------------
def test_rise_centre_pixel_has_the_largest_saliency(center_pixel_small, centre_images):
    rise = xaitf.create_explainer("rise", center_pixel_small, masks=2000, progress=False)
    maps = rise(centre_images)
    for m in maps:
        assert argmax2d(m) == (7, 7)


def test_rise_equals_a_direct_sum_over_its_masks(tiny_cnn, rng):
    x = rng.random((3, 8, 8, 1)).astype(np.float32)
    t = np.array([0, 2, 4])
    rise = xaitf.create_explainer("rise", tiny_cnn, masks=50, cell=3, p=0.4, batch_size=64, progress=False)
    got = rise(x, t)
    masks = rise.masks()                                                  # (50, 8, 8)
    assert masks.shape == (50, 8, 8) and masks.min() >= 0 and masks.max() <= 1
    for i in range(3):
        prob = tiny_cnn.predict(x[i][None] * masks[..., None], verbose=0)[:, t[i]]
        want = np.tensordot(prob, masks, axes=1) / (50 * 0.4)
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-6)


def test_rise_seed_and_batch_size(tiny_cnn, rng):
    x = rng.random((5, 8, 8, 1)).astype(np.float32)
    kw = dict(masks=300, progress=False)
    a = xaitf.create_explainer("rise", tiny_cnn, batch_size=256, **kw)(x)
    b = xaitf.create_explainer("rise", tiny_cnn, batch_size=7, **kw)(x)    # 1 image x 7 masks per step
    c = xaitf.create_explainer("rise", tiny_cnn, batch_size=1000, **kw)(x)
    d = xaitf.create_explainer("rise", tiny_cnn, seed=5, **kw)(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    assert np.abs(a - d).max() > 1e-4


def test_rise_errors(tiny_cnn):
    cases = [(dict(masks=0), "masks"), (dict(p=0), "p"), (dict(p=1.5), "p"),
             (dict(cell=9), "cell must be at most the image side 8"), (dict(cell=2.5), "cell")]
    for kw, msg in cases:
        with pytest.raises(MethodError, match=msg) as err:
            xaitf.create_explainer("rise", tiny_cnn, **kw)
        assert "\n" not in str(err.value)


def test_median_blur_split_over_threads_equals_one_filter():
    from scipy.ndimage import median_filter

    from xaitf.methods.meaningful_perturbation import median_blur

    x = np.random.default_rng(3).uniform(0, 1, (5, 12, 10, 3)).astype(np.float32)
    want = median_filter(x, size=(1, 5, 5, 1), mode="nearest")   # edges replicated, per channel
    np.testing.assert_array_equal(median_blur(x, 5), want)
    np.testing.assert_array_equal(median_blur(x[:1], 5), want[:1])
    np.testing.assert_array_equal(median_blur(x, 1), x)
    assert not np.array_equal(want, x)


def test_median_blur_8bit_and_row_bands_equal_scipy(monkeypatch):
    """8-bit images take OpenCV's median, one large image is cut into row bands over threads:
    both give scipy's numbers exactly (edges replicated)."""
    from scipy.ndimage import median_filter

    from xaitf.methods import meaningful_perturbation as MPm

    rng = np.random.default_rng(4)
    levels = (rng.integers(0, 256, (3, 30, 17, 3)).astype(np.float32)) / 255
    assert MPm._uint8_levels(levels) is not None
    assert MPm._uint8_levels(levels + 1e-3) is None
    for size in (3, 11):
        want = median_filter(levels, size=(1, size, size, 1), mode="nearest")
        np.testing.assert_array_equal(MPm.median_blur(levels, size), want)
    one = rng.uniform(0, 1, (1, 41, 23, 2)).astype(np.float32)
    want = median_filter(one, size=(1, 7, 7, 1), mode="nearest")
    for cores in (2, 3):
        monkeypatch.setattr(MPm.os, "cpu_count", lambda c=cores: c)
        np.testing.assert_array_equal(MPm.median_blur(one, 7), want)


def test_mp_written_gradients_equal_autodiff():
    """The area + TV terms' written-out gradient against TF autodiff of the loss, and the fused
    mask update (XLA where available, plain TF) against a numpy Adam step with the clamp."""
    import tensorflow as tf

    from xaitf.methods import meaningful_perturbation as MPm

    rs = np.random.RandomState(5)
    m = rs.rand(3, 6, 5, 1).astype(np.float32)
    m[0, :2] = 1.0                                       # |1 - m| and differences at exactly 0
    m = tf.constant(m)
    for beta in (1.0, 2.0, 3.0):
        with tf.GradientTape() as tape:
            tape.watch(m)
            loss = tf.reduce_sum(0.01 * tf.reduce_mean(tf.abs(1.0 - m), axis=[1, 2, 3])
                                 + 0.2 * MPm.tv_norm(m, beta))
        want = tape.gradient(loss, m).numpy()
        got = MPm.regulariser_gradient(m, 0.01, 0.2, beta).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
        assert np.abs(want).max() > 0
    g, mom, vel = (rs.randn(3, 6, 5, 1).astype(np.float32) for _ in range(3))
    vel = np.abs(vel)
    full = g + MPm.regulariser_gradient(m, 0.01, 0.2, 3.0).numpy()
    mom2 = 0.9 * mom + 0.1 * full
    vel2 = 0.999 * vel + 0.001 * full ** 2
    step = 0.1 * (mom2 / (1 - 0.9 ** 3)) / (np.sqrt(vel2 / (1 - 0.999 ** 3)) + 1e-8)
    from xaitf.methods._xla import xla_available

    for update in (MPm.mask_update,) + ((MPm.MASK_UPDATE.xla,) if xla_available() else ()):
        got = [v.numpy() for v in update(m, g, mom, vel, tf.constant(3.0), 0.1, 0.01, 0.2, 3.0)]
        np.testing.assert_allclose(got[0], np.clip(m.numpy() - step, 0, 1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], mom2, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(got[2], vel2, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("shape, cell", [((8, 8, 1), 3), ((15, 11, 1), 4), ((28, 28, 3), 7)])
def test_rise_masks_are_resized_and_cropped_grids(shape, cell):
    """The separable masks equal RISE's recipe: bilinear resize of the grid to
    (cell+1) x ceil(H/cell) cells, cropped at the mask's random offset."""
    import math

    import tensorflow as tf

    from xaitf.keras_bridge import tfk

    tf.keras.utils.set_random_seed(0)
    inp = tfk.Input(shape)
    model = tfk.Model(inp, tfk.layers.Dense(2)(tfk.layers.Flatten()(inp)))
    rise = xaitf.create_explainer("rise", model, masks=40, cell=cell, progress=False)
    grids, offsets = rise.random_grids()
    ch, cw = math.ceil(shape[0] / cell), math.ceil(shape[1] / cell)
    up = tf.image.resize(grids[..., None], ((cell + 1) * ch, (cell + 1) * cw), method="bilinear")[..., 0].numpy()
    off = offsets.numpy()
    want = np.stack([up[i, oy:oy + shape[0], ox:ox + shape[1]] for i, (oy, ox) in enumerate(off)])
    got = rise.masks()
    assert got.shape == (40, *shape[:2]) and len(np.unique(off[:, 0])) > 1
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_rise_explainers_do_not_retrace_and_keep_their_maps(tiny_cnn):
    """Several RISE explainers in one process (other batch sizes, seeds, models): no TensorFlow
    "triggered tf.function retracing" warning, and the maps are those of the former per-explainer
    function (values recorded before it became one cached function per model, within 1e-6)."""
    import logging

    from conftest import make_cnn

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)          # an in-process CLI test may have raised it to ERROR
    try:
        x = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
        maps = [xaitf.create_explainer("rise", tiny_cnn, masks=100, cell=3, batch_size=bs,
                                       seed=0)(x, np.array([0, 1, 2])) for bs in (50, 16, 256, 7, 50)]
        for seed in range(1, 7):              # other models: each traces its own function once
            other = make_cnn(shape=(8, 8, 1), seed=seed)
            xaitf.create_explainer("rise", other, masks=20, cell=3, seed=seed)(x[:2])
            xaitf.create_explainer("rise", other, masks=30, cell=3, batch_size=7)(x)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [r for r in records if "retracing" in r], records
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(maps[4], maps[0])
    np.testing.assert_allclose(maps[0][0, 0, :4], [0.21077088, 0.2087991, 0.20310728, 0.19532648],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps[0][1, 3, 2:6], [0.19640766, 0.18987022, 0.18586706, 0.18552712],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps[0].sum(axis=(1, 2)), [12.624463, 12.45434, 12.088769], rtol=1e-6)
