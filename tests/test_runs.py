"""Dataset runs (xaitf.runs): the store, resuming after SIGINT/SIGKILL, foreign stores, Ray, MLflow.

Everything runs on a tiny CNN saved to tmp and a 24-image ``mnist.npz`` written to tmp, with
cheap method settings; chunks of 4 images, so 6 chunks per method.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import make_cnn, write_mnist_npz
from xaitf import runs
from xaitf.errors import XaitfError
from xaitf.runs import local as runs_local
from xaitf.__main__ import main as xaitf_main

N, CHUNK = 24, 4
METHODS = ["grad", "ig", "occlusion"]
SETS = ["--set", "ig.steps=8", "--set", "occlusion.window=4", "--set", "occlusion.stride=4"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = write_mnist_npz(root / "data", 8, N + 6)
    model = make_cnn(shape=(28, 28, 1), classes=10, seed=0)
    model.save(root / "tiny.h5")
    make_cnn(shape=(28, 28, 1), classes=10, seed=5).save(root / "other.h5")
    return {"root": root, "data": data, "model": root / "tiny.h5", "other": root / "other.h5",
            "keras_model": model}


def argv(env, out, *extra, model=None, methods=METHODS):
    return (["run", "--model", str(model or env["model"]), "--data", "mnist", "--data-dir",
             str(env["data"]), "--limit", str(N), "--chunk-size", str(CHUNK), "--out", str(out),
             "--methods", *methods, "--no-progress", "--index-root", str(env["root"] / "results"),
             *SETS, *extra])


def read_store(path):
    with h5py.File(path, "r", locking=False) as f:
        return {k: {m: f[k][m][()] for m in f[k]} for k in ("maps", "done", "computed")} | {
            "targets": f["targets"][()], "inputs": f["inputs"][()]}


@pytest.fixture(scope="module")
def reference(env):
    """An uninterrupted local run, in this process."""
    out = env["root"] / "ref"
    assert xaitf_main(argv(env, out)) == 0
    return out, read_store(out / "store.h5")


def test_uninterrupted_run_stores_every_map_once(env, reference):
    out, ref = reference
    from xaitf import create_explainer

    x, t = ref["inputs"], ref["targets"]
    model = env["keras_model"]
    assert np.array_equal(t, np.asarray(model(x)).argmax(-1))          # predicted classes
    for m in METHODS:
        assert ref["maps"][m].shape == (N, 28, 28) and ref["maps"][m].dtype == np.float32
        assert ref["done"][m].all() and (ref["computed"][m] == 1).all()
    # the stored maps are the explainer's maps for the same chunks
    e = create_explainer("ig", model, steps=8, progress=False)
    assert np.array_equal(ref["maps"]["ig"][4:8], e(x[4:8], t[4:8]))
    meta = json.loads((out / "run.json").read_text())
    assert meta["model_sha256"] == runs.file_sha256(env["model"]) and meta["n"] == N
    assert meta["settings"]["ig"]["params"]["steps"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["methods"][m]["images_per_s_now"] > 0 for m in METHODS)


def _wait_for(proc, path, at_least, timeout=90):
    """Poll the store (read-only, no lock) until ``at_least`` maps are flagged done."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"run ended early (rc {proc.returncode}): {proc.stderr.read()[-800:]}")
        if path.exists():
            try:
                with h5py.File(path, "r", locking=False) as f:
                    done = sum(int(f["done"][m][()].sum()) for m in f["done"])
                if done >= at_least:
                    return done
            except (OSError, KeyError):  # the store being replaced right now
                pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the run made no progress")


def test_sigint_then_sigkill_then_resume_equals_uninterrupted_run(env, reference):
    _, ref = reference
    out = env["root"] / "killed"
    cmd = [sys.executable, "-m", "xaitf", *argv(env, out, "--chunk-delay", "0.2")]
    store = out / "store.h5"
    # 1. SIGINT after two chunks: the current chunk is finished, exit code 130
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(p, store, 2 * CHUNK)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-800:]
    assert "interrupted: stopped after the current chunk" in err
    first = read_store(store)
    done1 = sum(int(d.sum()) for d in first["done"].values())
    assert 2 * CHUNK <= done1 < len(METHODS) * N and done1 % CHUNK == 0
    for m, d in first["done"].items():
        assert np.array_equal(first["maps"][m][d], ref["maps"][m][d])        # finished = final
        assert (first["computed"][m] == d).all()                             # computed once, if done
    # 2. SIGKILL a resumed run mid-way: the store must stay readable and consistent
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(p, store, done1 + 2 * CHUNK)
    p.kill()
    p.wait(timeout=30)
    second = read_store(store)
    for m, d in second["done"].items():
        assert np.array_equal(second["maps"][m][d], ref["maps"][m][d])
        was = first["done"].get(m, np.zeros(N, bool))
        assert (second["computed"][m][was] == 1).all()                       # nothing redone
    # 3. resume to the end (in this process)
    assert xaitf_main(argv(env, out)) == 0
    final = read_store(store)
    computed = np.stack([final["computed"][m] for m in METHODS])
    for m in METHODS:
        assert final["done"][m].all()
        assert np.array_equal(final["maps"][m], ref["maps"][m])
    # every chunk computed once, except at most the one chunk in flight at the SIGKILL
    assert computed.min() == 1 and computed.max() <= 2
    assert computed.sum() - computed.size <= CHUNK
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["sessions"]) == 2            # SIGINT session + final (SIGKILL wrote none)
    assert summary["sessions"][0]["interrupted"] is True


def test_foreign_corrupted_and_changed_stores_are_refused(env, reference, tmp_path, capsys):
    ref_out, _ = reference
    out = tmp_path / "bad"
    out.mkdir()
    (out / "store.h5").write_bytes(os.urandom(4096))                          # random file
    with pytest.raises(runs.StoreError, match="not a readable HDF5 file.*--force"):
        xaitf_main(argv(env, out))
    raw = (ref_out / "store.h5").read_bytes()                                # truncated store
    (out / "store.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(runs.StoreError, match="damaged/truncated|corrupted"):
        xaitf_main(argv(env, out))
    with h5py.File(out / "store.h5", "w") as f:                              # some other HDF5
        f["x"] = np.zeros(3)
    with pytest.raises(runs.StoreError, match="not an xaitf run store"):
        xaitf_main(argv(env, out))
    (out / "store.h5").write_bytes(raw)                                      # a copy of the run
    with pytest.raises(runs.StoreError, match="belongs to another run: model sha256"):
        xaitf_main(argv(env, out, model=env["other"]))
    with pytest.raises(runs.StoreError,
                       match=r"ig was computed with other settings \(params.steps: 8 -> 4\)"):
        xaitf_main(argv(env, out, "--set", "ig.steps=4"))
    with pytest.raises(runs.StoreError, match="chunk size 4 there, 8 now"):
        xaitf_main(argv(env, out, "--chunk-size", "8"))
    assert (out / "store.h5").read_bytes() == raw                           # never overwritten
    # one line on the command line, before TensorFlow is even loaded
    r = subprocess.run([sys.executable, "-m", "xaitf", *argv(env, out, model=env["other"])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    # --force starts over
    assert xaitf_main(argv(env, out, "--force", model=env["other"], methods=["grad"])) == 0
    assert read_store(out / "store.h5")["done"]["grad"].all()


def test_a_failing_method_is_reported_and_the_others_finish(env, reference, tmp_path, monkeypatch):
    _, ref = reference
    out = tmp_path / "fail"
    real = runs_local.explain_chunk

    def flaky(explainer, x, targets):
        if explainer.name == "ig" and len(x) == CHUNK and np.array_equal(x, ref["inputs"][8:12]):
            raise ValueError("synthetic failure")
        return real(explainer, x, targets)

    monkeypatch.setattr(runs_local, "explain_chunk", flaky)   # where run_local looks it up
    with pytest.raises(XaitfError, match=r"1 method\(s\) failed.*ig: images 8:12: ValueError: "
                                         "synthetic failure"):
        xaitf_main(argv(env, out, "--metrics", "sparseness"))
    # the methods with every map are scored; the failed one is left out (not all scores lost)
    assert sorted(json.loads((out / "metrics.json").read_text())) == ["grad", "occlusion"]
    got = read_store(out / "store.h5")
    assert got["done"]["grad"].all() and got["done"]["occlusion"].all()
    assert got["done"]["ig"].tolist() == [True] * 8 + [False] * (N - 8)   # stopped at the failure
    summary = json.loads((out / "summary.json").read_text())
    assert "synthetic failure" in summary["methods"]["ig"]["failure"]
    monkeypatch.setattr(runs_local, "explain_chunk", real)
    assert xaitf_main(argv(env, out)) == 0                                  # the rest, once
    got = read_store(out / "store.h5")
    assert (got["computed"]["ig"] == 1).all() and np.array_equal(got["maps"]["ig"], ref["maps"]["ig"])


def test_chunk_writes_change_only_the_preallocated_data(tmp_path):
    """Crash safety: after the store's structure exists, a chunk write touches no HDF5 metadata."""
    x = np.random.RandomState(0).rand(10, 5, 5, 1).astype(np.float32)
    meta = {"n": 10, "chunk": 5}
    store = runs.Store.create(tmp_path / "s.h5", meta, x, np.zeros(10), np.zeros(10), np.arange(10))
    store.add_method("m", (5, 5), {"params": {}})
    regions = [(store.f[k]["m"].id.get_offset(), store.f[k]["m"].id.get_storage_size())
               for k in store.PER_METHOD]
    before = (tmp_path / "s.h5").read_bytes()
    store.write_chunk("m", 5, 10, np.ones((5, 5, 5), np.float32), 0.5)
    after = (tmp_path / "s.h5").read_bytes()                      # the file as a SIGKILL leaves it
    assert len(after) == len(before) and after != before

    def outside(raw):
        b = bytearray(raw)
        for off, size in regions:
            b[off:off + size] = bytes(size)
        return bytes(b)

    assert outside(after) == outside(before)
    reopened = runs.Store.open(tmp_path / "s.h5")   # second handle, as a restarted run would
    assert reopened.done["m"].tolist() == [False] * 5 + [True] * 5
    assert np.isnan(reopened.maps("m")[:5]).all() and (reopened.maps("m")[5:] == 1).all()
    reopened.close()
    store.close()


def test_missing_extras_say_how_to_install(env, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("ray", "mlflow") else real(name, *a))
    with pytest.raises(runs.ExtraMissing, match=r"pip install 'xaitf\[ray\]'"):
        xaitf_main(argv(env, tmp_path / "r", "--engine", "ray"))
    with pytest.raises(runs.ExtraMissing, match=r"pip install 'xaitf\[track\]'"):
        xaitf_main(argv(env, tmp_path / "r", "--track", "mlflow"))
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install 'xaitf[ray]')")
def test_ray_two_workers_give_the_local_maps(env, reference, tmp_path):
    _, ref = reference
    out = tmp_path / "ray"
    assert xaitf_main(argv(env, out, "--engine", "ray", "--workers", "2")) == 0
    got = read_store(out / "store.h5")
    for m in METHODS:
        assert got["done"][m].all() and (got["computed"][m] == 1).all()
        assert np.array_equal(got["maps"][m], ref["maps"][m]), m
    assert json.loads((out / "summary.json").read_text())["sessions"][0]["engine"] == "ray"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="mlflow is not installed (pip install 'xaitf[track]')")
def test_mlflow_tracking_of_a_run_and_of_training(env, reference, tmp_path):
    import shutil

    from xaitf import tracking
    from xaitf.keras_bridge import tfk

    out = tmp_path / "tracked"
    shutil.copytree(reference[0], out)
    extra = ["--track", "mlflow"]
    if importlib.util.find_spec("xaitf.metrics.curves") is not None:
        extra += ["--metrics", "deletion_curve"]
    assert xaitf_main(argv(env, out, *extra)) == 0
    run_id = json.loads((out / "run.json").read_text())["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.tracking_uri(out / "mlruns"))
    run = client.get_run(run_id)
    assert run.data.params["ig.steps"] == "8" and run.data.params["n"] == str(N)
    assert run.data.metrics["grad.done"] == N and run.data.metrics["ig.images_per_s"] > 0
    if "--metrics" in extra:
        assert 0 <= run.data.metrics["ig.deletion_curve.auc"] <= 1
    assert run.info.status == "FINISHED"
    assert {"overview.png", "summary.json"} <= {a.path for a in client.list_artifacts(run_id)}
    # the Keras callback: one point per epoch
    tracker = tracking.start_run("mlflow", tmp_path / "train", "train", run_name="tiny")
    model = make_cnn(shape=(8, 8, 1), classes=3)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rs = np.random.RandomState(0)
    model.fit(rs.rand(16, 8, 8, 1), rs.randint(0, 3, 16), epochs=2, verbose=0,
              callbacks=[tracking.keras_callback(tracker, kind="tf-keras", params={"recipe": "test"})])
    tracker.end()
    history = tracker.client.get_metric_history(tracker.run_id, "loss")
    assert [h.step for h in history] == [0, 1]
    assert tracker.client.get_run(tracker.run_id).data.params["recipe"] == "test"
    assert isinstance(tracking.keras_callback(tracker), tfk.callbacks.Callback)
