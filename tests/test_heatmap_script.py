"""heatmap_script.py end to end, through subprocesses, on tiny models (study 1's CLI)."""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_cnn, run_heatmap

SCRIPT = ROOT / "heatmap_script.py"
NAME = re.compile(r"^heatmap_\d{8}-\d{6}(_\d+)?\.png$")


def run_script(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def figures(folder):
    return sorted(p.name for p in Path(folder).glob("*.png")) if Path(folder).exists() else []


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny CNN saved as .h5 (8x8x1, 5 classes) and a 12x10 RGB PNG."""
    from PIL import Image

    d = tmp_path_factory.mktemp("cli")
    model = d / "tiny.h5"
    with warnings.catch_warnings():                     # "HDF5 is legacy": .h5 is what we test
        warnings.simplefilter("ignore")
        make_cnn(shape=(8, 8, 1), classes=5).save(model)
    png = d / "digit.png"
    rgb = (np.random.RandomState(0).rand(10, 12, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(png)
    return {"dir": d, "model": model, "png": png}


def test_end_to_end_figure_arrays_settings_and_no_overwrite(files, tmp_path, capsys, restore_settings):
    out = tmp_path / "res"
    r = run_script("-ip", files["png"], "-mp", files["model"], "-op", out, "-hm", "IG", "grad",
                   "input_x_gradient", "--set", "ig.steps=8", "--save-arrays", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder = out / "digit"                                   # results/<image stem>/
    pngs = figures(folder)
    assert len(pngs) == 1 and NAME.match(pngs[0]), pngs
    assert (folder / pngs[0]).read_bytes()[:4] == b"\x89PNG"
    arrays = np.load(folder / pngs[0].replace(".png", ".npz"))
    assert sorted(arrays.files) == ["grad", "ig", "inpgrad"]  # one map per method, registry keys
    assert all(arrays[k].shape == (8, 8) and np.isfinite(arrays[k]).all() for k in arrays.files)
    assert np.abs(arrays["grad"]).max() > 0
    # the override reached the explainer, and the printed settings say so
    assert re.search(r"Integrated Gradients \(ig\): steps=8\b", r.stdout), r.stdout
    assert "stripped" in r.stdout or "replaced softmax" in r.stdout   # explained output is logits
    # columns come in study 1's order whatever the order typed
    order = [line.split("(")[1].split(")")[0] for line in r.stdout.splitlines()
             if re.match(r"\s+\S.* \((grad|ig|inpgrad)\): ", line)]
    assert order == ["grad", "inpgrad", "ig"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]   # no temp files left

    # a second run in the same second (or not) never replaces the first figure (in-process: fast)
    code, stdout, _ = run_main(capsys, "-ip", files["png"], "-mp", files["model"], "-op", out,
                               "-hm", "grad", "--no-crop")
    assert code == 0
    pngs2 = figures(folder)
    assert len(pngs2) == 2 and set(pngs) < set(pngs2) and all(NAME.match(p) for p in pngs2)
    assert f"figure: {folder}" in stdout


# -- in-process runs (TensorFlow is already loaded here): same code path, exit codes, stderr -----
def run_main(capsys, *args):
    return run_heatmap(capsys, *args)


def test_center_pixel_model_default_image_and_centre_pixel(tmp_path, capsys, restore_settings):
    # the study-1 model, built in memory at 15x15 (same formula, fast); -cp sets the true label
    code, out, err = run_main(capsys, "-hm", "grad", "-cp", "42", "--set", "global.image_size=15",
                              "-op", tmp_path / "res", "--save-arrays")
    assert code == 0, err
    assert "predicted class 42" in out and "true label (centre pixel) 42" in out
    assert "explaining class 42" in out and "built in memory" in out
    folder = tmp_path / "res" / "random"                           # no -ip: stem "random"
    assert len(figures(folder)) == 1
    grad = np.load(next(folder.glob("*.npz")))["grad"]
    # d logit_42 / d x at the centre is alpha * 255 * (2*42 - 510) (input scaled by 1/255): the
    # most negative entry of the map
    assert grad.shape == (15, 15) and np.unravel_index(grad.argmin(), grad.shape) == (7, 7)
    np.testing.assert_allclose(grad[7, 7], 10 * 255 * (2 * 42 - 510), rtol=1e-5)


def test_clamp_label_out_of_range(files, tmp_path, capsys, restore_settings):
    code, out, err = run_main(capsys, "-ip", files["png"], "-mp", files["model"], "-cl", "7", "-hm",
                              "grad", "-op", tmp_path / "res")
    assert code == 1
    assert err.splitlines() == ["error: -cl 7 is out of range: the model has 5 classes (0..4)"]
    assert not (tmp_path / "res").exists()


def test_method_that_cannot_handle_the_model(tmp_path, capsys, restore_settings):
    from xaitf import registry

    if "gradcam" not in registry.list_methods():
        pytest.skip("Grad-CAM not present yet")
    # the center-pixel model has no conv layer: Grad-CAM refuses before any map is computed; with
    # other methods asked for, they run (test_a_method_that_cannot_handle_the_model_is_left_out)
    code, out, err = run_main(capsys, "-hm", "gradcam", "--set", "global.image_size=15", "-op", tmp_path / "res")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gradcam: ") and "Conv2D" in lines[0], err
    assert "estimate" not in out                                   # stopped before any work
    assert not (tmp_path / "res").exists()
    code, out, err = run_main(capsys, "-hm", "grad", "gradcam", "--set", "global.image_size=15",
                              "-op", tmp_path / "res")
    assert code == 1 and err.splitlines()[0] == lines[0] and "  grad: " in out


def test_unreadable_model_file(files, tmp_path, capsys, restore_settings):
    bad_h5 = tmp_path / "bad.h5"
    bad_h5.write_bytes(b"\0garbage")
    code, out, err = run_main(capsys, "-ip", files["png"], "-mp", bad_h5, "-hm", "grad",
                              "-op", tmp_path / "res")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and str(bad_h5) in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "res").exists()


# -- errors caught before TensorFlow is imported: exactly one line on stderr --------------------
def test_unknown_method_lists_valid_keys_and_writes_nothing(files, tmp_path):
    r = run_script("-ip", files["png"], "-mp", files["model"], "-hm", "grad", "nosuch", "-op",
                   tmp_path / "res", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "valid:" in lines[0]
    assert "grad" in lines[0] and "lrp" in lines[0] and "ig" in lines[0]
    assert r.stdout == "" and not (tmp_path / "res").exists()


def test_missing_image_and_model_one_line(files, tmp_path):
    r = run_script("-ip", tmp_path / "nope.png", "-mp", files["model"], "-hm", "grad", cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"error: image file not found: {tmp_path / 'nope.png'}"]
    r = run_script("-mp", tmp_path / "nope.h5", "-hm", "grad", cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model file not found" in lines[0]
    assert not (tmp_path / "results").exists()


def test_unreadable_image_one_line(files, tmp_path):
    bad_png = tmp_path / "bad.png"
    bad_png.write_text("not an image")
    r = run_script("-ip", bad_png, "-mp", files["model"], "-hm", "grad", "-op", tmp_path / "res",
                   cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()                          # read before TensorFlow starts
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {bad_png}"), r.stderr
    assert not (tmp_path / "res").exists()


def test_bad_set_and_bad_flag_one_line(tmp_path):
    r = run_script("-hm", "grad", "--set", "bad", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: bad --set 'bad': expected section.key=value, e.g. ig.steps=128"]
    r = run_script("-hm", "grad", "--set", "ig.nosuch=3", cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "steps" in r.stderr
    r = run_script("-hm", "grad", "-cp", "300", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "0..255" in lines[0]


def test_list_methods(tmp_path):
    r = run_script("--list", cwd=tmp_path)
    assert r.returncode == 0
    assert re.search(r"^\s+grad\s+Gradient$", r.stdout, re.M)
    assert re.search(r"^\s+ig\s+Integrated Gradients$", r.stdout, re.M)


def test_memory_budget_caps_chunks_and_says_so(files, tmp_path, capsys, restore_settings):
    """A budget smaller than 256 inputs' activations caps batch_size; the run still explains."""
    model = tmp_path / "wide.keras"
    make_cnn(shape=(48, 48, 3), classes=5).save(model)          # ~100 KB of activations per input
    code, stdout, stderr = run_main(capsys, "-ip", files["png"], "-mp", model, "-op", tmp_path / "o",
                                    "-hm", "grad", "occlusion", "--set", "global.memory_budget_mb=1")
    assert code == 0, stderr
    assert re.search(r"Gradient \(grad\): batch_size=(\d+)", stdout).group(1) != "256"
    assert re.search(r"batch_size 256 -> \d+: ~[\d.e-]+ MB of activations per input \(memory_budget_mb=1;", stdout)
    assert figures(tmp_path / "o" / "digit")


def test_pda_intensities_follow_the_preprocessing(files, tmp_path, capsys, restore_settings):
    """--preprocess caffe: PDA's marginal intensities run from a black to a white pixel in the
    model's input space (BGR, ImageNet mean subtracted), not from 0 to 1."""
    model = tmp_path / "rgb.keras"
    make_cnn(shape=(8, 8, 3), classes=5).save(model)
    code, stdout, stderr = run_main(capsys, "-ip", files["png"], "-mp", model, "-op", tmp_path / "o", "-hm", "pda",
                                    "--preprocess", "caffe", "--set", "pda.values=4", "--budget", "none")
    assert code == 0, stderr
    line = next(ln for ln in stdout.splitlines() if "(pda):" in ln)
    import ast

    got = ast.literal_eval(re.search(r"value_range=(\(\(.*?\), \(.*?\)\))", line).group(1))
    mean = np.array([103.939, 116.779, 123.68])                    # caffe: BGR, ImageNet mean
    np.testing.assert_allclose(np.array(got), [-mean, 255.0 - mean], atol=1e-4)


def constant_logits_model(path, bias=None):
    """A tiny CNN whose last kernel is 0 (its logits ignore the image; all ``bias`` if given),
    saved as .h5 at ``path``."""
    model = make_cnn(shape=(8, 8, 1), classes=5)
    k, b = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.zeros_like(k), b if bias is None else np.full_like(b, bias)])
    with warnings.catch_warnings():                     # "HDF5 is legacy": .h5 is what we test
        warnings.simplefilter("ignore")
        model.save(path)
    return path


def test_all_zero_map_is_warned(files, tmp_path, capsys, restore_settings):
    """A model whose output ignores the image (last kernel 0): every gradient map is all 0, and the
    user is told why instead of seeing an empty figure."""
    path = constant_logits_model(tmp_path / "constant.h5")
    code, out, err = run_main(capsys, "-ip", files["png"], "-mp", path, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 0, err
    assert "warning: grad map is all 0: the explained output gives it nothing to attribute" in err
    code, out, err = run_main(capsys, "-ip", files["png"], "-mp", files["model"], "-hm", "grad",
                              "-op", tmp_path / "res2")
    assert code == 0 and "all 0" not in err


def test_z_box_bounds_follow_the_preprocessing(files, tmp_path, capsys, restore_settings):
    """--preprocess tf (x / 127.5 - 1): the z^B rule's bounds are the inputs of a black and a white
    pixel, -1 and 1, not the presets' 0 and 1 (the rule refuses inputs outside its box)."""
    model = tmp_path / "rgb.keras"
    make_cnn(shape=(8, 8, 3), classes=5).save(model)
    code, stdout, stderr = run_main(capsys, "-ip", files["png"], "-mp", model, "-op", tmp_path / "o", "--save-arrays",
                                    "-hm", "deep_taylor.bounded", "lrp.epsilon_gamma_box", "--preprocess", "tf")
    assert code == 0, stderr
    for key in ("deep_taylor.bounded", "lrp.epsilon_gamma_box"):
        line = next(ln for ln in stdout.splitlines() if f"({key}):" in ln)
        assert "low=-1, high=1," in line, line
    arrays = np.load(next((tmp_path / "o" / "digit").glob("*.npz")), allow_pickle=False)
    assert all(np.isfinite(arrays[k]).all() for k in arrays.files)
    # --set wins over the preprocessing's range (and the rule then refuses the inputs, in one line)
    code, _, stderr = run_main(capsys, "-ip", files["png"], "-mp", model, "-op", tmp_path / "o2",
                               "-hm", "deep_taylor.bounded", "--preprocess", "tf", "--set", "deep_taylor.low=0")
    assert code == 1 and stderr.count("\n") == 1
    assert "outside the z^B bounds low=0, high=1" in stderr and "pass low= and high=" in stderr


def test_method_warnings_are_one_line_and_replace_the_generic_one(files, tmp_path, capsys, restore_settings):
    """Deep Taylor on a logit <= 0 says why its map is empty: once, as one 'warning:' line, without
    Python's file:line form and without the generic all-zero message."""
    path = constant_logits_model(tmp_path / "negative.h5", bias=-1.0)      # every logit is -1
    code, _, err = run_main(capsys, "-ip", files["png"], "-mp", path, "-hm", "deep_taylor", "-op", tmp_path / "res")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "warning" in ln.lower()]
    assert len(lines) == 1, err
    assert lines[0].strip().startswith("warning: deep_taylor: 1 of 1 maps are all 0: Deep Taylor starts from relu(f_c)")
    assert ".py:" not in err and "nothing to attribute" not in err


def test_a_failing_or_interrupted_method_keeps_the_others(files, tmp_path, capsys, restore_settings, monkeypatch):
    """One method failing while it explains (z^B refuses [-1, 1] inputs with --set low=0) does not
    cost the other maps: the figure and arrays hold them, each failure is one line, the exit code is
    1. Ctrl-C during a method keeps the finished ones too (exit 130)."""
    model = tmp_path / "rgb.keras"
    make_cnn(shape=(8, 8, 3), classes=5).save(model)
    base = ("-ip", files["png"], "-mp", model, "--preprocess", "tf", "--save-arrays")
    code, stdout, stderr = run_main(capsys, *base, "-op", tmp_path / "o", "-hm", "grad", "deep_taylor.bounded",
                                    "--set", "deep_taylor.low=0")
    assert code == 1
    assert stderr.splitlines() == [
        next(ln for ln in stderr.splitlines() if ln.startswith("error: deep_taylor.bounded: the inputs range over")),
        "error: 1 method(s) failed (deep_taylor.bounded; errors above); the figure shows the 1 that finished"]
    folder = tmp_path / "o" / "digit"
    assert len(figures(folder)) == 1
    assert np.load(next(folder.glob("*.npz")), allow_pickle=False).files == ["grad"]

    from xaitf.methods.lrp import LRP

    def interrupted(self, x, targets):
        raise KeyboardInterrupt

    monkeypatch.setattr(LRP, "explain_batch", interrupted)
    code, _, stderr = run_main(capsys, *base, "-op", tmp_path / "i", "-hm", "grad", "lrp.epsilon")
    assert code == 130 and stderr.splitlines()[-1] == \
        "error: interrupted; the figure holds the 1 method(s) that finished"
    assert np.load(next((tmp_path / "i" / "digit").glob("*.npz")), allow_pickle=False).files == ["grad"]
    code, _, stderr = run_main(capsys, *base, "-op", tmp_path / "n", "-hm", "lrp.epsilon")
    assert code == 130 and "nothing was written" in stderr and not (tmp_path / "n").exists()


def test_a_method_that_cannot_handle_the_model_is_left_out(files, tmp_path, capsys, restore_settings):
    """Deep Taylor refuses a network with ELU when it is built: with other methods asked for, that is
    one line, the others run and the exit code is 1; alone, or when every method refuses, the run
    stops with exit 1 and writes nothing."""
    import keras

    i = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="elu")(i)
    model = tmp_path / "elu.keras"
    keras.Model(i, keras.layers.Dense(5)(keras.layers.Flatten()(h))).save(model)
    base = ("-ip", files["png"], "-mp", model, "--save-arrays")
    code, _, stderr = run_main(capsys, *base, "-op", tmp_path / "o", "-hm", "grad", "deep_taylor", "ig")
    lines = stderr.splitlines()
    assert code == 1 and lines[0].startswith("error: deep_taylor: deep_taylor needs a ReLU network") and \
        "elu" in lines[0]
    assert lines[-1] == "error: 1 method(s) failed (deep_taylor; errors above); the figure shows the 2 that finished"
    assert np.load(next((tmp_path / "o" / "digit").glob("*.npz")), allow_pickle=False).files == ["grad", "ig"]
    for methods in (("deep_taylor",), ("deep_taylor", "deep_taylor.bounded")):
        code, _, stderr = run_main(capsys, *base, "-op", tmp_path / "n", "-hm", *methods)
        assert code == 1 and "needs a ReLU network" in stderr and not (tmp_path / "n").exists()
    assert "every method failed (deep_taylor, deep_taylor.bounded" in stderr


def test_model_of_any_input_size_is_refused_with_what_to_do(files, tmp_path, capsys, restore_settings):
    """A fully convolutional model (input (None, None, 3)): heatmap_script, run and evaluate say in
    one line that it needs a fixed input size and how to give it one; nothing is written."""
    import keras

    from xaitf import cli
    from xaitf.__main__ import main as xaitf_main

    i = keras.Input((None, None, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(i))
    path = tmp_path / "anysize.keras"
    keras.Model(i, keras.layers.Dense(3, activation="softmax")(h)).save(path)
    want = r"expected an image classifier with a fixed input size \(H,W,C\), got \(None, None, 3\): .*keras.Input"
    code, _, err = run_main(capsys, "-ip", files["png"], "-mp", path, "-hm", "grad", "-op", tmp_path / "o")
    assert code == 1 and len(err.splitlines()) == 1 and re.search(want, err)
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3), np.uint8))
    for command in ("run", "evaluate"):
        extra = ["--methods", "grad"] + (["--metrics", "sparseness"] if command == "evaluate" else [])
        with pytest.raises(SystemExit) as e:
            cli.run(xaitf_main, [command, "--model", str(path), "--data", str(tmp_path / "x.npy"),
                                 "--out", str(tmp_path / command)] + extra)
        err = capsys.readouterr().err
        assert e.value.code == 1 and re.search(want, err), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists() and not (tmp_path / "evaluate").exists()
