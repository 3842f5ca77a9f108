"""xaitf.evaluate (the tidy table over methods x metrics) and ``python -m xaitf evaluate``."""
import collections
import csv
import re

import numpy as np
import pytest

import xaitf
from conftest import make_cnn, make_linear
from xaitf import cli, metrics
from xaitf.errors import InputError, MethodError
from xaitf.evaluation import COLUMNS, METRICS, Table, evaluate
from xaitf.__main__ import main as xaitf_main


@pytest.fixture(scope="module")
def lin():
    return make_linear(shape=(6, 6, 1), classes=3, seed=0)


@pytest.fixture(scope="module")
def x():
    return np.random.RandomState(0).rand(4, 6, 6, 1).astype(np.float32)


def test_table_equals_the_metric_functions(lin, x):
    t = np.array([0, 1, 2, 0])
    wx = xaitf.create_explainer("inpgrad", lin)(x, t)
    table = evaluate(lin, x, t, {"grad": "grad", "wx": wx}, ["deletion", "sparseness"], batch_size=7)
    assert len(table) == 4 * 2 * 2 and isinstance(table, Table)
    grad = xaitf.create_explainer("grad", lin)(x, t)
    np.testing.assert_allclose(table.values(method="wx", metric="deletion"),
                               metrics.deletion_curve(lin, x, wx, t, progress=False).auc)
    np.testing.assert_allclose(table.values(method="grad", metric="sparseness"), metrics.sparseness(grad))
    assert table.column("image")[:4] == [0, 1, 2, 3]
    mean, std, n = table.summary()[("wx", "sparseness", "")]
    assert n == 4 and mean == pytest.approx(metrics.sparseness(wx).mean())


def test_randomisation_rows_and_csv_round_trip(lin, x, tmp_path):
    table = evaluate(lin, x, None, ["grad"], ["mprt", "local_lipschitz"],
                     metric_kwargs={"mprt": {"similarities": ("spearman",)}, "local_lipschitz": {"samples": 3}})
    assert set(table.select(metric="mprt").column("detail")) == {"logits:spearman"}
    assert len(table.select(metric="local_lipschitz")) == 4
    path = table.to_csv(tmp_path / "m.csv")
    with open(path) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(table) + 1
    assert [float(r[4]) for r in rows[1:]] == [v for v in table.column("value")]


def test_bad_requests_are_one_line(lin, x):
    with pytest.raises(MethodError, match="unknown metric 'pixelflip'; valid: pixel_flipping") as e:
        evaluate(lin, x, None, ["grad"], ["pixelflip"])
    assert "\n" not in str(e.value)
    with pytest.raises(MethodError, match="mprt runs the method again and needs a method name"):
        evaluate(lin, x, None, {"m": np.ones((4, 6, 6))}, ["mprt"])
    with pytest.raises(InputError, match=r"pointing_game need ground-truth masks"):
        evaluate(lin, x, None, ["grad"], ["pointing_game"])
    with pytest.raises(InputError, match=r"m maps shaped \(4, 5, 6\) do not match"):
        evaluate(lin, x, None, {"m": np.ones((4, 5, 6))}, ["sparseness"])
    with pytest.raises(InputError, match="contain NaN"):
        evaluate(lin, x, None, {"m": np.full((4, 6, 6), np.nan)}, ["sparseness"])
    with pytest.raises(MethodError, match="metric_kwargs names 'irof'"):
        evaluate(lin, x, None, ["grad"], ["sparseness"], metric_kwargs={"irof": {}})
    with pytest.raises(MethodError, match="unknown method 'gradd'"):
        evaluate(lin, x, None, ["gradd"], ["sparseness"])


def test_every_registered_metric_resolves():
    from xaitf.evaluation import metric_function

    missing = []
    for name in METRICS:
        try:
            metric_function(name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, missing


def test_every_registered_metric_runs_through_evaluate():
    """Each metric of METRICS, through evaluate on a small CNN: one value per image (mprt: per
    randomised layer and similarity), none of them raises (found as: irof's areas were read as
    ``.auc`` and every ``evaluate --metrics irof`` failed)."""
    model = make_cnn(shape=(10, 10, 3), classes=3, seed=0)
    x = np.random.RandomState(1).rand(2, 10, 10, 3).astype(np.float32)
    masks = np.zeros((2, 10, 10), bool)
    masks[:, 2:6, 3:7] = True
    small = {"pixel_flipping": {"features_in_step": 10}, "faithfulness_correlation": {"runs": 5, "subset_size": 10},
             "infidelity": {"samples": 4}, "mufidelity": {"nb_samples": 4, "grid_size": 5},
             "road": {"percentages": (0.2, 0.6)}, "irof": {"segment_params": {"n_segments": 6}},
             "max_sensitivity": {"samples": 2}, "avg_sensitivity": {"samples": 2},
             "local_lipschitz": {"samples": 2}, "mprt": {"similarities": ("spearman",)},
             "mprt_independent": {"similarities": ("spearman",)}}
    table = evaluate(model, x, None, ["grad"], list(METRICS), masks=masks,
                     metric_kwargs={k: v for k, v in small.items() if k in METRICS})
    per_metric = collections.Counter(row[2] for row in table.rows)
    layers = len([layer for layer in model.layers if layer.get_weights()])
    for name in METRICS:
        want = 2 * layers if name.startswith("mprt") else 2
        assert per_metric[name] == want, (name, per_metric[name])


def test_command_line_writes_csv_report_and_figure(tmp_path, capsys, monkeypatch):
    import xaitf.metrics.randomisation as R

    calls, real = [], R.model_parameter_randomisation

    def counted(*a, **kw):
        calls.append(kw.get("return_maps"))
        result = real(*a, **kw)
        assert result.maps.shape[1] == 1          # only the figure's image is kept
        return result

    monkeypatch.setattr(R, "model_parameter_randomisation", counted)
    model = make_cnn(shape=(12, 12, 1), classes=3, seed=0)
    model.save(tmp_path / "m.h5")
    np.save(tmp_path / "x.npy", (np.random.RandomState(0).rand(5, 12, 12, 1) * 255).astype(np.uint8))
    out = tmp_path / "ev"
    argv = ["evaluate", "--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "x.npy"), "--methods",
            "grad", "gb", "--metrics", "sparseness", "mprt", "--metric-set", "mprt.similarities=('spearman',)",
            "--out", str(out), "--no-progress"]
    assert xaitf_main(argv) == 0
    assert calls == [1, 1]        # one randomisation run per method: the figure reuses it
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "summary.json", "report.md", "report.html",
                                              "randomisation.png"}
    html = (out / "report.html").read_text()
    assert 'src="randomisation.png"' in html and "<script" not in html
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"grad", "gb"} and len([r for r in rows if r["metric"] == "sparseness"]) == 10
    # a bad request changes nothing that exists
    before = (out / "metrics.csv").read_bytes()
    bad = argv[:-3] + ["--metric-set", "irof.segments=4", "--out", str(out), "--no-progress"]
    with pytest.raises(Exception, match="'irof' is not among --metrics"):
        xaitf_main(bad)
    assert (out / "metrics.csv").read_bytes() == before
    assert not list(tmp_path.glob(".ev.*"))


def _run_grad(tmp_path, side, n, metrics):
    """``python -m xaitf run --methods grad --metrics ...`` on a small CNN: (model, metrics.json's
    grad values, the stored inputs, maps, targets)."""
    import h5py
    import json

    model = make_cnn(shape=(side, side, 1), classes=3, seed=0)
    model.save(tmp_path / "m.h5")
    np.save(tmp_path / "x.npy", (np.random.RandomState(0).rand(n, side, side, 1) * 255).astype(np.uint8))
    out = tmp_path / "run"
    assert xaitf_main(["run", "--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "x.npy"),
                       "--methods", "grad", "--metrics", *metrics, "--out", str(out),
                       "--no-progress", "--index-root", str(tmp_path / "results")]) == 0
    values = json.loads((out / "metrics.json").read_text())["grad"]
    with h5py.File(out / "store.h5", "r") as f:
        return model, values, f["inputs"][()], f["maps"]["grad"][()], f["targets"][()]


def test_run_metrics_use_the_same_code(tmp_path):
    """``python -m xaitf run --metrics`` scores the stored maps through xaitf.evaluate."""
    model, values, x, maps, t = _run_grad(tmp_path, 12, 6, ["pixel_flipping", "complexity"])
    table = evaluate(model, x, t, {"grad": maps}, ["pixel_flipping", "complexity"])
    assert values["pixel_flipping.value"] == pytest.approx(table.values(metric="pixel_flipping").mean())
    assert values["complexity.value"] == pytest.approx(table.values(metric="complexity").mean())


# -- estimates, input-scaled defaults, Ctrl-C ---------------------------------------------------
def test_metric_scaled_defaults():
    from xaitf.evaluation import metric_scaled_defaults

    assert metric_scaled_defaults("pixel_flipping", (28, 28, 1)) == {}
    assert metric_scaled_defaults("pixel_flipping", (32, 32, 3)) == {}          # 1,024 pixels: kept
    assert metric_scaled_defaults("pixel_flipping", (224, 224, 3)) == {"features_in_step": 49}
    assert metric_scaled_defaults("pixel_flipping", (64, 64, 1)) == {"features_in_step": 4}
    assert metric_scaled_defaults("road", (224, 224, 3)) == {}


def test_metric_cost_counts_the_curves_points(lin, x):
    """The estimate's evaluations per image equal the points of the curves the metrics compute."""
    from xaitf.evaluation import metric_cost

    maps = x[..., 0]
    t = np.array([0, 1, 2, 0])
    cases = [("pixel_flipping", "pixel_flipping", {"features_in_step": 5}),
             ("pixel_flipping", "pixel_flipping", {}),
             ("region_perturbation", "region_perturbation", {"patch_size": 4}),
             ("deletion", "deletion_curve", {"steps": 7}),
             ("insertion", "insertion_curve", {})]
    for name, fn, kw in cases:
        curve = getattr(metrics, fn)(lin, x, maps, t, progress=False, **kw)
        assert metric_cost(name, kw, (6, 6, 1)) == (curve.scores.shape[1], 0), (name, kw)
    assert metric_cost("faithfulness_correlation", {"runs": 10}, (6, 6, 1)) == (11, 0)
    assert metric_cost("max_sensitivity", {"samples": 3}, (6, 6, 1)) == (0, 3)
    assert metric_cost("mprt", {}, (6, 6, 1), randomised_layers=5) == (0, 5)
    assert metric_cost("mprt", {"layers": ["a", "b"]}, (6, 6, 1), randomised_layers=5) == (0, 2)
    assert metric_cost("sparseness", {}, (6, 6, 1)) == (0, 0)


def _cnn_files(tmp_path, side=64, n=3):
    model = make_cnn(shape=(side, side, 1), classes=3, seed=0)
    model.save(tmp_path / "m.h5")
    np.save(tmp_path / "x.npy", (np.random.RandomState(0).rand(n, side, side, 1) * 255).astype(np.uint8))
    return ["evaluate", "--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "x.npy"), "--no-progress"]


def test_command_line_scales_defaults_prints_the_estimate_and_keeps_to_the_budget(tmp_path, capsys,
                                                                                  restore_settings):
    import json

    base = _cnn_files(tmp_path)
    out = tmp_path / "ev"
    argv = base + ["--methods", "grad", "occlusion", "--metrics", "pixel_flipping", "sparseness", "--out", str(out)]
    assert xaitf_main(argv) == 0
    err = capsys.readouterr()[1]
    assert "occlusion window=5 stride=5" in err and "pixel_flipping features_in_step=4" in err
    info = json.loads((out / "summary.json").read_text())
    assert info["metric_kwargs"] == {"pixel_flipping": {"features_in_step": 4}}
    assert info["method_defaults_scaled"] == {"occlusion": {"window": 5, "stride": 5}}
    assert info["estimate_seconds"] > 0
    # --metric-set and --set win over the scaled defaults
    assert xaitf_main(argv + ["--metric-set", "pixel_flipping.features_in_step=16", "--set",
                              "occlusion.window=8", "--set", "occlusion.stride=8"]) == 0
    std = capsys.readouterr()[0]
    assert "pixel_flipping " in std and "(257 evaluations per image)" in std
    info = json.loads((out / "summary.json").read_text())
    assert info["metric_kwargs"] == {"pixel_flipping": {"features_in_step": 16}}
    assert info["method_defaults_scaled"] == {}
    # above --budget: one line, nothing written
    before = (out / "metrics.csv").read_bytes()
    # the costliest part is a pixel flipping pair, or a method's maps when its timing probe ran slowly
    # (a loaded machine: "grad's maps ~2 s" was seen in CI)
    with pytest.raises(Exception, match=r"the estimate ~\d+ s is above --budget 1 s; the costliest part: "
                                        r"((grad|occlusion) x pixel_flipping ~\d+ s \(4,097 evaluations per "
                                        r"image\)|(grad|occlusion)'s maps ~\d+ s: lower its settings)"):
        xaitf_main(argv + ["--metric-set", "pixel_flipping.features_in_step=1", "--budget", "1s"])
    assert "(4,097 evaluations per image)" in capsys.readouterr()[0]
    assert (out / "metrics.csv").read_bytes() == before


def test_command_line_reads_masks_from_npy_and_npz(tmp_path, capsys, restore_settings):
    """--masks as a .npy array (found as: it failed with "'numpy.ndarray' object does not support
    the context manager protocol"), a .npz's 'masks' or only array; other files: one line."""
    base = _cnn_files(tmp_path, side=16, n=3)
    masks = np.zeros((3, 16, 16), bool)
    masks[:, 4:9, 5:10] = True
    np.save(tmp_path / "m.npy", masks)
    np.savez(tmp_path / "named.npz", masks=masks, other=np.zeros(2))
    np.savez(tmp_path / "only.npz", masks.astype(np.uint8))
    values = []
    for name in ("m.npy", "named.npz", "only.npz"):
        out = tmp_path / f"ev_{name}"
        assert xaitf_main(base + ["--methods", "grad", "--metrics", "relevance_mass", "--masks",
                                  str(tmp_path / name), "--out", str(out)]) == 0
        with open(out / "metrics.csv") as f:
            values.append([row["value"] for row in csv.DictReader(f)])
    assert len(values[0]) == 3 and values[0] == values[1] == values[2]
    np.savez(tmp_path / "two.npz", a=masks, b=masks)
    (tmp_path / "text.npy").write_text("not an array")
    for name, msg in (("two.npz", "expected an array named 'masks' .or a single array., found a, b"),
                      ("text.npy", "not a .npy or .npz file of masks")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli.run(xaitf_main, base + ["--methods", "grad", "--metrics", "relevance_mass", "--masks",
                                        str(tmp_path / name), "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code != 0 and len(err) == 1 and re.search(msg, err[0]), err
        assert not (tmp_path / "bad").exists()


def test_command_line_ctrl_c_keeps_the_finished_pairs(tmp_path, monkeypatch, capsys):
    import json

    import importlib

    Cx = importlib.import_module("xaitf.metrics.complexity")

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    base = _cnn_files(tmp_path, side=12)
    out = tmp_path / "ev"
    argv = base + ["--methods", "grad", "gb", "--metrics", "sparseness", "complexity", "--out", str(out)]
    assert xaitf_main(argv) == 0
    capsys.readouterr()
    monkeypatch.setattr(Cx, "complexity", interrupted)      # the second pair is stopped
    assert xaitf_main(argv) == 130
    assert "interrupted; 1 of 4 pairs written; not run: grad x complexity" in capsys.readouterr()[1]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["metric"]) for r in rows} == {("grad", "sparseness")} and len(rows) == 3
    info = json.loads((out / "summary.json").read_text())
    assert info["interrupted"] == {"at": "grad x complexity",
                                   "not_run": ["grad x complexity", "gb x sparseness", "gb x complexity"]}
    assert "**INTERRUPTED** (Ctrl-C) at grad x complexity" in (out / "report.md").read_text()
    # stopped before any pair finished: the earlier results stay as they were
    before = (out / "metrics.csv").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        xaitf_main(base + ["--methods", "grad", "--metrics", "complexity", "--out", str(out)])
    assert (out / "metrics.csv").read_bytes() == before and not list(tmp_path.glob(".ev.*"))


def test_run_metrics_scale_pixel_flipping_as_evaluate(tmp_path):
    """``run --metrics pixel_flipping`` on 36x36 images (1,296 pixels) uses features_in_step 2."""
    model, values, x, maps, t = _run_grad(tmp_path, 36, 3, ["pixel_flipping"])
    two = metrics.pixel_flipping(model, x, maps, t, features_in_step=2, progress=False).auc.mean()
    one = metrics.pixel_flipping(model, x, maps, t, progress=False).auc.mean()
    assert values["pixel_flipping.value"] == pytest.approx(two) and abs(two - one) > 1e-6


def test_estimate_counts_the_layers_mprt_randomises():
    """The estimate's explanations per image for mprt: the layers the test really randomises."""
    from xaitf.evaluation import metric_cost
    from xaitf.metrics.randomisation import randomisable_layers

    model = make_cnn(shape=(8, 8, 1), classes=3, seed=0)
    x = np.random.RandomState(0).rand(2, 8, 8, 1).astype(np.float32)
    result = metrics.model_parameter_randomisation(model, x, [0, 1], "grad", similarities=("spearman",),
                                                   progress=False)
    assert metric_cost("mprt", {}, (8, 8, 1), len(randomisable_layers(model))) == (0, len(result.layers))


def test_estimate_traces_once_per_model_and_adds_the_randomisation_work(monkeypatch):
    """The metrics' explanations reuse the maps' traced programs (max_sensitivity: none); MPRT's
    randomised copy traces once, not once per layer, and adds the similarities of every state and,
    for an explainer that keeps copies of the weights (gb's clone), its weights check."""
    from xaitf import budget
    from xaitf.evaluation_cli import estimate
    from xaitf.metrics.randomisation import randomisable_layers

    model = make_cnn(shape=(8, 8, 1), classes=3, seed=0)
    layers = len(randomisable_layers(model))
    timing = {"forward": 0.01, "forward_1": 0.01, "trace": 50.0, "backward": 0.02, "backward_1": 0.02,
              "trace_backward": 100.0}
    monkeypatch.setattr(budget, "measure", lambda *a, **k: dict(timing))
    monkeypatch.setattr(budget, "randomisation_state_seconds", lambda m, image, n, sims: (0.3, 0.1))
    grad = xaitf.create_explainer("grad", model)
    one = budget.MARGIN * 2 * 0.02                        # grad on 2 images: 1 evaluation each
    total, lines, _ = estimate(model, {"grad": grad}, ["mprt", "max_sensitivity"], {}, (8, 8, 1), 2,
                               np.zeros((8, 8, 1), np.float32))
    mprt = 100.0 + layers * one + layers * 0.3 * budget.MARGIN
    assert total == pytest.approx((100.0 + one) + mprt + 10 * one)
    assert f"({layers} explanations with 150 ms of similarities each per image)" in lines[1]   # grad: no check
    gb = xaitf.create_explainer("gb", model)
    _, lines, _ = estimate(model, {"gb": gb}, ["mprt"], {}, (8, 8, 1), 2, np.zeros((8, 8, 1), np.float32))
    assert f"({layers} explanations with 200 ms of similarities and weight checks each per image)" in lines[1]


def test_command_line_preprocess_reaches_pda_and_z_box_and_the_settings_are_recorded(tmp_path, capsys,
                                                                                    restore_settings):
    """--preprocess scale --scale 127.5 (inputs 0..2): PDA's intensities and deep_taylor.bounded's
    z^B box are 0..2 (with the presets' 0..1 the rule would refuse the inputs), and summary.json and
    report.md record every method's settings."""
    import json

    out = tmp_path / "ev"
    argv = _cnn_files(tmp_path, side=12) + ["--preprocess", "scale", "--scale", "127.5", "--set", "pda.values=2",
                                            "--methods", "pda", "deep_taylor.bounded", "--metrics", "sparseness",
                                            "--out", str(out)]
    assert xaitf_main(argv) == 0
    settings = json.loads((out / "summary.json").read_text())["method_settings"]
    assert tuple(settings["pda"]["params"]["value_range"]) == (0.0, 2.0)
    assert (settings["deep_taylor.bounded"]["params"]["low"], settings["deep_taylor.bounded"]["params"]["high"]) \
        == (0.0, 2.0)
    report = (out / "report.md").read_text()
    assert "## Method settings" in report and "- deep_taylor.bounded: `composite='deep_taylor.bounded'" in report
    assert "low=0, high=2," in report


def test_keep_going_records_failures_and_keeps_the_rest(tmp_path, capsys, restore_settings):
    """keep_going: a method that cannot explain the inputs and a pair that cannot run are recorded
    in Table.failed; the other pairs are scored. The command line writes those, prints one line
    per failure and exits 1; without keep_going the first failure raises."""
    import json

    model = make_cnn(shape=(8, 8, 1), classes=3)
    x = np.random.default_rng(0).uniform(0, 2, (3, 8, 8, 1)).astype(np.float32)   # outside z^B's [0, 1]
    methods = {"grad": "grad", "dt": "deep_taylor.bounded", "given": np.ones((3, 8, 8))}
    table = evaluate(model, x, None, methods, ["sparseness", "max_sensitivity"], keep_going=True,
                     metric_kwargs={"max_sensitivity": {"samples": 2}})
    assert set(table.failed) == {("dt", None), ("given", "max_sensitivity")}
    assert isinstance(table.failed[("dt", None)], InputError)
    assert {(m, k) for _, m, k, _, _ in table.rows} == {("grad", "sparseness"), ("grad", "max_sensitivity"),
                                                       ("given", "sparseness")}
    with pytest.raises(InputError, match="outside the z\\^B bounds"):
        evaluate(model, x, None, methods, ["sparseness"])

    out = tmp_path / "ev"
    argv = _cnn_files(tmp_path, side=12) + ["--preprocess", "scale", "--scale", "127.5", "--set", "deep_taylor.high=1",
                                            "--methods", "grad", "deep_taylor.bounded", "--metrics", "sparseness",
                                            "--out", str(out)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(xaitf_main, argv)
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 1 and len(err) == 2
    assert err[0].startswith("error: deep_taylor.bounded: the inputs range over [0.007843, 1.992], outside the z^B "
                             "bounds low=0, high=1")
    assert err[1] == "error: 1 failed (deep_taylor.bounded; errors above); 1 of 2 pairs written"
    info = json.loads((out / "summary.json").read_text())
    assert list(info["failed"]) == ["deep_taylor.bounded"] and [r["method"] for r in info["summary"]] == ["grad"]
    assert "**FAILED** (not in the table):" in (out / "report.md").read_text()


def test_a_method_that_cannot_handle_the_model_is_left_out(tmp_path, capsys, restore_settings):
    """Deep Taylor refuses an ELU network when it is built: beside other methods that is one line and
    a FAILED entry, the others are scored, exit 1; alone, the run stops and writes nothing."""
    import json

    import keras

    i = keras.Input((10, 10, 1))
    h = keras.layers.Conv2D(3, 3, activation="elu")(i)
    keras.Model(i, keras.layers.Dense(3)(keras.layers.Flatten()(h))).save(tmp_path / "elu.keras")
    np.save(tmp_path / "x.npy", (np.random.RandomState(0).rand(2, 10, 10, 1) * 255).astype(np.uint8))
    base = ["evaluate", "--model", str(tmp_path / "elu.keras"), "--data", str(tmp_path / "x.npy"), "--no-progress",
            "--metrics", "sparseness"]
    out = tmp_path / "ev"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(xaitf_main, base + ["--methods", "grad", "deep_taylor", "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 1 and err[0].startswith("error: deep_taylor: deep_taylor needs a ReLU network")
    assert err[-1] == "error: 1 failed (deep_taylor; errors above); 1 of 2 pairs written"
    info = json.loads((out / "summary.json").read_text())
    assert list(info["failed"]) == ["deep_taylor"] and [r["method"] for r in info["summary"]] == ["grad"]
    with pytest.raises(SystemExit) as e:
        cli.run(xaitf_main, base + ["--methods", "deep_taylor", "--out", str(tmp_path / "none")])
    assert e.value.code == 1 and "needs a ReLU network" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_all_zero_maps_are_warned():
    """Maps that are all 0 score as perfectly stable under randomisation (similarity 1): evaluate
    warns that their scores say nothing about the method."""
    model = make_cnn(shape=(8, 8, 1), classes=3)
    k, b = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.zeros_like(k), b])          # the logits ignore the image
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"^grad: 2 of 2 maps are all 0 .* their scores say nothing"):
        evaluate(model, x, [0, 1], ["grad"], ["sparseness"])
