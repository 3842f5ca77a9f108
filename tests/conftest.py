"""Shared fixtures: tiny deterministic models with known answers, and the offline data directory."""
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from xaitf.keras_bridge import tfk

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
if "XAITF_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["XAITF_DATA_DIR"] = str(SHARED_DATA)
# dataset runs list themselves in <index root>/index.html: never the repository's results/ in tests
if "XAITF_INDEX_ROOT" not in os.environ:
    import tempfile

    os.environ["XAITF_INDEX_ROOT"] = tempfile.mkdtemp(prefix="xaitf-test-index-")


@pytest.fixture(scope="session")
def data_dir():
    d = os.environ.get("XAITF_DATA_DIR")
    if not d or not Path(d, "mnist_test10k.npz").exists():
        pytest.skip("no offline data directory (set XAITF_DATA_DIR to a folder with mnist_test10k.npz)")
    return Path(d).resolve()


@contextlib.contextmanager
def settings_restored():
    """``--set`` changes xaitf.settings' presets in place; put every section back afterwards."""
    import copy

    from xaitf import settings as S

    saved = copy.deepcopy(S.SECTIONS)
    try:
        yield
    finally:
        for name, section in S.SECTIONS.items():
            section.clear()
            section.update(saved[name])


@pytest.fixture
def restore_settings():
    with settings_restored():
        yield


def run_heatmap(capsys, *args):
    """``heatmap_script.py args`` in this process: (exit code, stdout, stderr)."""
    import heatmap_script
    from xaitf import cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(heatmap_script.main, [str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def make_cnn(shape=(8, 8, 1), classes=5, seed=0, softmax=True):
    """A small conv -> pool -> dense classifier with fixed random weights (tf-keras)."""
    tf.keras.utils.set_random_seed(seed)
    inp = tfk.Input(shape, name="image")
    h = tfk.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = tfk.layers.MaxPooling2D(2, name="pool1")(h)
    h = tfk.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = tfk.layers.Flatten(name="flatten")(h)
    h = tfk.layers.Dense(16, activation="relu", name="fc1")(h)
    out = tfk.layers.Dense(classes, activation="softmax" if softmax else None, name="fc2")(h)
    return tfk.Model(inp, out, name="tiny_cnn")


def make_keras3_transfer_model(size=12, seed=3):
    """A Keras 3 model as transfer-learning tutorials build it: a nested Sequential of random
    augmentation layers (the identity at inference), ``x / 127.5 - 1`` written as arithmetic, a
    nested base model (Conv, BN with non-trivial statistics, ReLU) called with training=False,
    pooling, dropout and one sigmoid-less binary logit."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    augment = keras.Sequential([L.RandomFlip("horizontal", name="flip"), L.RandomRotation(0.2, name="rotate"),
                                L.RandomZoom(0.1, name="zoom"), L.RandomContrast(0.2, name="contrast")],
                               name="augment")
    b_in = keras.Input((size, size, 3))
    h = L.ReLU(name="b_relu")(L.BatchNormalization(name="b_bn")(L.Conv2D(4, 3, padding="same", name="b_conv")(b_in)))
    base = keras.Model(b_in, L.Conv2D(5, 3, name="b_conv2")(h), name="base")
    bn = base.get_layer("b_bn")
    bn.set_weights([np.linspace(0.5, 1.5, 4), np.linspace(-0.1, 0.1, 4), np.linspace(-0.2, 0.3, 4),
                    np.linspace(0.5, 2.0, 4)])
    inp = keras.Input((size, size, 3), name="image")
    h = base(augment(inp) / 127.5 - 1.0, training=False)
    out = L.Dense(1, name="logit")(L.Dropout(0.2, name="drop")(L.GlobalAveragePooling2D(name="gap")(h)))
    return keras.Model(inp, out, name="transfer")


def write_mnist_npz(folder, n_train, n_test, seed=0):
    """A small random MNIST-format ``mnist.npz`` (uint8 28x28 images, labels 0..9) in ``folder``
    (created), for the loaders' ``--data-dir``; returns the folder."""
    rs = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz",
             x_train=rs.randint(0, 256, (n_train, 28, 28), dtype=np.uint8), y_train=rs.randint(0, 10, n_train),
             x_test=rs.randint(0, 256, (n_test, 28, 28), dtype=np.uint8), y_test=rs.randint(0, 10, n_test))
    return folder


def make_linear(shape=(6, 6, 1), classes=3, seed=0):
    """logits = W . flatten(x) + b: every attribution method has an analytic answer here."""
    rs = np.random.RandomState(seed)
    inp = tfk.Input(shape, name="image")
    h = tfk.layers.Flatten()(inp)
    dense = tfk.layers.Dense(classes, name="logits")
    out = dense(h)
    model = tfk.Model(inp, out, name="linear")
    n = int(np.prod(shape))
    dense.set_weights([rs.randn(n, classes).astype(np.float32), rs.randn(classes).astype(np.float32)])
    return model


@pytest.fixture(scope="session")
def tiny_cnn():
    return make_cnn()


@pytest.fixture(scope="session")
def tiny_rgb_cnn():
    return make_cnn(shape=(8, 8, 3), seed=1)


@pytest.fixture(scope="session")
def linear_model():
    return make_linear()


@pytest.fixture(scope="session")
def center_pixel_small():
    """The study-1 construction at 15x15 (same formula, fast)."""
    from xaitf.zoo import build_center_pixel

    return build_center_pixel(image_size=15)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def run_quick_study(name, out, data_dir=None):
    """``python -m xaitf.studies NAME --quick`` in-process into ``out`` (no saved models: the run
    trains what it needs); returns (results.json as a dict, the run folder)."""
    import json

    from xaitf.studies import common
    from xaitf.studies.__main__ import main

    args = [name, "--quick", "--no-progress", "--out", str(out), "--models-dir", str(out / "no_models")]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    assert main(args) == 0
    folder = common.latest_folder(out, name)
    assert folder is not None and folder.parent == out / name
    return json.loads((folder / "results.json").read_text()), folder


# Test files that share a session fixture (below) and must therefore run in one process. `make test`
# runs `--dist loadfile`: each file goes to one process; the files named here go to one together.
SHARED_PROCESS = {"test_studies_center_pixel.py": "center_pixel_quick",
                  "test_atomic_outputs.py": "center_pixel_quick"}


@pytest.hookimpl(tryfirst=True)          # before pytest-xdist's own choice
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with SHARED_PROCESS's files as one scope. (pytest-xdist 3.8's
    ``--dist loadgroup`` would do it with marks, but under pytest 9 its marks never reach the
    scheduler: it renames ``item._nodeid``, which pytest 9's ``nodeid`` no longer reads.) Any other
    ``--dist`` is left to pytest-xdist."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return SHARED_PROCESS.get(os.path.basename(path), path)

    return SharedFileScheduling(config, log)


@pytest.fixture(scope="session")
def center_pixel_quick(tmp_path_factory):
    """One quick run of study 1 for the two files that check it: test_studies_center_pixel (its
    numbers) and test_atomic_outputs (how it is published; it runs failing commands into the same
    ``D`` and checks that nothing there changes). About 45 s, so it runs once per process.

    Returns (D, the run folder, results.json as a dict, what the run printed); settings changed by
    the run are restored."""
    import io

    root = tmp_path_factory.mktemp("center_pixel_quick")
    buf = io.StringIO()
    with settings_restored(), contextlib.redirect_stdout(buf):
        results, folder = run_quick_study("center_pixel", root / "D")
    return root / "D", folder, results, buf.getvalue()
