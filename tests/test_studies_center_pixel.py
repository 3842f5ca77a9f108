"""Study 1 (center-pixel model) through ``python -m xaitf.studies center_pixel --quick``, in-process:
the numbers it writes are checked against the model's analytic answers, plus the studies' shared
helpers (run folders, JSON, report tables) and the command line's errors."""
import copy
import json

import numpy as np
import pytest


import xaitf  # noqa: F401
from xaitf import cli, registry
from xaitf.studies import STUDIES, common as C
from xaitf.studies.__main__ import main

LABEL = 206


@pytest.fixture(scope="module")
def study(center_pixel_quick):
    """conftest's session run of ``--quick`` (shared with test_atomic_outputs): (results, folder)."""
    _, folder, results, _ = center_pixel_quick
    return copy.deepcopy(results), folder


def methods(result):
    return {m["method"]: m for m in result["methods"]}


def test_prediction_and_probability_match_the_model(study):
    r, _ = study
    ch = r["checks"]
    assert ch["predicted"] == LABEL
    # softmax of -alpha (i - p)^2 over the 256 classes, alpha = 10: analytic
    i = np.arange(256)
    p = np.exp(-10.0 * (i - LABEL) ** 2.0)
    p /= p.sum()
    assert ch["probability"] == pytest.approx(p[LABEL], abs=1e-6)
    assert ch["probability"] == pytest.approx(0.99991, abs=1e-5)
    assert ch["neighbours"]["205"] == pytest.approx(p[205], rel=1e-3)


def test_gradient_z_at_the_centre(study):
    r, _ = study
    ch = r["checks"]
    assert abs(ch["grad_z_centre"] - (-4.97)) / 4.97 < 0.02
    assert ch["grad_z_centre"] == pytest.approx(ch["grad_z_analytic_weights"], abs=1e-3)
    assert ch["grad_centre_is_min"]


def test_centre_mass_per_method(study):
    r, folder = study
    m = methods(r)
    shap = registry.canonical("shap")
    assert set(m) >= {"grad", "ig", "occlusion", "pda", "shapley", "lime", shap, "mp", "lrp.z"}
    for key in ("occlusion", "pda"):                # only the centre pixel changes the output
        assert m[key]["pixel"] >= 0.99 and m[key]["crop"] >= 0.99
    for key in ("grad", "inpgrad", "ig"):           # non-zero gradient everywhere: mass spread out
        assert m[key]["pixel"] < 1e-3
    assert all(0 <= v["pixel"] <= v["crop"] <= 1 for v in m.values())
    for key in ("lime", shap):                      # top superpixel / segment values in [0, 1]
        assert m[key]["min"] >= -1e-9 and m[key]["max"] <= 1 + 1e-9
    maps = np.load(folder / "maps.npz")
    # linear model: IG = DeepLift = LRP-Z = Input x Gradient (relative to the map's scale)
    scale = np.abs(maps["inpgrad"]).max()
    for key in ("ig", "deeplift", "lrp.z"):
        assert np.abs(maps[key] - maps["inpgrad"]).max() < 1e-4 * scale


def test_growing_patch(study):
    r, _ = study
    grey, black = r["growing_patch"]["growing_patch"], r["growing_patch"]["growing_patch_black"]
    assert [row["size"] for row in grey] == [0, 11, 31, 61, 101, 151]
    for row in grey[1:]:
        assert row["inpgrad_exact"] and row["inpgrad_minus_value_grad"] == 0
        assert row["inpgrad_max_abs_in_patch"] > 0          # grey: half the gradient, not zero
        assert row["predicted"] in (127, 128) and row["explained"] == LABEL
    for row in black[1:]:
        assert row["inpgrad_zero"] and row["inpgrad_max_abs_in_patch"] == 0
        assert row["predicted"] == 0
    assert all(row["grad_change"] == 0 for row in grey + black)   # the gradient ignores the input


def test_sensitivity(study):
    r, _ = study
    sweeps = {s["label"]: s for s in r["sensitivity"]}
    for label in ("SmoothGrad noise", "SmoothGrad samples", "IG steps", "alpha: Gradient"):
        assert all(row["rank_corr"] == pytest.approx(1.0) for row in sweeps[label]["rows"])
    occ = sweeps["Occlusion window"]["rows"]
    assert [row["value"] for row in occ] == sorted(row["value"] for row in occ)
    px = [row["pixel"] for row in occ]
    assert px[0] == pytest.approx(1.0) and all(a > b for a, b in zip(px, px[1:]))
    # window w: the centre's relevance is spread evenly over the w*w windows that cover it
    for row in occ:
        assert row["pixel"] == pytest.approx(1.0 / row["value"] ** 2, rel=1e-3)
    alpha = sweeps["alpha: Occlusion"]["rows"]
    i = np.arange(256)
    for row in alpha:
        p = np.exp(-row["value"] * (i - LABEL) ** 2.0)
        assert row["probability"] == pytest.approx(p[LABEL] / p.sum(), abs=1e-6)
    assert {s["default"] for s in r["sensitivity"] if s["param"] == "alpha"} == {10}


def test_report_and_figures(study):
    r, folder = study
    text = (folder / "report.md").read_text()
    assert "| gradient z-score at the centre | -4.957 | -4.97 |" in text
    assert "| Occlusion | occlusion | 1 | 1 |" in text
    assert "--quick" in text and "Shapley sampling with 2 permutations" in text
    from PIL import Image

    for name, (w_min, h_min) in {"heatmap": (2000, 800), "growing_patch": (800, 1200),
                                 "growing_patch_black": (800, 1200), "sensitivity": (800, 1000)}.items():
        path = folder / f"{name}.png"
        assert f"]({name}.png)" in text
        with Image.open(path) as im:
            assert im.size[0] >= w_min and im.size[1] >= h_min, (name, im.size)
        assert path.stat().st_size > 50_000


# -- shared helpers and the command line -------------------------------------------------------
def test_run_folder_never_overwrites(tmp_path):
    finals = []
    for _ in range(2):
        with C.study_session(tmp_path, "demo") as s:
            work = C.run_folder(tmp_path, "demo", stamp="20240101-000000")
            assert work.name.startswith(".") and work.is_dir()       # hidden until it finishes
            C.write_report(work, "T", [])
        finals.append(s.final)
    a, b = finals
    assert a.is_dir() and b.is_dir() and a.name == "20240101-000000" and b.name == "20240101-000000_1"
    assert (tmp_path / "demo" / "latest").read_text().strip() == b.name
    assert C.latest_folder(tmp_path, "demo") == b
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [a.name, b.name, "latest"]


def test_write_json_and_report(tmp_path):
    path = C.write_json(tmp_path, "r", {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"),
                                        (1): np.bool_(True)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None, "1": True}
    t = C.Table(["method", "ours", "study"], [["IG", 1.23456, 1.668], ["x|y", None, 2]])
    md = C.write_report(tmp_path, "T", [("S", [t, "text"])]).read_text()
    assert "| IG | 1.235 | 1.668 |" in md and "| x\\|y | - | 2 |" in md and md.startswith("# T")


def test_rank_correlation():
    a = np.arange(10.0)
    assert C.rank_correlation(a, a ** 3) == pytest.approx(1.0)
    assert C.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert C.rank_correlation(np.zeros(4), np.zeros(4)) == 1.0
    assert np.isnan(C.rank_correlation(np.zeros(4), a[:4]))
    # rounding noise far below the map's scale is not ranked
    spike = np.zeros(50)
    spike[7] = 1.0
    noisy = spike + np.random.RandomState(0).uniform(-1e-16, 1e-16, 50)
    assert C.rank_correlation(spike, noisy) == pytest.approx(1.0)
    assert C.rank_correlation(spike, noisy, rel_floor=0) < 0.5


def test_cli_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.run(main, ["no_such_study", "--out", str(tmp_path)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown study 'no_such_study'") and "center_pixel" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        cli.run(main, ["center_pixel", "--set", "nope.x=1", "--out", str(tmp_path)])
    assert e.value.code == 1 and "unknown section" in capsys.readouterr().err
    assert not (tmp_path / "center_pixel").exists()     # nothing written before the error
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES)
