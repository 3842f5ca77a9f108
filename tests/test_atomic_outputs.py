"""Write-then-move ([SAFE]): a command's outputs appear complete or not at all, and a failure leaves
the previous results (and a study's ``latest``) exactly as they were.

Each test reproduces a defect in the form it was found: the input is made here, the command runs
in-process through :func:`xaitf.cli.run` (exit code and the one-line error on stderr), and the
files left on disk are checked.

* studies (``python -m xaitf.studies center_pixel --quick``): one real quick run (about 45 s on
  2 CPU cores; ``--quick``'s own Shapley/MP/PDA sizes win over ``--set``, so nothing shrinks it
  much, and conftest's ``center_pixel_quick`` shares it with test_studies_center_pixel) is the
  "last good run"; the failing runs after it stop early.
* dataset runs (``python -m xaitf run``): a tiny CNN and an 8-image ``mnist.npz`` made here.
"""
import copy
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_cnn, write_mnist_npz

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
from xaitf import cli, settings as S
from xaitf.__main__ import main as xaitf_main
from xaitf.studies import common as C
from xaitf.studies.__main__ import main as studies_main

STUDY = "center_pixel"


@pytest.fixture(autouse=True)
def restore_settings():
    """``--set`` changes xaitf.settings in this process; undo it after every test."""
    saved = copy.deepcopy(S.SECTIONS)
    yield
    for name, d in S.SECTIONS.items():
        d.clear()
        d.update(saved[name])


def run_cli(main, argv, capsys):
    """``main(argv)`` through cli.run: (exit code, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(main, [str(a) for a in argv])
    return e.value.code, capsys.readouterr().err.strip().splitlines()


def tree(root):
    """Every file and folder under ``root`` (hidden ones included) with file contents' sizes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


# -- studies -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(center_pixel_quick):
    """A finished quick run of study 1 under ``D`` (conftest's session run, shared with
    test_studies_center_pixel): (D, its folder, what it printed)."""
    out, folder, _, printed = center_pixel_quick
    return out, folder, printed


def test_a_study_is_published_only_when_finished_with_final_paths(good):
    out, folder, printed = good
    base = out / STUDY
    # only the finished folder and the pointer: no hidden work folder is left
    assert sorted(p.name for p in base.iterdir()) == sorted([folder.name, "latest"])
    assert re.fullmatch(r"\d{8}-\d{6}(_\d+)?", folder.name)
    assert (base / "latest").read_text() == folder.name + "\n"
    # every path it printed or recorded is the final one
    text = (folder / "results.json").read_text()
    report = (folder / "report.md").read_text()
    for what in (printed, text, report):
        assert C.PARTIAL not in what
    assert f"done: {folder}/report.md" in printed
    assert f"run -> {folder}" in printed
    r = json.loads(text)
    assert r["folder"] == str(folder)
    for path in r["figures"].values():
        assert os.path.isfile(path) and os.path.dirname(path) == str(folder)
    # the report's links are relative and resolve in the published folder
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 4
    for link in links:
        assert not os.path.isabs(link) and (folder / link).is_file(), link


def test_defect2_truncated_model_keeps_the_last_good_run(good, tmp_path, capsys):
    """Found as: the same command with --models-dir holding a truncated center_pixel.h5 failed
    cleanly but created an empty D/center_pixel/<timestamp>/ and moved `latest` to it."""
    out, folder, _ = good
    before = tree(out)
    real = tmp_path / "real.h5"                          # a real center-pixel model file (15x15)
    from xaitf.zoo import build_center_pixel

    build_center_pixel(image_size=15).save(real)
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{STUDY}.h5").write_bytes(real.read_bytes()[:100])      # its first 100 bytes
    code, err = run_cli(studies_main, [STUDY, "--quick", "--no-progress", "--out", out,
                                       "--models-dir", models], capsys)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ") and f"{STUDY}.h5" in err[0]
    assert tree(out) == before                           # nothing new, nothing hidden, same files
    assert C.latest_folder(out, STUDY) == folder


def test_defect2_failure_mid_study_leaves_nothing(good, tmp_path, capsys, monkeypatch):
    """Found as: `--set global.image_size=abc` with a saved model ran 34 s, wrote 4 files without
    report.md, moved `latest`, then exited 3 with a bare ValueError. Here the study fails the same
    way after writing its first files (an injected ValueError), without the 34 s."""
    from xaitf.studies import center_pixel as CP

    out, folder, _ = good
    before = tree(out)

    from matplotlib.figure import Figure

    def part_heatmaps(runner, x, work, quick):
        C.save_fig(Figure(), work, "heatmap")
        C.atomic(work / "maps.npz", lambda tmp: np.savez(tmp, a=np.zeros(2)))
        raise ValueError("invalid literal for int() with base 10: 'abc'")

    monkeypatch.setattr(CP, "part_heatmaps", part_heatmaps)
    args = [STUDY, "--quick", "--no-progress", "--out", out, "--models-dir", tmp_path / "none"]
    code, err = run_cli(studies_main, args, capsys)
    assert code == cli.EXIT_INTERNAL
    assert len(err) == 1 and err[0].startswith("error: ValueError: invalid literal")
    assert tree(out) == before
    assert C.latest_folder(out, STUDY) == folder
    # --debug keeps the failed run's files, hidden, and says where
    code, err = run_cli(studies_main, args + ["--debug"], capsys)
    assert code == cli.EXIT_INTERNAL
    kept = [p for p in (out / STUDY).iterdir() if p.name.endswith(C.FAILED)]
    assert len(kept) == 1 and kept[0].name.startswith(".")
    assert sorted(p.name for p in kept[0].iterdir()) == ["heatmap.png", "maps.npz"]
    assert f"note: the failed run's files are kept in {kept[0]}" in err
    assert (out / STUDY / "latest").read_text() == folder.name + "\n"
    import shutil

    shutil.rmtree(kept[0])
    assert tree(out) == before


def test_defect2_bad_setting_is_one_user_error_and_keeps_latest(good, tmp_path, capsys):
    """Found as: `--set global.image_size=abc`: exit 3 with a bare ValueError after `latest` moved."""
    out, folder, _ = good
    before = tree(out)
    code, err = run_cli(studies_main, [STUDY, "--quick", "--no-progress", "--out", out,
                                       "--models-dir", tmp_path / "none",
                                       "--set", "global.image_size=abc"], capsys)
    assert tree(out) == before                           # latest and every earlier run untouched
    assert C.latest_folder(out, STUDY) == folder
    if not (code == 1 and len(err) == 1 and "global.image_size" in err[0]):
        pytest.xfail("validation of --set global.* values (settings.py/cli.py, another [SAFE] "
                     f"change) is not in yet: exit {code}, {err[-1:]}")
    assert err[0].startswith("error: ")


def test_a_killed_runs_work_folder_is_removed_by_the_next_run(tmp_path):
    base = tmp_path / STUDY
    stale = base / ".20000101-000000.partial"            # left by a SIGKILLed run: no lock held
    stale.mkdir(parents=True)
    (stale / "heatmap.png").write_bytes(b"x")
    live = base / ".20000101-000001.partial"             # a run still going: holds its lock
    live.mkdir()
    fd = C._lock_dir(live)
    old = time.time() - 2 * C.STALE_AFTER_S
    for d in (stale, live):
        os.utime(d, (old, old))
    try:
        with C.study_session(tmp_path, STUDY) as s:
            work = C.run_folder(tmp_path, STUDY, stamp="20000101-000002")
            C.write_report(work, "T", [("S", f"[x]({work}/a.png)")])
        assert not stale.exists() and live.is_dir()
        assert s.final == base / "20000101-000002" and s.final.is_dir()
        assert str(s.final / "a.png") in (s.final / "report.md").read_text()
    finally:
        os.close(fd)


def test_run_folder_needs_a_session_and_a_study_must_write_its_report(tmp_path):
    with pytest.raises(RuntimeError, match="outside a study session"):
        C.run_folder(tmp_path, STUDY)
    with pytest.raises(RuntimeError, match="without writing report.md"):
        with C.study_session(tmp_path, STUDY):
            (C.run_folder(tmp_path, STUDY) / "a.json").write_text("{}")
    assert not (tmp_path / STUDY).exists()               # the folders it made are gone too


# -- dataset runs (python -m xaitf run) ---------------------------------------------------------
N = 8


@pytest.fixture(scope="module")
def renv(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic_runs")
    data = write_mnist_npz(root / "data", 4, N)
    bad = root / "bad_data"
    bad.mkdir()
    np.savez(bad / "mnist.npz", x_train=np.zeros((4, 3)), y_train=np.zeros(4),
             x_test=np.zeros((4, 3)), y_test=np.zeros(4))
    make_cnn(shape=(28, 28, 1), classes=10, seed=0).save(root / "tiny.h5")
    make_cnn(shape=(8, 8, 1), classes=10, seed=0).save(root / "small_input.h5")
    env = {"root": root, "data": data, "bad_data": bad, "model": root / "tiny.h5",
           "small_input": root / "small_input.h5"}
    out = root / "good"
    assert xaitf_main(rargv(env, out)) == 0
    env["store"] = out / "store.h5"
    return env


def rargv(env, out, *extra, model=None, data=None):
    return ["run", "--model", str(model or env["model"]), "--data", "mnist", "--data-dir",
            str(data or env["data"]), "--limit", str(N), "--chunk-size", "4", "--out", str(out),
            "--methods", "grad", "--no-progress", *extra]


def test_defect5_truncated_store_is_damaged_not_locked(renv, tmp_path, capsys):
    """Found as: a truncated store.h5 reported as "open in another process ... wait for that run
    to end" (HDF5's "truncated file: ... sblock" contains "lock")."""
    out = tmp_path / "trunc"
    out.mkdir()
    raw = renv["store"].read_bytes()
    for size in (100, len(raw) // 2):
        (out / "store.h5").write_bytes(raw[:size])
        code, err = run_cli(xaitf_main, rargv(renv, out), capsys)
        assert code == 1 and len(err) == 1
        assert err[0].startswith(f"error: run store damaged/truncated: {out / 'store.h5'} ")
        assert "delete it" in err[0] and "another --out" in err[0] and "lock" not in err[0].replace("sblock", "")
        assert (out / "store.h5").read_bytes() == raw[:size]                 # untouched
        assert sorted(p.name for p in out.iterdir()) == [".lock", "store.h5"]


def test_defect5_store_open_in_another_process_is_locked(renv, tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    store = out / "store.h5"
    store.write_bytes(renv["store"].read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); print('open', "
         "flush=True); sys.stdin.read()", str(store)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        raw = store.read_bytes()
        code, err = run_cli(xaitf_main, rargv(renv, out), capsys)
        assert code == 1 and len(err) == 1
        assert err[0].startswith(f"error: run store is locked: {store} is open in another process")
        assert store.read_bytes() == raw
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert xaitf_main(rargv(renv, out)) == 0                # free again: the run resumes (done)


@pytest.mark.parametrize("case", ["wrong_shape", "bad_data"])
def test_defect13_a_failed_run_leaves_no_out_folder(renv, tmp_path, capsys, case):
    """Found as: a failed `python -m xaitf run` (a model whose input does not match the data, or
    bad data) left an empty --out folder holding a .lock file."""
    kw = {"model": renv["small_input"]} if case == "wrong_shape" else {"data": renv["bad_data"]}
    out = tmp_path / "new" / "run"                      # neither folder exists
    code, err = run_cli(xaitf_main, rargv(renv, out, **kw), capsys)
    assert code == 1 and len(err) == 1
    assert ("expects images shaped (8, 8, 1)" if case == "wrong_shape" else "mnist.npz: expected") in err[0]
    assert not (tmp_path / "new").exists()
    # a folder the user made is left where it was (only the lock file is this run's)
    mine = tmp_path / "mine"
    mine.mkdir()
    code, _ = run_cli(xaitf_main, rargv(renv, mine, **kw), capsys)
    assert code == 1 and mine.is_dir() and not (mine / "store.h5").exists()


def test_defect13_zero_byte_store_is_refused_not_rewritten(renv, tmp_path, capsys):
    out = tmp_path / "zero"
    out.mkdir()
    (out / "store.h5").write_bytes(b"")
    code, err = run_cli(xaitf_main, rargv(renv, out), capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: run store is empty (0 bytes, not written by xaitf): {out / 'store.h5'};")
    assert (out / "store.h5").stat().st_size == 0                         # not turned into HDF5
    assert not (out / "run.json").exists()
    # xaitf's own leftovers (a killed run's hidden temporary store) are cleaned, and --force starts over
    (out / ".store.abc123.part.h5").write_bytes(b"partial")
    assert xaitf_main(rargv(renv, out, "--force")) == 0
    assert not (out / ".store.abc123.part.h5").exists()
    assert (out / "store.h5").stat().st_size > 0
