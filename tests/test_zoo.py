"""The model zoo: builders (shapes, parameter counts, layer names), the center-pixel model's
guarantees, input preparation, the Bayesian refusal rule, saving/loading, and create_model.py.

The real trainings that must reach the accuracy targets are marked ``slow`` (``make test-all``).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf.keras_bridge import logits_model, tfk
from xaitf.model_files import load_model
from xaitf.zoo import registry

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "create_model.py")


def run_cli(*args, timeout=600):
    env = dict(os.environ, CI="true", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def stderr_lines(proc):
    return [l for l in proc.stderr.splitlines() if l.strip()]


# -- center pixel (study 1) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def center_pixel_227():
    return registry.build("center_pixel", image_size=227, num_classes=256, alpha=10.0)


def test_center_pixel_selftest_227(center_pixel_227):
    """Study 1's self-test: 2,560 random images (10 per class) all classified as their centre pixel,
    with top-class probability >= 0.9999 at alpha 10."""
    r = registry.center_pixel_selftest(center_pixel_227, per_class=10, seed=0)
    assert r["selftest_images"] == 2560
    assert r["test_accuracy"] == 1.0
    assert r["min_top_probability"] >= 0.9999


def test_center_pixel_ignores_other_pixels(center_pixel_227):
    """Changing any number of non-centre pixels never changes the prediction."""
    size = 227
    rs = np.random.RandomState(1)
    centre = np.unravel_index((size * size) // 2, (size, size))
    flat_c = (size * size) // 2
    batch = []
    labels = []
    for value in (0, 77, 206, 255):
        base = rs.randint(0, 256, (size, size), dtype=np.uint8)
        base[centre] = value
        for _ in range(16):
            img = base.copy().reshape(-1)
            idx = rs.choice(size * size, size=2000, replace=False)
            idx = idx[idx != flat_c]
            img[idx] = rs.randint(0, 256, len(idx), dtype=np.uint8)
            batch.append(img.reshape(size, size))
            labels.append(value)
        img = np.where(rs.rand(size, size) < 0.5, 0, 255).astype(np.uint8)  # extreme images
        img[centre] = value
        batch.append(img)
        labels.append(value)
    x = np.stack(batch)[..., None].astype(np.float32) / 255.0
    pred = center_pixel_227.predict(x, batch_size=64, verbose=0).argmax(1)
    np.testing.assert_array_equal(pred, labels)


# -- builders -----------------------------------------------------------------------------------
TRAINABLE = [n for n in registry.names() if n != "center_pixel"]


@pytest.mark.parametrize("name", TRAINABLE)
def test_builder_shapes_and_params(name):
    entry = registry.get(name)
    model = registry.build(name)
    assert model.count_params() == entry.params
    published = {"mnist_cnn": 35_402,            # study 4
                 "lenet": 61_706,                # LeNet-5 (400-120-84-10)
                 "svhn_resnet18": 11_177_025}    # torchvision resnet18 with one output unit
    if name in published:
        assert sum(int(w.shape.num_elements()) for w in model.trainable_weights) == published[name]
    assert tuple(model.inputs[0].shape[1:]) == entry.input_shape
    assert model.layers[0].name == "image"            # named Input layer (iNNvestigate needs it)
    x = np.random.RandomState(0).rand(3, *entry.input_shape).astype(np.float32)
    y = model(x, training=False).numpy()
    if entry.output == "logit":
        assert y.shape == (3, 1)
    else:
        assert y.shape == (3, 10)
        np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-5)


def test_lenet_layer_names_and_logits():
    model = registry.build("lenet")
    shapes = {n: tuple(model.get_layer(n).output.shape[1:]) for n in ("conv1", "conv2", "fc1", "fc2", "fc3")}
    assert shapes == {"conv1": (28, 28, 6), "conv2": (10, 10, 16), "fc1": (120,), "fc2": (84,), "fc3": (10,)}
    # conv outputs are pre-ReLU (the interventional attributions use them): they go negative
    x = np.random.RandomState(0).rand(2, 32, 32, 1).astype(np.float32)
    conv2 = tfk.Model(model.inputs, model.get_layer("conv2").output)(x).numpy()
    assert conv2.min() < 0
    lm, note = logits_model(model)
    assert "softmax" in note
    np.testing.assert_allclose(tf.nn.softmax(lm(x)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-7)


def test_xainn_class_maps():
    from xaitf.zoo.xainn import class_maps_model

    for name in ("xainn_baseline", "xainn_softmax", "xainn_poollinear"):
        model = registry.build(name)
        assert tuple(model.get_layer("class_maps").output.shape[1:]) == (16, 16, 10)
        maps = class_maps_model(model)(np.zeros((2, 32, 32, 3), np.float32)).numpy()
        assert maps.shape == (2, 16, 16, 10)
    # model 2: the output is the spatial mean of the per-pixel softmax of the class maps
    model = registry.build("xainn_softmax")
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    maps = class_maps_model(model)(x)
    np.testing.assert_allclose(model(x).numpy(), tf.reduce_mean(tf.nn.softmax(maps), axis=(1, 2)).numpy(),
                               rtol=1e-5)


def test_svhn_resnet_any_size_and_normalisation():
    from xaitf.zoo.resnet import build_svhn_resnet18

    model = build_svhn_resnet18(input_size=None)
    assert model(np.zeros((2, 128, 128, 3), np.float32)).shape == (2, 1)
    norm = tfk.Model(model.inputs, model.get_layer("standardize").output)
    x = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)
    for training in (False, True):      # frozen: identical in training mode
        np.testing.assert_allclose(norm(x, training=training).numpy(), (x - 0.5) / 0.5, atol=1e-5)


def test_cifar_vgg_standardisation_inside():
    from xaitf.zoo.cifar import build_cifar_vgg

    mean, std = [0.1, 0.2, 0.3], [0.25, 0.5, 0.2]
    model = build_cifar_vgg(mean=mean, std=std)
    norm = tfk.Model(model.inputs, model.get_layer("standardize").output)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    np.testing.assert_allclose(norm(x, training=True).numpy(), (x - mean) / np.array(std), atol=1e-5)
    assert not model.get_layer("standardize").trainable


def test_unknown_name():
    with pytest.raises(xaitf.errors.ModelError, match="valid: center_pixel"):
        registry.get("resnet50")


# -- input preparation --------------------------------------------------------------------------
def test_prepare_inputs():
    digits = np.random.RandomState(0).randint(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    rgb = registry.prepare_inputs("mnist_cnn", digits)
    assert rgb.shape == (4, 28, 28, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[..., 0], digits[..., 0] / 255.0)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    le = registry.prepare_inputs("lenet", digits)
    assert le.shape == (4, 32, 32, 1) and 0.0 <= le.min() and le.max() <= 1.0
    flat = np.full((1, 28, 28, 1), 200, np.uint8)
    np.testing.assert_allclose(registry.prepare_inputs("lenet", flat), 200 / 255.0, atol=1e-6)
    assert registry.prepare_inputs("bayesian_mlp", digits).shape == (4, 28, 28, 1)


# -- Bayesian MLP -------------------------------------------------------------------------------
def test_refusal_rule_uses_the_median():
    from xaitf.zoo.bayesian import refusal_rule

    # 5 sampled networks, 3 images, 3 classes
    p = np.zeros((5, 3, 3))
    # image 0: every sample is 90% sure, of different classes: means (0.39, 0.39, 0.22) exceed 0.2
    # but every median is 0.05: refused
    hi, lo = 0.9, 0.05
    p[:, 0] = [[hi, lo, lo], [lo, hi, lo], [lo, lo, hi], [hi, lo, lo], [lo, hi, lo]]
    # image 1: medians (0.4, 0.3, 0.3): accepted, class 0 although class 1 has the larger mean (0.42)
    p[:, 1] = [[0.4, 0.3, 0.3]] * 3 + [[0.3, 0.6, 0.1]] * 2
    # image 2: every median exactly 0.2 (not above): refused
    p[:, 2] = [[0.2, 0.2, 0.6]] * 2 + [[0.6, 0.2, 0.2]] * 1 + [[0.2, 0.6, 0.2]] * 2
    np.testing.assert_allclose(p.sum(-1), 1.0)
    assert (p[:, 0].mean(0) > 0.2).all() and p[:, 1].mean(0).argmax() == 1
    pred, refused = refusal_rule(p, threshold=0.2)
    np.testing.assert_array_equal(refused, [True, False, True])
    assert pred[1] == 0
    with pytest.raises(ValueError, match="samples, N, classes"):
        refusal_rule(p[0])


def test_refuse_on_a_stub_model():
    from xaitf.zoo.bayesian import predict_mean, refuse

    # deterministic stub: input pixel 0 selects a confident or a flat output
    inp = tfk.Input((2,), name="image")
    confident = tf.one_hot([3], 10) * 0.9 + 0.01
    flat = tf.fill([1, 10], 0.1)
    out = tfk.layers.Lambda(lambda t: t[:, :1] * confident + (1 - t[:, :1]) * flat)(inp)
    stub = tfk.Model(inp, out)
    x = np.array([[1, 0], [0, 0], [1, 0]], np.float32)
    pred, refused = refuse(stub, x, samples=7, threshold=0.2)
    np.testing.assert_array_equal(refused, [False, True, False])
    np.testing.assert_array_equal(pred[~refused], [3, 3])
    np.testing.assert_allclose(predict_mean(stub, x, samples=3)[1], 0.1, rtol=1e-6)


def test_bayesian_mlp_samples_and_weights_file_roundtrip(tmp_path):
    from xaitf.zoo.bayesian import sample_probs

    kwargs = {"hidden": 16, "n_train": 100, "init_rho": -1.0, "seed": 3}
    model = registry.build("bayesian_mlp", **kwargs)
    names = [w.name for w in model.weights]
    assert any("kernel_posterior_untransformed_scale" in n for n in names)
    assert any("bias_posterior_untransformed_scale" in n for n in names)   # Bayesian biases too
    rho = [w.numpy() for w in model.weights if "untransformed_scale" in w.name]
    assert abs(np.mean(np.concatenate([r.ravel() for r in rho])) + 1.0) < 0.05
    x = np.random.RandomState(0).rand(4, 28, 28, 1).astype(np.float32)
    probs = sample_probs(model, x, samples=6, seed=0)
    assert probs.shape == (6, 4, 10)
    assert probs.std(axis=0).max() > 1e-3            # different sampled networks
    assert len(model.losses) == 4                     # kernel and bias KL of both layers
    # save as weights + builder, reload through xaitf.model_files.load_model
    path = registry.save(model, "bayesian_mlp", tmp_path / "b.h5", kwargs)
    loaded = load_model(path)
    assert [w.name for w in loaded.weights] == names
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the metrics create_model.py records
    m = registry.evaluate("bayesian_mlp", loaded, x, np.arange(4), seed=0)
    assert 0.0 <= m["refused_test_fraction"] <= 1.0 and m["noise_images"] == 100
    assert {"test_accuracy", "refused_noise_fraction", "accuracy_on_accepted"} <= set(m)


# -- create_model.py ----------------------------------------------------------------------------
def test_cli_list():
    proc = run_cli("--list")
    assert proc.returncode == 0, proc.stderr
    for name in registry.names():
        assert name in proc.stdout
    assert "35,402" in proc.stdout and "28x28x3" in proc.stdout


@pytest.mark.parametrize("args, expect", [
    (["resnet50"], "unknown model 'resnet50'"),
    (["--epochs", "0"], "--epochs"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_usage_errors_one_line_exit_2(args, expect):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert len(lines) == 1 and expect in lines[0], proc.stderr


def test_cli_missing_data_says_where_it_looked(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    proc = run_cli("mnist_cnn", "--data-dir", empty, "--offline", "--out", tmp_path / "m")
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert len(lines) == 1 and str(empty) in lines[0] and "mnist" in lines[0], proc.stderr
    assert not (tmp_path / "m").exists()


def test_cli_tiny_training_writes_reloadable_models(tmp_path, data_dir):
    out = tmp_path / "models"
    proc = run_cli("mnist_cnn", "--epochs", "1", "--limit", "48", "--data-dir", data_dir,
                   "--out", out, "--seed", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["mnist_cnn.h5", "mnist_cnn.json"]
    from xaitf.data import load_dataset
    from xaitf.training import accuracy

    data = load_dataset("mnist", data_dir)
    rec = json.loads((out / "mnist_cnn.json").read_text())
    assert rec["params"] == 35_402 and rec["study"] == 4 and rec["epochs"] == 1 and rec["seed"] == 1
    assert rec["data"]["train_images"] == 48 and rec["data"]["test_images"] == 48
    assert "mnist_test10k.npz" in rec["data"]["source"] and rec["versions"]["tensorflow"] == tf.__version__
    model = load_model(out / "mnist_cnn.h5")
    x = registry.prepare_inputs("mnist_cnn", data.x_test[:48])
    assert accuracy(model, x, data.y_test[:48]) == rec["test_accuracy"]   # same predictions as when saved


# -- real trainings (make test-all) -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, target", [("mnist_cnn", 0.98), ("lenet", 0.97), ("bayesian_mlp", 0.85)])
def test_mnist_models_reach_their_targets(tmp_path, data_dir, name, target):
    proc = run_cli(name, "--data-dir", data_dir, "--out", tmp_path, "--seed", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads((tmp_path / f"{name}.json").read_text())
    assert rec["data"]["train_images"] == 8000 and rec["data"]["test_images"] == 2000
    assert rec["test_accuracy"] >= target, rec["metrics"]
    if name == "bayesian_mlp":
        assert rec["metrics"]["refused_noise_fraction"] >= 0.9, rec["metrics"]


@pytest.mark.slow
def test_same_seed_same_model(tmp_path, data_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        proc = run_cli("lenet", "--epochs", "1", "--limit", "512", "--data-dir", data_dir, "--out", out)
        assert proc.returncode == 0, proc.stderr[-2000:]
    wa, wb = load_model(a / "lenet.h5").get_weights(), load_model(b / "lenet.h5").get_weights()
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_cli_svhn_resnet18_on_synthetic_format1(tmp_path):
    """create_model.py svhn_resnet18 on a tiny synthetic SVHN format-1 folder (digitStruct.mat + PNGs)."""
    from PIL import Image

    test_data = pytest.importorskip("test_data")   # its MATLAB v7.3 digitStruct writer
    rs = np.random.RandomState(0)
    folder = tmp_path / "data" / "svhn" / "train"
    folder.mkdir(parents=True)
    records = []
    for i in range(16):
        label = 1 if i % 2 else 3
        records.append((f"{i + 1}.png", [(label, 4, 4, 10, 16)]))
        Image.fromarray(rs.randint(0, 256, (24, 30, 3)).astype(np.uint8)).save(folder / f"{i + 1}.png")
    test_data.write_digit_struct(folder / "digitStruct.mat", records)
    out = tmp_path / "models"
    proc = run_cli("svhn_resnet18", "--epochs", "1", "--data-dir", tmp_path / "data", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads((out / "svhn_resnet18.json").read_text())
    assert rec["data"]["train_images"] == 13 and rec["data"]["test_images"] == 3   # seeded 80/20 split
    assert rec["output"] == "logit"
    model = load_model(out / "svhn_resnet18.h5")
    assert model(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 1)


def test_cli_plan_builds_what_the_data_allow(tmp_path, data_dir, monkeypatch):
    """No names: center_pixel always, MNIST models when MNIST is there; the rest skipped with a reason."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("XAITF_DATA_DIR", raising=False)
    import create_model

    only_mnist = tmp_path / "d"
    only_mnist.mkdir()
    (only_mnist / "mnist_test10k.npz").symlink_to(Path(data_dir) / "mnist_test10k.npz")
    todo, skipped = create_model.plan(create_model.parse_args(["--data-dir", str(only_mnist), "--offline"]))
    assert [n for n, _ in todo] == ["center_pixel", "mnist_cnn", "lenet", "bayesian_mlp"]
    assert todo[1][1] is todo[2][1]                     # one load per dataset
    reasons = dict(skipped)
    assert set(reasons) == {"cifar_vgg", "xainn_baseline", "xainn_softmax", "xainn_poollinear",
                            "svhn_resnet18"}
    assert str(only_mnist) in reasons["cifar_vgg"] and "only built when named" in reasons["svhn_resnet18"]


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from xaitf.training import learning_rate

    r = registry.Recipe(10, 64, "adam", 2e-3, schedule="cosine", warmup=1)
    lr = learning_rate(r, steps_per_epoch=32)
    at = [float(lr(s)) for s in (0, 16, 32, 32 + 144, 320)]
    assert at[0] == pytest.approx(2e-4, rel=1e-5)                 # warm-up starts at lr / 10
    assert at[1] == pytest.approx(2e-4 + 0.5 * 1.8e-3, rel=1e-4)  # linear half-way
    assert at[2] == pytest.approx(2e-3, rel=1e-5)                 # peak after one epoch
    assert at[3] == pytest.approx(1e-3, rel=1e-3)                 # cosine half-way through the decay
    assert at[4] == pytest.approx(0.0, abs=1e-9)                  # zero at the last step
    assert learning_rate(registry.Recipe(3, 8, lr=0.1), 5) == 0.1
    with pytest.raises(ValueError, match="expected cosine"):
        learning_rate(registry.Recipe(3, 8, schedule="step"), 5)


def test_shift_flip_augmentation_moves_content_but_keeps_shape():
    from xaitf.training import augmenter

    x = np.zeros((8, 32, 32, 3), np.float32)
    x[:, 14:18, 14:18] = 1.0
    out = augmenter("shift_flip", seed=3)(x, training=True).numpy()
    assert out.shape == x.shape
    centres = [np.argwhere(o[..., 0] > 0.5).mean(0) for o in out]
    assert max(np.abs(c - 15.5).max() for c in centres) > 0.5      # some image was shifted
    assert max(np.abs(c - 15.5).max() for c in centres) <= 4.5     # by at most 4 of 32 px
    assert np.array_equal(augmenter("shift_flip", seed=3)(x, training=False).numpy(), x)


def test_cifar_vgg_dropout_factor():
    m = registry.build("cifar_vgg", dropout=0.5)
    rates = {l.name: l.rate for l in m.layers if isinstance(l, tfk.layers.Dropout)}
    assert rates["block1_drop1"] == pytest.approx(0.15) and rates["drop_fc1"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="dropout"):
        registry.build("cifar_vgg", dropout=-1)
