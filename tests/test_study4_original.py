"""Study 4's replay of the original notebooks' MNIST degradation pipelines (degradation_mode
original): each notebook quirk on hand-made inputs, then the replays on a few real test images."""
import numpy as np
import pytest

import xaitf  # noqa: F401
from xaitf.errors import XaitfError
from xaitf.studies import mnist_cifar as M


def divmod_reference(flat_indices, width=28, grid=28):
    """The notebooks' top_n_indexes + get_other_pixels, spelt out with Python's divmod."""
    pairs = {divmod(int(i), width) for i in flat_indices}
    return {(r, c) for r, c in pairs if r < grid and c < grid}


def test_keep_count_truncates_as_the_notebooks():
    assert M.notebook_keep_count(0.2) == 156            # int(0.2 * 784) = int(156.8)
    assert M.notebook_keep_count(0.5) == 392


def test_divmod_indexing_of_a_28x28x3_map_keeps_the_expected_pixels():
    # the 156 largest values (all distinct) on the three channels of pixels 250..301 (raster order):
    # flat indices 750..905; only 750..783 fall on the grid, as pixels 750..783 (not 250..261)
    a = np.zeros((28, 28, 3))
    flat = a.reshape(-1)
    top = np.arange(750, 906)
    flat[top] = 1.0 + np.arange(len(top)) / 1000.0
    kept = M.notebook_kept_pixels(a, 156)
    expected = {divmod(i, 28) for i in range(750, 784)}
    assert {tuple(p) for p in np.argwhere(kept)} == expected == divmod_reference(top)
    assert kept.sum() == 34
    ranked = {divmod(p, 28) for p in range(250, 302)}          # the pixels the map actually ranks
    assert not ({tuple(p) for p in np.argwhere(kept)} & ranked)


def test_divmod_indexing_drops_everything_past_flat_index_783():
    a = np.zeros((28, 28, 3))
    a.reshape(-1)[1200:1356] = np.linspace(1, 2, 156)        # pixels 400..451, rows 14-16
    assert M.notebook_kept_pixels(a, 156).sum() == 0


def test_a_2d_map_keeps_its_own_top_pixels():
    a = np.random.default_rng(0).permutation(784).reshape(28, 28).astype(float)   # distinct values
    kept = M.notebook_kept_pixels(a, 156)
    assert kept.sum() == 156
    np.testing.assert_array_equal(kept, a >= np.sort(a.ravel())[-156])


def test_notebook_select_partitions_and_breaks_ties_as_bottleneck():
    rng = np.random.default_rng(1)
    for _ in range(20):
        v = rng.integers(0, 4, 60).astype(float)             # many ties
        k = int(rng.integers(0, 60))
        order = M.notebook_select(v, k)
        assert sorted(order.tolist()) == list(range(60))
        assert v[order[:k]].max(initial=-np.inf) <= v[order[k]] <= v[order[k + 1:]].min(initial=np.inf)
    # equal values: the algorithm's swaps reverse the array (bottleneck 1.6.1 gives the same)
    np.testing.assert_array_equal(M.notebook_select(np.zeros(5), 2), [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(M.notebook_select([3.0, 1.0, 2.0], 1)[1], 2)


def test_notebook_select_matches_bottleneck_when_installed():
    bn = pytest.importorskip("bottleneck")
    rng = np.random.default_rng(2)
    for shape in [(28, 28), (28, 28, 3)] * 10:
        a = rng.integers(0, 5, shape).astype(float)
        ours = set(M.notebook_ranked_indices(a, 156).tolist())
        assert ours == set(bn.argpartition(a, a.size - 156, axis=None)[-156:].tolist())


def test_destruct_fills_zero_outside_the_kept_pixels_in_every_channel():
    x = np.full((2, 4, 4, 3), 0.7, np.float32)
    kept = np.zeros((2, 4, 4), bool)
    kept[0, 1, 2] = kept[1, 3, 3] = True
    out = M.notebook_destruct(x, kept)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[kept], x[kept])
    assert np.all(out[~kept] == 0.0)


def test_input_analyser_map_is_the_image():
    x = np.random.default_rng(0).random((2, 28, 28, 3)).astype(np.float32)
    a = M.input_analyzer_maps(x)
    assert a.shape == x.shape and a.dtype == np.float64
    np.testing.assert_array_equal(a, x)


def test_original_methods_use_the_notebooks_settings():
    p = {"lime_samples": 1000, "shap_nsamples": 1000}
    assert M.method_params("shap.original", p, False)["background"] == 255.0
    assert M.method_params("shap", p, False)["background"] == 0.0              # the corrected pipeline
    lime = M.method_params("lime.original", p, False)
    assert (lime["kernel_size"], lime["max_dist"], lime["ratio"]) == (4, 200, 0.2)
    assert lime["hide_color"] is None and lime["mask_output"] is False
    assert M.registry_name("shap.original", {}) == "kernelshap"
    assert M.registry_name("lime.original", {"surrogates": "lib"}) == "lime.lib"


def test_the_255_fill_reaches_kernel_shap(linear_model):
    """The replay's explainer fills removed segments with 255: f(background) is f(all-255 image)."""
    from xaitf.registry import create_from_presets

    p = {"lime_samples": 20, "shap_nsamples": 30}
    ex = create_from_presets(M.registry_name("shap.original", p), linear_model, seed=0,
                             **M.method_params("shap.original", p, False))
    assert float(np.asarray(ex.params["background"])) == 255.0
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype(np.float32)
    fit = ex.fit(x, np.array([0, 1]))
    z = linear_model(np.full((1, 6, 6, 1), 255.0, np.float64)).numpy()[0].astype(np.float64)   # logits
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(fit["fnull"], probs[[0, 1]], rtol=1e-4, atol=1e-6)
    zero = create_from_presets(M.registry_name("shap", p), linear_model, seed=0,
                               **M.method_params("shap", p, False)).fit(x, np.array([0, 1]))
    assert not np.allclose(zero["fnull"], fit["fnull"])          # the corrected pipeline fills 0


@pytest.mark.parametrize("key,value", [("degradation_mode", "sometimes"), ("degradation_mode", 3),
                                       ("notmnist", "emnist"), ("notmnist_images", 0), ("notmnist_images", 2.5),
                                       ("keep", 1.5)])
def test_invalid_settings_are_refused(key, value):
    p = {"degradation_mode": "both", "notmnist": "auto", "notmnist_images": 400, "keep": 0.2, key: value}
    with pytest.raises(XaitfError, match=f"mnist_cifar.{key}"):
        M.check_params(p)


def test_invalid_setting_stops_the_command_before_any_work(tmp_path, restore_settings):
    from xaitf.studies.__main__ import main

    with pytest.raises(XaitfError, match="degradation_mode"):
        main(["mnist_cifar", "--quick", "--no-progress", "--out", str(tmp_path),
              "--set", "mnist_cifar.degradation_mode=sometimes"])
    assert not (tmp_path / "mnist_cifar").exists()


@pytest.fixture(scope="module")
def small_mnist(data_dir):
    """A quickly trained MNIST CNN and the first test images of the data directory."""
    from xaitf.studies import common as C

    model, _ = C.get_model_subset("mnist_cnn", "no_models_here", data_dir, seed=0, epochs=2, train_limit=3000,
                                  eval_limit=200)
    x, y, _ = C.load_split("mnist_cnn", data_dir)
    return model, x, y


def test_replays_on_five_images(small_mnist):
    model, x, y = small_mnist
    p = {"lime_samples": 100, "shap_nsamples": 100, "keep": 0.2, "fill": 0.0}
    maps = M.Maps(model, x, p, True, 0)
    idx = np.arange(5)
    corrected = M.part_degradation("mnist_cnn", model, maps, idx, y, dict(p, fill_alt=None),
                                   ["lime", "shap", "lrp.epsilon"], lambda s: None)
    rows = {r["key"]: r for r in M.part_original(model, maps, idx, y, p, corrected, lambda s: None)}
    assert set(rows) == {"lrp", "lime", "shap"}
    for r in rows.values():
        assert np.isfinite(r["accuracy"]) and 0.0 <= r["accuracy"] <= 1.0
        assert r["intended_pixels"] == 156 and r["images"] == 5 and r["fill"] == 0.0
        assert r["paper"] in (0.145, 0.416, 0.232) and 0.0 <= r["accuracy_undegraded"] <= 1.0
    lrp = rows["lrp"]
    assert lrp["kept_pixels_mean"] < 156 and lrp["fixed_indexing_kept_mean"] == 156   # the divmod quirk
    assert lrp["fixed_indexing_accuracy"] > lrp["accuracy"]        # the same ranking, pixels in place
    assert lrp["corrected"]["lrp.epsilon"] is not None
    assert rows["lime"]["kept_pixels_mean"] == 156 and rows["lime"]["segments_mean"] < 10   # coarse quickshift
    assert rows["shap"]["all_255_class"] in range(10)
    # the replays' maps are not the corrected ones: 255 fill and lime's default segmentation
    assert not np.allclose(maps("shap.original", idx), maps("shap", idx))
    assert not np.allclose(maps("lime.original", idx), maps("lime", idx))
    assert "measured" not in M.replay_reason(lrp) and M.replay_reason(rows["shap"]).endswith(".")
