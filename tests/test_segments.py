"""``segments=`` for Shapley sampling and occlusion: the features are superpixels.

Checked against exact Shapley values over <= 8 segments, computed by enumerating every coalition in
numpy on small nonlinear models, and against occlusion's definition per segment.
"""
import itertools
import math

import numpy as np
import pytest

import xaitf
from xaitf import segmentation
from xaitf.errors import InputError, MethodError
from xaitf.keras_bridge import tfk

from conftest import make_cnn


def make_mlp(shape=(6, 6, 3), classes=3, seed=0):
    """A nonlinear MLP: tanh hidden layer, linear logits."""
    rs = np.random.RandomState(seed)
    inp = tfk.Input(shape)
    h = tfk.layers.Flatten()(inp)
    d1 = tfk.layers.Dense(10, activation="tanh")
    d2 = tfk.layers.Dense(classes)
    out = d2(d1(h))
    model = tfk.Model(inp, out)
    n = int(np.prod(shape))
    d1.set_weights([rs.randn(n, 10).astype(np.float32) * 0.5, rs.randn(10).astype(np.float32) * 0.1])
    d2.set_weights([rs.randn(10, classes).astype(np.float32), rs.randn(classes).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def mlp():
    return make_mlp()


@pytest.fixture(scope="module")
def cnn():
    return make_cnn(shape=(6, 6, 3), seed=2, softmax=False)


def stripes(k, h=6, w=6):
    """(H,W) labels: k vertical-ish bands, labels 0..k-1 (every label present)."""
    return (np.arange(h * w).reshape(h, w) * k // (h * w)).astype(np.int32)


def coalition_outputs(model, x, seg, baseline, target, k):
    """f_target(x with the segments outside the coalition set to the baseline), every coalition."""
    masks = np.array(list(itertools.product([0, 1], repeat=k)), bool)       # (2^k, k): 1 = kept
    keep = masks[:, seg]                                                     # (2^k, H, W)
    base = np.broadcast_to(np.asarray(baseline, np.float32), x.shape)
    imgs = np.where(keep[..., None], x[None], base[None]).astype(np.float32)
    return masks, model.predict(imgs, verbose=0)[:, target].astype(np.float64)


def exact_shapley(model, x, seg, baseline, target):
    k = int(seg.max()) + 1
    masks, v = coalition_outputs(model, x, seg, baseline, target, k)
    index = {tuple(m): i for i, m in enumerate(masks)}
    phi = np.zeros(k)
    for i, m in enumerate(masks):
        s = int(m.sum())
        for f in np.flatnonzero(~m):
            with_f = m.copy()
            with_f[f] = True
            w = math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
            phi[f] += w * (v[index[tuple(with_f)]] - v[i])
    return phi, v[-1] - v[0]


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("k,samples,tol", [(3, 3000, 0.03), (8, 1500, 0.08)])
def test_shapley_segments_match_exact_values(request, model_name, k, samples, tol):
    model = request.getfixturevalue(model_name)
    rs = np.random.RandomState(k)
    x = rs.rand(2, 6, 6, 3).astype(np.float32)
    t = np.array([0, 2])
    seg = stripes(k)
    baseline = [0.2, 0.5, 0.1]
    maps = xaitf.create_explainer("shapley", model, samples=samples, baseline=baseline, segments=seg,
                                  batch_size=512)(x, t)
    for i in range(len(x)):
        phi, total = exact_shapley(model, x[i], seg, baseline, t[i])
        est = np.array([maps[i][seg == s][0] for s in range(k)])
        # every pixel of a segment carries the segment's value
        np.testing.assert_allclose(maps[i], est[seg], atol=1e-6)
        # efficiency holds for every permutation: exactly, up to float32 rounding
        assert abs(est.sum() - total) < 1e-3 * max(1.0, abs(total))
        scale = max(np.abs(phi).max(), 1e-3)
        assert np.abs(est - phi).max() < tol * scale, (est, phi)


def test_shapley_segments_per_image_maps_and_counts(mlp):
    """(N,H,W) maps with different segment counts (an image with fewer segments: null players)."""
    rs = np.random.RandomState(0)
    x = rs.rand(2, 6, 6, 3).astype(np.float32)
    t = np.array([1, 1])
    seg = np.stack([stripes(3) * 7 + 2, stripes(5)])    # labels need not be 0..K-1
    maps = xaitf.create_explainer("shapley", mlp, samples=2000, baseline=0.0, segments=seg)(x, t)
    for i in range(2):
        lab = segmentation.relabel(seg[i])
        phi, total = exact_shapley(mlp, x[i], lab, 0.0, t[i])
        est = np.array([maps[i][lab == s][0] for s in range(lab.max() + 1)])
        assert abs(est.sum() - total) < 1e-3 * max(1.0, abs(total))
        assert np.abs(est - phi).max() < 0.06 * np.abs(phi).max()


def test_shapley_named_segmenter_equals_its_label_map(mlp):
    x = np.random.RandomState(1).rand(2, 6, 6, 3).astype(np.float32)
    seg = segmentation.segment(x, "grid", cell=3)
    kw = dict(samples=20, baseline=0.1)
    a = xaitf.create_explainer("shapley", mlp, segments={"name": "grid", "cell": 3}, **kw)(x, [0, 1])
    b = xaitf.create_explainer("shapley", mlp, segments=seg, **kw)(x, [0, 1])
    c = xaitf.create_explainer("shapley", mlp, segments=seg[0], **kw)(x, [0, 1])   # (H,W) shared
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    d = xaitf.create_explainer("shapley", mlp, segments="slic", **kw)(x, [0, 1])
    assert d.shape == (2, 6, 6) and np.all(np.isfinite(d))


@pytest.mark.parametrize("output", ["logits", "probabilities"])
@pytest.mark.parametrize("fill", [0.0, [0.3, 0.6, 0.9]])
def test_occlusion_segments_is_the_drop_per_segment(cnn, output, fill):
    rs = np.random.RandomState(4)
    x = rs.rand(3, 6, 6, 3).astype(np.float32)
    t = np.array([0, 1, 2])
    seg = np.stack([stripes(4), stripes(3).T, stripes(6)])
    maps = xaitf.create_explainer("occlusion", cnn, segments=seg, fill=fill, output=output,
                                  batch_size=5)(x, t)
    def f(imgs, target):
        out = cnn.predict(imgs, verbose=0).astype(np.float64)
        if output == "probabilities":
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        return out[:, target]
    base = np.broadcast_to(np.asarray(fill, np.float32), (6, 6, 3))
    for i in range(len(x)):
        k = seg[i].max() + 1
        removed = np.stack([np.where((seg[i] == s)[..., None], base, x[i]) for s in range(k)])
        drop = f(x[i:i + 1], t[i])[0] - f(removed, t[i])
        np.testing.assert_allclose(maps[i], drop[seg[i]], atol=1e-5)


def test_occlusion_named_segmenter(cnn):
    x = np.random.RandomState(2).rand(2, 6, 6, 3).astype(np.float32)
    a = xaitf.create_explainer("occlusion", cnn, segments={"name": "grid", "cell": 2})(x, [0, 1])
    b = xaitf.create_explainer("occlusion", cnn, segments=segmentation.segment(x, "grid", cell=2))(x, [0, 1])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("key", ["shapley", "occlusion"])
@pytest.mark.parametrize("bad,err,text", [
    (np.zeros((5, 6), np.int32), InputError, "segments shaped"),
    (np.zeros((4, 6, 6), np.int32), InputError, "segments shaped"),
    (np.full((6, 6), 0.5), MethodError, "non-integer labels"),
    (-np.ones((6, 6), np.int32), MethodError, "negative labels"),
    (np.zeros((6, 6), bool), MethodError, "integer label map"),
    (np.zeros((2, 6, 6, 1), np.int32), MethodError, "integer label map"),
    ({"cell": 2}, MethodError, "no 'name'"),
    ("watershed", MethodError, "unknown segmenter"),
])
def test_bad_segments_one_line(mlp, key, bad, err, text):
    x = np.zeros((2, 6, 6, 3), np.float32)
    owner = {"shapley": "ShapleySampling", "occlusion": "Occlusion"}[key]
    with pytest.raises(err) as e:
        xaitf.create_explainer(key, mlp, segments=bad)(x, [0, 0])
    msg = str(e.value)
    assert "\n" not in msg and text in msg
    if text != "unknown segmenter":
        assert msg.startswith(f"{owner} needs segments")


def test_segments_need_pixel_features(mlp):
    with pytest.raises(MethodError, match="features='pixels' only"):
        xaitf.create_explainer("shapley", mlp, segments="grid", features="channels")


def test_segments_default_none_keeps_pixels():
    from xaitf import settings

    assert settings.SHAPLEY["segments"] is None and settings.OCCLUSION["segments"] is None
