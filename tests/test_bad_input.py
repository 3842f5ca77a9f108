"""Bad input on every command line and in the Python API: one line, the right exit code, nothing written.

The sweep runs each command line in its own subprocess, from an empty working folder, with the
environment a user has (no ``TF_CPP_MIN_LOG_LEVEL``: xaitf's own defaults apply) and checks that

* the exit code is the expected one (1: a user error found by xaitf; 2: a usage error found by
  argparse or create_model.py; 3 would be a bug),
* stderr is exactly ONE line, ``error: ...``, holding the expected text (no TensorFlow import
  noise before it, no traceback),
* nothing was written: the working folder is still empty and ``{out}`` does not exist.

To add a case, add one line to ``CASES``: ``(command line, exit code, text of the error line)``.
The command line starts with one of ``COMMANDS`` (``heatmap``, ``create_model``, ``studies``,
``xaitf``) and may use the placeholders of :func:`files` (``{png}``, ``{model}``, ``{out}``, ...).
Cases that fail before TensorFlow is imported take ~1-2 s, the others ~5-10 s: prefer the first.
"""
import os
import shlex
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import ROOT, make_cnn

COMMANDS = {
    "heatmap": [sys.executable, str(ROOT / "heatmap_script.py")],
    "create_model": [sys.executable, str(ROOT / "create_model.py")],
    "studies": [sys.executable, "-m", "xaitf.studies"],
    "xaitf": [sys.executable, "-m", "xaitf"],
}
SEED_RANGE = "an integer in [0, 4294967295]"
HM = "heatmap -ip {png} -mp {model} -op {out}"          # a valid heatmap_script.py start
RUN = "xaitf run --model {model} --data mnist --out {out}"

CASES = [
    # heatmap_script.py: methods, files, flags (all before TensorFlow is imported)
    (f"{HM} -hm grad nosuch", 1, "unknown method 'nosuch'; valid: "),
    ("heatmap -ip {missing}.png -mp {model} -hm grad -op {out}", 1, "image file not found: "),
    ("heatmap -ip {not_an_image} -mp {model} -hm grad -op {out}", 1, "cannot read image "),
    ("heatmap -ip {png} -mp {missing}.h5 -hm grad -op {out}", 1, "model file not found: "),
    (f"{HM} -hm grad --scale 0", 1, "--scale: expected a finite number > 0, got 0.0"),
    (f"{HM} -hm grad --scale inf", 1, "--scale: expected a finite number > 0, got inf"),
    (f"{HM} -hm grad -cl -1", 1, "-cl must be a class index >= 0, got -1"),
    (f"{HM} -hm grad --batch-size 0", 2, "argument --batch-size: expected an integer >= 1, got 0"),
    (f"{HM} -hm grad --seed -1", 2, f"argument --seed: expected {SEED_RANGE}, got -1"),
    # --set: the same validators and words as the flags
    (f"{HM} -hm grad --set global.batch_size=0", 1, "global.batch_size: expected an integer >= 1, got 0"),
    (f"{HM} -hm grad --set global.batch_size=-1", 1, "global.batch_size: expected an integer >= 1, got -1"),
    (f"{HM} -hm grad --set global.seed=abc", 1, f"global.seed: expected {SEED_RANGE}, got 'abc'"),
    ("heatmap -hm grad -op {out} --set global.image_size=0", 1,
     "global.image_size: expected an odd integer >= 1"),
    (f"{HM} -hm grad --set grad.foo=1", 1, "bad --set 'grad.foo=1': grad has no settings"),
    (f"{HM} -hm ig --set ig.steps=abc", 1, "ig.steps: expected a number (default 64), got 'abc'"),
    # after TensorFlow is imported: still one line (no absl / oneDNN lines before it)
    (f"{HM} -hm grad -cl 7", 1, "-cl 7 is out of range: the model has 5 classes (0..4)"),
    ("heatmap -ip {png} -mp {predictions_model} -op {out} -hm gradcam --set gradcam.layer=predictions",
     1, "gradcam: Grad-CAM: layer 'predictions' has a 2-D output (None, 4); Grad-CAM needs a "
        "convolutional layer with a 4-D (N,h,w,K) or token (N,T,K) output; layers with a 4-D output or "
        "square-grid tokens: conv"),
    # python -m xaitf.studies
    ("studies nosuch --out {out}", 1, "unknown study 'nosuch'; valid: "),
    ("studies center_pixel --quick --out {out} --batch-size 0", 2,
     "argument --batch-size: expected an integer >= 1, got 0"),
    ("studies center_pixel --quick --out {out} --set global.alpha=inf", 1,
     "global.alpha: expected a finite number > 0, got inf"),
    # create_model.py (usage errors: exit code 2)
    ("create_model nosuch --out {out}", 2, "unknown model 'nosuch'; valid: "),
    ("create_model center_pixel --epochs 0 --out {out}", 2,
     "argument --epochs: expected an integer >= 1, got 0"),
    # python -m xaitf run
    (f"{RUN} --methods grad nosuch", 1, "unknown method 'nosuch'; valid: "),
    (f"{RUN} --methods grad --scale inf", 1, "--scale: expected a finite number > 0, got inf"),
    (f"{RUN} --methods grad --set global.seed=-1", 1, f"global.seed: expected {SEED_RANGE}, got -1"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs the cases name: a tiny CNN (8x8x1, 5 classes) as .h5, a model whose last layer is a
    softmax Dense named 'predictions', a PNG, a text file named .png and a missing path."""
    from PIL import Image

    from xaitf.keras_bridge import tfk

    d = tmp_path_factory.mktemp("bad_input")
    with warnings.catch_warnings():                     # "HDF5 is legacy": .h5 is what we test
        warnings.simplefilter("ignore")
        make_cnn(shape=(8, 8, 1), classes=5).save(d / "tiny.h5")
        inp = tfk.Input((8, 8, 1), name="image")
        h = tfk.layers.Conv2D(3, 3, activation="relu", name="conv")(inp)
        out = tfk.layers.Dense(4, activation="softmax", name="predictions")(tfk.layers.Flatten(name="flat")(h))
        tfk.Model(inp, out, name="with_predictions").save(d / "predictions.h5")
    Image.fromarray((np.random.RandomState(0).rand(10, 12, 3) * 255).astype(np.uint8)).save(d / "img.png")
    (d / "not_an_image.png").write_text("not an image")
    return {"png": d / "img.png", "model": d / "tiny.h5", "predictions_model": d / "predictions.h5",
            "not_an_image": d / "not_an_image.png", "missing": d / "missing"}


def user_env():
    """The environment a user has: xaitf's logging defaults, not the test runner's."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "XAITF_TF_IMPORT_FILTER"):
        env.pop(name, None)
    return env


def run_command(line, files, tmp_path):
    """Run one case from an empty working folder; returns (CompletedProcess, cwd, out)."""
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    head, *rest = shlex.split(line.format(out=out, **files))
    r = subprocess.run(COMMANDS[head] + rest, cwd=cwd, env=user_env(), capture_output=True,
                       text=True, timeout=240)
    return r, cwd, out


@pytest.mark.parametrize("line, code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(line, code, message, files, tmp_path):
    r, cwd, out = run_command(line, files, tmp_path)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{r.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert message in lines[0], lines[0]
    assert r.returncode == code, (r.returncode, lines[0])
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert not any(cwd.iterdir()), sorted(p.name for p in cwd.rglob("*"))


# -- the command lines' shared machinery (in-process) ---------------------------------------------
def test_debug_last_line_does_not_ask_for_debug(capsys):
    """An unexpected error (a bug): rc 3; the hint to rerun with --debug only without --debug."""
    from xaitf import cli

    def buggy(argv):
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as e:
        cli.run(buggy, ["-hm", "grad"])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 3 and err == [
        "error: RuntimeError: boom (unexpected; rerun with --debug for the traceback)"]
    with pytest.raises(SystemExit) as e:
        cli.run(buggy, ["-hm", "grad", "--debug"])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 3 and err[0].startswith("Traceback") and "RuntimeError: boom" in err
    assert err[-1] == "error: RuntimeError: boom (unexpected; the traceback is above: please report it)"
    assert "--debug" not in err[-1]


def test_command_line_warnings_are_one_line(capsys):
    """A warning during a command is one 'warning:' line (the category named unless a UserWarning),
    not Python's file:line form; --debug keeps that form; the handler is restored afterwards."""
    import warnings

    from xaitf import cli

    def warns(argv):
        warnings.warn("maps are all 0:\n  explain the predicted class", stacklevel=1)
        warnings.warn("old flag", DeprecationWarning, stacklevel=1)
        return 0

    def python_form(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = before = python_form      # not pytest's recorder
        with pytest.raises(SystemExit) as e:
            cli.run(warns, ["-hm", "grad"])
        assert warnings.showwarning is before
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 0 and err == ["warning: maps are all 0: explain the predicted class",
                                             "warning (DeprecationWarning): old flag"]
        with pytest.raises(SystemExit):
            cli.run(warns, ["--debug"])
        err = capsys.readouterr().err
        assert "UserWarning: maps are all 0" in err and ".py:" in err


@pytest.mark.parametrize("text, message", [
    ("deconvnet.x=1", "deconvnet has no settings"),
    ("global.image_size=16", "global.image_size: expected an odd integer >= 1"),
    ("global.num_classes=1", "global.num_classes: expected an integer >= 2, got 1"),
    ("global.alpha=nan", "global.alpha: expected a finite number > 0, got nan"),
    ("global.progress=maybe", "global.progress: expected True or False, got 'maybe'"),
    ("global.channel_reduce=median", "expected one of sum, mean, abs_sum, max_abs, none, got 'median'"),
    ("lime.positive_only=2", "lime.positive_only: expected True or False, got 2"),
])
def test_set_refuses_with_one_line(text, message, restore_settings):
    from xaitf import settings as S
    from xaitf.errors import MethodError

    before = {k: dict(v) for k, v in S.SECTIONS.items()}
    with pytest.raises(MethodError) as e:
        S.apply_overrides(["ig.steps=8", text])            # a bad one applies nothing
    assert str(e.value).startswith(f"bad --set {text!r}: ")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert {k: dict(v) for k, v in S.SECTIONS.items()} == before


def test_set_keeps_valid_forms(restore_settings):
    from xaitf import settings as S

    got = {(s, k): v for s, k, v in S.apply_overrides([
        "occlusion.window=(2,3)", "occlusion.fill=[0,0.5,1]", "lime.hide_color=None",
        "shap.l1_reg=auto", "shapley.shortcut=True", "ig.rule=left", "pda.num_classes=10",
        "lime.positive_only=false", "global.progress=0", "global.image_size=15", "global.alpha=3",
        "mnist_cifar.fill_alt=None", "global.batch_size=64"])}
    assert got[("occlusion", "window")] == (2, 3) and got[("lime", "hide_color")] is None
    assert got[("lime", "positive_only")] is False and got[("global", "progress")] is False
    assert got[("shap", "l1_reg")] == "auto" and got[("shapley", "shortcut")] is True
    assert S.GLOBAL["image_size"] == 15 and S.GLOBAL["batch_size"] == 64


def test_flag_and_set_share_the_validator():
    """--batch-size 0 and --set global.batch_size=0: the same check, the same words."""
    import argparse

    from xaitf import cli
    from xaitf import settings as S
    from xaitf.errors import MethodError

    with pytest.raises(argparse.ArgumentTypeError) as flag:
        cli.positive_int("0")
    with pytest.raises(MethodError) as setting:
        S.parse_override("global.batch_size=0")
    assert str(flag.value) == "expected an integer >= 1, got 0"
    assert str(setting.value).endswith(": global.batch_size: " + str(flag.value))


# -- TensorFlow's import-time lines ----------------------------------------------------------------
def test_import_prints_nothing_on_stderr(tmp_path):
    """absl's pre-init warning and oneDNN's info line (twice each) are gone; oneDNN stays on."""
    code = ("import sys, xaitf, tensorflow as tf; print('after', file=sys.stderr); "
            "print(tf.__loader__.__class__.__name__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=user_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and r.stderr == "after\n", r.stderr
    assert r.stdout.strip() != "_Loader"                 # the real loader is put back


def test_import_filter_keeps_other_lines():
    from xaitf._tfimport import filter_lines

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796406294.054411    5957 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1796406294.054411    5957 foo.cc:1] a warning\n"
            "/x/y.py:3: DeprecationWarning: something\n")
    assert filter_lines(text, 0) == text
    assert filter_lines(text, 1) == "".join(text.splitlines(keepends=True)[2:])
    assert filter_lines(text, 2) == "/x/y.py:3: DeprecationWarning: something\n"


def test_onednn_fallback_notice_is_dropped_on_the_first_call_only(capfd, monkeypatch):
    import os

    from xaitf._tfimport import first_call_quiet

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notice = ("E0000 00:00:1796695064.669488   28941 util.cc:131] oneDNN supports DT_UINT8 only on "
              "platforms with AVX-512. Falling back to the default Eigen-based implementation if present.\n")

    def op(tag):
        os.write(2, notice.encode() + f"E0000 00:00:1.0   1 x.cc:1] {tag}\n".encode())
        return tag

    quiet = first_call_quiet(op)
    capfd.readouterr()
    assert quiet("first") == "first"
    assert capfd.readouterr().err == "E0000 00:00:1.0   1 x.cc:1] first\n"   # other lines stay
    quiet("second")                                   # TensorFlow prints it once: later calls as they are
    assert capfd.readouterr().err.startswith(notice)


def test_native_lime_and_kernel_shap_print_nothing_on_stderr(tmp_path):
    code = ("import sys, numpy as np, xaitf\n"
            "from xaitf.keras_bridge import tfk\n"
            "inp = tfk.Input((8, 8, 3)); h = tfk.layers.Conv2D(2, 3)(inp)\n"
            "m = tfk.Model(inp, tfk.layers.Dense(3)(tfk.layers.Flatten()(h)))\n"
            "x = np.random.default_rng(0).random((2, 8, 8, 3)).astype('float32')\n"
            "for name, kw in (('lime', {'num_samples': 64}), ('kernelshap', {'nsamples': 256})):\n"
            "    xaitf.create_explainer(name, m, progress=False, **kw)(x, [0, 1])\n"
            "print('after', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=user_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and r.stderr == "after\n", r.stderr


# -- the Python API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grad(tiny_cnn):
    import xaitf

    return xaitf.create_explainer("grad", tiny_cnn)


X = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("targets, message", [
    (2.7, "targets must be integer class indices, got 2.7"),
    ([1, 2.5], "targets must be integer class indices, got 2.5"),
    ("abc", "targets must be integer class indices (an int, N ints or one-hot (N,K)) or None, got 'abc'"),
    ("3", "got '3'"),
    (True, "got True"),
    (float("nan"), "got nan"),
])
def test_api_refuses_non_integer_targets(grad, targets, message):
    from xaitf.errors import InputError

    with pytest.raises(InputError) as e:
        grad(X, targets)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "Gradient needs batch_size to be an integer >= 1, got 0"),
    ({"batch_size": -1}, "Gradient needs batch_size to be an integer >= 1, got -1"),
    ({"seed": "abc"}, f"Gradient needs seed to be {SEED_RANGE}, got 'abc'"),
    ({"seed": -1}, f"Gradient needs seed to be {SEED_RANGE}, got -1"),
    ({"channel_reduce": "median"}, "Gradient needs channel_reduce to be one of sum, mean"),
])
def test_api_refuses_bad_common_arguments(tiny_cnn, kwargs, message):
    import xaitf
    from xaitf.errors import MethodError

    with pytest.raises(MethodError) as e:
        xaitf.create_explainer("grad", tiny_cnn, **kwargs)
    assert str(e.value) == message or str(e.value).startswith(message), str(e.value)


def test_a_model_with_two_outputs_says_how_to_explain_one():
    import xaitf
    from xaitf.errors import ModelError
    from xaitf.keras_bridge import tfk

    inp = tfk.Input((8, 8, 1))
    h = tfk.layers.GlobalAveragePooling2D()(tfk.layers.Conv2D(2, 3)(inp))
    m = tfk.Model(inp, [tfk.layers.Dense(3, name="cls")(h), tfk.layers.Dense(1, name="box")(h)])
    with pytest.raises(ModelError, match=r"got 2 outputs \(cls, box\); explain one of them as its own "
                                         r"model, e.g. Model\(model.inputs, model.outputs\[0\]\) for 'cls'"):
        xaitf.create_explainer("grad", m)
    maps = xaitf.create_explainer("grad", tfk.Model(m.inputs, m.outputs[0]))(X, [0, 1])   # the advice works
    assert maps.shape == (2, 8, 8) and np.abs(maps).max() > 0


def test_method_warnings_point_at_the_callers_line(tiny_cnn):
    """Kernel SHAP's rank-deficient regression and LRP's all-zero maps warn from deep inside the
    package; the warning names the user's line, as the uint8 one does."""
    import xaitf

    cases = [("kernelshap", {"nsamples": 16}, np.full((1, 8, 8, 1), 0.5, np.float32), "too few coalitions"),
             ("lrp.epsilon", {"epsilon": 1e6}, np.zeros((1, 8, 8, 1), np.float32), "maps are all 0")]
    for name, kw, x, words in cases:
        ex = xaitf.create_explainer(name, tiny_cnn, progress=False, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ex(x, [0])
        mine = [w for w in caught if words in str(w.message)]
        assert len(mine) == 1 and mine[0].filename == __file__, (name, [(str(w.message), w.filename) for w in caught])


def test_api_uint8_images_warn_once_and_keep_their_values(grad):
    x8 = (X * 255).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = grad(x8, [0, 1])
    mine = [w for w in caught if "uint8" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__          # points at the caller
    assert "most models expect floats in [0, 1]" in str(mine[0].message)
    np.testing.assert_array_equal(maps, grad(x8.astype(np.float32), [0, 1]))   # values kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grad(X, [0, 1])
    assert not [w for w in caught if "uint8" in str(w.message)]
