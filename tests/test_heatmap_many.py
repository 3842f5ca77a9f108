"""heatmap_script.py -ip with several files, a folder or a glob: one figure per image and a summary
grid, in-process on a tiny CNN (fast, offline)."""
import re
import warnings

import numpy as np
import pytest

import xaitf
from conftest import make_cnn, run_heatmap
from xaitf.data import images
from xaitf.data.preprocess import preprocess

NAME = re.compile(r"^heatmap_\d{8}-\d{6}(_\d+)?\.png$")
SUMMARY = re.compile(r"^heatmap_summary_\d{8}-\d{6}(_\d+)?\.png$")


def run_main(capsys, *args):
    return run_heatmap(capsys, *args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("many")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_cnn(shape=(10, 10, 3), classes=4, seed=3).save(d / "cnn.h5")
    photos = d / "photos"
    photos.mkdir()
    rs = np.random.RandomState(0)
    for name in ("cat", "dog", "owl"):
        Image.fromarray(rs.randint(0, 256, (10, 10, 3)).astype(np.uint8)).save(photos / f"{name}.png")
    (photos / "notes.txt").write_text("not an image")
    Image.fromarray(rs.randint(0, 256, (16, 24)).astype(np.uint8)).save(d / "wide.png")   # gray, other size
    return d


def test_folder_one_figure_per_image_and_a_summary(files, tmp_path, capsys, restore_settings):
    out = tmp_path / "res"
    code, stdout, err = run_main(capsys, "-ip", files / "photos", "-mp", files / "cnn.h5", "-hm", "grad",
                                 "occlusion", "--save-arrays", "-op", out)
    assert code == 0, err
    for stem in ("cat", "dog", "owl"):
        pngs = sorted((out / stem).glob("*.png"))
        assert len(pngs) == 1 and NAME.match(pngs[0].name), pngs
        assert pngs[0].read_bytes()[:4] == b"\x89PNG"
    summary = sorted(out.glob("*.png"))
    assert len(summary) == 1 and SUMMARY.match(summary[0].name) and f"summary: {summary[0]}" in stdout
    assert not [p for p in out.rglob(".*")]                              # no temp files left
    # each image's arrays equal the method run on that image alone
    model = xaitf.load_model(files / "cnn.h5")
    for stem in ("cat", "dog", "owl"):
        raw = images.load_image(files / "photos" / f"{stem}.png")
        x = preprocess(images.fit_to_model(raw, (10, 10, 3), scale=1.0), "scale")
        target = int(np.argmax(model(x, training=False)[0]))
        saved = np.load(next((out / stem).glob("*.npz")))
        np.testing.assert_allclose(saved["grad"], xaitf.create_explainer("grad", model)(x, [target])[0],
                                   rtol=1e-5, atol=1e-6)
        occ = xaitf.create_explainer("occlusion", model, window=1, stride=1)(x, [target])[0]
        np.testing.assert_allclose(saved["occlusion"], occ, rtol=1e-4, atol=1e-6)   # 10 px: window 1
    assert sum(line.startswith("image: ") for line in stdout.splitlines()) == 3 and "3 images" in stdout


def test_glob_and_files_deduplicated_mixed_sizes_with_resize(files, tmp_path, capsys, restore_settings):
    out = tmp_path / "res"
    code, stdout, err = run_main(capsys, "-ip", files / "photos" / "c*.png", files / "photos" / "cat.png",
                                 files / "wide.png", "-mp", files / "cnn.h5", "-hm", "grad",
                                 "--resize", "crop", "-op", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cat", "wide"]   # cat once
    assert "wide.png -> fitted to 10x10x3 (resize crop)" in stdout
    assert len(list(out.glob("heatmap_summary_*.png"))) == 1


def test_single_image_writes_no_summary(files, tmp_path, capsys, restore_settings):
    out = tmp_path / "res"
    code, stdout, err = run_main(capsys, "-ip", files / "photos" / "owl.png", "-mp", files / "cnn.h5",
                                 "-hm", "grad", "-op", out)
    assert code == 0, err
    assert list(out.glob("*.png")) == [] and len(list((out / "owl").glob("*.png"))) == 1
    assert "preprocessing scale: x/255" in stdout
