"""Interventional explanations (study 2): batched interventions against a weight-editing reference,
the z-test and its fallback, graph JSON/figure, attributions against scipy, stability, explainer."""
import json

import numpy as np
import pytest

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf.errors import DataError, MethodError, ModelError
from xaitf.keras_bridge import keras3, tfk
from xaitf.methods import interventional as I
from xaitf import interventional_plots as P

TARGET = 3


def build_small(km=tfk, seed=0, softmax=False):
    """conv -> relu -> maxpool -> conv -> relu -> maxpool -> flatten -> dense -> relu -> dense.

    conv1 has a fused ReLU, conv2 a separate ReLU layer; conv2 pads 'same' so the flatten holds
    2x2 positions per channel (a block of 4 rows per channel in fc1)."""
    inp = km.Input((12, 12, 1), name="image")
    h = km.layers.Conv2D(3, 3, activation="relu", name="conv1")(inp)
    h = km.layers.MaxPooling2D(2, name="pool1")(h)
    h = km.layers.Conv2D(4, 3, padding="same", name="conv2")(h)
    h = km.layers.ReLU(name="relu2")(h)
    h = km.layers.MaxPooling2D(2, name="pool2")(h)
    h = km.layers.Flatten(name="flatten")(h)
    h = km.layers.Dense(8, activation="relu", name="fc1")(h)
    out = km.layers.Dense(5, activation="softmax" if softmax else None, name="fc2")(h)
    m = km.Model(inp, out, name="small")
    rs = np.random.RandomState(seed)
    m.set_weights([(rs.randn(*w.shape) * 0.5).astype(np.float32) for w in m.get_weights()])
    return m


@pytest.fixture(scope="module")
def small():
    return build_small()


@pytest.fixture(scope="module")
def xs():
    return np.random.RandomState(1).rand(3, 12, 12, 1).astype(np.float32)


class Reference:
    """Plain reference: a copy of the model whose weights from unit j into ``effects`` are set to
    u before ``predict``. u: (P, |E|) for Dense (P rows of parent channel j), (kh, kw, |E|) for
    Conv2D."""

    def __init__(self, model):
        self.model = model
        self.copy = tfk.models.clone_model(model)
        self.copy.set_weights(model.get_weights())

    def __call__(self, layer, effects, j, u, x, target):
        self.copy.set_weights(self.model.get_weights())      # undo the previous edit
        lay = self.copy.get_layer(layer)
        w, b = lay.get_weights()
        if w.ndim == 4:
            for q, e in enumerate(effects):
                w[:, :, j, e] = u[:, :, q]
        else:
            flat_c = self.model.get_layer("flatten").input.shape[-1] if layer == "fc1" else None
            rows = np.arange(j, w.shape[0], flat_c) if flat_c else np.array([j])
            for q, e in enumerate(effects):
                w[rows, e] = u[:, q]
        lay.set_weights([w, b])
        return self.copy.predict(x, verbose=0)[:, target]


@pytest.fixture(scope="module")
def reference(small):
    return Reference(small)


CASES = [("conv2", [0, 2], 3, (3, 3, 2)), ("fc1", [1, 5, 7], 4, (4, 3)), ("fc2", [TARGET], 8, (1, 1))]


@pytest.mark.parametrize("layer,effects,n_units,slice_shape", CASES)
def test_batched_hard_equals_weight_editing(small, xs, reference, layer, effects, n_units, slice_shape):
    y, y_obs = I.intervene(small, layer, effects, xs, TARGET, u="hard", batch_size=5)
    assert y.shape == (n_units, len(xs))
    np.testing.assert_allclose(y_obs, small.predict(xs, verbose=0)[:, TARGET], rtol=1e-5, atol=1e-5)
    changed = 0
    for j in range(n_units):
        ref = reference(layer, effects, j, np.zeros(slice_shape, np.float32), xs, TARGET)
        assert np.abs(y[j] - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
        changed += np.abs(ref - y_obs).max() > 1e-3
    assert changed > 0   # the interventions really change the output


@pytest.mark.parametrize("layer,effects,n_units,slice_shape", CASES)
def test_batched_soft_equals_weight_editing(small, xs, reference, layer, effects, n_units, slice_shape):
    u = np.random.default_rng(7).uniform(-0.8, 0.8, (n_units, len(xs)) + slice_shape).astype(np.float32)
    y, _ = I.intervene(small, layer, effects, xs, TARGET, u=u, batch_size=4)
    for j in range(n_units):
        for s in range(len(xs)):
            ref = reference(layer, effects, j, u[j, s], xs[s:s + 1], TARGET)[0]
            assert abs(y[j, s] - ref) <= 1e-5 * max(1.0, abs(ref))


def test_soft_draws_are_seeded_and_in_range(small, xs):
    a, _ = I.intervene(small, "conv2", [1], xs, TARGET, u="soft", low=0.2, high=0.21, seed=1)
    b, _ = I.intervene(small, "conv2", [1], xs, TARGET, u="soft", low=0.2, high=0.21, seed=1, batch_size=2)
    c, _ = I.intervene(small, "conv2", [1], xs, TARGET, u="soft", low=0.2, high=0.21, seed=2)
    np.testing.assert_allclose(a, b, rtol=1e-6)          # independent of chunking
    assert np.abs(a - c).max() > 0
    d = I.soft_draw(1, (2, 0), (3, 3, 3, 1), 0.2, 0.21)
    assert d.min() >= 0.2 and d.max() <= 0.21 and np.unique(d).size == d.size
    # the same draws passed explicitly give the same logits
    k = I.Chain(small).index("conv2")
    u = np.stack([I.soft_draw(1, (k, j), (3, 3, 3, 1), 0.2, 0.21) for j in range(3)])
    e, _ = I.intervene(small, "conv2", [1], xs, TARGET, u=u)
    np.testing.assert_allclose(a, e, rtol=1e-6)


def test_chain_strips_softmax_and_matches_keras3(xs):
    soft = build_small(softmax=True)
    chain = I.Chain(soft)
    logits = chain.forward(xs)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), soft.predict(xs, verbose=0),
                               rtol=1e-5, atol=1e-6)
    k3 = build_small(km=keras3())
    np.testing.assert_allclose(I.Chain(k3).forward(xs), build_small().predict(xs, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("km_name", ["tfk", "keras3"])
def test_input_scaling_layers_run_in_the_chain(km_name):
    """Rescaling / Normalization at the input (Keras 3 models take 0..255 this way): run as they are,
    so the chain's logits are the model's and a graph is learned through them."""
    km = tfk if km_name == "tfk" else keras3()
    rng = np.random.RandomState(2)
    inp = km.Input((10, 10, 1))
    h = km.layers.Rescaling(1 / 255.0)(inp)
    h = km.layers.Normalization(mean=0.4, variance=0.09)(h)
    h = km.layers.Conv2D(3, 3, activation="relu")(h)
    h = km.layers.Conv2D(4, 3, activation="relu")(h)
    out = km.layers.Dense(3)(km.layers.GlobalAveragePooling2D()(h))
    m = km.Model(inp, out)
    x = (rng.rand(40, 10, 10, 1) * 255).astype(np.float32)
    chain = I.Chain(m)
    assert [e.role for e in chain.entries][:2] == ["scale", "scale"]
    np.testing.assert_allclose(chain.forward(x), np.asarray(m(x)), rtol=1e-5, atol=1e-5)
    y = chain.forward(x).argmax(1)
    maps = xaitf.create_explainer("interventional", m, data=(x, y), progress=False)(x[:2], y[:2])
    assert maps.shape == (2, 10, 10) and np.isfinite(maps).all()


def test_unsupported_layers_raise_clear_errors():
    inp = tfk.Input((8, 8, 1))
    h = tfk.layers.Conv2D(2, 3)(inp)
    h = tfk.layers.Reshape((36, 2), name="odd_reshape")(h)
    h = tfk.layers.Flatten()(h)
    m = tfk.Model(inp, tfk.layers.Dense(3)(h))
    with pytest.raises(ModelError, match="odd_reshape"):
        I.Chain(m)
    a = tfk.layers.Conv2D(2, 3, padding="same", name="branch")(inp)
    h = tfk.layers.Add(name="join")([inp, a])
    m2 = tfk.Model(inp, tfk.layers.Dense(3)(tfk.layers.Flatten()(h)))
    with pytest.raises(ModelError, match="join"):
        I.Chain(m2)


def test_z_test_and_fallback_by_hand():
    y_obs = np.array([10.0, 12.0, 14.0])            # mean 12, sample std 2
    # threshold for a row with sample std 1: 12 - 1.65 * sqrt(1/3 + 4/3) = 9.8699
    y_w = np.array([[5.0, 6.0, 7.0],                # mean 6   -> kept
                    [11.9, 12.0, 12.1],             # mean 12  -> not kept
                    [9.0, 10.0, 11.0]])             # mean 10 > 9.8699 -> not kept
    res = I.select_units(y_w, y_obs, z=1.65)
    assert res["selected"] == [0] and res["rule"] == "z-test"
    np.testing.assert_allclose(res["threshold"][0], 12 - 1.65 * np.sqrt(1 / 3 + 4 / 3))
    assert I.select_units(y_w[2:], y_obs, z=1.0)["selected"] == [0]   # 10 < 12 - 1.29
    # nothing passes the z-test: fallback keeps mean relative drops below -0.001
    y_w = np.stack([y_obs * 0.9995, y_obs * 0.998, y_obs])
    res = I.select_units(y_w, y_obs)
    assert res["rule"] == "fallback" and res["selected"] == [1]
    np.testing.assert_allclose(res["relative"], [-0.0005, -0.002, 0.0], atol=1e-12)
    res = I.select_units(np.stack([y_obs, y_obs + 1]), y_obs)
    assert res["selected"] == [] and res["rule"] == "none"


def test_class_samples_keeps_correct_ones_only(small):
    chain = I.Chain(small)
    x = np.random.RandomState(3).randn(60, 12, 12, 1).astype(np.float32)
    pred = chain.forward(x).argmax(1)
    t = np.bincount(pred).argmax()
    labels = pred.copy()
    labels[np.flatnonzero(pred == t)[0]] = (t + 1) % 5     # labelled otherwise: left out
    wrong = np.flatnonzero(pred != t)[0]
    labels[wrong] = t                                       # labelled t but predicted otherwise
    got = I.class_samples(chain, x, labels, t, 100)
    want = x[(labels == t) & (pred == t)]
    np.testing.assert_array_equal(got, want)
    assert len(I.class_samples(chain, x, labels, t, 2)) == 2
    with pytest.raises(DataError, match="no correctly classified"):
        I.class_samples(chain, x, np.full(60, 4), 4, 10)


@pytest.fixture(scope="module")
def learned(small):
    x = np.random.RandomState(5).rand(60, 12, 12, 1).astype(np.float32)
    y = I.Chain(small).forward(x).argmax(1)
    t = int(np.bincount(y).argmax())
    return x, y, t, I.learn_graph(small, x, y, t, n_samples=20, soft=False)


def test_graph_walks_top_down_and_round_trips(small, learned, tmp_path):
    x, y, t, g = learned
    assert g.layers == ["fc2", "fc1", "conv2"]
    assert [lk.parent for lk in g.links] == ["fc1", "conv2", "conv1"]
    assert g["fc2"][1] == [t] and g.target == t and g.n_samples == 20
    for upper, lower in zip(g.links[:-1], g.links[1:]):
        assert lower.effects == upper.parents           # E = selected; descend
    assert g["conv2"][0], "the tiny graph should reach conv1"
    path = I.save_graph(g, tmp_path / "graph.json")
    d = json.load(open(path))
    assert d["target"] == t and d["model"] == "small" and d["layers"][0]["layer"] == "fc2"
    assert d["settings"]["soft_interventions"] is False
    g2 = I.load_graph(path)
    assert g2.to_dict() == g.to_dict()
    png = P.save(P.graph_figure(g2, model=small), tmp_path / "graph.png")
    import matplotlib.image as mpimg
    img = mpimg.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 400 and img[..., :3].std() > 0.05
    with pytest.raises(DataError):
        I.load_graph(tmp_path / "missing.json")


def test_keras3_model_learns_the_same_graph(learned):
    x, y, t, g = learned
    g3 = I.learn_graph(build_small(km=keras3()), x, y, t, n_samples=20, soft=False)
    assert [lk.parents for lk in g3.links] == [lk.parents for lk in g.links]


def test_hard_graph_matches_selection_on_reference_logits(small, learned, reference):
    x, y, t, g = learned
    xs = I.class_samples(I.Chain(small), x, y, t, 20)
    parents, effects = g["fc2"]
    y_w = np.stack([reference("fc2", effects, j, np.zeros((1, 1), np.float32), xs, t)
                    for j in range(8)])
    assert I.select_units(y_w, small.predict(xs, verbose=0)[:, t])["selected"] == parents


def test_node_attributions_match_scipy(small, xs):
    from scipy.signal import convolve2d

    g = I.CausalGraph(TARGET, [I.Link("conv2", "conv1", [0, 2], [1, 3])])
    maps, ch = I.node_attributions(small, g, xs, "conv2", resize=False)
    assert ch == [1, 3] and maps.shape == (3, 12, 12, 2)   # (10 + 3 - 1) full
    sub = tfk.Model(small.inputs, small.get_layer("conv1").output)
    w1, b1 = small.get_layer("conv1").get_weights()
    pre = np.asarray(tf.nn.conv2d(xs, w1, 1, "VALID") + b1)     # conv1 before its ReLU
    assert np.abs(np.maximum(pre, 0) - sub.predict(xs, verbose=0)).max() < 1e-5
    w2 = small.get_layer("conv2").get_weights()[0]
    for n in range(3):
        for q, c in enumerate([1, 3]):
            acc = 0
            for i in [0, 2]:
                m = convolve2d(pre[n, :, :, i], w2[:, :, i, c], mode="full")
                e = np.exp(m - m.max())
                acc = acc + e / e.sum()
            np.testing.assert_allclose(maps[n, :, :, q], acc / 2, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(maps.sum((1, 2)), 1.0, rtol=1e-5)
    full = I.combined_attribution(small, g, xs, "conv2")
    assert full.shape == (3, 12, 12) and np.all(full >= 0)


def test_explainer_learns_per_class_and_accepts_graphs(small, learned, tmp_path):
    x, y, t, g = learned
    ex = xaitf.create_explainer("interventional", small, data=(x, y), progress=False)
    maps = ex(x[:4], np.full(4, t))
    assert maps.shape == (4, 12, 12) and np.isfinite(maps).all()
    assert list(ex.graphs) == [t]
    soft = ex.graphs[t]
    assert soft.settings["soft_interventions"] is True     # settings default: soft
    path = I.save_graph(soft, tmp_path / "g.json")
    ex2 = xaitf.create_explainer("interventional", small, graph=str(path), progress=False)
    np.testing.assert_allclose(ex2(x[:4], np.full(4, t)), maps, rtol=1e-6)
    other = (t + 1) % 5
    with pytest.raises(MethodError, match="needs data"):
        ex2(x[:1], [other])
    with pytest.raises(ModelError, match="layer_name"):
        xaitf.create_explainer("interventional", small, layer_name="fc1")


def test_explainer_default_layer_and_what_it_needs(small, learned):
    x, y, _, _ = learned
    # the maps' layer defaults to the last Conv2D fed by a Conv2D (LeNet's conv2, study 2's)
    assert xaitf.create_explainer("interventional", small, data=(x, y)).layer == "conv2"
    km = tfk
    inp = km.Input((12, 12, 1))
    one = km.Model(inp, km.layers.Dense(3)(km.layers.Flatten()(km.layers.Conv2D(2, 3, name="only")(inp))))
    with pytest.raises(ModelError, match=r"fed by another Conv2D \(layer_name\); this model has none "
                                         r"\(Conv2D layers: only\)"):
        xaitf.create_explainer("interventional", one, data=(x, y))
    with pytest.raises(MethodError, match=r"pass data=\(images, labels\).*--set interventional.data=SOURCE"):
        xaitf.create_explainer("interventional", small)
    with pytest.raises(MethodError, match=r"data='d.npz': expected \(images, labels\) arrays"):
        xaitf.create_explainer("interventional", small, data="d.npz")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """The small softmax model as .h5, a labelled .npz of 0..255 images (labels = its predictions,
    so every image is correctly classified), the same images without labels (.npy) and one as a PNG."""
    from PIL import Image

    d = tmp_path_factory.mktemp("iv_cli")
    model = build_small(softmax=True)
    model.save(d / "small.h5")
    raw = (np.random.RandomState(5).rand(60, 12, 12, 1) * 255).astype(np.uint8)
    labels = np.asarray(model(raw / np.float32(255))).argmax(1)
    np.savez(d / "data.npz", x=raw, y=labels)
    np.save(d / "images.npy", raw)
    Image.fromarray(raw[0, :, :, 0]).save(d / "one.png")
    return {"dir": d, "model": d / "small.h5", "raw": raw, "labels": labels, "keras": model}


def test_command_lines_learn_the_graphs_from_labelled_data(cli_files, tmp_path, capsys, restore_settings):
    from conftest import run_heatmap, settings_restored
    from xaitf.__main__ import main as xaitf_main
    from xaitf.errors import XaitfError

    f = cli_files
    x = f["raw"] / np.float32(255)
    ex = xaitf.create_explainer("interventional", f["keras"], data=(x, f["labels"]), progress=False)
    # heatmap_script: no data or graph -> one line saying how; --set interventional.data=SOURCE
    # is fitted as the explained image (/255), so its map equals the API's
    code, out, err = run_heatmap(capsys, "-ip", f["dir"] / "one.png", "-mp", f["model"], "-hm",
                                 "interventional", "-op", tmp_path / "hm")
    assert code == 1 and len(err.splitlines()) == 1 and "--set interventional.data=SOURCE" in err, err
    with settings_restored():           # --set changes this process's settings
        code, out, err = run_heatmap(capsys, "-ip", f["dir"] / "one.png", "-mp", f["model"], "-hm",
                                     "interventional", "-op", tmp_path / "hm", "--save-arrays",
                                     "--set", f"interventional.data={f['dir'] / 'data.npz'}")
    assert code == 0, err
    assert "interventional: graphs learned from" in out and "60 images)" in out
    hm = np.load(next((tmp_path / "hm" / "one").glob("*.npz")))["interventional"]
    target = int(np.asarray(f["keras"](x[:1])).argmax())
    np.testing.assert_allclose(hm, ex(x[:1], [target])[0], rtol=1e-5, atol=1e-7)
    # run: the graphs are learned from its own --data images and labels by default
    base = ["run", "--model", str(f["model"]), "--methods", "interventional", "--no-progress",
            "--index-root", str(tmp_path / "index")]
    assert xaitf_main(base + ["--data", str(f["dir"] / "data.npz"), "--out", str(tmp_path / "run")]) == 0
    import h5py

    with h5py.File(tmp_path / "run" / "store.h5", "r", locking=False) as h:
        stored, targets = h["maps"]["interventional"][()], h["targets"][()]
    np.testing.assert_allclose(stored, ex(x, targets), rtol=1e-5, atol=1e-7)
    # without labels it says what to give instead
    with pytest.raises(XaitfError, match="--data has no labels: add --set interventional.data=SOURCE"):
        xaitf_main(base + ["--data", str(f["dir"] / "images.npy"), "--out", str(tmp_path / "run2")])
    with pytest.raises(XaitfError, match="interventional.data=.*has no labels"):
        xaitf_main(base + ["--data", str(f["dir"] / "images.npy"), "--out", str(tmp_path / "run3"),
                           "--set", f"interventional.data={f['dir'] / 'images.npy'}"])


def test_graph_stability_shapes_and_determinism(small, learned, tmp_path):
    x, y, t, g = learned
    betas = [0.0, 0.05, 0.3]
    r1 = I.graph_stability(small, x, y, g, "fc2", betas=betas, repeats=3, n_samples=20, seed=4)
    r2 = I.graph_stability(small, x, y, g, "fc2", betas=betas, repeats=3, n_samples=20, seed=4)
    np.testing.assert_array_equal(r1["counts"], r2["counts"])
    assert r1["counts"].shape == (3, 8) and r1["rates"].shape == (3, len(g["fc2"][0]))
    # beta = 0 is the hard intervention the graph was learned with: every node, every repeat
    assert np.all(r1["rates"][0] == 1.0) and r1["mean_rate"][0] == 100.0
    assert np.all((r1["rates"] >= 0) & (r1["rates"] <= 1))
    P.save(P.stability_curve_figure(r1, reference=P.STUDY2_STABILITY), tmp_path / "curve.png")
    P.save(P.stability_hist_figure(r1), tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 5000
