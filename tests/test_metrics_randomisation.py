"""Randomisation tests (xaitf.metrics.randomisation): model parameter randomisation (Adebayo et al.
2018) and the random logit test (Sixt et al. 2020), with maps whose answer is known."""
import numpy as np
import pytest

import xaitf  # noqa: F401
from conftest import make_cnn, make_linear
from xaitf.errors import InputError, MethodError
from xaitf.metrics import randomisation as R


@pytest.fixture(scope="module")
def cnn():
    return make_cnn(shape=(12, 12, 1), classes=4, seed=3)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).rand(3, 12, 12, 1).astype(np.float32)


def input_itself(model):
    """An "explainer" that ignores the model: the map is the image."""
    return lambda x, t: np.asarray(x)[..., 0]


def test_similarities_on_known_pairs():
    a = np.arange(36, dtype=float).reshape(1, 6, 6)
    assert R.similarity(a, a, "spearman", absolute=False)[0] == pytest.approx(1.0)
    assert R.similarity(a, -a, "spearman", absolute=False)[0] == pytest.approx(-1.0)
    assert R.similarity(a, a ** 3, "spearman", absolute=False)[0] == pytest.approx(1.0)   # ranks only
    assert R.similarity(a, a, "ssim")[0] == pytest.approx(1.0)
    assert R.similarity(a, a, "hog")[0] == pytest.approx(1.0)
    assert R.similarity(a, 2 * a, "ssim", normalise=True)[0] == pytest.approx(1.0)     # max-normalised
    flat = np.ones((1, 6, 6))
    assert R.similarity(flat, flat, "spearman")[0] == 1.0 and R.similarity(flat, a, "spearman")[0] == 0.0
    rs = np.random.RandomState(1)
    noise = rs.rand(1, 24, 24)
    assert abs(R.similarity(noise, rs.rand(1, 24, 24), "spearman")[0]) < 0.2


def test_a_map_that_ignores_the_weights_stays_identical(cnn, images):
    for order in R.ORDERS:
        res = R.model_parameter_randomisation(cnn, images, [0, 1, 2], input_itself, order=order, progress=False)
        assert res.layers == ["fc2", "fc1", "conv2", "conv1"]                 # top first
        for s in R.SIMILARITIES:
            assert res.scores[s].shape == (4, 3)
            np.testing.assert_allclose(res.scores[s], 1.0, atol=1e-9)


def test_the_gradient_changes_and_the_model_is_untouched(cnn, images):
    before = [w.copy() for w in cnn.get_weights()]
    res = R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", order="cascading",
                                          return_maps=True, progress=False)
    for w, b in zip(cnn.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    np.testing.assert_allclose(res.original, xaitf.create_explainer("grad", cnn)(images, [0, 1, 2]), rtol=1e-6)
    assert res.maps.shape == (4, 3, 12, 12)
    # fully randomised: the gradient has nothing left of the trained map
    assert res.scores["spearman"][-1].mean() < 0.5
    # the same seed gives the same result; another seed another one
    again = R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", similarities="spearman",
                                            progress=False)
    np.testing.assert_allclose(again.scores["spearman"], res.scores["spearman"])
    assert again.maps is None
    first = R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", similarities="spearman",
                                            return_maps=1, progress=False)
    np.testing.assert_allclose(first.maps, res.maps[:, :1], rtol=1e-6)    # the first image's maps only
    every = R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", similarities="spearman",
                                            return_maps=np.True_, progress=False)
    assert every.maps.shape == res.maps.shape                              # numpy's True: all images
    with pytest.raises(MethodError, match="return_maps must be True, False or a number"):
        R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", return_maps=-1, progress=False)
    other = R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", similarities="spearman", seed=5,
                                            progress=False)
    assert not np.allclose(other.scores["spearman"], res.scores["spearman"])


def test_independent_randomises_one_layer_at_a_time(images):
    """On a linear model (one layer) the cascading and the independent test are the same; the
    gradient map of a Dense layer is its kernel column, so "permute" (rows shuffled) gives the
    rank correlation of the permuted column with the original."""
    lin = make_linear(shape=(12, 12, 1), classes=3, seed=0)
    w = lin.get_layer("logits").get_weights()[0]
    res = R.model_parameter_randomisation(lin, images, [1, 1, 1], "grad", randomisation="permute",
                                          similarities="spearman", absolute=False, progress=False)
    perm = np.random.default_rng([0, 0]).permutation(w)[:, 1]
    expected = R.spearman(w[:, 1].reshape(12, 12), perm.reshape(12, 12))
    np.testing.assert_allclose(res.scores["spearman"][0], expected, rtol=1e-6)
    ind = R.model_parameter_randomisation(lin, images, [1, 1, 1], "grad", order="independent",
                                          randomisation="permute", similarities="spearman", absolute=False,
                                          progress=False)
    np.testing.assert_allclose(ind.scores["spearman"], res.scores["spearman"])


@pytest.mark.parametrize("name", ["grad", "lrp.epsilon_gamma_box"])
def test_one_explainer_follows_every_randomised_state(cnn, images, name):
    """MPRT explains every randomised state with one explainer of a method name (it notices the new
    weights and rebuilds what it copied from them); a user's factory makes a new explainer per
    state. Both give the same scores, and they move away from 1 (the maps change). Every method's
    explainer following new weights: tests/test_weight_changes.py."""
    from xaitf import registry

    calls = []

    def fresh(model):
        calls.append(model)
        return registry.create_explainer(name, model, progress=False)

    kw = dict(similarities="spearman", absolute=False, progress=False)
    reused = R.model_parameter_randomisation(cnn, images, [0, 1, 2], name, **kw)
    each = R.model_parameter_randomisation(cnn, images, [0, 1, 2], fresh, **kw)
    assert len(calls) == 5                   # the model, then each of the 4 randomised states
    np.testing.assert_allclose(reused.scores["spearman"], each.scores["spearman"], atol=1e-6)
    assert reused.scores["spearman"].min() < 0.9


def test_explainer_instances_keep_their_settings(cnn, images):
    ig = xaitf.create_explainer("ig", cnn, steps=4)
    res = R.model_parameter_randomisation(cnn, images[:1], [0], ig, similarities="spearman",
                                          layers=["fc2"], progress=False)
    np.testing.assert_allclose(res.original, ig(images[:1], [0]).astype(np.float64), rtol=1e-6)
    assert res.layers == ["fc2"]


def test_random_logit():
    """The gradient of a linear model for class c is the column W_c: the random-logit similarity is
    that of two columns; a map that ignores the class scores 1."""
    lin = make_linear(shape=(12, 12, 1), classes=3, seed=0)
    w = lin.get_layer("logits").get_weights()[0]
    x = np.random.RandomState(0).rand(2, 12, 12, 1).astype(np.float32)
    got = R.random_logit(lin, x, [0, 2], "grad", similarity_name="spearman", absolute=False)
    for i, t in enumerate([0, 2]):
        other = (t + 1 + np.random.default_rng([0, i]).integers(2)) % 3
        assert got[i] == pytest.approx(R.spearman(w[:, t].reshape(12, 12), w[:, other].reshape(12, 12)))
    same = R.random_logit(lin, x, [0, 2], input_itself)
    np.testing.assert_allclose(same, 1.0)


def test_bad_input_is_one_line(cnn, images):
    cases = [
        (MethodError, "unknown similarity 'pearson'", dict(similarities="pearson")),
        (MethodError, "unknown order 'bottom_up'", dict(order="bottom_up")),
        (MethodError, "unknown randomisation 'zero'", dict(randomisation="zero")),
        (MethodError, "no layer with weights named 'conv9'", dict(layers=["conv9"])),
    ]
    for err, words, kw in cases:
        with pytest.raises(err, match=words) as e:
            R.model_parameter_randomisation(cnn, images, [0, 1, 2], "grad", progress=False, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(MethodError, match="unknown method 'gradd'"):
        R.model_parameter_randomisation(cnn, images, [0, 1, 2], "gradd", progress=False)
    with pytest.raises(InputError, match="contain NaN"):
        R.model_parameter_randomisation(cnn, images, [0, 1, 2], lambda m: (lambda x, t: np.full(x.shape[:3], np.nan)),
                                        progress=False)
    with pytest.raises(InputError, match="targets: expected 3 class indices in 0..3"):
        R.random_logit(cnn, images, [0, 1, 7], "grad")


def test_spearman_similarity_is_scipys_on_maps_with_ties():
    """Average ranks without a stable sort (ties averaged anyway) equal scipy's rankdata, and the
    Spearman similarity scipy's spearmanr, on maps where half the pixels are exactly 0 (a ReLU
    network's |gradient|) and on maps with few distinct values."""
    from scipy.stats import rankdata, spearmanr

    from xaitf.metrics._checks import average_ranks
    from xaitf.metrics.randomisation import spearman

    rng = np.random.default_rng(3)
    for a in (np.where(rng.random((40, 40)) < 0.5, 0.0, rng.random((40, 40))),
              rng.integers(0, 4, (40, 40)).astype(np.float64)):
        np.testing.assert_array_equal(average_ranks(a.ravel()), rankdata(a.ravel()))
        b = a + rng.normal(0, 0.3, a.shape)
        assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    np.testing.assert_array_equal(average_ranks([2.0, 2.0 + 1e-9, 1.0], tol=1e-6), [2.5, 2.5, 1.0])


def test_a_reference_gives_the_pairwise_similarities():
    """The original maps prepared once (ranks and HOG features computed once) give, state after
    state, exactly what comparing the two batches afresh gives."""
    rng = np.random.default_rng(5)
    a = np.where(rng.random((3, 20, 20)) < 0.3, 0.0, rng.normal(size=(3, 20, 20)))
    ref = R.Reference(a, R.SIMILARITIES)
    for k in range(3):
        b = a + rng.normal(0, 0.5 * k, a.shape)
        got, want = ref.compare(b), {s: np.array([R._SIM[s](*pair) for pair in zip(
            R._prepare(a, True, True), R._prepare(b, True, True))]) for s in R.SIMILARITIES}
        for s in R.SIMILARITIES:
            np.testing.assert_array_equal(got[s], want[s])
    assert R.Reference(a, "hog").compare(a).shape == (3,)
    np.testing.assert_allclose(R.Reference(a, "hog").compare(a), 1.0)
