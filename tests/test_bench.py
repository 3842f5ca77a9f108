"""The benchmark's bookkeeping (no timing here: timing lives in bench/ only).

* the evaluation count the floor is built from (``bench.costs.cost``) equals the number of model
  evaluations a method really makes, counted by a layer inside a tiny model;
* the floor splits that count into the chunks a method would use;
* the report renders a row, with its ratios.
"""
import numpy as np
import pytest

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf import registry
from xaitf.keras_bridge import tfk

from bench import costs, report
from bench.harness import Floor, measure_paired, pearson


class CountRows(tfk.layers.Layer):
    """Identity that adds the number of rows it sees to ``self.rows``."""

    def build(self, input_shape):
        self.rows = self.add_weight(name="rows", shape=(), dtype=tf.int64, trainable=False,
                                    initializer="zeros")

    def call(self, x):
        self.rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return x


def counting_model(shape=(6, 6, 1), classes=3):
    tf.keras.utils.set_random_seed(0)
    inp = tfk.Input(shape)
    h = tfk.layers.Flatten()(inp)
    h = tfk.layers.Dense(8, activation="relu")(h)
    counter = CountRows()
    h = counter(h)
    out = tfk.layers.Dense(classes, activation="softmax")(h)
    return tfk.Model(inp, out), counter


@pytest.mark.parametrize("method, params", [
    ("grad", {}),
    ("ig", {"steps": 8}),
    ("sg", {"samples": 4}),
    ("occlusion", {"window": 2, "stride": 2, "shortcut": False}),
    ("rise", {"masks": 24, "cell": 3}),
])
def test_cost_counts_the_evaluations_a_method_makes(method, params):
    model, counter = counting_model()
    x = np.random.default_rng(0).random((3, 6, 6, 1), dtype=np.float32)
    t = np.array([0, 1, 2])
    ex = registry.create_explainer(method, model, batch_size=16, progress=False, **params)
    evals, backward, _ = costs.cost(method, ex)
    ex(x, t)                                  # tracing may run the model symbolically: not counted
    counter.rows.assign(0)
    ex(x, t)
    rows = int(counter.rows.numpy())
    if method == "occlusion":   # the perturbed batch's last chunk is padded to a full chunk
        assert len(x) * evals <= rows < len(x) * evals + 16
    else:
        assert rows == len(x) * evals
    assert backward == (method in ("grad", "ig", "sg"))


def test_floor_chunks_like_the_method():
    model, _ = counting_model()
    x = np.random.default_rng(1).random((4, 6, 6, 1), dtype=np.float32)
    floor = Floor(model, x, np.zeros(4, np.int64), batch_size=16, max_steps=2)
    res = floor.time(100, backward=True, repeats=1)
    assert res["chunks"] == 7 and res["extrapolated"] and res["total_evals"] == 100
    assert floor.time(16, backward=False, repeats=1)["chunks"] == 1


def test_sequential_methods_floor_in_chunks_of_their_inputs():
    """MP's steps depend on each other: its floor runs max_iterations passes of its N inputs."""
    model, counter = counting_model()
    x = np.random.default_rng(1).random((4, 6, 6, 1), dtype=np.float32)
    ex = xaitf.create_explainer("mp", model, max_iterations=5, blur_size=3, progress=False)
    evals, backward, _ = costs.cost("mp", ex)
    assert (evals, backward) == (5, True) and costs.floor_chunk("ig", 3) is None
    floor = Floor(model, x, np.zeros(4, np.int64), batch_size=16, max_steps=100)
    run, info = floor.runner(3 * evals, backward, chunk=costs.floor_chunk("mp", 3))
    assert info["chunks"] == 5 and info["chunk"] == 3
    before = int(counter.rows.numpy())
    run()
    assert int(counter.rows.numpy()) - before == 15                     # 5 steps of 3 rows
    start = int(counter.rows.numpy())
    ex(x[:3], [0, 1, 2])
    assert int(counter.rows.numpy()) - start == 15                      # what MP itself evaluates


def test_pearson_and_report_row():
    a = np.random.default_rng(2).random((2, 5, 5))
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    row = {"model": "tiny", "method": "lime", "n": 2, "evals_per_input": 1000, "backward": False,
           "time_s": 0.5, "floor_s": 0.45, "ratio_floor": 0.5 / 0.45, "repeats": 5, "mem_mb": 1.0,
           "settings": {"num_samples": 1000},
           "peers": [{"peer": "lime.lib", "kind": "registry", "time_s": 5.0, "ratio": 0.1, "pearson": 0.9},
                     {"peer": "xplique.Lime", "kind": "xplique", "time_s": 2.0, "ratio": 0.25}]}
    table = report.main_table([row])
    assert "| tiny | lime | 2 | 1000 |" in table and "1.11" in table and "lime.lib 0.1, r 0.900" in table
    sur = report.surrogates_md([row])
    assert "| tiny | lime | 2 | 1000 |" in sur and sur.rstrip().endswith("yes |")
    assert "lime (tiny" in report.summary([row])


def test_errors_fit_on_one_table_line():
    traced = ("TypeError: in user code:\n\n    File \"ops.py\", line 31, in predictions_operator  *\n"
              "        scores = model(inputs) * targets\n\n"
              "    TypeError: Input 'y' of 'Mul' Op has type float32 that does not match type float64\n\n")
    assert report.one_line(traced) == "TypeError: Input 'y' of 'Mul' Op has type float32 that does not match type float64"
    assert report.one_line("ValueError: a | b") == "ValueError: a / b"         # no stray table cells
    long = report.one_line("RuntimeError: " + "x" * 500)
    assert len(long) == 160 and long.endswith("...")


def test_short_rows_get_more_paired_rounds():
    import time

    def nap():
        time.sleep(0.002)
        return 0.002

    _, st = measure_paired(nap, nap, 3)
    assert st["repeats"] == 3 and len(st["floor_times"]) == 3
    _, st = measure_paired(nap, nap, 3, min_seconds=0.02)            # ~10 rounds of 2 ms
    t = st["times"]
    assert st["repeats"] > 3 and sum(t) >= 0.02 > sum(t[:-1]) and len(st["floor_times"]) == len(t)
    _, st = measure_paired(nap, nap, 3, min_seconds=10.0)            # capped at 10 x repeats
    assert st["repeats"] == 30


def test_append_keeps_other_rows_and_the_hand_written_notes(tmp_path):
    """metrics_floor/quantus_compare ``--append``: rows of metrics not re-run are kept (from OUT.json,
    else from OUT.md's table with the same n), and OUT.md's sections from its first ``## `` on survive
    a rewrite of the generated table."""
    import json

    from bench.metrics_floor import floor_md

    out = tmp_path / "floor"
    row = {"metric": "road", "evaluations": 12800, "backward": False, "xaitf_s": 3.7, "floor_s": 1.3,
           "ratio": 2.85, "date": "2026-12-06"}
    first = floor_md({"n": 256, "load_average": [1.0], "rows": [
        dict(row, metric="pixel_flipping", evaluations=200960, ratio=1.14, date="2026-12-05"), row]})
    notes = "## Re-run by hand\n\nfaithfulness correlation 1.19x | with | pipes"
    (tmp_path / "floor.md").write_text(first + "\n" + notes + "\n")
    assert report.kept_notes(tmp_path / "floor.md") == notes
    assert report.kept_notes(tmp_path / "absent.md") == ""
    # no OUT.json: the table lines of OUT.md (not the notes' lines), only for the same n
    kept = report.kept_rows(out, 256, ["road"])
    assert [r["metric"] for r in kept] == ["pixel_flipping"]
    assert kept[0]["md_row"] == "| pixel_flipping | 200,960 | fwd | 3.700 | 1.300 | 1.14x |"
    assert report.kept_rows(out, 64, ["road"]) == []
    # a re-run row takes its earlier place; a new metric comes last
    merged = report.merged_rows(out, 256, [dict(row, metric="mufidelity"), dict(row, ratio=2.93)])
    assert [r["metric"] for r in merged] == ["pixel_flipping", "road", "mufidelity"]
    md = floor_md({"n": 256, "load_average": [2.0], "rows": merged})
    assert md.index(kept[0]["md_row"]) < md.index("| road | 12,800 | fwd | 3.700 | 1.300 | 2.93x |")
    assert "kept from the earlier table: pixel_flipping" in md
    # quantus_compare's "Model PATH: metrics." lines give kept rows their model back
    q = tmp_path / "q"
    (tmp_path / "q.md").write_text("# xaitf vs Quantus 0.6.0 on 256 MNIST images (IG maps)\n\n"
                                   "| metric | kind |\n|---|---|\n| road | stochastic |\n| pixel_flipping | x |\n\n"
                                   "Model /tmp/m.h5 (earlier run): road.\nModel models/a.h5: pixel_flipping.\n")
    assert {r["metric"]: r["model"] for r in report.kept_rows(q, 256, ())} == {
        "road": "/tmp/m.h5 (earlier run)", "pixel_flipping": "models/a.h5"}
    # with OUT.json: its rows for the same n
    (tmp_path / "floor.json").write_text(json.dumps({"n": 256, "rows": [row, dict(row, metric="infidelity")]}))
    assert [r["metric"] for r in report.kept_rows(out, 256, ["road"])] == ["infidelity"]
    assert report.kept_rows(out, 128, ["road"]) == []


def test_quantus_replay_adds_our_stored_noise_in_quantus_call_order():
    """The worker's replay_func (a Quantus perturb_func) with ``dist="stored"`` adds the noise xaitf
    drew on the device (infidelity_noise, saved in the data file): Quantus calls it once per sample
    and batch, batches of inputs in order; ``sign=-1`` subtracts it (ours: x - eps)."""
    import xaitf.metrics as M
    from bench.quantus_worker import replay_func

    n, samples = 5, 3
    noise = M.infidelity_noise(range(n), samples, (2, 2), std=0.2, seed=0).reshape(n, samples, 4)
    perturb = replay_func({"dist": "stored", "key": "inf", "samples": samples, "sign": -1}, n, 4,
                          {"inf": noise}, batch_size=2)
    x = np.ones((2, 4), np.float32)
    for b in range(3):                                  # batches [0, 1], [2, 3], [4]
        rows = np.arange(2 * b, min(2 * b + 2, n))
        for j in range(samples):
            np.testing.assert_array_equal(perturb(x[:len(rows)]), x[:len(rows)] - noise[rows, j])
