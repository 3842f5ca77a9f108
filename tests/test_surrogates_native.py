"""Native LIME and Kernel SHAP: lime's ridge fit, exact Shapley values, shap's plan and estimates,
padding of mixed segment counts, seeds and chunking, errors."""
import itertools
import math

import numpy as np
import pytest
import sklearn.metrics

import xaitf
from xaitf import registry, segmentation
from xaitf.errors import InputError, MethodError
from xaitf.keras_bridge import logits_model
from xaitf.methods import surrogates_native as sn

from conftest import make_cnn


@pytest.fixture(scope="module")
def mnist_cnn():
    return make_cnn(shape=(28, 28, 1), classes=10)


@pytest.fixture(scope="module")
def cifar_cnn():
    return make_cnn(shape=(32, 32, 3), classes=10, seed=1)


def blobs(n, shape, seed):
    """Smooth random images (a few Gaussian blobs): segmenters find real regions in them."""
    rs = np.random.RandomState(seed)
    h, w, c = shape
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w, c), np.float32)
    for i in range(n):
        for _ in range(6):
            cy, cx, r = rs.uniform(0, h), rs.uniform(0, w), rs.uniform(2, h / 4)
            out[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rs.uniform(0.2, 1, c)
    return np.clip(out + 0.05 * rs.rand(*out.shape), 0, 1).astype(np.float32)


def explained(model, images, targets, output):
    """The explained output of each image at its target (float64), straight from the model."""
    if output == "logits":
        y = np.asarray(logits_model(model)[0](images, training=False), np.float64)
    else:
        y = np.asarray(model(images, training=False), np.float64)
    return y[np.arange(len(images)), targets] if np.ndim(targets) else y[:, targets]


def compose(image, seg, masks, fill):
    """Images with the segments off in each mask row set to fill: (R,H,W,C)."""
    keep = np.asarray(masks, bool)[:, seg][..., None]
    return np.where(keep, image[None], fill).astype(np.float32)


# -- LIME ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which,segmenter,output", [("mnist", "quickshift", "probabilities"),
                                                    ("cifar", "slic", "probabilities"),
                                                    ("cifar", "grid", "logits")])
def test_lime_weights_equal_lime_ridge_given_the_same_masks(which, segmenter, output, mnist_cnn, cifar_cnn):
    from lime.lime_base import LimeBase

    model = mnist_cnn if which == "mnist" else cifar_cnn
    shape = (28, 28, 1) if which == "mnist" else (32, 32, 3)
    x = blobs(2, shape, seed=3)
    targets = np.array([2, 7])
    lime = xaitf.create_explainer("lime", model, segmenter=segmenter, cell=5, output=output,
                                  mask_output=False, progress=False)
    seg = lime.segments(x)
    seg[1] = segmentation.relabel(seg[1] // 2)                    # fewer segments in the second image
    counts = seg.reshape(2, -1).max(1) + 1
    assert counts.min() >= 5 and counts[0] != counts[1]
    N = 300
    masks = np.zeros((2, N, counts.max()), bool)
    for i in range(2):
        masks[i, :, :counts[i]] = sn.lime_masks(N, counts[i], seed=10 + i)
    fit = lime.fit(x, targets, segments=seg, masks=masks)
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)), random_state=0)
    for i in range(2):
        data = masks[i, :, :counts[i]].astype(int)
        labels = np.zeros((N, 10))
        labels[:, targets[i]] = explained(model, compose(x[i], seg[i], data, 0.0), targets[i], output)
        dist = sklearn.metrics.pairwise_distances(data, data[:1], metric="cosine").ravel()
        intercept, exp, score, local = base.explain_instance_with_data(data, labels, dist, targets[i], 100000)
        ref = np.zeros(counts[i])
        for f, v in exp:
            ref[f] = v
        got = fit["weights"][i]
        assert np.abs(ref).max() > 1e-6
        np.testing.assert_allclose(got[:counts[i]], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
        assert np.all(got[counts[i]:] == 0)                              # padded features
        np.testing.assert_allclose([fit["intercept"][i], fit["score"][i], fit["local_pred"][i]],
                                   [intercept, score, local[0]], rtol=1e-4, atol=1e-9)


def test_lime_with_lime_sampler_equals_library_path(tiny_cnn, rng):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    t = np.array([1, 4])
    for hide in (0.0, None):                        # None: each segment's mean colour
        kw = dict(segmenter="grid", cell=2, num_samples=120, hide_color=hide, seed=5, progress=False,
                  mask_output=False, num_features=3)
        native = xaitf.create_explainer("lime", tiny_cnn, sampler="lime", **kw)
        lib = xaitf.create_explainer("lime.lib", tiny_cnn, **kw)
        a, b = native(x, t), lib(x, t)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
        if hide is None:
            continue
        for pos in (True, False):                   # study 1's mask, and the signed variant
            for e in (native, lib):
                e.params.update(mask_output=True, positive_only=pos)
            a, b = native(x, t), lib(x, t)
            np.testing.assert_array_equal(a, b)
            assert set(np.unique(a)) <= ({0.0, 1.0} if pos else {-1.0, 0.0, 1.0}) and np.abs(a).sum() > 0


def test_lime_device_masks_seeds_chunking_and_mixed_segment_counts(mnist_cnn):
    x = blobs(3, (28, 28, 1), seed=4)
    seg = np.stack([segmentation.grid((28, 28), cell=c) for c in (7, 4, 14)])   # 16, 49, 4 segments
    kw = dict(mask_output=False, num_samples=200, progress=False)
    lime = xaitf.create_explainer("lime", mnist_cnn, seed=1, **kw)
    together = lime.fit(x, [0, 1, 2], segments=seg)
    assert list(together["num_segments"]) == [16, 49, 4]
    for i in range(3):                                   # alone = in a batch with other counts
        alone = lime.fit(x[i:i + 1], [i], segments=seg[i:i + 1])
        m = together["num_segments"][i]
        np.testing.assert_allclose(together["weights"][i, :m], alone["weights"][0], rtol=1e-5,
                                   atol=1e-6 * np.abs(alone["weights"]).max())    # float32 rounding per batch
        assert np.all(together["weights"][i, m:] == 0)
    other = xaitf.create_explainer("lime", mnist_cnn, seed=1, batch_size=7, jit_compile=True, **kw)
    np.testing.assert_allclose(other.fit(x, [0, 1, 2], segments=seg)["weights"], together["weights"],
                               rtol=1e-5, atol=1e-6 * np.abs(together["weights"]).max())   # other chunks, XLA
    assert other.xla == sn._xla_works() and not lime.xla
    changed = xaitf.create_explainer("lime", mnist_cnn, seed=2, **kw).fit(x, [0, 1, 2], segments=seg)
    assert np.abs(changed["weights"] - together["weights"]).max() > 1e-6
    # the device masks: the first row all ones, then fair independent bits; lime's weights from them
    tables = sn._Tables(1, 2)
    active = np.ones((1, 49), bool)
    import tensorflow as tf

    m, w = lime._rows(tf.range(400), tf.constant(active), tf.constant([49]), tf.constant(tables.length),
                      lambda j: tf.zeros([1, 400, 49], tf.bool), (tf.constant(400), tf.constant(0.25, tf.float64)))
    m, w = m.numpy()[0], w.numpy()[0]
    assert m[0].all() and abs(m[1:].mean() - 0.5) < 0.01 and abs(np.corrcoef(m[1:].T)[np.triu_indices(49, 1)]).max() < 0.25
    d = sklearn.metrics.pairwise_distances(m, np.ones((1, 49)), metric="cosine").ravel()
    np.testing.assert_allclose(w, np.sqrt(np.exp(-d ** 2 / 0.25 ** 2)), rtol=1e-12)


def test_lime_mask_output_marks_the_top_segment_of_a_linear_model(linear_model, rng):
    x = rng.random((2, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 2])
    maps = xaitf.create_explainer("lime", linear_model, segmenter="grid", cell=2, output="logits",
                                  num_samples=2000, progress=False)(x, t)
    seg = segmentation.grid((6, 6), cell=2)
    w = linear_model.get_weights()[0]
    for i in range(2):
        contrib = np.bincount(seg.ravel(), w[:, t[i]] * x[i].ravel(), 9)
        np.testing.assert_array_equal(maps[i], (seg == contrib.argmax()).astype(np.float32))


# -- Kernel SHAP ---------------------------------------------------------------------------------
def exact_shapley(model, image, seg, fill, target, output):
    """Shapley values of v(z) = f_t(image with the segments off in z set to fill), all 2^M coalitions."""
    m = int(seg.max()) + 1
    z = np.array(list(itertools.product([0, 1], repeat=m)), bool)
    v = explained(model, compose(image, seg, z, fill), target, output)
    index = {tuple(r): i for i, r in enumerate(z.astype(int))}
    phi = np.zeros(m)
    for row in z:
        size = int(row.sum())
        for s in np.flatnonzero(~row):
            up = row.copy()
            up[s] = True
            wgt = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            phi[s] += wgt * (v[index[tuple(up.astype(int))]] - v[index[tuple(row.astype(int))]])
    return phi, v[-1] - v[0]


@pytest.mark.parametrize("which,output", [("mnist", "probabilities"), ("cifar", "logits")])
def test_kernel_shap_equals_exact_shapley_values_and_is_efficient(which, output, mnist_cnn, cifar_cnn):
    model = mnist_cnn if which == "mnist" else cifar_cnn
    shape = (28, 28, 1) if which == "mnist" else (32, 32, 3)
    x = blobs(2, shape, seed=6)
    t = np.array([3, 8])
    h = shape[0]
    seg = np.stack([segmentation.grid((h, h), cell=-(-h // 3)),                # 9 segments
                    segmentation.relabel(np.minimum(np.arange(h)[None, :] // 3, 9).repeat(h, 0))])   # 10
    ks = xaitf.create_explainer("kernelshap", model, background=0.2, output=output, nsamples=1022,
                                progress=False)
    fit = ks.fit(x, t, segments=seg)
    assert list(fit["num_segments"]) == [9, 10] and list(fit["samples"]) == [510, 1022]
    for i in range(2):
        phi, total = exact_shapley(model, x[i], seg[i], 0.2, t[i], output)
        got = fit["values"][i, :len(phi)]
        scale = np.abs(phi).max()
        assert scale > 1e-6
        np.testing.assert_allclose(got, phi, rtol=0, atol=1e-3 * scale)
        assert abs(got.sum() - total) <= 1e-4 * max(1.0, abs(total))          # efficiency
        assert np.all(fit["values"][i, len(phi):] == 0)
    maps = ks(x, t)                               # painted with the explainer's own segmenter (SLIC)
    own = ks.fit(x, t)
    np.testing.assert_allclose(maps, ks.paint(own["values"], own["segments"]), rtol=1e-6)
    np.testing.assert_allclose(own["values"].sum(1), own["fx"] - own["fnull"], atol=1e-6 * max(1, np.abs(own["fx"]).max()))


def test_kernel_shap_plan_is_shaps(monkeypatch):
    """The enumerated coalitions and every kernel weight equal shap.KernelExplainer's."""
    from xaitf.methods.surrogates import _numpy_seed, _shap

    shap = _shap()
    for m, ns in ((6, 40), (9, 100), (12, 1000), (49, 1000), (8, 254)):
        plan = sn.shap_plan(m, ns)
        ex = shap.KernelExplainer(lambda z: z.sum(1), np.zeros((1, m)))
        with _numpy_seed(0):
            ex.shap_values(np.ones((1, m)), nsamples=ns, l1_reg=False, silent=True)
        e = len(plan["enumerated"])
        assert plan["total"] == ex.nsamples == ex.nsamplesAdded
        np.testing.assert_array_equal(ex.maskMatrix[:e].astype(bool), plan["enumerated"])
        sizes = plan["enumerated"].sum(1)
        np.testing.assert_allclose(ex.kernelWeights[:e], plan["enum_weight"][sizes], rtol=1e-12)
        np.testing.assert_allclose(ex.kernelWeights[e:].sum(), plan["sample_weight"] * (plan["total"] - e),
                                   rtol=1e-12)
        if len(plan["cdf"]):                        # sampled sizes never below the enumerated ones
            assert ex.maskMatrix[e:].sum(1).min() > plan["full"] and ex.maskMatrix[e:].sum(1).max() < m - plan["full"]


def test_kernel_shap_correlates_with_shap_library_over_49_segments(mnist_cnn):
    x = blobs(2, (28, 28, 1), seed=8)
    t = np.array([1, 6])
    kw = dict(segmenter="grid", cell=4, nsamples=1000, progress=False)          # 7 x 7 = 49 segments
    native = xaitf.create_explainer("kernelshap", mnist_cnn, **kw)
    fit = native.fit(x, t)
    assert list(fit["num_segments"]) == [49, 49]
    lib = xaitf.create_explainer("shap.lib", mnist_cnn, **kw)(x, t)
    seg = segmentation.grid((28, 28), cell=4)
    for i in range(2):
        ref = np.array([lib[i][seg == s][0] for s in range(49)])
        r = np.corrcoef(fit["values"][i], ref)[0, 1]
        assert r >= 0.95, r
        assert abs(fit["values"][i].sum() - ref.sum()) < 1e-4 * max(1e-3, np.abs(ref).sum())   # same efficiency sum


def test_kernel_shap_seed_chunking_and_tiny_segment_counts(tiny_cnn, rng):
    x = rng.random((3, 8, 8, 1)).astype(np.float32)
    seg = np.stack([segmentation.grid((8, 8), cell=2), np.zeros((8, 8), np.int32),
                    (np.arange(8)[None, :] >= 4).repeat(8, 0).astype(np.int32)])     # 16, 1, 2 segments
    kw = dict(nsamples=100, output="logits", progress=False)
    a = xaitf.create_explainer("kernelshap", tiny_cnn, seed=3, **kw).fit(x, [0, 1, 2], segments=seg)
    b = xaitf.create_explainer("kernelshap", tiny_cnn, seed=3, batch_size=5, **kw).fit(x, [0, 1, 2], segments=seg)
    c = xaitf.create_explainer("kernelshap", tiny_cnn, seed=4, **kw).fit(x, [0, 1, 2], segments=seg)
    np.testing.assert_allclose(a["values"], b["values"], rtol=1e-5, atol=1e-6 * np.abs(a["values"]).max())
    assert np.abs(a["values"][0] - c["values"][0]).max() > 1e-6
    np.testing.assert_allclose(a["values"].sum(1), a["fx"] - a["fnull"], atol=1e-9)
    assert a["values"][1, 0] == pytest.approx(a["fx"][1] - a["fnull"][1]) and np.all(a["values"][1, 1:] == 0)
    phi, _ = exact_shapley(tiny_cnn, x[2], seg[2], 0.0, 2, "logits")        # 2 segments: exact
    np.testing.assert_allclose(a["values"][2, :2], phi, atol=1e-6 * np.abs(phi).max())
    alone = xaitf.create_explainer("kernelshap", tiny_cnn, seed=3, **kw).fit(x[:1], [0], segments=seg[:1])
    # float32 outputs differ by ~1e-7 with the batch shape; the 16-feature fit amplifies that
    np.testing.assert_allclose(alone["values"][0], a["values"][0], rtol=0, atol=1e-4 * np.abs(a["values"][0]).max())


# -- plumbing ------------------------------------------------------------------------------------
def test_registry_names_and_bit_tables():
    assert registry.get_method("lime") is sn.Lime
    for name in ("kernelshap", "shap", "kernel_shap", "KernelSHAP"):
        assert registry.get_method(name) is sn.KernelShap
    assert registry.title("lime.lib") == "LIME (lime)" and registry.title("shap.lib") == "Kernel SHAP (shap)"
    assert registry.expand(["shap", "lime", "grad"]) == ["grad", "lime", "kernelshap"]
    bits = np.random.default_rng(0).random((5, 70)) > 0.5
    np.testing.assert_array_equal(sn.unpack_bits(sn.pack_bits(bits), 70), bits)


def mlp(k, shape=(12, 12, 3), classes=4, seed=3):
    """Flatten -> Dense(relu) -> Dense(softmax), tf-keras or Keras 3 (``k`` the keras module)."""
    rs = np.random.RandomState(seed)
    inp = k.Input(shape)
    h = k.layers.Flatten()(inp)
    d1, d2 = k.layers.Dense(16, activation="relu"), k.layers.Dense(classes, activation="softmax")
    model = k.Model(inp, d2(d1(h)))
    d1.set_weights([rs.randn(int(np.prod(shape)), 16).astype(np.float32) * 0.3, rs.randn(16).astype(np.float32)])
    d2.set_weights([rs.randn(16, classes).astype(np.float32), rs.randn(classes).astype(np.float32)])
    return model


@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
def test_dense_first_shortcut_equals_the_composed_images(kind):
    """Flatten -> Dense models: the per-segment first-layer changes give the same fits as running
    the model on the composed images (LIME weights and Kernel SHAP values, both outputs, segment
    means as the fill, mixed segment counts, a batch split into chunks)."""
    from xaitf.keras_bridge import keras3, tfk

    model = mlp(tfk if kind == "tf-keras" else keras3())
    x = blobs(3, (12, 12, 3), seed=5)
    seg = np.stack([segmentation.grid((12, 12), cell=c) for c in (3, 4, 6)])   # 16, 9, 4 segments
    for name, key, kw in [("lime", "weights", dict(output="probabilities", hide_color=None)),
                          ("lime", "weights", dict(output="logits", hide_color=0.3, batch_size=50)),
                          ("kernelshap", "values", dict(output="logits", background=0.5, batch_size=64))]:
        fits = {}
        for shortcut in (True, False):
            ex = xaitf.create_explainer(name, model, shortcut=shortcut, progress=False, **kw)
            assert ex.path.startswith("shortcut (Dense after Flatten" if shortcut else "plain (shortcut=False)")
            fits[shortcut] = ex.fit(x, [0, 1, 2], segments=seg)[key]
        scale = np.abs(fits[False]).max()
        assert scale > 1e-3
        np.testing.assert_allclose(fits[True], fits[False], rtol=0, atol=1e-5 * scale, err_msg=f"{name} {kw}")
    conv = xaitf.create_explainer("lime", make_cnn(shape=(8, 8, 1)), progress=False)
    assert conv.path == "plain (the first linear layer is a Conv2D)"


def test_native_surrogate_errors(tiny_cnn, rng):
    cases = [("lime", dict(output="softmax"), "needs output to be one of"),
             ("lime", dict(segmenter="felzenszwalb"), "unknown segmenter"),
             ("lime", dict(num_samples=0), "num_samples to be an integer >= 1"),
             ("lime", dict(sampler="numpy"), "sampler must be"),
             ("lime", dict(kernel_width=0), "kernel_width must be > 0"),
             ("lime", dict(jit_compile="yes"), "jit_compile must be"),
             ("kernelshap", dict(shortcut="dense"), "shortcut must be True or False"),
             ("kernelshap", dict(l1_reg="num_features(10)"), "use 'shap.lib'"),
             ("kernelshap", dict(background=np.zeros((3, 3))), "needs background to be"),
             ("kernelshap", dict(nsamples=-5), "nsamples to be an integer >= 1"),
             ("kernelshap", dict(steps=3), "unknown parameter")]
    for name, kw, msg in cases:
        with pytest.raises(MethodError, match=msg) as err:
            xaitf.create_explainer(name, tiny_cnn, **kw)
        assert "\n" not in str(err.value)
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    lime = xaitf.create_explainer("lime", tiny_cnn, progress=False)
    with pytest.raises(InputError, match="segments must be integer maps"):
        lime.fit(x, segments=np.zeros((3, 8, 8), np.int32))
    with pytest.raises(InputError, match="masks must be"):
        lime.fit(x, segments=segmentation.grid((8, 8), cell=4), masks=np.ones((10, 2), bool))


def test_kernel_shap_rank_deficient_regression_is_stable_and_warned(tiny_cnn, rng):
    """64 coalitions for 64 segments: the system is singular up to rounding (tf.linalg.solve does not
    raise there); the minimum-norm solution is used, with a warning, and no longer moves with the
    batch size (it moved by up to 60x of the map's scale)."""
    import warnings

    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    seg = segmentation.grid((8, 8), cell=1)                                    # 64 segments
    kw = dict(nsamples=64, output="logits", progress=False, seed=0)
    with pytest.warns(UserWarning, match="rank-deficient"):
        a = xaitf.create_explainer("kernelshap", tiny_cnn, **kw).fit(x, [0, 1], segments=seg)
    with pytest.warns(UserWarning, match="rank-deficient"):
        b = xaitf.create_explainer("kernelshap", tiny_cnn, batch_size=5, **kw).fit(x[1:], [1], segments=seg)
    np.testing.assert_allclose(a["values"][1], b["values"][0], rtol=1e-5, atol=1e-5 * np.abs(a["values"]).max())
    np.testing.assert_allclose(a["values"].sum(1), a["fx"] - a["fnull"], atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                         # full rank: no warning
        xaitf.create_explainer("kernelshap", tiny_cnn, **{**kw, "nsamples": 400}).fit(
            x, [0, 1], segments=segmentation.grid((8, 8), cell=2))
