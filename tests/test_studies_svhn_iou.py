"""Study 5 (target-digit classifier, IoU of heatmaps) through ``python -m xaitf.studies svhn_iou --quick``
in-process on the synthetic house-number set, the IoU helpers against exact answers, the synthetic
generator, and the switch to SVHN format 1 when the data directory holds it."""

import numpy as np
import pytest

from conftest import run_quick_study
from PIL import Image

import xaitf  # noqa: F401
from xaitf.data import svhn
from xaitf.data.synthetic_svhn import load_synthetic_svhn, make_house_number, synthetic_svhn_dataset
from xaitf.errors import DataError, InputError
from xaitf.studies import STUDIES, common as C
from xaitf.studies import svhn_iou as V


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    # an empty data directory: the study runs on its synthetic house numbers
    return run_quick_study("svhn_iou", tmp_path_factory.mktemp("studies"), tmp_path_factory.mktemp("no_svhn_here"))


def test_registered():
    assert STUDIES["svhn_iou"] == "xaitf.studies.svhn_iou"


def test_says_it_is_synthetic(study):
    r, folder = study
    assert r["data"]["kind"] == "synthetic" and r["data"]["is_svhn"] is False
    assert "not SVHN" in r["data"]["title"] and "SYNTHETIC" in r["data"]["source"]
    report = (folder / "report.md").read_text()
    assert "SYNTHETIC house numbers" in report and "NOT SVHN results" in report
    assert report.splitlines()[0].startswith("# Study 5") and "not SVHN" in report.splitlines()[0]
    assert r["model"]["source"] == "trained" and "svhn_resnet18_synthetic.h5" in r["model"]["note"]


def test_iou_values_in_range(study):
    r, folder = study
    rows = {m["method"]: m for m in r["methods"]}
    assert {"grad", "ig", "gradcam", "guided_gradcam", "occlusion", "lime", "random"} <= set(rows)
    for row in rows.values():
        for rule in V.RULES:
            for metric in ("iou_1", "iou_2"):
                s = row[rule][metric]
                assert s["n"] + s["empty"] == r["data"]["iou_images"]
                if s["mean"] is not None:
                    assert 0.0 <= s["mean"] <= 1.0
    assert "lrp.z" in rows and "lrp.z" not in r["skipped"]     # native LRP runs on the ResNet-18
    assert rows["lrp.z"]["map_finite"] and rows["lrp.z"]["map_abs_max"] > 0
    assert 0.0 < r["all_pixels_iou_1"]["mean"] < 1.0
    assert 0.0 <= r["test_accuracy"] <= 1.0
    report = (folder / "report.md").read_text()
    for text in ("| Gradient |", "| Grad-CAM |", "| random map |", "all pixels on", "0.11", "0.156"):
        assert text in report, text
    for name in ("iou_examples", "iou_summary", "training"):
        with Image.open(folder / f"{name}.png") as im:
            assert im.size[0] > 400 and im.size[1] > 200


def test_new_rows_have_finite_numbers(study):
    r, folder = study
    rows = {m["method"]: m for m in r["methods"]}
    for key in ("deepliftshap.train", "feature_ablation", "feature_permutation", "shapley"):
        assert key in rows and key not in r["skipped"], key
        row = rows[key]
        assert row["map_finite"] and row["map_abs_max"] > 0, key
        for rule in V.RULES:
            for metric in ("iou_1", "iou_2"):
                assert row[rule][metric]["mean"] is not None and np.isfinite(row[rule][metric]["mean"]), (key, rule)
        assert 0.0 < row["threshold_kept_fraction"] <= 1.0
    assert rows["deepliftshap.train"]["title"] == "DeepLiftShap (10 train images)"
    assert rows["feature_ablation"]["title"] == "FeatureAblation (SLIC 50)"            # --quick: superpixels
    assert rows["shapley"]["title"] == f"Shapley sampling ({r['settings']['shapley_samples']} x SLIC 50)"
    report = (folder / "report.md").read_text()
    for text in ("| DeepLiftShap (10 train images) |", "| FeatureAblation (SLIC 50) |",
                 "| FeaturePermutation (SLIC 50) |", "Shapley sampling"):
        assert text in report, text


def test_training_curves_have_held_out_entries(study):
    r, folder = study
    hist = r["model"]["history"]
    epochs = r["settings"]["epochs"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(hist[key]) == epochs and np.all(np.isfinite(hist[key])), key
    assert r["training_curves"]["note"] == "trained in this run"
    assert "held-out" in (folder / "report.md").read_text()


def test_report_states_the_headline_rule_and_the_random_map(study):
    r, folder = study
    report = (folder / "report.md").read_text()
    assert r["headline_rule"] == "threshold"
    assert "Headline binarisation rule: **threshold**" in report and ">= 0.8" in report
    b = r["below_random"]["threshold"]
    rows = {m["method"]: m for m in r["methods"]}
    rnd = rows["random"]["threshold"]["iou_1"]["mean"]
    assert b["random"] == pytest.approx(rnd)
    # computed, not assumed: exactly the methods whose mean IoU_1 is below the random map's
    want = [k for k, m in rows.items() if k != "random" and m["threshold"]["iou_1"]["mean"] < rnd]
    assert b["below"] == want
    assert set(b["gradient_below"]) == set(b["gradient"]) & set(want)
    if b["gradient_below"] and len(b["gradient_below"]) == len(b["gradient"]):
        assert "Every gradient/propagation method" in report
    assert f"the random map scores IoU_1 {rnd:.3f}" in report


def test_map_equal_to_ground_truth_scores_one():
    boxes = [[(3, 4, 5, 6)], [(0, 0, 8, 2), (10, 10, 3, 3)]]
    masks = np.stack([svhn.boxes_mask([(1, *b) for b in bx], (16, 16)) for bx in boxes]).astype(np.float64)
    s = V.iou_scores(masks, boxes, threshold=0.8)
    for rule in V.RULES:
        np.testing.assert_allclose(s[rule]["iou_1"], 1.0)
    # IoU_2 is per digit box (the best): one box scores 1; the mask of two apart boxes gets a box
    # around both, compared with each box's own: 16 / 169 for (0,0,8,2) inside (0,0,13,13)
    np.testing.assert_allclose(s["threshold"]["iou_2"], [1.0, 16 / 169])
    # a map that is the mask plus a constant still scores 1 (the rule min-max normalises |map|)
    np.testing.assert_allclose(V.iou_scores(masks + 5.0, boxes)["threshold"]["iou_1"], 1.0)
    # the inverse map (relevance outside the digit) scores 0
    np.testing.assert_allclose(V.iou_scores(1.0 - masks, boxes)["threshold"]["iou_1"], 0.0)


def test_target_digit_twice_is_scored_per_digit_box():
    """A "171" crop with target 1: the ground truth is each "1"'s own box, never the box enclosing
    both (which also covers the "7"). A map exactly on the first "1" scores IoU_1 = 24 / 48 (the
    union mask of the two 1-boxes) and IoU_2 = 1 (its box is the first 1's box); the enclosing-box
    answer would be 24 / 104 for both."""
    from xaitf.metrics import box_iou, iou_1, iou_2

    labelled = [[(1, 0, 0, 3, 8), (7, 5, 0, 3, 8), (1, 10, 0, 3, 8)]]      # (digit, left, top, width, height)
    gt = V.target_boxes(labelled, 1)
    assert gt == [[(0, 0, 3, 8), (10, 0, 3, 8)]]
    first = np.zeros((1, 16, 16))
    first[0, 0:8, 0:3] = 1.0
    s = V.iou_scores(first, gt, threshold=0.8)["threshold"]
    np.testing.assert_allclose(s["iou_1"], [24 / 48])
    np.testing.assert_allclose(s["iou_2"], [1.0])
    np.testing.assert_allclose(s["gt_boxes"], [[0, 0, 3, 8]])                 # the matching digit box
    # top-k keeps k = 48 pixels (the two 1-boxes' mask): with a graded map, the first "1" and
    # then the second
    graded = first * 2.0 + np.roll(first, 10, axis=2)
    s = V.iou_scores(graded, gt)["top_k"]
    np.testing.assert_allclose(s["iou_1"], [1.0])
    enclosing = [[(0, 0, 13, 8)]]                                           # what a union box would give
    kw = {"rule": "threshold", "threshold": 0.8, "absolute": True}
    np.testing.assert_allclose(iou_1(first, enclosing, **kw), [24 / 104])
    np.testing.assert_allclose(iou_2(first, gt, **kw), [24 / 104])          # the metric's default: union box
    np.testing.assert_allclose(iou_2(first, gt, match="best", **kw), [1.0])
    # a map on the second "1" matches the second box; a map on the "7" matches neither
    second = np.roll(first, 10, axis=2)
    np.testing.assert_allclose(V.iou_scores(second, gt)["threshold"]["iou_2"], [1.0])
    seven = np.roll(first, 5, axis=2)
    s = V.iou_scores(seven, gt)["threshold"]
    np.testing.assert_allclose(s["iou_1"], [0.0])
    np.testing.assert_allclose(s["iou_2"], [0.0])
    # a map on both "1"s: IoU_1 1, IoU_2 the box around both against the best single box
    both = first + second
    s = V.iou_scores(both, gt)["threshold"]
    np.testing.assert_allclose(s["iou_1"], [1.0])
    np.testing.assert_allclose(s["iou_2"], box_iou([0, 0, 13, 8], [0, 0, 3, 8]))


def test_history_of_a_loaded_model(tmp_path):
    import json

    model = tmp_path / "svhn_resnet18_synthetic.h5"
    info = {"source": "file", "path": str(model)}
    hist, note = V.history_of(info, tmp_path)
    assert hist == {} and "not trained in this run" in note and "holds no training history" in note
    card = {"history": {"loss": [0.7, 0.5], "accuracy": [0.5, 0.8], "val_loss": [0.6, 0.55],
                        "val_accuracy": [0.6, 0.7]}}
    (tmp_path / "svhn_resnet18_synthetic.json").write_text(json.dumps(card))
    hist, note = V.history_of(info, tmp_path)
    assert hist["val_loss"] == [0.6, 0.55] and "not trained in this run" in note and ".json" in note
    assert V.history_of({"source": "trained", "history": {"loss": [1.0]}}, tmp_path)[1] == "trained in this run"
    fig = V.training_figure(hist, "test", note)
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 2       # train and held-out


def test_all_pixels_iou_is_box_area_over_image_area():
    np.testing.assert_allclose(V.all_pixels_iou([[(2, 2, 4, 5)]], (10, 10)), [20 / 100])


def test_target_boxes():
    boxes = [[(1, 0, 0, 2, 2), (4, 3, 0, 2, 2), (1, 6, 0, 2, 2)], [(7, 1, 1, 1, 1)]]
    assert V.target_boxes(boxes, 1) == [[(0, 0, 2, 2), (6, 0, 2, 2)], []]


def test_synthetic_set_is_seeded_balanced_and_boxed():
    a = load_synthetic_svhn(24, size=48, target_digit=1, seed=3)
    b = load_synthetic_svhn(24, size=48, target_digit=1, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.boxes == b.boxes and a.images.shape == (24, 48, 48, 3) and a.images.dtype == np.uint8
    assert a.labels.sum() == 12 and a.synthetic and "SYNTHETIC" in a.source and "not SVHN" in a.source
    for lab, bx in zip(a.labels, a.boxes):
        assert lab == int(any(d == 1 for d, *_ in bx))             # label 1 iff a 1 is drawn
        assert 1 <= len(bx) <= 4
        for _, left, top, w, h in bx:                               # inside the crop (margin 10 px)
            assert left >= 0 and top >= 0 and left + w <= 48 + 1e-6 and top + h <= 48 + 1e-6 and w > 1 and h > 1
    c = load_synthetic_svhn(24, size=48, seed=4)
    assert not np.array_equal(a.images, c.images)
    with pytest.raises(InputError, match="target_digit"):
        load_synthetic_svhn(4, target_digit=12)


def test_house_number_boxes_hold_the_ink():
    img, boxes = make_house_number(np.random.RandomState(0), [1, 7, 4])
    assert [b[0] for b in boxes] == [1, 7, 4]
    lefts = [b[1] for b in boxes]
    assert lefts == sorted(lefts)
    # every digit box differs from the background around it (the glyph is drawn inside it)
    for _, left, top, w, h in boxes:
        inside = img[int(top):int(top + h), int(left):int(left + w)].astype(float)
        assert inside.std() > 5


def test_synthetic_dataset_split():
    ds, boxes = synthetic_svhn_dataset(10, 6, size=32, seed=0)
    assert ds.name == "svhn_synthetic" and ds.x_train.shape == (10, 32, 32, 3) and len(boxes) == 6
    assert ds.num_classes == 2 and "synthetic" in ds.split


def test_data_choice(tmp_path):
    p = {**C.study_params(None, "svhn_iou", {}), "train_images": 6, "test_images": 4, "size": 32}
    ds, boxes, kind, source = V.load_data(p, tmp_path, seed=0)
    assert kind == "synthetic" and "SYNTHETIC" in source
    with pytest.raises(DataError, match="svhn_iou.data=svhn"):
        V.load_data({**p, "data": "svhn"}, tmp_path, seed=0)
    with pytest.raises(DataError, match="auto, svhn or synthetic"):
        V.load_data({**p, "data": "mnist"}, tmp_path, seed=0)


def test_svhn_format1_is_used_when_present(tmp_path):
    from test_data import SVHN_RECORDS, _pattern, write_digit_struct

    folder = tmp_path / "svhn" / "train"
    folder.mkdir(parents=True)
    write_digit_struct(folder / "digitStruct.mat", [(n, b) for n, b, _ in SVHN_RECORDS])
    for name, _, (h, w) in SVHN_RECORDS:
        Image.fromarray(_pattern(h, w)).save(folder / name)
    p = {**C.study_params(None, "svhn_iou", {}), "size": 32}
    ds, boxes, kind, source = V.load_data(p, tmp_path, seed=0)
    assert kind == "svhn" and ds.name == "svhn" and "digitStruct.mat" in source
    assert len(boxes) == len(ds.y_test) and ds.x_test.shape[1:] == (32, 32, 3)
    assert len(ds.y_train) + len(ds.y_test) == 4                      # 2 images with a 1, 2 without (balanced)
