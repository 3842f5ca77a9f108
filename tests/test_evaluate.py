"""xaitf.evaluate (the tidy table over methods x metrics) and ``python -m xaitf evaluate``."""
import csv

import numpy as np
import pytest

import xaitf
from conftest import make_cnn, make_linear
from xaitf import metrics
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


def test_run_metrics_use_the_same_code(tmp_path):
    """``python -m xaitf run --metrics`` scores the stored maps through xaitf.evaluate."""
    import h5py
    import json

    model = make_cnn(shape=(12, 12, 1), classes=3, seed=0)
    model.save(tmp_path / "m.h5")
    np.save(tmp_path / "x.npy", (np.random.RandomState(0).rand(6, 12, 12, 1) * 255).astype(np.uint8))
    out = tmp_path / "run"
    assert xaitf_main(["run", "--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "x.npy"),
                       "--methods", "grad", "--metrics", "pixel_flipping", "complexity", "--out", str(out),
                       "--no-progress", "--index-root", str(tmp_path / "results")]) == 0
    values = json.loads((out / "metrics.json").read_text())["grad"]
    with h5py.File(out / "store.h5", "r") as f:
        x, maps, t = f["inputs"][()], f["maps"]["grad"][()], f["targets"][()]
    table = evaluate(model, x, t, {"grad": maps}, ["pixel_flipping", "complexity"])
    assert values["pixel_flipping.value"] == pytest.approx(table.values(metric="pixel_flipping").mean())
    assert values["complexity.value"] == pytest.approx(table.values(metric="complexity").mean())
