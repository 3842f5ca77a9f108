"""Study 2 (interventional explanations) through ``python -m xaitf.studies interventional --quick``,
in-process, on the offline MNIST copy: the issue's acceptance (one command gives a graph with kept
units in every layer, the node maps, the stability curve and the Lipschitz table), checked by the
contents of what it writes; the stability protocols, both metric settings, the settings table and
the one-line refusals of settings the study cannot run with."""

import json

import numpy as np
import pytest

from conftest import run_quick_study

import xaitf  # noqa: F401
from xaitf.methods import interventional as I

LAYERS = ["fc3", "fc2", "fc1", "conv2"]          # links, output side first


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    # an empty models dir: LeNet is trained in the run (quick: 3 epochs) and saved in its folder
    return run_quick_study("interventional", tmp_path_factory.mktemp("studies"), data_dir)


def test_model_trained_and_recorded(study):
    r, folder = study
    m = r["model"]
    assert m["source"] == "trained" and m["schedule"] == "quick" and m["epochs"] == 3
    assert m["test_accuracy"] > 0.9
    assert (folder / "model" / "lenet.h5").is_file()


def test_graph_has_kept_units_in_every_layer(study):
    r, folder = study
    assert [l["layer"] for l in r["graph"]] == LAYERS
    assert r["target"] == 3 and r["graph_samples"] == 100
    sizes = {"fc3": 84, "fc2": 120, "fc1": 16, "conv2": 6}
    for link in r["graph"]:
        assert 1 <= link["n_kept"] < link["n_parent_units"] == sizes[link["layer"]]
        assert link["kept"] == sorted(set(link["kept"])) and max(link["kept"]) < link["n_parent_units"]
    # each link's effects are the previous link's kept units (top-down), starting at the target
    assert r["graph"][0]["effects"] == [3]
    for upper, lower in zip(r["graph"], r["graph"][1:]):
        assert lower["effects"] == upper["kept"]
    graph = I.load_graph(folder / "graph_class3.json")
    assert graph.target == 3 and graph["fc1"][0] == r["graph"][2]["kept"]
    assert graph.settings["soft_interventions"] is True and graph.n_samples == 100


def test_stability(study):
    r, _ = study
    s = r["stability"]
    assert s["layer"] == "fc3" and s["repeats"] == 2
    assert s["betas"] == [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
    rate = np.asarray(s["mean_rate"])
    assert np.all((rate >= 0) & (rate <= 100))
    assert s["nodes"] == r["graph"][0]["kept"]
    # the default is study 2's own protocol: every repeat a fresh random subset of the eligible
    # images (here 100 of the ~190 correctly classified 3s of the 2,000 test images) and one u
    assert s["protocol"] == "original" == r["settings"]["stability_protocol"]
    assert s["n_used"] == 100 < s["n_eligible"] <= 250
    assert all(0.2 < v < 1 for v in s["original_subset_overlap"])
    u = np.asarray(s["original_u"])
    assert u.shape == (8, 2) and np.all(u[0] == 0)
    assert np.all((u >= 0) & (u <= np.asarray(s["betas"])[:, None]))
    # large interventions (u up to 0.5, weights ~0.1) break the graph
    assert rate[-1] < rate[0] and rate[0] >= 50
    fixed = np.asarray(s["protocols"]["fixed"]["mean_rate"])
    np.testing.assert_array_equal(s["protocols"]["original"]["mean_rate"], rate)
    assert fixed[0] >= 80 and fixed[-1] < fixed[0]
    assert [row["beta"] for row in s["reference"]] == [0.0, 0.01, 0.1, 0.2, 0.5]
    assert s["reference"][0]["study"] == 96.9
    assert [row["original"] for row in s["reference"]] == [rate[i] for i in (0, 1, 3, 4, 7)]


def test_lipschitz_and_irof_table(study):
    r, folder = study
    rows = {m["name"]: m for m in r["metrics"]}
    assert list(rows) == ["Causal", "IG", "Saliency", "GradientShap", "InputXGradient"]
    assert r["metric_images"] == 10
    for name, m in rows.items():
        for key in ("lipschitz_raw", "lipschitz_negative", "lipschitz_original"):
            assert np.isfinite(m[key]) and m[key] > 0, (name, key)
        assert 0 <= m["irof"] <= 1
        # the original's IROF is an area counted in segments (about 120 SLIC cells on 32x32)
        assert 50 <= m["irof_original_segments"] <= 150
        assert 0 <= m["irof_original"] <= m["irof_original_segments"]
        assert m["original_batches"] == 10           # 10 images: the original runs them one by one
    ref = {"Causal": 0.287, "IG": 1.668, "Saliency": 3.362, "GradientShap": 1.949, "InputXGradient": 1.965}
    assert {n: m["study_lipschitz"] for n, m in rows.items()} == ref
    assert {n: m["study_irof"] for n, m in rows.items()} == {"Causal": 37.94, "IG": None, "Saliency": None,
                                                             "GradientShap": None, "InputXGradient": None}
    # original's settings: baselines on raw maps; causal |map| normalised (its running maximum has
    # nothing to carry with one image per batch)
    for name, m in rows.items():
        if name == "Causal":
            assert m["lipschitz_original"] == pytest.approx(m["lipschitz_negative"], rel=1e-9)
            assert m["lipschitz_raw"] < 0.01 * m["lipschitz_original"]     # tiny raw softmax maps
        else:
            assert m["lipschitz_original"] == m["lipschitz_raw"]
    # the study's finding: the causal maps are the most robust (normalised maps, comparable scales)
    assert rows["Causal"]["lipschitz_negative"] < min(m["lipschitz_negative"] for n, m in rows.items()
                                                      if n != "Causal")
    # normalised maps lie in [-1, 1]: ||e(x) - e(x')|| <= 2 sqrt(32*32), ||eps|| >~ sqrt(1024 * 0.02)
    assert all(m["lipschitz_negative"] < 2 * 32 / np.sqrt(1024 * 0.01) for m in rows.values())
    assert set(r["metric_settings"]) == {"ours", "original"}
    text = (folder / "report.md").read_text()
    for name, value in ref.items():
        assert f"| {name} | " in text and f"| {value} |" in text
    assert "IORF_metric.csv" in text and "| 37.94 |" in text and "mean 37.94" in text
    for column in ("ours: normalised maps", "ours: raw maps", "original's settings",
                   "ours: xaitf.metrics.irof", "original's procedure"):
        assert column in text
    low = text.lower()
    assert "not published" not in low and "reports no irof" not in low and "not reported" not in low


def test_report_and_figures(study):
    r, folder = study
    text = (folder / "report.md").read_text()
    assert "| fc3 <- fc2 |" in text and "| conv2 <- conv1 |" in text and "--quick" in text
    # the settings the run used, one row each
    from xaitf import settings as S

    for key in S.INTERVENTIONAL:
        assert f"| {key} | " in text, key
    assert "| stability_protocol | 'original' |" in text and "| repeats_used | 2 |" in text
    from PIL import Image

    for name in ("graph", "node_maps", "maps", "stability_curve", "stability_hist"):
        path = folder / f"{name}.png"
        assert f"]({name}.png)" in text
        with Image.open(path) as im:
            assert im.size[0] >= 500 and im.size[1] >= 250, (name, im.size)
        assert path.stat().st_size > 20_000
    kept_conv2 = r["graph"][2]["kept"]            # node maps: one column per kept conv2 channel
    with Image.open(folder / "node_maps.png") as im:
        assert im.size[0] > 150 * (len(kept_conv2) + 2)


def test_unsupported_dataset_or_model_is_refused_in_one_line(tmp_path, capsys, restore_settings):
    """`--set interventional.dataset_name=CIFAR10` ran MNIST without a word; now one line, exit 1,
    nothing written."""
    from xaitf.studies.__main__ import main

    for setting in ("interventional.dataset_name=CIFAR10", "interventional.model_name=ResNet"):
        with pytest.raises(SystemExit) as e:
            from xaitf import cli

            cli.run(main, ["interventional", "--quick", "--no-progress", "--out", str(tmp_path / "out"),
                           "--set", setting])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 1 and len(err) == 1 and "this reproduction runs study 2 on" in err[0]
        assert not any((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize("setting,words", [
    ("interventional.stability_protocol=random", "expected one of original, fixed"),
    ("interventional.repeats=-2", "expected an integer >= 1"),
    ("interventional.beta_max=1.5", "expected a number in [0, 1]"),
    ("interventional.layer_name_soft=conv1", "a LeNet layer with a parent weight layer"),
    ("interventional.save_attr=True", "the maps are not pickled"),
    ("interventional.layer_name=conv1", "node maps need a Conv2D fed by a Conv2D"),
    ("interventional.data=mnist", "the study learns its graph from LeNet's MNIST test split"),
])
def test_bad_settings_are_refused_in_one_line_before_any_work(setting, words, tmp_path, capsys,
                                                              restore_settings):
    from xaitf import cli
    from xaitf.studies.__main__ import main

    with pytest.raises(SystemExit) as e:
        cli.run(main, ["interventional", "--quick", "--no-progress", "--out", str(tmp_path / "out"),
                       "--models-dir", str(tmp_path / "none"), "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "none").exists() and not any((tmp_path / "out").rglob("*"))


def test_switches_fixed_protocol_and_parts_off(study, tmp_path, restore_settings):
    """stability_protocol=fixed is the headline curve (the original's drawn beside it);
    eval_attr=False skips the metrics, graph_stab=False the stability: both still write a report.
    The first run's model is reused (no training)."""
    from xaitf.studies import common
    from xaitf.studies.__main__ import main

    _, first = study
    base = ["interventional", "--quick", "--no-progress", "--models-dir", str(first / "model")]
    out = tmp_path / "a"
    assert main(base + ["--out", str(out), "--set", "interventional.stability_protocol=fixed",
                        "--set", "interventional.eval_attr=False"]) == 0
    folder = common.latest_folder(out, "interventional")
    r = json.loads((folder / "results.json").read_text())
    assert r["model"]["source"] == "file"
    s = r["stability"]
    assert s["protocol"] == "fixed" and s["mean_rate"] == s["protocols"]["fixed"]["mean_rate"]
    assert r["metrics"] is None and not (folder / "maps.png").exists()
    text = (folder / "report.md").read_text()
    assert "Not run: `interventional.eval_attr=False`." in text
    assert "| stability_protocol | 'fixed' |" in text and "xaitf, fixed protocol (%)" in text
    out = tmp_path / "b"
    assert main(base + ["--out", str(out), "--set", "interventional.graph_stab=False",
                        "--set", "interventional.eval_attr=False"]) == 0
    folder = common.latest_folder(out, "interventional")
    r = json.loads((folder / "results.json").read_text())
    assert r["stability"] is None and not (folder / "stability_curve.png").exists()
    assert "Not run: `interventional.graph_stab=False`." in (folder / "report.md").read_text()
