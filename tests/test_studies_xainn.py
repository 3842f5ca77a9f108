"""Study 3 (XAINN) through ``python -m xaitf.studies xainn --quick``, in-process: accuracy table beside
the study's numbers, class maps, SHAP DeepExplainer and LIME outputs, plus the study's helpers."""

import numpy as np
import pytest

from conftest import run_quick_study
from PIL import Image

import xaitf  # noqa: F401
from xaitf.studies import STUDIES
from xaitf.studies import xainn as X


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    if not (data_dir / "cifar10_test1000.npz").is_file():
        pytest.skip("no CIFAR-10 subset in the data directory")
    return run_quick_study("xainn", tmp_path_factory.mktemp("studies"), data_dir)


def test_registered():
    assert STUDIES["xainn"] == "xaitf.studies.xainn"


def test_accuracy_rows_beside_reference(study):
    r, folder = study
    rows = {row["model"]: row for row in r["accuracy"]}
    assert set(rows) == {"xainn_baseline", "xainn_softmax", "xainn_poollinear"}
    for name, ref in (("xainn_baseline", 0.836), ("xainn_softmax", 0.638), ("xainn_poollinear", 0.790)):
        assert 0.0 <= rows[name]["test_accuracy"] <= 1.0
        assert rows[name]["reference_accuracy"] == ref
        assert 0.0 <= rows[name]["map_agreement"] <= 1.0
        assert rows[name]["train_images"] == X.QUICK["train_limit"]      # quick: trained on a subset
        assert rows[name]["model_source"] == "trained"
    report = (folder / "report.md").read_text()
    for text in ("| Model 1 (Baseline) |", "| Model 2 (Softmax) |", "| Model 3 (PoolLinear) |", "0.836",
                 "0.638", "0.79", "2,000", "QUICK run"):
        assert text in report
    assert X.ranking_sentence(r["accuracy"]) in report


def test_ranking_sentence():
    rows = [{"test_accuracy": a, "reference_accuracy": ref} for a, ref in
            ((0.534, 0.836), (0.532, 0.638), (0.507, 0.790))]
    assert X.ranking_sentence(rows) == ("Ranking by test accuracy: ours M1 > M2 > M3 (0.534 / 0.532 / 0.507), "
                                        "study M1 > M3 > M2: a different ranking.")
    rows[2]["test_accuracy"] = 0.533
    assert X.ranking_sentence(rows).endswith("study M1 > M3 > M2: the same ranking.")


def test_figures_exist_with_sane_sizes(study):
    r, folder = study
    names = ["class_maps_table", "lime"] + [f"{k}_{m}" for k in ("class_maps", "shap")
                                            for m in ("xainn_baseline", "xainn_softmax", "xainn_poollinear")]
    for name in names:
        path = folder / f"{name}.png"
        assert path.is_file(), name
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200, (name, im.size)
        assert f"{name}.png" in (folder / "report.md").read_text()


def test_shap_and_lime_records(study):
    r, _ = study
    assert [s["model"] for s in r["shap"]] == [n for n, _ in X.VARIANTS]
    for s in r["shap"]:
        assert s["background"] == 54 and s["images"] == X.QUICK["shap_images"]
        assert s["mean_abs_value_top1"] > 0                 # additivity was checked inside the explainer
    softmax_note = next(s["explained"] for s in r["shap"] if s["model"] == "xainn_softmax")
    assert "no final softmax" in softmax_note             # model 2 is explained on its output as it is
    for s in r["lime"]:
        assert 0.0 < s["kept_pixel_fraction"] <= 1.0
        assert s["segments_mean"] >= 10                   # quickshift sized for 32x32 images, not 1-2 segments
    assert r["settings"]["hide_color"] == pytest.approx(1 / 255)


def test_upsample_and_agreement_helpers():
    rs = np.random.RandomState(0)
    maps = rs.rand(2, 16, 16, 10).astype(np.float32)
    up = X.upsample(maps)
    assert up.shape == (2, 32, 32, 10)
    const = np.full((1, 16, 16, 10), 3.0, np.float32)
    np.testing.assert_allclose(X.upsample(const), 3.0, rtol=1e-6)
    np.testing.assert_allclose(up.mean(axis=(1, 2)), maps.mean(axis=(1, 2)), atol=0.05)
    maps[0, ..., 4] += 5
    maps[1, ..., 7] += 5
    assert X.map_agreement(maps, [4, 7]) == 1.0
    assert X.map_agreement(maps, [4, 3]) == 0.5


def test_class_maps_are_the_trunk_output():
    from xaitf.zoo import registry

    model = registry.build("xainn_softmax")
    x = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32)
    maps = X.class_maps(model, x)
    assert maps.shape == (2, 16, 16, 10)
    # model 2's output is the spatial mean of the per-pixel softmax of exactly these maps
    e = np.exp(maps - maps.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True)).mean(axis=(1, 2))
    np.testing.assert_allclose(model(x, training=False).numpy(), probs, atol=1e-5)
