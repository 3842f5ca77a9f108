"""Study 4 (LIME / Kernel SHAP / LRP, degradation, Bayesian MLP) through
``python -m xaitf.studies mnist_cifar --quick``, in-process, plus the study's Bayesian helpers
against analytic answers."""

import numpy as np
import pytest

from conftest import run_quick_study
from PIL import Image

import xaitf  # noqa: F401
from xaitf.studies import STUDIES
from xaitf.studies import mnist_cifar as M


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    if not (data_dir / "cifar10_test1000.npz").is_file():
        pytest.skip("no CIFAR-10 subset in the data directory")
    return run_quick_study("mnist_cifar", tmp_path_factory.mktemp("studies"), data_dir)


def test_registered():
    assert STUDIES["mnist_cifar"] == "xaitf.studies.mnist_cifar"


def test_degradation_table(study):
    r, folder = study
    for key in ("mnist_cnn", "cifar_vgg"):
        rows = {d["method"]: d for d in r["degradation"][key]}
        assert {"lime", "shap", "random"} <= set(rows)
        for d in rows.values():
            assert 0.0 <= d["accuracy"] <= 1.0 and 0.0 <= d["accuracy_original"] <= 1.0
            assert 0.0 <= d["confidence_true"] <= 1.0
            assert 0.0 <= d["accuracy_fill_alt"] <= 1.0          # salt-and-pepper fill, same maps
            assert d["kept_pixels"] == round(0.2 * (784 if key == "mnist_cnn" else 1024))   # real 32x32 grid
    assert "lrp.epsilon" in {d["method"] for d in r["degradation"]["mnist_cnn"]}
    assert "deep_taylor" in {d["method"] for d in r["degradation"]["cifar_vgg"]}   # native, on the VGG
    assert "deep_taylor" not in r["failed"]["cifar_vgg"] and "lrp.epsilon" not in r["failed"]["cifar_vgg"]
    report = (folder / "report.md").read_text()
    for text in ("## Degradation test", "| LIME |", "| Kernel SHAP |", "| LRP-Epsilon (study: LRP) |",
                 "| random map |", "| DeepTaylor |", "0.416", "0.198", "0.232", "0.145", "0.229", "QUICK run"):
        assert text in report, text


def test_bayesian_refusal_and_saliency(study):
    r, folder = study
    b = r["bayesian"]["refusal"]
    assert b["noise_images"] == 100
    assert b["noise_refused_fraction"] >= 0.9            # uniform noise is refused (study: 100/100)
    assert 0.0 <= b["skipped_fraction"] <= 1.0
    assert b["skipped_fraction"] < b["noise_refused_fraction"]   # digits are refused less often than noise
    s = r["bayesian"]["saliency"]
    for k in ("confidence_original", "confidence_important_noised", "confidence_random_noised"):
        assert 0.0 <= s[k] <= 1.0
    assert s["mean_std"] > 0                             # the sampled networks differ
    assert s["replaced_pixels"] == round(0.2 * 784)
    report = (folder / "report.md").read_text()
    assert "1242 / 10000" in report and "100 / 100" in report


def test_original_notebook_replays(study):
    """degradation_mode 'both' (the default): the three MNIST notebooks replayed beside the paper."""
    r, folder = study
    assert r["settings"]["degradation_mode"] == "both"
    rows = {d["key"]: d for d in r["degradation_original"]["mnist_cnn"]}
    assert set(rows) == {"lrp", "lime", "shap"}
    assert [rows[k]["paper"] for k in ("lrp", "lime", "shap")] == [0.145, 0.416, 0.232]
    for d in rows.values():
        assert 0.0 <= d["accuracy"] <= 1.0 and d["intended_pixels"] == 156 and d["fill"] == 0.0
        assert all(v is None or 0.0 <= v <= 1.0 for v in d["corrected"].values())
    assert rows["lrp"]["kept_pixels_mean"] < 100              # divmod(i, 28) on the 28x28x3 map
    assert rows["lime"]["kept_pixels_mean"] == rows["shap"]["kept_pixels_mean"] == 156
    report = (folder / "report.md").read_text()
    for text in ("## Degradation: the original notebooks replayed (MNIST)", "divmod(i, 28)",
                 "removed segments = 255", "lime's default quickshift", "Degradation mode: both"):
        assert text in report, text


def test_synthetic_notmnist_refusal(study):
    r, folder = study
    letters = r["bayesian"]["refusal"]["notmnist"]
    assert letters["label"] == "synthetic notMNIST" and letters["synthetic"] is True
    assert letters["images"] == r["settings"]["notmnist_images"] == 400
    assert 0 <= letters["refused"] <= letters["images"]
    assert list(letters["reference"]) == [395, 399]
    report = (folder / "report.md").read_text()
    assert "| synthetic notMNIST letters refused |" in report and "395 / 399" in report
    assert "NOT notMNIST" in report


def test_figures(study):
    r, folder = study
    for name in ("compare_mnist_cnn", "compare_cifar_vgg", "all_methods_mnist_cnn", "all_methods_cifar_vgg",
                 "bayes_saliency", "bayes_refusal", "bayes_notmnist", "degradation_original_mnist_cnn"):
        path = folder / f"{name}.png"
        assert path.is_file(), name
        with Image.open(path) as im:
            assert im.size[0] > 400 and im.size[1] > 250, (name, im.size)


def test_bayes_saliency_on_a_deterministic_linear_model(linear_model):
    """A deterministic network: every 'sampled' gradient is W[:, c], the std is 0."""
    x = np.random.RandomState(0).rand(3, 6, 6, 1).astype(np.float32)
    t = np.array([0, 2, 1])
    g = M.bayes_saliency(linear_model, x, t, samples=4)
    assert g.shape == (4, 3, 6, 6, 1)
    w = linear_model.get_layer("logits").get_weights()[0]          # (36, 3)
    for i, c in enumerate(t):
        np.testing.assert_allclose(g[:, i].reshape(4, -1), np.tile(w[:, c], (4, 1)), rtol=1e-5, atol=1e-6)
    assert np.all(g.std(0) == 0)


def test_bayes_saliency_samples_differ():
    from xaitf.zoo import registry

    model = registry.build("bayesian_mlp", n_train=100)
    x = np.random.RandomState(0).rand(2, 28, 28, 1).astype(np.float32)
    g = M.bayes_saliency(model, x, np.array([3, 5]), samples=3, seed=0)
    assert g.shape == (3, 2, 28, 28, 1)
    assert not np.allclose(g[0], g[1])                              # one network per call
    g2 = M.bayes_saliency(model, x, np.array([3, 5]), samples=3, seed=0)
    np.testing.assert_allclose(g, g2, rtol=1e-5, atol=1e-6)        # seeded


def test_replace_pixels():
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    mask = np.zeros((2, 4, 4), bool)
    mask[0, :2] = True
    out = M.replace_pixels(x, mask, seed=0)
    np.testing.assert_array_equal(out[~mask], x[~mask])
    assert np.all((out[mask] >= 0) & (out[mask] < 1)) and not np.allclose(out[mask], 0.5)


def test_surrogates_setting_picks_native_or_library_paths():
    assert [M.registry_name(n, {}) for n in ("lime", "shap", "grad")] == ["lime", "kernelshap", "grad"]
    lib = {"surrogates": "lib"}
    assert [M.registry_name(n, lib) for n in ("lime", "shap", "lrp.z")] == ["lime.lib", "shap.lib", "lrp.z"]


def test_a_failing_method_is_left_out_and_reported():
    class FakeMaps:
        failed = {}

        def __call__(self, name, idx):
            if name == "bad":
                raise ValueError("placeholder not fed\nsecond line")
            return np.zeros((len(idx), 2, 2))

    fm, said = FakeMaps(), []
    out = M._try_maps(fm, ["grad", "bad", "lime"], [0, 1], "cifar_vgg", said.append)
    assert list(out) == ["grad", "lime"] and out["grad"].shape == (2, 2, 2)
    assert fm.failed == {"bad": "ValueError: placeholder not fed"}
    assert any("bad failed" in s for s in said)
    assert list(M._try_maps(fm, ["bad", "grad"], [0], "cifar_vgg", said.append)) == ["grad"]   # not retried
