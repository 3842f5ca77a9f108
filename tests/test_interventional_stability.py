"""Study 2's graph stability protocols and the original's metric settings, on small hand-set models
(no data, no training): the "original" protocol's draws (a fresh random subset of the eligible
images and one scalar u per repeat), one repeat checked against a plain recomputation, beta 0 no
longer 100% by construction, the original's metric batches / running maximum / IROF, and the
study's one-line refusals of settings it cannot run with."""
import numpy as np
import pytest

import xaitf  # noqa: F401
import tensorflow as tf  # noqa: F401

from xaitf.errors import MethodError, XaitfError
from xaitf.keras_bridge import tfk
from xaitf.methods import interventional as I
from xaitf.studies import interventional as St

from test_interventional import build_small   # the same 12x12 conv/dense test model


@pytest.fixture(scope="module")
def setup():
    """Model seed 1 on 120 random images: every image is "class" 1 (the model's prediction), the
    graph is learned hard on the first 8 of them."""
    model = build_small(seed=1)
    x = np.random.RandomState(5).rand(120, 12, 12, 1).astype(np.float32)
    y = I.Chain(model).forward(x).argmax(1)
    t = int(np.bincount(y).argmax())
    graph = I.learn_graph(model, x, y, t, n_samples=8, soft=False)
    return model, x, y, t, graph


# -- the draws ---------------------------------------------------------------------------------
def test_stability_draw_is_counter_based():
    a = I.stability_draw(7, 0.2, 3, 200, 50)
    b = I.stability_draw(7, 0.2, 3, 200, 50)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    subset, u = a
    assert len(subset) == 50 == len(np.unique(subset)) and np.all(np.diff(subset) > 0)
    assert subset.min() >= 0 and subset.max() < 200 and 0.0 <= u <= 0.2
    # other repeats, another beta, another seed: other draws
    others = [I.stability_draw(7, 0.2, r, 200, 50) for r in (0, 1, 2, 4)]
    others += [I.stability_draw(7, 0.21, 3, 200, 50), I.stability_draw(8, 0.2, 3, 200, 50)]
    for s, v in others:
        assert not np.array_equal(s, subset) and v != u
    # beta 0: u = 0 (a hard intervention), only the subset varies
    s0, u0 = I.stability_draw(7, 0.0, 3, 200, 50)
    assert u0 == 0.0 and not np.array_equal(s0, I.stability_draw(7, 0.0, 4, 200, 50)[0])
    # fewer eligible images than n_samples: all of them
    np.testing.assert_array_equal(I.stability_draw(0, 0.1, 0, 30, 100)[0], np.arange(30))
    with pytest.raises(MethodError, match="beta"):
        I.stability_draw(0, -0.1, 0, 30, 10)


def test_u_is_one_uniform_scalar_per_repeat():
    us = np.array([I.stability_draw(0, 0.3, r, 50, 10)[1] for r in range(400)])
    assert np.all((us >= 0) & (us <= 0.3))
    assert abs(us.mean() - 0.15) < 0.015 and abs(us.std() - 0.3 / np.sqrt(12)) < 0.01


# -- the protocols -----------------------------------------------------------------------------
def test_original_protocol_subsets(setup):
    model, x, y, t, g = setup
    betas = [0.0, 0.05, 0.3]
    r1 = I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=4, n_samples=8, seed=3,
                           protocol="original")
    r2 = I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=4, n_samples=8, seed=3,
                           protocol="original")
    r3 = I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=4, n_samples=8, seed=4,
                           protocol="original")
    assert r1["protocol"] == "original" and r1["n_eligible"] == 120 and r1["n_used"] == 8
    sub = r1["subsets"]
    assert sub.shape == (3, 4, 8)
    np.testing.assert_array_equal(sub, r2["subsets"])
    np.testing.assert_array_equal(r1["counts"], r2["counts"])
    np.testing.assert_array_equal(r1["u"], r2["u"])
    for b in range(3):
        assert len({tuple(s) for s in sub[b]}) == 4          # every repeat its own images
    assert not np.array_equal(sub, r3["subsets"])
    assert np.all(r1["u"][0] == 0) and np.all((r1["u"][1] > 0) & (r1["u"][1] <= 0.05))
    assert np.all(r1["u"][2] <= 0.3) and len(set(r1["u"][2])) == 4
    # the fixed protocol: the graph's own images every time, no scalar u
    f = I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=4, n_samples=8, seed=3,
                          protocol="fixed")
    assert f["protocol"] == "fixed" and f["u"] is None and f["n_used"] == 8
    assert np.all(f["subsets"] == np.arange(8))
    with pytest.raises(MethodError, match="protocol"):
        I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=1, protocol="random")
    with pytest.raises(MethodError, match="repeats"):
        I.graph_stability(model, x, y, g, "fc2", betas=betas, repeats=0, protocol="original")
    with pytest.raises(MethodError, match="beta"):
        I.graph_stability(model, x, y, g, "fc2", betas=[-0.1], repeats=1, protocol="original")


def test_beta_zero_is_no_longer_100_percent_by_construction(setup):
    """The graph was learned with hard interventions on the first 8 images: re-learning with u = 0
    on the same images (fixed) finds it again every time; fresh random images (original) do not."""
    model, x, y, t, g = setup
    f = I.graph_stability(model, x, y, g, "fc2", betas=[0.0], repeats=8, n_samples=8, seed=0,
                          protocol="fixed")
    o = I.graph_stability(model, x, y, g, "fc2", betas=[0.0], repeats=8, n_samples=8, seed=0,
                          protocol="original")
    assert f["mean_rate"][0] == 100.0
    assert o["mean_rate"][0] < 100.0
    assert np.all(o["u"] == 0)


def test_one_original_repeat_equals_a_plain_recomputation(setup):
    """counts of one (beta, repeat) == select_units on intervene() with every weight from each fc1
    unit into the effects set to the drawn scalar u, on the drawn subset of the eligible images."""
    model, x, y, t, g = setup
    effects = g["fc2"][1]
    for beta, rep, seed in ((0.2, 0, 11), (0.0, 2, 5)):
        res = I.graph_stability(model, x, y, g, "fc2", betas=[beta], repeats=rep + 1, n_samples=8,
                                seed=seed, protocol="original")
        chain = I.Chain(model)
        pool = I.class_samples(chain, x, y, t, len(x))
        subset, u = I.stability_draw(seed, beta, rep, len(pool), 8)
        np.testing.assert_array_equal(res["subsets"][0, rep], subset)
        units = np.arange(chain.n_parent_units(chain.index("fc2")))
        vals = np.full((len(units), len(subset), 1, len(effects)), u, np.float32)
        y_w, y_obs = I.intervene(model, "fc2", effects, pool[subset], t, units=units, u=vals)
        sel = I.select_units(y_w, y_obs)["selected"]
        # the repeats before `rep` add their own selections: compare this repeat alone
        alone = I.graph_stability(model, x, y, g, "fc2", betas=[beta], repeats=rep + 1,
                                  n_samples=8, seed=seed, protocol="original")["counts"][0]
        prev = I.graph_stability(model, x, y, g, "fc2", betas=[beta], repeats=rep, n_samples=8,
                                 seed=seed, protocol="original")["counts"][0] if rep else 0
        np.testing.assert_array_equal(alone - prev, np.isin(units, sel).astype(int))


# -- the original's metric settings ------------------------------------------------------------
def test_original_batches_follow_its_torch_split():
    b = St.original_batches(100)
    assert [len(i) for i in b] == [6] * 16 + [4]
    np.testing.assert_array_equal(np.concatenate(b), np.arange(100))
    assert [len(i) for i in St.original_batches(40)] == [2] * 20
    assert [len(i) for i in St.original_batches(10)] == [1] * 10      # N <= 16: image by image


def test_running_max_is_not_reset_between_the_images_of_a_batch():
    v = np.array([0.3, 0.1, 0.5, 0.2, 0.4, 0.1])
    out = St.running_max(v, [np.arange(0, 3), np.arange(3, 6)])
    np.testing.assert_allclose(out, [0.3, 0.3, 0.5, 0.2, 0.4, 0.4])
    np.testing.assert_allclose(St.running_max(v, St.original_batches(6)), v)


def test_irof_original_by_hand():
    """Model: p(class 1) = sigmoid(sum(x) - 2) (two logits [0, sum(x) - 2]). Three segments with
    labels 0, 1, 2: only labels 0 and 1 are removed (the loop stops at max), in order of the mean
    map, each filled with the mean of the current image; score = trapz over k = 1, 2, dx = 1."""
    inp = tfk.Input((2, 3, 1))
    h = tfk.layers.Flatten()(inp)
    out = tfk.layers.Dense(2, activation="softmax")(h)
    m = tfk.Model(inp, out)
    m.set_weights([np.stack([np.zeros(6), np.ones(6)], 1).astype(np.float32),
                   np.array([0.0, -2.0], np.float32)])
    x = np.array([[0.9, 0.8, 0.1], [0.7, 0.2, 0.0]], np.float32)[None, ..., None]
    seg = np.array([[[0, 0, 1], [2, 2, 1]]])
    amap = np.array([[[0.1, 0.3, 0.9], [0.0, 0.0, 0.5]]])     # segment 1 (mean 0.7) first
    scores, removed = St.irof_original(m, x, amap, np.array([1]), segments=seg)

    def p(img):
        return 1.0 / (1.0 + np.exp(-(img.sum() - 2.0)))

    cur = x[0, ..., 0].astype(np.float64)
    preds = []
    for s in (1, 0):
        cur = cur.copy()
        cur[seg[0] == s] = cur.mean()
        preds.append(p(cur) / p(x[0, ..., 0].astype(np.float64)))
    assert removed.tolist() == [2]
    np.testing.assert_allclose(scores[0], (preds[0] + preds[1]) / 2, rtol=1e-5)


# -- the study's settings ----------------------------------------------------------------------
@pytest.mark.parametrize("key,value,words", [
    ("stability_protocol", "random", "expected one of original, fixed"),
    ("repeats", -1, "expected an integer >= 1"),
    ("repeats", 0, "expected an integer >= 1"),
    ("repeats", 2.5, "expected an integer >= 1"),
    ("beta_max", 1.5, "expected a number in [0, 1]"),
    ("beta_max", -0.1, "expected a number in [0, 1]"),
    ("beta_step", 0, "expected a number in (0, 1]"),
    ("beta", -0.01, "expected a number in [0, 1]"),
    ("soft_width", 2, "expected a number in [0, 1]"),
    ("z", -1, "expected a finite number >= 0"),
    ("fallback", 0.5, "expected a finite number <= 0"),
    ("target_idx", 10, "expected an integer in [0, 9]"),
    ("n_samples", 0, "expected an integer >= 1"),
    ("intervention_batch", 0, "expected an integer >= 1"),
    ("layer_name", "conv1", "expected one of conv2"),
    ("layer_name_soft", "conv1", "expected one of fc3, fc2, fc1, conv2"),
    ("graph_stab", "yes", "expected True or False"),
    ("learn_explainer", False, "this reproduction needs True"),
    ("gen_attr", False, "this reproduction needs True"),
    ("vis_attr", False, "this reproduction needs True"),
    ("baseline_attr", False, "this reproduction needs True"),
    ("save_attr", True, "this reproduction needs False"),
    ("dataset_name", "CIFAR10", "this reproduction runs study 2 on MNIST only"),
])
def test_study_settings_are_checked(key, value, words, restore_settings):
    from xaitf import settings as S

    S.INTERVENTIONAL[key] = value
    with pytest.raises(XaitfError) as e:
        St.config(quick=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"interventional.{key}={value!r}: ") and words in msg


def test_study_settings_that_work(restore_settings):
    from xaitf import settings as S

    c = St.config(quick=False)
    assert c["betas"][:3] == [0.0, 0.01, 0.02] and len(c["betas"]) == 51 and c["repeats_used"] == 10
    assert c["stability_protocol"] == "original"
    S.INTERVENTIONAL.update(stability_protocol="fixed", graph_stab=False, eval_attr=False,
                            beta_max=0.2, beta_step=0.1, repeats=3, layer_name_soft="fc2")
    c = St.config(quick=False)
    assert c["betas"] == [0.0, 0.1, 0.2] and c["repeats_used"] == 3
    assert St.config(quick=True)["betas"] == [0.0, 0.01, 0.05, 0.1, 0.2]
    # every key of the dict has a line in the report's settings table
    assert set(S.INTERVENTIONAL) <= set(St.SETTING_NOTES)
