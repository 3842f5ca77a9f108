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


def test_map_equal_to_ground_truth_scores_one():
    boxes = [[(3, 4, 5, 6)], [(0, 0, 8, 2), (10, 10, 3, 3)]]
    masks = np.stack([svhn.boxes_mask([(1, *b) for b in bx], (16, 16)) for bx in boxes]).astype(np.float64)
    s = V.iou_scores(masks, boxes, threshold=0.8)
    for rule in V.RULES:
        np.testing.assert_allclose(s[rule]["iou_1"], 1.0)
    np.testing.assert_allclose(s["threshold"]["iou_2"], 1.0)      # box around the mask = the union box
    # a map that is the mask plus a constant still scores 1 (the rule min-max normalises |map|)
    np.testing.assert_allclose(V.iou_scores(masks + 5.0, boxes)["threshold"]["iou_1"], 1.0)
    # the inverse map (relevance outside the digit) scores 0
    np.testing.assert_allclose(V.iou_scores(1.0 - masks, boxes)["threshold"]["iou_1"], 0.0)


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
