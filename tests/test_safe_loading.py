"""Safe loading of model files: code stored in a file never runs unless the user opts in.

Each test makes its input here (tiny models written to tmp_path), then checks the exit code or the
exception, the one-line message, and what is (not) left on disk. The "stored code" is a Python
lambda in a Lambda layer (marshalled bytecode in the file) that writes a marker file when it runs.
"""
import json
import subprocess
import sys
import warnings
import zipfile

import h5py
import numpy as np
import pytest

from conftest import ROOT, make_cnn, write_mnist_npz
from xaitf import cli
from xaitf.errors import ModelError
from xaitf.keras_bridge import keras3, tfk
from xaitf.model_files import load_model
from xaitf.safe_loading import UnsafeModelError, find_unsafe, scan_model_file

SHAPE, CLASSES = (8, 8, 1), 3


def payload(marker):
    """A Python lambda that writes ``marker`` whenever it runs (stored as bytecode by Keras)."""
    return eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")  # noqa: S307


def lambda_classifier(kind, marker, nested=False, shape=SHAPE):
    """(8,8,1) -> Lambda(payload) -> Flatten -> Dense(3, softmax), tf-keras or Keras 3; the Lambda
    sits inside a Sequential model used as a layer when ``nested``."""
    k = tfk if kind == "tfk" else keras3()
    fn = payload(marker)
    inp = k.Input(shape, name="image")
    if nested:
        inner = k.Sequential([k.Input(shape), k.layers.Lambda(fn, name="evil")], name="inner")
        h = inner(inp)
    else:
        h = k.layers.Lambda(fn, name="evil")(inp)
    out = k.layers.Dense(CLASSES, activation="softmax", name="fc")(k.layers.Flatten()(h))
    return k.Model(inp, out, name="lambda_model")


def save(model, path, **kw):
    with warnings.catch_warnings():          # "HDF5 is legacy", SavedModel notices
        warnings.simplefilter("ignore")
        model.save(path, **kw)
    return path


def write_lambda_model(tmp_path, kind, fmt, nested=False, shape=SHAPE):
    """Save a payload model; returns (path, marker) with the marker removed (building ran it)."""
    marker = tmp_path / "marker.txt"
    model = lambda_classifier(kind, marker, nested, shape)
    name = f"{kind}{'_nested' if nested else ''}"
    if fmt == "savedmodel":
        path = save(model, tmp_path / f"{name}_savedmodel", save_format="tf")
    else:
        path = save(model, tmp_path / f"{name}.{fmt}")
    marker.unlink(missing_ok=True)
    return path, marker


def assert_refusal_line(msg, path, layer="'evil' (Lambda)"):
    assert "\n" not in msg and len(msg) < 300, msg
    assert str(path) in msg and layer in msg, msg
    assert "safe_mode=False" in msg and "--unsafe-model" in msg, msg


# -- defect 1, 12: Python code in a model file, every writer and format --------------------------
CASES = [("tfk", "h5", False), ("tfk", "keras", False), ("tfk", "savedmodel", False),
         ("tfk", "h5", True), ("tfk", "keras", True), ("k3", "keras", False), ("k3", "keras", True),
         ("k3", "h5", False)]


@pytest.mark.parametrize("kind,fmt,nested", CASES,
                         ids=[f"{k}-{f}{'-nested' if n else ''}" for k, f, n in CASES])
def test_lambda_code_runs_only_with_the_opt_in(tmp_path, kind, fmt, nested):
    path, marker = write_lambda_model(tmp_path, kind, fmt, nested)
    with pytest.raises(UnsafeModelError) as e:
        load_model(path)                                   # the default: safe mode
    assert_refusal_line(str(e.value), path)
    assert not marker.exists()                             # the stored code did not run
    model = load_model(path, safe_mode=False)              # the user trusts the file
    assert marker.exists()                                 # ... and loading ran it (as Keras does)
    assert tuple(model.outputs[0].shape[1:]) == (CLASSES,)


def test_savedmodel_with_keras3_is_refused_with_one_line(tmp_path):
    path = save(make_cnn(shape=SHAPE, classes=CLASSES), tmp_path / "sm", save_format="tf")
    assert load_model(path).name == "tiny_cnn"             # tf-keras loads SavedModel folders
    with pytest.raises(ModelError) as e:
        load_model(path, kind="keras3")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "Keras 3" in msg, msg


def test_scan_finds_module_references_and_builtins_without_keras():
    dense = {"class_name": "Dense", "config": {"name": "fc", "units": 2,
                                              "activation": {"module": "builtins", "class_name": "function",
                                                             "config": "eval", "registered_name": None}}}
    gadget = {"module": "os", "class_name": "system", "config": {}, "registered_name": None}
    safe = {"module": "builtins", "class_name": "function", "config": "relu", "registered_name": None}
    tfop = {"class_name": "TFOpLambda", "config": {"name": "tf.io.write_file", "function": "io.write_file"}}
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        dense, {"class_name": "Conv2D", "config": {"name": "c", "kernel_initializer": gadget,
                                                    "activation": safe}}, tfop]}}
    found = find_unsafe(config)
    assert ("fc", "Dense", "builtins.eval") in found
    assert ("c", "Conv2D", "os.system") in found
    assert ("tf.io.write_file", "TFOpLambda", "tf.io.write_file") in found
    assert len(found) == 3                                  # builtins.relu (a Keras name) passes
    assert find_unsafe(config["config"]["layers"][1], custom_objects={"system": object}) == []


def test_module_reference_in_keras_archive_is_refused(tmp_path):
    """A tf-keras .keras whose config names a function of another module (tf-keras would import
    the module and call the function): refused before tf-keras reads it."""
    good = save(make_cnn(shape=SHAPE, classes=CLASSES), tmp_path / "good.keras")
    with zipfile.ZipFile(good) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(files["config.json"])
    fc = next(l for l in config["config"]["layers"] if l["config"]["name"] == "fc2")
    fc["config"]["activation"] = {"module": "subprocess", "class_name": "function",
                                  "config": "getoutput", "registered_name": None}
    files["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    with pytest.raises(UnsafeModelError) as e:
        load_model(bad)
    msg = str(e.value)
    assert_refusal_line(msg, bad, layer="'fc2' (Dense)")
    assert "subprocess.getoutput" in msg
    assert load_model(good).name == "tiny_cnn"


# -- command lines: heatmap_script.py, python -m xaitf run, python -m xaitf.studies ----------------
def run_heatmap(capsys, *args):
    """``heatmap_script.py args`` in this process: (exit code, stdout, stderr)."""
    import heatmap_script

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(heatmap_script.main, [str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_heatmap_script_refuses_lambda_unless_unsafe_model(tmp_path, capsys):
    path, marker = write_lambda_model(tmp_path, "tfk", "h5")
    out = tmp_path / "res"
    code, stdout, err = run_heatmap(capsys, "-mp", path, "-hm", "grad", "-op", out)
    assert code == 1
    assert_refusal_line(one_error_line(err), path)
    assert not marker.exists() and not out.exists()
    code, stdout, err = run_heatmap(capsys, "-mp", path, "-hm", "grad", "-op", out, "--unsafe-model")
    assert code == 0, err
    assert marker.exists() and len(list((out / "random").glob("heatmap_*.png"))) == 1


def test_heatmap_script_refusal_of_keras3_file_is_short(tmp_path, capsys):
    path, marker = write_lambda_model(tmp_path, "k3", "keras", nested=True)
    code, _, err = run_heatmap(capsys, "-mp", path, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1
    assert_refusal_line(one_error_line(err), path)        # was one 3,224-character line
    assert not marker.exists() and not (tmp_path / "res").exists()


def test_custom_layer_module_imported_with_the_import_flag(tmp_path, capsys, monkeypatch):
    """A Keras 3 .keras with a custom layer registered by the user's module: refused in safe mode
    with the advice to --import it; with --import (the current folder searched) it loads in safe
    mode and is explained; a missing module is one line."""
    mod = "xaitf_user_layers_t1"
    (tmp_path / f"{mod}.py").write_text(
        "import keras\n\n\n@keras.saving.register_keras_serializable(package='xaitf_test_user')\n"
        "class Double(keras.layers.Layer):\n    def call(self, x):\n        return x * 2.0\n")
    build = (f"import keras, {mod}\ninp = keras.Input((8, 8, 1))\nh = {mod}.Double()(inp)\n"
             "h = keras.layers.Conv2D(2, 3, activation='relu')(h)\n"
             "keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(h))).save('user.keras')\n")
    r = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    monkeypatch.chdir(tmp_path)
    base = ["-mp", "user.keras", "-hm", "grad", "-op", tmp_path / "out"]
    code, _, err = run_heatmap(capsys, *base)
    line = one_error_line(err)
    assert code == 1 and f"names {mod}.Double" in line and f"--import {mod}" in line, line
    code, out, err = run_heatmap(capsys, *base, "--import", mod)
    assert code == 0, err
    code, _, err = run_heatmap(capsys, *base, "--import", "xaitf_no_such_module")
    assert code == 1 and "no module named 'xaitf_no_such_module'" in one_error_line(err)


def test_unsafe_model_flag_on_every_command_line():
    import heatmap_script
    from xaitf.__main__ import build_parser as xaitf_parser
    from xaitf.studies.__main__ import build_parser as studies_parser

    for parser, argv in ((heatmap_script.build_parser(), []), (studies_parser(), ["center_pixel"]),
                         (xaitf_parser(), ["run", "--model", "m.h5", "--data", "mnist", "--methods", "grad"])):
        assert parser.parse_args(argv).unsafe_model is False
        assert parser.parse_args(argv + ["--unsafe-model"]).unsafe_model is True
    text = heatmap_script.build_parser().format_help()
    assert "--unsafe-model" in text and "Python code" in text


def test_xaitf_run_refuses_lambda_unless_unsafe_model(tmp_path, capsys):
    from xaitf.__main__ import main as xaitf_main

    data = write_mnist_npz(tmp_path / "data", 4, 4)
    path, marker = write_lambda_model(tmp_path, "tfk", "h5", shape=(28, 28, 1))
    out = tmp_path / "run"
    argv = ["run", "--model", str(path), "--data", "mnist", "--data-dir", str(data), "--limit", "4",
            "--methods", "grad", "--out", str(out), "--no-progress"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(xaitf_main, argv)
    assert e.value.code == 1
    assert_refusal_line(one_error_line(capsys.readouterr().err), path)
    assert not marker.exists() and not (out / "store.h5").exists()
    with pytest.raises(SystemExit) as e:
        cli.run(xaitf_main, argv + ["--unsafe-model"])
    assert e.value.code == 0, capsys.readouterr().err
    assert marker.exists() and (out / "store.h5").is_file()


def test_studies_refuse_lambda_unless_unsafe_model(tmp_path, capsys, monkeypatch):
    """``python -m xaitf.studies`` threads the flag to ``common.get_model`` (the study itself is
    replaced by a stub that loads its model, to keep the test fast)."""
    from xaitf.studies import __main__ as studies_main
    from xaitf.studies import common

    models = tmp_path / "models"
    models.mkdir()
    marker = tmp_path / "marker.txt"
    save(lambda_classifier("tfk", marker), models / "center_pixel.h5")
    marker.unlink()
    loaded = []

    def stub(name, args):
        loaded.append(common.get_model(name, args.models_dir, safe_mode=common.load_safely(args))[0])
        return None, None

    monkeypatch.setattr(studies_main, "run_study", stub)
    argv = ["center_pixel", "--quick", "--models-dir", str(models), "--out", str(tmp_path / "res")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(studies_main.main, argv)
    assert e.value.code == 1
    assert_refusal_line(one_error_line(capsys.readouterr().err), models / "center_pixel.h5")
    assert not marker.exists() and not loaded
    with pytest.raises(SystemExit) as e:
        cli.run(studies_main.main, argv + ["--unsafe-model"])
    assert e.value.code == 0 and marker.exists() and len(loaded) == 1


# -- defect 4: user input that ended with "unexpected" (rc 3) --------------------------------------
def two_input_model():
    a, b = tfk.Input(SHAPE, name="left"), tfk.Input(SHAPE, name="right")
    h = tfk.layers.Flatten()(tfk.layers.Add()([a, b]))
    return tfk.Model([a, b], tfk.layers.Dense(CLASSES, activation="softmax")(h), name="two")


def test_two_input_model_is_refused_in_one_line(tmp_path, capsys):
    import xaitf

    with pytest.raises(ModelError) as e:
        xaitf.create_explainer("grad", two_input_model())
    assert str(e.value) == "expected a model with one image input, got 2 inputs (left, right)"
    path = save(two_input_model(), tmp_path / "two.h5")
    code, _, err = run_heatmap(capsys, "-mp", path, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1
    line = one_error_line(err)
    assert line == f"error: model file {path}: expected a model with one image input, got 2 inputs (left, right)"
    assert not (tmp_path / "res").exists()


def test_keras_archive_with_broken_metadata(tmp_path, capsys):
    good = save(make_cnn(shape=SHAPE, classes=CLASSES), tmp_path / "good.keras")
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, b"{not json" if n == "metadata.json" else src.read(n))
    for safe in (True, False):
        with pytest.raises(ModelError) as e:
            load_model(bad, safe_mode=safe)
        msg = str(e.value)
        assert "\n" not in msg and str(bad) in msg and "metadata.json" in msg, msg
    code, _, err = run_heatmap(capsys, "-mp", bad, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1
    assert str(bad) in one_error_line(err) and "metadata.json is not valid JSON" in err
    assert not (tmp_path / "res").exists()


def zoo_weights_file(path, builder, kwargs_text):
    """A weights-only zoo file as ``registry.save`` writes it (builder name + kwargs in attrs)."""
    from xaitf.zoo import registry

    model = registry.build("lenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_weights(str(path), save_format="h5")
    with h5py.File(path, "a") as f:
        f.attrs[registry.WEIGHTS_ATTR] = builder
        f.attrs[registry.KWARGS_ATTR] = kwargs_text
    return path


def test_zoo_weights_file_builder_and_arguments_are_checked(tmp_path, capsys):
    ok = zoo_weights_file(tmp_path / "ok.h5", "lenet", json.dumps({"num_classes": 10}))
    assert load_model(ok).count_params() == 61_706
    bad_arg = zoo_weights_file(tmp_path / "arg.h5", "lenet", json.dumps({"nosuch": 1}))
    with pytest.raises(ModelError) as e:
        load_model(bad_arg)
    assert str(e.value) == (f"model file {bad_arg}: stored argument 'nosuch' is not an argument of "
                            "zoo builder 'lenet'; valid: input_shape, num_classes")
    cases = {"name.h5": ("os:system", "{}", "is not a zoo model; valid: center_pixel"),
             "list.h5": ("lenet", "[1, 2]", "must be a JSON object, got list"),
             "json.h5": ("lenet", "{nope", "are not valid JSON"),
             "value.h5": ("lenet", json.dumps({"num_classes": "ten"}), "cannot rebuild zoo model 'lenet'"),
             "fit.h5": ("lenet", json.dumps({"num_classes": 7}), "weights do not fit zoo model 'lenet'")}
    for name, (builder, kwargs, expected) in cases.items():
        path = zoo_weights_file(tmp_path / name, builder, kwargs)
        with pytest.raises(ModelError) as e:
            load_model(path)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"model file {path}: ") and expected in msg, msg
    code, _, err = run_heatmap(capsys, "-mp", bad_arg, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1 and "'nosuch'" in one_error_line(err) and "valid: input_shape" in err
    assert not (tmp_path / "res").exists()


# -- defect 11: folders, and every loading error on one line --------------------------------------
def test_folders_given_as_image_or_model(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run_heatmap(capsys, "-ip", folder, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1
    # a folder is a valid -ip (every image in it); an empty one is refused in one line
    assert one_error_line(err).startswith(f"error: image path {folder} is a folder with no image files (png, jpg")
    code, _, err = run_heatmap(capsys, "-mp", folder, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1
    assert one_error_line(err) == (f"error: model path {folder} is a folder, expected a model file "
                                   "(.h5 or .keras) or a SavedModel folder (with saved_model.pb)")
    with pytest.raises(ModelError) as e:
        load_model(folder)
    assert "\n" not in str(e.value) and "is a folder" in str(e.value)
    assert not (tmp_path / "res").exists()
    # a SavedModel folder is a valid -mp
    sm = save(make_cnn(shape=SHAPE, classes=CLASSES), tmp_path / "sm", save_format="tf")
    code, out, err = run_heatmap(capsys, "-mp", sm, "-hm", "grad", "-op", tmp_path / "res")
    assert code == 0, err
    assert f"from {sm}" in out and len(list((tmp_path / "res" / "random").glob("*.png"))) == 1


def test_loading_errors_are_single_lines(tmp_path):
    bad_zip = tmp_path / "config.keras"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", "{\n broken")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\0garbage\nmore")
    weights_only = tmp_path / "weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_cnn(shape=SHAPE, classes=CLASSES).save_weights(str(weights_only), save_format="h5")
    for path in (bad_zip, garbage, weights_only, tmp_path / "missing.h5", tmp_path / "x.txt"):
        if path.suffix == ".txt":
            path.write_text("x")
        for safe in (True, False):
            with pytest.raises(ModelError) as e:
                load_model(path, safe_mode=safe)
            msg = str(e.value)
            assert "\n" not in msg and "  " not in msg and str(path) in msg and len(msg) < 700, msg
    scan_model_file(tmp_path / "weights.h5")                # no config: nothing to refuse


# -- defect 7: create_model.py --out FILE fails before any work ------------------------------------
def test_create_model_out_is_a_file(tmp_path):
    out = tmp_path / "models.h5"
    out.write_bytes(b"keep me")
    r = subprocess.run([sys.executable, str(ROOT / "create_model.py"), "center_pixel", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: --out {out} exists and is a file, expected a folder for the models: pass another "
        "--out, or remove that file"]
    assert r.stdout == "" and out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.h5"]
