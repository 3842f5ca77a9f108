"""The Captum methods study 5 uses that xaitf added: DeepLiftShap, FeatureAblation,
FeaturePermutation, and Shapley value sampling over superpixels.

Oracles: on a linear model ``f_c(x) = w_c . x + b_c`` every one of them has a closed form
(DeepLiftShap ``(x - mean(background)) w``, ablation ``w (x - baseline)``, permutation
``w (x - x_perm)``, Shapley per segment the segment's sum of ``w (x - baseline)``); on nonlinear
models, DeepLiftShap with one background image is DeepLift with that baseline, summation-to-delta
holds exactly on a ReLU MLP, and FeaturePermutation / FeatureAblation equal the model's own outputs
on the permuted / ablated images built in numpy.
"""
import warnings

import numpy as np
import pytest

import xaitf
from xaitf import registry
from xaitf.errors import InputError, MethodError
from xaitf.keras_bridge import tfk

from conftest import make_cnn, make_linear

SHAPE = (6, 6, 2)
N = 4
TARGETS = np.array([0, 1, 2, 0])


def make_relu_mlp(shape=SHAPE, classes=3, seed=0):
    """Flatten -> Dense(ReLU) -> Dense: DeepLIFT's rescale rule is exact here."""
    rs = np.random.RandomState(seed)
    inp = tfk.Input(shape)
    d1, d2 = tfk.layers.Dense(12, activation="relu"), tfk.layers.Dense(classes)
    model = tfk.Model(inp, d2(d1(tfk.layers.Flatten()(inp))))
    n = int(np.prod(shape))
    d1.set_weights([rs.randn(n, 12).astype(np.float32) * 0.4, rs.randn(12).astype(np.float32) * 0.2])
    d2.set_weights([rs.randn(12, classes).astype(np.float32), rs.randn(classes).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def linear():
    return make_linear(SHAPE, 3, seed=0)


@pytest.fixture(scope="module")
def data():
    rs = np.random.RandomState(1)
    return rs.rand(N, *SHAPE).astype(np.float32), rs.rand(5, *SHAPE).astype(np.float32)


def weights_of(model, targets):
    """(N,H,W,C) the linear model's weights of each input's target."""
    w = model.layers[-1].get_weights()[0]
    return w[:, targets].T.reshape(len(targets), *SHAPE)


def logits(model, x, targets):
    return model.predict(np.asarray(x, np.float32), verbose=0)[np.arange(len(targets)), targets].astype(np.float64)


def quads():
    """(H,W) labels: 4 segments of 9 pixels (3x3 quadrants)."""
    r, c = np.indices(SHAPE[:2])
    return ((r >= 3) * 2 + (c >= 3)).astype(np.int32)


def per_segment(values, seg):
    """Per image the sum of (N,H,W) values over each segment, painted back on its pixels."""
    out = np.zeros_like(values)
    for k in np.unique(seg):
        m = seg == k
        out[:, m] = values[:, m].sum(1, keepdims=True)
    return out


def make(name, model, **kw):
    with warnings.catch_warnings():        # "no elementwise nonlinearity" on the linear model
        warnings.simplefilter("ignore", UserWarning)
        return xaitf.create_explainer(name, model, progress=False, **kw)


# -- registry ------------------------------------------------------------------------------------
def test_registered_with_titles_and_aliases():
    for alias, key in (("deep_lift_shap", "deepliftshap"), ("DeepLiftShap", "deepliftshap"),
                       ("featureablation", "feature_ablation"), ("FeatureAblation", "feature_ablation"),
                       ("featurepermutation", "feature_permutation"), ("shapley_value_sampling", "shapley")):
        assert registry.canonical(alias) == key
    assert registry.title("deepliftshap") == "DeepLiftShap"
    assert registry.title("feature_ablation") == "Feature Ablation"
    assert registry.title("feature_permutation") == "Feature Permutation"


def test_budget_costs(linear, data):
    from xaitf import budget

    x, bg = data
    assert budget.cost("deepliftshap", make("deepliftshap", linear, background=bg))[0] == 5
    assert budget.cost("deepliftshap", make("deepliftshap", linear, background=bg, n_background=2))[0] == 2
    assert budget.cost("feature_ablation", make("feature_ablation", linear))[0] == 36 + 1
    assert budget.cost("feature_ablation", make("feature_ablation", linear, segments=quads()))[0] == 4 + 1
    assert budget.cost("feature_permutation", make("feature_permutation", linear))[0] == 36 + 1
    # on models other than study 1's, single pixels become the cells of the ~14 x 14 grid (as Shapley's)
    for name in ("feature_ablation", "feature_permutation"):
        assert budget.scaled_defaults(name, (224, 224, 3)) == {"segments": {"name": "grid", "cell": 16}}
        assert budget.unset_scaled_defaults(name, (224, 224, 3), {(name, "segments")}) == {}


# -- DeepLiftShap --------------------------------------------------------------------------------
def test_deepliftshap_linear_is_input_minus_mean_background_times_w(linear, data):
    x, bg = data
    a = make("deepliftshap", linear, background=bg)(x, TARGETS)
    w = weights_of(linear, TARGETS)
    np.testing.assert_allclose(a, ((x - bg.mean(0)) * w).sum(-1), rtol=1e-5, atol=1e-6)
    # completeness: sum(a) = f(x) - mean_k f(b_k)
    fb = np.stack([logits(linear, bg, np.full(len(bg), t)).mean() for t in TARGETS])
    np.testing.assert_allclose(a.sum((1, 2)), logits(linear, x, TARGETS) - fb, rtol=1e-5, atol=1e-5)


def test_deepliftshap_completeness_exact_on_relu_mlp(data):
    x, bg = data
    mlp = make_relu_mlp()
    a = make("deepliftshap", mlp, background=bg)(x, TARGETS)
    fb = np.stack([logits(mlp, bg, np.full(len(bg), t)).mean() for t in TARGETS])
    np.testing.assert_allclose(a.sum((1, 2)), logits(mlp, x, TARGETS) - fb, rtol=1e-4, atol=1e-5)
    # ... and it is the mean of the K DeepLift maps, not DeepLift from the mean baseline
    each = np.mean([make("deeplift", mlp, baseline=b)(x, TARGETS) for b in bg], axis=0)
    np.testing.assert_allclose(a, each, rtol=1e-5, atol=1e-6)
    from_mean = make("deeplift", mlp, baseline=bg.mean(0))(x, TARGETS)
    assert np.abs(a - from_mean).max() > 1e-3


def test_deepliftshap_one_background_is_deeplift():
    cnn = make_cnn(shape=(8, 8, 3), classes=4, seed=1, softmax=False)
    rs = np.random.RandomState(2)
    x, b = rs.rand(3, 8, 8, 3).astype(np.float32), rs.rand(8, 8, 3).astype(np.float32)
    t = np.array([0, 1, 3])
    dl = make("deeplift", cnn, baseline=b)(x, t)
    assert np.abs(dl).max() > 1e-4
    np.testing.assert_allclose(make("deepliftshap", cnn, background=b[None])(x, t), dl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(make("deepliftshap", cnn, background=b)(x, t), dl, rtol=1e-5, atol=1e-7)
    # K identical zero images (a zero background as the study's) = DeepLift with baseline 0, one pass
    zeros = make("deepliftshap", cnn, background=np.zeros((10, 8, 8, 3), np.float32))
    assert len(zeros._passes) == 1
    np.testing.assert_allclose(zeros(x, t), make("deeplift", cnn, baseline=0.0)(x, t), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(make("deepliftshap", cnn)(x, t), make("deeplift", cnn)(x, t), rtol=1e-5, atol=1e-7)


def test_deepliftshap_draws_n_background_with_the_seed(linear, data):
    x, bg = data
    a = make("deepliftshap", linear, background=bg, n_background=2, seed=4)
    b = make("deepliftshap", linear, background=bg, n_background=2, seed=4)
    np.testing.assert_array_equal(a.background, b.background)
    assert len(a.background) == 2
    picked = [i for i in range(len(bg)) if any(np.array_equal(bg[i], r) for r in a.background)]
    assert len(picked) == 2
    w = weights_of(linear, TARGETS)
    np.testing.assert_allclose(a(x, TARGETS), ((x - bg[picked].mean(0)) * w).sum(-1), rtol=1e-5, atol=1e-6)
    others = {tuple(sorted(np.flatnonzero([any(np.array_equal(bg[i], r) for r in
                                                make("deepliftshap", linear, background=bg, n_background=2,
                                                     seed=s).background) for i in range(len(bg))])))
              for s in range(8)}
    assert len(others) > 1                      # the seed picks the subset


@pytest.mark.parametrize("kw, match", [
    ({"background": np.zeros((3, 5, 5, 2))}, "DeepLiftShap needs background to be"),
    ({"background": "zeros"}, "DeepLiftShap needs background to be"),
    ({"background": np.zeros((2, 6, 6, 2)), "n_background": 3}, "n_background <= the 2 background"),
    ({"background": 0.0, "n_background": 0}, "DeepLiftShap needs n_background"),
])
def test_deepliftshap_bad_background_is_one_line(linear, kw, match):
    with pytest.raises(MethodError, match=match) as e:
        make("deepliftshap", linear, **kw)
    assert "\n" not in str(e.value)


def test_deepliftshap_explains_logits_only(linear):
    with pytest.raises(MethodError) as e:
        make("deepliftshap", linear, output="probabilities")
    assert "\n" not in str(e.value)


# -- FeatureAblation -----------------------------------------------------------------------------
def test_feature_ablation_linear_pixels_and_segments(linear, data):
    x, _ = data
    w = weights_of(linear, TARGETS)
    per_pixel = ((x - 0.3) * w).sum(-1)
    np.testing.assert_allclose(make("feature_ablation", linear, baseline=0.3)(x, TARGETS), per_pixel,
                               rtol=1e-5, atol=1e-5)
    seg = quads()
    np.testing.assert_allclose(make("feature_ablation", linear, baseline=0.3, segments=seg)(x, TARGETS),
                               per_segment(per_pixel, seg), rtol=1e-5, atol=1e-5)
    # an image baseline: each pixel takes the baseline image's own value
    base = np.random.RandomState(5).rand(*SHAPE).astype(np.float32)
    np.testing.assert_allclose(make("feature_ablation", linear, baseline=base)(x, TARGETS),
                               ((x - base) * w).sum(-1), rtol=1e-5, atol=1e-5)


def test_feature_ablation_is_occlusion_1x1_on_logits_and_matches_the_model():
    cnn = make_cnn(shape=(6, 6, 3), classes=3, seed=2, softmax=True)
    rs = np.random.RandomState(3)
    x, t = rs.rand(2, 6, 6, 3).astype(np.float32), np.array([0, 2])
    fa = make("feature_ablation", cnn, baseline=0.5)
    assert fa.output == "logits"
    got = fa(x, t)
    occ = make("occlusion", cnn, window=1, stride=1, fill=0.5, output="logits")(x, t)
    np.testing.assert_allclose(got, occ, rtol=1e-5, atol=1e-6)
    # direct: every pixel ablated in numpy, the logits (the softmax stripped: the explainer's forward)
    lm = fa.forward
    for i in range(2):
        imgs = np.repeat(x[i:i + 1], 36, 0)
        imgs.reshape(36, 36, 3)[np.arange(36), np.arange(36)] = 0.5
        want = np.asarray(lm(x[i:i + 1]))[0, t[i]] - np.asarray(lm(imgs))[:, t[i]]
        np.testing.assert_allclose(got[i].ravel(), want, rtol=1e-4, atol=1e-5)


def test_feature_ablation_bad_baseline_is_one_line(linear):
    with pytest.raises(MethodError, match="FeatureAblation needs baseline to be") as e:
        make("feature_ablation", linear, baseline=np.zeros((5, 5, 2)))
    assert "\n" not in str(e.value)


# -- FeaturePermutation --------------------------------------------------------------------------
def permuted(x, perms, seg=None):
    """(K, N, H, W, C): x with feature k of input i taken from input perms[k, i]."""
    n, h, w, c = x.shape
    labels = np.arange(h * w).reshape(h, w) if seg is None else seg
    k = perms.shape[0]
    return np.stack([np.where((labels == f)[None, ..., None], x[perms[f]], x) for f in range(k)])


def test_feature_permutation_linear_is_w_times_x_minus_x_perm(linear, data):
    x, _ = data
    fp = make("feature_permutation", linear, seed=3)
    got = fp(x, TARGETS)
    perms = fp.permutations(36, N)
    assert perms.shape == (36, N) and not (perms == np.arange(N)).all(1).any()     # never the identity
    xs = x.reshape(N, 36, 2)
    partner = np.stack([xs[perms[:, i], np.arange(36)] for i in range(N)])          # (N, 36, C)
    want = ((xs - partner) * weights_of(linear, TARGETS).reshape(N, 36, 2)).sum(-1).reshape(N, 6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (np.abs(got) > 1e-6).mean() > 0.5
    # the same seed: the same map, whatever batch_size; another seed: another map
    np.testing.assert_array_equal(make("feature_permutation", linear, seed=3, batch_size=7)(x, TARGETS), got)
    np.testing.assert_array_equal(make("feature_permutation", linear, seed=3)(x, TARGETS), got)
    other = make("feature_permutation", linear, seed=4)(x, TARGETS)
    assert np.abs(other - got).max() > 1e-3


def test_feature_permutation_segments_linear(linear, data):
    x, _ = data
    seg = quads()
    fp = make("feature_permutation", linear, seed=1, segments=seg)
    got = fp(x, TARGETS)
    perms = fp.permutations(4, N)
    xp = permuted(x, perms, seg)                                                    # (K, N, H, W, C)
    w = weights_of(linear, TARGETS)
    contrib = np.stack([((x - xp[k]) * w).sum((1, 2, 3)) for k in range(4)], 1)    # (N, K)
    np.testing.assert_allclose(got, contrib[:, seg], rtol=1e-5, atol=1e-5)


def test_feature_permutation_nonlinear_matches_the_model():
    cnn = make_cnn(shape=(6, 6, 3), classes=3, seed=4, softmax=False)
    rs = np.random.RandomState(6)
    x, t = rs.rand(3, 6, 6, 3).astype(np.float32), np.array([2, 0, 1])
    for kw in ({}, {"segments": quads()}, {"shortcut": False}):
        fp = make("feature_permutation", cnn, seed=2, **kw)
        got = fp(x, t)
        k = 4 if kw.get("segments") is not None else 36
        xp = permuted(x, fp.permutations(k, 3), kw.get("segments"))
        after = np.stack([logits(cnn, xp[f], t) for f in range(k)], 1)             # (N, K)
        rel = logits(cnn, x, t)[:, None] - after
        want = rel[:, quads()] if k == 4 else rel.reshape(3, 6, 6)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(kw))


def test_feature_permutation_batch_of_one_is_refused_in_one_line(linear, data):
    x, _ = data
    fp = make("feature_permutation", linear)
    for one in (x[:1], x[0]):
        with pytest.raises(InputError, match="FeaturePermutation needs at least 2 inputs") as e:
            fp(one)
        assert "\n" not in str(e.value)
    two = fp(x[:2], TARGETS[:2])                  # two inputs: each is the other's partner
    w = weights_of(linear, TARGETS[:2])
    np.testing.assert_allclose(two, ((x[:2] - x[[1, 0]]) * w).sum(-1), rtol=1e-5, atol=1e-5)


# -- Shapley value sampling over superpixels -----------------------------------------------------
def test_shapley_over_segments_linear_is_exact(linear, data):
    x, _ = data
    seg = quads()
    got = make("shapley", linear, samples=3, segments=seg, baseline=0.2)(x, TARGETS)
    per_pixel = ((x - 0.2) * weights_of(linear, TARGETS)).sum(-1)
    np.testing.assert_allclose(got, per_segment(per_pixel, seg), rtol=1e-5, atol=1e-5)
    # a segmenter by name (the study's SLIC): still additive, so still exact
    slic = make("shapley", linear, samples=2, segments={"name": "slic", "n_segments": 4}, baseline=0.2)
    from xaitf.params import parse_segments

    labels, _ = parse_segments({"name": "slic", "n_segments": 4}, x, seed=0)
    out = slic(x, TARGETS)
    for i in range(N):
        np.testing.assert_allclose(out[i], per_segment(per_pixel[i:i + 1], labels[i])[0], rtol=1e-5, atol=1e-5)
