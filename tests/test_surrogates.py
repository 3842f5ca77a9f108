"""LIME / SHAP library paths and the segmenters: exact Shapley values, linear oracles, seeds, errors."""
import itertools
import math

import numpy as np
import pytest

import xaitf
from xaitf import segmentation
from xaitf.errors import MethodError
from xaitf.keras_bridge import keras3, logits_model

from conftest import make_cnn


def logits_of(model, x):
    return np.asarray(logits_model(model)[0](x, training=False), dtype=np.float64)


def exact_shapley(model, image, seg, fill, target):
    """Shapley values of the segment game v(S) = logit_t(image with segments outside S = fill)."""
    n = int(seg.max()) + 1
    coalitions = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float32)   # (2^n, n)
    keep = coalitions[:, seg][..., None]
    v = logits_of(model, image[None] * keep + fill * (1 - keep))[:, target]
    index = {tuple(c.astype(int)): i for i, c in enumerate(coalitions)}
    phi = np.zeros(n)
    for s in range(n):
        for c in coalitions:
            if c[s]:
                continue
            k = int(c.sum())
            with_s = c.copy()
            with_s[s] = 1
            w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[s] += w * (v[index[tuple(with_s.astype(int))]] - v[index[tuple(c.astype(int))]])
    return phi, v[-1], v[0]      # values, v(all), v(none)


def segment_values(maps, seg):
    return np.array([maps[seg == s][0] for s in range(int(seg.max()) + 1)])


# -- segmentation -------------------------------------------------------------------------------
def test_segmenters_give_consecutive_labels_and_enough_segments_on_small_images(rng):
    mnist_like = np.zeros((28, 28, 1))
    mnist_like[6:22, 10:18] = 1.0
    mnist_like += 0.05 * rng.random((28, 28, 1))
    for method in ("quickshift", "slic", "grid"):
        seg = segmentation.segment(mnist_like[None], method)[0]
        labels = np.unique(seg)
        assert seg.dtype == np.int32 and seg.shape == (28, 28)
        np.testing.assert_array_equal(labels, np.arange(len(labels)))
        assert len(labels) >= 5, (method, len(labels))    # study-1 quickshift settings give 1-2 here
    g = segmentation.grid((6, 7), cell=3)
    np.testing.assert_array_equal(g[0], [0, 0, 0, 1, 1, 1, 2])
    assert g.max() == 5
    assert segmentation.quickshift_params(227, 227) == {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}


def test_segmenter_errors_are_one_line():
    with pytest.raises(MethodError, match="unknown segmenter 'watershed'"):
        segmentation.get_segmenter("watershed")
    with pytest.raises(MethodError, match="grid cell"):
        segmentation.grid((8, 8), cell=0)
    with pytest.raises(MethodError, match="ratio"):
        segmentation.quickshift(np.zeros((8, 8)), ratio=2)
    with pytest.raises(MethodError, match="unknown quickshift engine 'cython'; valid: auto, xla, skimage"):
        segmentation.quickshift(np.zeros((8, 8)), engine="cython")


def test_quickshift_xla_gives_skimages_labels(data_dir, rng):
    """The batched XLA quickshift is skimage's algorithm to the tie: the same labels on real MNIST and
    CIFAR-10 images (auto and study-1 settings), on flat regions (exact distance ties) and on gray input."""
    from xaitf.methods._xla import xla_available

    if not xla_available():
        pytest.skip("XLA does not compile here; quickshift runs skimage")
    mnist = np.load(data_dir / "mnist_test10k.npz", allow_pickle=False)["x"][:12] / 255.0
    cifar = np.load(data_dir / "cifar10_test1000.npz", allow_pickle=False)["x"][:6] / 255.0
    flat = np.zeros((3, 40, 50, 3))
    flat[:, 10:30, 10:20] = 0.7
    flat[1, :, 30:] = 0.2
    flat[2] += 0.01 * rng.random((40, 50, 3))
    big = np.repeat(np.repeat(cifar[:2], 3, axis=1), 3, axis=2)   # 96x96: kernel 2, or study 1's 4/200/0.2
    cases = [(mnist, {}), (cifar, {}), (cifar, {"kernel_size": 2, "max_dist": 6, "ratio": 0.5}),
             (flat, {}), (flat[..., :1], {"ratio": 1.0}), (big, {}), (big[:1], {"kernel_size": 4, "max_dist": 200})]
    for images, params in cases:
        ours = segmentation.quickshift_batch(images, seed=7, engine="xla", **params)
        ref = segmentation.quickshift_batch(images, seed=7, engine="skimage", **params)
        assert ours.dtype == np.int32 and ours.shape == images.shape[:3]
        np.testing.assert_array_equal(ours, ref, err_msg=str((images.shape, params)))
        assert ref.max() >= 1                                  # more than one segment: a real test
    one = segmentation.quickshift(cifar[3], seed=7)
    np.testing.assert_array_equal(one, segmentation.quickshift_batch(cifar, seed=7, engine="skimage")[3])
    seeds = [segmentation.quickshift_batch(flat[2:], seed=s, engine="xla")[0] for s in (0, 1)]
    assert not np.array_equal(*seeds)                          # the seed drives the tie-breaking noise


# -- Kernel SHAP ---------------------------------------------------------------------------------
def test_kernel_shap_equals_exact_shapley_values_and_is_efficient(tiny_cnn, rng):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    targets = np.array([1, 3])
    fill = 0.25
    ks = xaitf.create_explainer("shap.lib", tiny_cnn, segmenter="grid", cell=3, output="logits",
                                background=fill, progress=False)
    maps = ks(x, targets)
    seg = segmentation.grid((8, 8), cell=3)                      # 9 segments: 2^9 coalitions
    np.testing.assert_array_equal(ks.segments(x)[0], seg)
    for i in range(2):
        phi, v_all, v_none = exact_shapley(tiny_cnn, x[i], seg, fill, targets[i])
        got = segment_values(maps[i], seg)
        scale = np.abs(phi).max()
        assert scale > 1e-3
        np.testing.assert_allclose(got, phi, atol=1e-3 * scale)
        np.testing.assert_allclose(got.sum(), v_all - v_none, atol=1e-3 * scale)


def test_kernel_shap_probabilities_seed_and_center_pixel(center_pixel_small):
    x = np.random.RandomState(0).randint(256, size=(1, 15, 15, 1)).astype(np.float32) / 255
    x[0, 7, 7, 0] = 200 / 255
    ks = xaitf.create_explainer("shap.lib", center_pixel_small, nsamples=200, progress=False)
    a, b = ks(x), ks(x)
    np.testing.assert_array_equal(a, b)
    r, c = np.unravel_index(np.abs(a[0]).argmax(), a[0].shape)
    seg = ks.segments(x)[0]
    assert seg[r, c] == seg[7, 7]                       # the centre's segment carries the class
    p = center_pixel_small.predict(x, verbose=0)[0, 200]
    assert a[0][7, 7] == pytest.approx(p, abs=1e-3)     # v(all) - v(none) ~ p - 0, all in one segment


# -- LIME ---------------------------------------------------------------------------------------
def test_lime_weights_match_linear_contributions(linear_model, rng):
    x = rng.random((2, 6, 6, 1)).astype(np.float32)
    targets = np.array([0, 2])
    lime = xaitf.create_explainer("lime.lib", linear_model, segmenter="grid", cell=2, output="logits",
                                  mask_output=False, num_samples=2000, progress=False)
    maps = lime(x, targets)
    seg = segmentation.grid((6, 6), cell=2)
    w = linear_model.get_weights()[0]                         # (36, 3)
    for i in range(2):
        contrib = np.array([(w[:, targets[i]] * x[i].ravel())[seg.ravel() == s].sum() for s in range(9)])
        got = segment_values(maps[i], seg)
        for s in range(9):                                    # one weight per segment, painted
            assert np.all(maps[i][seg == s] == got[s])
        assert np.corrcoef(got, contrib)[0, 1] > 0.99
        # study 1's mask: the top positive segment only
    mask = xaitf.create_explainer("lime.lib", linear_model, segmenter="grid", cell=2, output="logits",
                                  num_samples=2000, progress=False)(x, targets)
    for i in range(2):
        contrib = np.array([(w[:, targets[i]] * x[i].ravel())[seg.ravel() == s].sum() for s in range(9)])
        np.testing.assert_array_equal(mask[i], (seg == contrib.argmax()).astype(np.float32))


def test_lime_seed_and_gray_and_rgb(tiny_cnn, tiny_rgb_cnn, rng):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    kw = dict(segmenter="grid", cell=2, mask_output=False, num_samples=200, progress=False)
    a = xaitf.create_explainer("lime.lib", tiny_cnn, seed=3, **kw)(x)
    b = xaitf.create_explainer("lime.lib", tiny_cnn, seed=3, batch_size=7, **kw)(x)
    c = xaitf.create_explainer("lime.lib", tiny_cnn, seed=4, **kw)(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())    # float32 rounding per batch size
    assert np.abs(a - c).max() > 1e-6
    xr = rng.random((1, 8, 8, 3)).astype(np.float32)
    m = xaitf.create_explainer("lime.lib", tiny_rgb_cnn, num_samples=100, progress=False)(xr)
    assert m.shape == (1, 8, 8) and set(np.unique(m)) <= {0.0, 1.0}


# -- Gradient / Deep / Partition SHAP -------------------------------------------------------------
def test_gradient_deep_partition_shap_on_a_linear_model(linear_model, rng):
    x = rng.random((3, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 1, 2])
    w = linear_model.get_weights()[0]
    expected = w[:, t].T.reshape(3, 6, 6) * x[..., 0]        # zero background: phi = w * x exactly
    for name in ("shap.gradient", "shap.deep"):
        got = xaitf.create_explainer(name, linear_model, progress=False)(x, t)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    part = xaitf.create_explainer("shap.partition", linear_model, masker=0.0, max_evals=200, progress=False)
    got = part(x, t)
    np.testing.assert_allclose(got.sum((1, 2)), expected.sum((1, 2)), rtol=1e-4, atol=1e-4)
    # a Keras 3 model: shap's TF explainers get its tf-keras twin
    keras = keras3()
    inp = keras.Input((6, 6, 1))
    dense = keras.layers.Dense(3)
    k3 = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    dense.set_weights(linear_model.get_weights())
    for name in ("shap.gradient", "shap.deep"):
        got = xaitf.create_explainer(name, k3, progress=False)(x, t)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_deep_shap_additivity_on_cnn_and_float64_center_pixel(tiny_cnn, center_pixel_small, rng):
    x = rng.random((3, 8, 8, 1)).astype(np.float32)
    bg = rng.random((4, 8, 8, 1)).astype(np.float32)
    t = np.array([0, 4, 0])
    got = xaitf.create_explainer("shap.deep", tiny_cnn, background=bg, progress=False)(x, t)
    f = logits_of(tiny_cnn, x)[np.arange(3), t]
    base = logits_of(tiny_cnn, bg)[:, t].mean(0)
    np.testing.assert_allclose(got.sum((1, 2)), f - base, atol=1e-3)
    # the center-pixel model's float64 head: logits ~3e7, the explainer keeps float64 outputs
    xc = np.random.RandomState(1).rand(1, 15, 15, 1).astype(np.float32)
    xc[0, 7, 7, 0] = 0.5
    for out in ("logits", "probabilities"):
        m = xaitf.create_explainer("shap.deep", center_pixel_small, output=out, progress=False)(xc)
        assert np.unravel_index(np.abs(m[0]).argmax(), (15, 15)) == (7, 7) or out == "logits"
        assert np.all(np.isfinite(m))


def test_deep_shap_handles_batch_norm(rng):
    """shap 0.51 alone fails on FusedBatchNormV3 (shap issue #1761); xaitf adds the linear rule."""
    import tensorflow as tf
    from xaitf.keras_bridge import tfk

    tf.keras.utils.set_random_seed(0)
    inp = tfk.Input((8, 8, 2))
    h = tfk.layers.Conv2D(4, 3, activation="relu")(inp)
    bn = tfk.layers.BatchNormalization()
    h = tfk.layers.Dropout(0.5)(bn(h))
    h = tfk.layers.LeakyReLU(0.1)(tfk.layers.Conv2D(3, 3)(h))
    model = tfk.Model(inp, tfk.layers.Dense(4, activation="softmax")(tfk.layers.Flatten()(h)))
    g, b, mu, var = bn.get_weights()
    bn.set_weights([g * 1.7, b + 0.3, mu + 0.2, var * 3])
    x = rng.random((2, 8, 8, 2)).astype(np.float32)
    bg = rng.random((3, 8, 8, 2)).astype(np.float32)
    got = xaitf.create_explainer("shap.deep", model, background=bg, channel_reduce="none", progress=False)(x, [1, 2])
    assert got.shape == (2, 8, 8, 2)
    f = logits_of(model, x)[[0, 1], [1, 2]]
    base = logits_of(model, bg)[:, [1, 2]].mean(0)
    np.testing.assert_allclose(got.sum((1, 2, 3)), f - base, atol=1e-4)


def test_gradient_shap_seed(tiny_cnn, rng):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    bg = rng.random((5, 8, 8, 1)).astype(np.float32)
    state = np.random.get_state()[1].copy()
    a = xaitf.create_explainer("shap.gradient", tiny_cnn, background=bg, nsamples=20, seed=1, progress=False)(x)
    b = xaitf.create_explainer("shap.gradient", tiny_cnn, background=bg, nsamples=20, seed=1, batch_size=3,
                               progress=False)(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.random.get_state()[1], state)      # numpy's global state restored


def test_surrogate_errors(tiny_cnn):
    cases = [("lime.lib", dict(output="softmax"), "needs output to be one of"),
             ("lime.lib", dict(segmenter="felzenszwalb"), "unknown segmenter"),
             ("lime.lib", dict(num_samples=0), "num_samples to be an integer >= 1"),
             ("shap.lib", dict(background=np.zeros((3, 3))), "needs background to be"),
             ("shap.lib", dict(nsamples=-5), "nsamples to be an integer >= 1"),
             ("shap.partition", dict(masker="gauss"), "masker must be"),
             ("shap.gradient", dict(steps=3), "unknown parameter")]
    for name, kw, msg in cases:
        with pytest.raises(MethodError, match=msg) as err:
            xaitf.create_explainer(name, tiny_cnn, **kw)
        assert "\n" not in str(err.value)
