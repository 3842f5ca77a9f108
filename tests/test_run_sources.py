"""``python -m xaitf run --data`` beyond MNIST/CIFAR-10: image folders, .npz/.npy files, HDF5
datasets; fitting images to the model (resize/channel policy); the run's report.html.

A tiny (28,28,1) 4-class CNN and a folder of 40 seeded random "digits" (4 class folders of 10 PNGs).
"""
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import make_cnn, write_mnist_npz
from xaitf import runs
from xaitf.cli import CliError
from xaitf.data import sources
from xaitf.errors import DataError
from xaitf.__main__ import main as xaitf_main

N, CHUNK = 40, 8
SETS = ["--set", "lime.num_samples=64", "--set", "lime.segmenter=grid"]


def write_digits(root, per_class=10, classes=4, seed=0, size=28):
    rs = np.random.RandomState(seed)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            img = (rs.rand(size, size) < 0.2 + 0.15 * c).astype(np.uint8) * 255
            Image.fromarray(img).save(root / f"class_{c}" / f"img_{j:02d}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    make_cnn(shape=(28, 28, 1), classes=4, seed=0).save(root / "tiny.h5")
    return {"root": root, "model": root / "tiny.h5", "digits": write_digits(root / "digits"),
            "index": root / "results"}


def argv(env, out, *extra, data=None, methods=("grad", "lime")):
    return ["run", "--model", str(env["model"]), "--data", str(data or env["digits"]),
            "--chunk-size", str(CHUNK), "--out", str(out), "--methods", *methods, "--no-progress",
            "--index-root", str(env["index"]), *SETS, *extra]


def read_store(path):
    with h5py.File(path, "r", locking=False) as f:
        return {"maps": {m: f["maps"][m][()] for m in f["maps"]},
                "done": {m: f["done"][m][()] for m in f["done"]},
                "computed": {m: f["computed"][m][()] for m in f["computed"]},
                "labels": f["labels"][()], "inputs": f["inputs"][()], "targets": f["targets"][()]}


class Links(HTMLParser):
    """Every href/src of a page, and whether it has a <script>."""

    def __init__(self):
        super().__init__()
        self.links, self.script, self.img = [], False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.script = True
        for k in ("href", "src"):
            if a.get(k):
                self.links.append(a[k])
        if tag == "img":
            self.img.append(a.get("src"))


def parse(path):
    p = Links()
    p.feed(Path(path).read_text())
    return p


def assert_links_exist(page):
    from urllib.parse import unquote

    p = parse(page)
    assert not p.script
    for link in p.links:
        assert "://" not in link and not os.path.isabs(link), link
        assert (Path(page).parent / unquote(link)).exists(), link
    return p


@pytest.fixture(scope="module")
def reference(env):
    out = env["root"] / "ref"
    assert xaitf_main(argv(env, out)) == 0
    return out, read_store(out / "store.h5")


def test_folder_labels_order_and_report(env, reference):
    out, ref = reference
    # labels from the class folders in sorted order, files sorted within each class
    assert ref["labels"].tolist() == [c for c in range(4) for _ in range(10)]
    img = np.asarray(Image.open(env["digits"] / "class_2" / "img_03.png"), np.float32) / 255
    assert np.array_equal(ref["inputs"][23, ..., 0], img)
    for m in ("grad", "lime"):
        assert ref["done"][m].all() and (ref["computed"][m] == 1).all()
        assert ref["maps"][m].shape == (N, 28, 28) and np.isfinite(ref["maps"][m]).all()
    info = json.loads((out / "run.json").read_text())
    assert info["source"]["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    assert info["files"][23] == "class_2/img_03.png"
    assert info["adapt"]["rule"] == "none" and info["source_sha256"] == info["source"]["content_sha256"]
    # report.html: the 40 images, each a relative link to its file and thumbnails that exist
    page = assert_links_exist(out / "report.html")
    files = [l for l in page.links if l.endswith(".png") and "/class_" in l]
    assert len(files) == N and all(l.startswith("../digits/class_") for l in files)
    assert len([s for s in page.img if "input_" in s]) == N
    assert len([s for s in page.img if "lime_" in s]) == N
    md = (out / "report.md").read_text()
    assert "Versions" in md and "tensorflow" in md and "resize" in md
    # the index lists the run with its numbers, and every link of the index exists
    index = env["index"] / "index.html"
    assert_links_exist(index)
    text = index.read_text()
    assert "tiny.h5 on digits" in text and "40/40" in text


def _wait_for(proc, path, at_least, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"run ended early (rc {proc.returncode}): {proc.stderr.read()[-800:]}")
        if path.exists():
            try:
                with h5py.File(path, "r", locking=False) as f:
                    if sum(int(f["done"][m][()].sum()) for m in f["done"]) >= at_least:
                        return
            except (OSError, KeyError):
                pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the run made no progress")


def test_sigint_then_resume_equals_the_uninterrupted_run(env, reference):
    _, ref = reference
    out = env["root"] / "interrupted"
    p = subprocess.Popen([sys.executable, "-m", "xaitf", *argv(env, out, "--chunk-delay", "0.3")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(p, out / "store.h5", 2 * CHUNK)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-800:]
    first = read_store(out / "store.h5")
    done1 = sum(int(d.sum()) for d in first["done"].values())
    assert 2 * CHUNK <= done1 < 2 * N
    assert "not finished" in (out / "report.md").read_text()        # the report of the session
    assert xaitf_main(argv(env, out)) == 0
    final = read_store(out / "store.h5")
    for m in ("grad", "lime"):
        assert final["done"][m].all() and (final["computed"][m] == 1).all()
        assert np.array_equal(final["maps"][m], ref["maps"][m]), m
    assert "**finished**" in (out / "report.md").read_text()


def test_a_changed_folder_is_refused_on_resume(env, reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    data = tmp_path / "digits"
    shutil.copytree(env["digits"], data)
    assert xaitf_main(argv(env, out, data=data)) == 0            # same content elsewhere: resumes
    raw = (out / "store.h5").read_bytes()
    (data / "class_1" / "img_04.png").rename(data / "class_1" / "img_99.png")   # same pixels
    with pytest.raises(runs.StoreError, match="source changed"):
        xaitf_main(argv(env, out, data=data))
    assert (out / "store.h5").read_bytes() == raw


def test_array_and_hdf5_sources(tmp_path):
    rs = np.random.RandomState(1)
    x = rs.randint(0, 256, (6, 28, 28), dtype=np.uint8)
    y = np.arange(6) % 3
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    np.savez(tmp_path / "split.npz", x_train=x[:2], y_train=y[:2], x_test=x[2:], y_test=y[2:])
    np.save(tmp_path / "a.npy", x.astype(np.float32) / 255)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["g/images"] = x[..., None]
        f["g/y"] = y
        f["other"] = np.zeros(3)
    s = sources.load_source(str(tmp_path / "a.npz"), limit=4)
    assert len(s) == 4 and s.labels.tolist() == [0, 1, 2, 0] and s.images.shape == (4, 28, 28, 1)
    assert s.default_scale == 255 and s.split is None
    s = sources.load_source(str(tmp_path / "split.npz"), split="train")
    assert len(s) == 2 and s.split == "train"
    assert len(sources.load_source(str(tmp_path / "split.npz"))) == 4
    s = sources.load_source(str(tmp_path / "a.npy"))
    assert s.labels is None and s.default_scale == 1.0
    s = sources.load_source(f"{tmp_path / 'a.h5'}:/g/images", limit=5)
    assert len(s) == 5 and s.labels.tolist() == y[:5].tolist()
    with pytest.raises(DataError, match=r"name the dataset.*/g/images"):
        sources.load_source(str(tmp_path / "a.h5"))
    with pytest.raises(DataError, match="no train/test split"):
        sources.load_source(str(tmp_path / "a.npz"), split="train")
    np.save(tmp_path / "bad.npy", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"expected images shaped .* got shape \(4, 5\)"):
        sources.load_source(str(tmp_path / "bad.npy"))
    # flat folder: no labels
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(flat / f"{i}.png")
    s = sources.load_source(str(flat))
    assert s.labels is None and s.classes is None and s.files == ["0.png", "1.png", "2.png"]


def test_channel_and_size_policies():
    rgb = np.random.RandomState(0).randint(0, 256, (2, 28, 28, 3)).astype(np.uint8)
    x, pol = sources.adapt(rgb, (28, 28, 1), 255.0)
    assert np.allclose(x[..., 0], (rgb.astype(np.float32) @ sources.LUMA) / 255, atol=1e-6)
    assert pol["channels"].startswith("RGB -> gray by luminance")
    gray = rgb[..., :1]
    x, pol = sources.adapt(gray, (28, 28, 3), 255.0)
    assert np.array_equal(x[..., 0], x[..., 2]) and pol["channels"].startswith("gray -> RGB")
    x, pol = sources.adapt(gray, (32, 32, 1), 255.0, resize="pad")
    assert x.shape == (2, 32, 32, 1) and pol["rule"] == "pad" and "2 px each side" in pol["resize"]
    assert np.array_equal(x[:, 2:30, 2:30], gray / np.float32(255)) and x[:, :2].max() == 0
    x, pol = sources.adapt(gray, (14, 14, 1), 255.0, resize="bilinear")
    from xaitf.data.images import fit_to_model

    assert np.allclose(x[1], fit_to_model(gray[1], (14, 14, 1), scale=255.0)[0])
    with pytest.raises(DataError, match=r"expects images shaped \(32, 32, 1\), the images are 28x28"):
        sources.adapt(gray, (32, 32, 1), 255.0)
    mixed = [np.zeros((28, 28, 1), np.float32), np.zeros((30, 28, 1), np.float32)]
    with pytest.raises(DataError, match=r"mixed sizes \(28x28: 1, 30x28: 1\)"):
        sources.adapt(mixed, (28, 28, 1), 255.0)
    assert sources.adapt(mixed, (28, 28, 1), 255.0, resize="nearest")[0].shape == (2, 28, 28, 1)


def test_refused_sources_write_nothing(env, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    write_digits(mixed, per_class=2, classes=2)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(mixed / "class_0" / "big.png")
    empty = tmp_path / "empty"
    (empty / "class_a").mkdir(parents=True)
    np.save(tmp_path / "bad.npy", np.zeros((3, 28), np.float32))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(flat / "a.png")
    cases = [(mixed, [], DataError, "mixed sizes"), (empty, [], DataError, "no images in folder"),
             (tmp_path / "bad.npy", [], DataError, "expected images shaped"),
             (flat, ["--target", "label"], CliError, "has no labels")]
    for data, extra, error, match in cases:
        out = tmp_path / "out" / data.name
        with pytest.raises(error, match=match):
            xaitf_main(argv(env, out, *extra, data=data))
        assert not (tmp_path / "out").exists(), data
    # on the command line: one line, exit 1
    r = subprocess.run([sys.executable, "-m", "xaitf", *argv(env, tmp_path / "o", data=mixed)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "mixed sizes" in r.stderr
    assert not (tmp_path / "o").exists()


def test_zoo_mnist_models_run_on_mnist(tmp_path):
    """mnist_cnn takes (28,28,3): gray repeated; lenet takes (32,32,1): the study's 28->32 rule."""
    import tensorflow as tf

    from xaitf.zoo import registry

    data = write_mnist_npz(tmp_path / "data", 4, 6)
    for name in ("mnist_cnn", "lenet"):
        tf.keras.utils.set_random_seed(0)
        registry.save(registry.build(name), name, tmp_path / f"{name}.h5")
        out = tmp_path / name
        assert xaitf_main(["run", "--model", str(tmp_path / f"{name}.h5"), "--data", "mnist",
                           "--data-dir", str(data), "--methods", "grad", "--out", str(out),
                           "--no-progress", "--index-root", str(tmp_path / "results")]) == 0
        info = json.loads((out / "run.json").read_text())
        x = read_store(out / "store.h5")["inputs"]
        raw = np.load(data / "mnist.npz")["x_test"]
        if name == "mnist_cnn":
            assert info["adapt"]["channels"].startswith("gray -> RGB") and x.shape == (6, 28, 28, 3)
            assert np.array_equal(x[..., 1], raw / np.float32(255))
        else:
            assert info["adapt"]["rule"] == "zoo:lenet" and x.shape == (6, 32, 32, 1)
            assert np.allclose(x, registry.prepare_inputs("lenet", raw), atol=1e-6)
        assert "resize" in (out / "report.html").read_text()
    text = (tmp_path / "results" / "index.html").read_text()
    assert "mnist_cnn.h5 on mnist" in text and "lenet.h5 on mnist" in text


def test_preprocess_flag(env, tmp_path):
    from xaitf.errors import InputError

    with pytest.raises(InputError, match="unknown preprocessing 'nope'"):
        xaitf_main(argv(env, tmp_path / "p0", "--preprocess", "nope", methods=["grad"]))
    assert not (tmp_path / "p0").exists()
    out = tmp_path / "p"
    assert xaitf_main(argv(env, out, "--preprocess", "scale", "--scale", "127.5", methods=["grad"])) == 0
    x = read_store(out / "store.h5")["inputs"]
    img = np.asarray(Image.open(env["digits"] / "class_0" / "img_01.png"), np.float32)
    assert np.array_equal(x[1, ..., 0], img / np.float32(127.5))
    info = json.loads((out / "run.json").read_text())
    assert info["preprocess"] == "scale" and "x/127.5" in info["adapt"]["preprocess"]
    assert "preprocess" in (out / "report.md").read_text()
    with pytest.raises(runs.StoreError, match="preprocessing 'scale' there, None now"):
        xaitf_main(argv(env, out, "--scale", "127.5", methods=["grad"]))


def test_preprocess_sets_pda_intensities_and_z_box_bounds(env, tmp_path, capsys):
    """--preprocess scale --scale 127.5 (inputs 0..2): PDA's marginal intensities and the z^B
    bounds of deep_taylor.bounded run 0..2; the fit line names the preprocessing, not a divisor."""
    out = tmp_path / "pda"
    assert xaitf_main(argv(env, out, "--preprocess", "scale", "--scale", "127.5", "--set", "pda.values=2",
                           "--set", "pda.window=14", "--set", "pda.stride=14",
                           methods=["pda", "deep_taylor.bounded"])) == 0
    info = json.loads((out / "run.json").read_text())
    assert tuple(info["settings"]["pda"]["params"]["value_range"]) == (0.0, 2.0)
    bounds = info["settings"]["deep_taylor.bounded"]["params"]
    assert (bounds["low"], bounds["high"]) == (0.0, 2.0)
    fit = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fit to the model"))
    assert fit.endswith("; preprocess scale: x/127.5 (xaitf.data.preprocess.preprocess on the 0..255 values, after "
                        "the fit)") and "divided by" not in fit, fit


def test_preprocess_of_float_unit_data(env, tmp_path):
    """A float .npy in [0, 1] with --preprocess tf: the values are 0..255 / 255, so the inputs are
    x * 2 - 1 (not x / 127.5 - 1, which is ~ -1 everywhere); the policy says so. A float array
    beyond 1 is taken as 0..255 values."""
    make_cnn(shape=(8, 8, 3), classes=4, seed=0).save(tmp_path / "rgb.keras")
    rgb = dict(env, model=tmp_path / "rgb.keras")
    unit = np.random.RandomState(3).rand(3, 8, 8, 3).astype(np.float32)
    np.save(tmp_path / "unit.npy", unit)
    out = tmp_path / "u"
    assert xaitf_main(argv(rgb, out, "--preprocess", "tf", data=tmp_path / "unit.npy", methods=["grad"])) == 0
    np.testing.assert_allclose(read_store(out / "store.h5")["inputs"], unit * 2 - 1, atol=1e-6)
    assert "the [0, 1] data x 255" in json.loads((out / "run.json").read_text())["adapt"]["preprocess"]
    np.save(tmp_path / "big.npy", unit * 255)
    out = tmp_path / "b"
    assert xaitf_main(argv(rgb, out, "--preprocess", "tf", data=tmp_path / "big.npy", methods=["grad"])) == 0
    np.testing.assert_allclose(read_store(out / "store.h5")["inputs"], unit * 2 - 1, atol=1e-5)


def test_model_with_its_own_preprocessing_gets_0_255_values(env, tmp_path, capsys):
    """A Keras 3 model with Rescaling(1/255) at its input (as keras.applications' EfficientNet):
    without --preprocess / --scale, run and evaluate give it the 0..255 values as heatmap_script
    does (they divided by 255 again: inputs of at most 1/255); float [0, 1] data are taken x 255;
    --scale still divides."""
    import keras

    inp = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255.0, name="scaling")(inp)
    h = keras.layers.Conv2D(2, 3, activation="relu")(h)
    keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(h))).save(tmp_path / "own.keras")
    own = dict(env, model=tmp_path / "own.keras")
    img = np.asarray(Image.open(env["digits"] / "class_0" / "img_01.png"), np.float32)
    out = tmp_path / "own"
    assert xaitf_main(argv(own, out, methods=["grad"])) == 0
    assert np.array_equal(read_store(out / "store.h5")["inputs"][1, ..., 0], img)
    fit = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fit to the model"))
    assert "the 0..255 values as they are, as the model has its own preprocessing (Rescaling layer 'scaling'" in fit
    assert xaitf_main(["evaluate", "--model", str(own["model"]), "--data", str(env["digits"]), "--limit", "2",
                       "--methods", "grad", "--metrics", "sparseness", "--out", str(tmp_path / "ev")]) == 0
    assert "as the model has its own preprocessing" in capsys.readouterr().out
    unit = np.random.RandomState(3).rand(3, 28, 28, 1).astype(np.float32)
    np.save(tmp_path / "unit.npy", unit)
    out = tmp_path / "unit"
    assert xaitf_main(argv(own, out, data=tmp_path / "unit.npy", methods=["grad"])) == 0
    np.testing.assert_allclose(read_store(out / "store.h5")["inputs"], unit * 255, rtol=1e-6)
    out = tmp_path / "scaled"
    assert xaitf_main(argv(own, out, "--scale", "255", methods=["grad"])) == 0
    assert np.array_equal(read_store(out / "store.h5")["inputs"][1, ..., 0], img / np.float32(255))


def test_window_defaults_scaled_to_the_input(env, tmp_path, capsys):
    """Not study 1's model: occlusion's window/stride default to max(1, round(min(H,W)/14)) (2 on
    28x28), as heatmap_script.py does; a key given with --set keeps the user's value."""
    out = tmp_path / "occ"
    assert xaitf_main(argv(env, out, "--limit", "8", methods=["occlusion"])) == 0
    params = json.loads((out / "run.json").read_text())["settings"]["occlusion"]["params"]
    assert (params["window"], params["stride"]) == (2, 2)
    assert "window defaults scaled to the 28x28 input" in capsys.readouterr().err
    out = tmp_path / "occ_set"
    assert xaitf_main(argv(env, out, "--limit", "8", "--set", "occlusion.window=4", methods=["occlusion"])) == 0
    params = json.loads((out / "run.json").read_text())["settings"]["occlusion"]["params"]
    assert (params["window"], params["stride"]) == (4, 2)
