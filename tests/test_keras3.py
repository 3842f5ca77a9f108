"""Keras 3 models: the same CNN built with `import keras` and with tf-keras, same weights, gives the
same maps with every registered method (LRP/DeepTaylor and tf-explain through the tf-keras twin)."""
import subprocess
import sys

import numpy as np
import pytest

import xaitf
from xaitf import registry
from xaitf.errors import ModelError
from xaitf.keras_bridge import keras3, model_kind, tfk

SHAPE = (16, 16, 3)
CLASSES = 4

# small settings so that every method runs in a second or two
FAST = {
    "ig": {"steps": 8}, "sg": {"samples": 4}, "vargrad": {"samples": 4}, "squaregrad": {"samples": 4},
    "inn.integrated_gradients": {"steps": 8}, "tfx.ig": {"steps": 8}, "tfx.smoothgrad": {"samples": 4},
    "pda": {"values": 8}, "shapley": {"samples": 2}, "mp": {"max_iterations": 10},
    "rise": {"masks": 64}, "lime": {"num_samples": 64}, "lime.lib": {"num_samples": 64},
    # few segments and enough samples: an underdetermined Kernel SHAP fit amplifies 1e-7 differences
    "kernelshap": {"nsamples": 300, "n_segments": 8}, "shap.lib": {"nsamples": 300, "n_segments": 8},
    "shap.partition": {"max_evals": 64},
}
# methods that need what a plain CNN call does not give
SKIP = {
    "interventional": "needs training data; covered in test_interventional.py",
    "inn.smoothgrad": "iNNvestigate draws its own unseeded noise",
}
# iNNvestigate's wrapper analyzers refuse BatchNormalization (a ModelError on both kinds alike)
REFUSED_BN = {"inn.integrated_gradients"}


def _layers(k):
    L = k.layers
    inp = k.Input(SHAPE, name="image")
    h = L.Conv2D(6, 3, padding="same", name="conv1")(inp)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("relu", name="relu1")(h)
    h = L.MaxPooling2D(2, name="pool1")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(16, activation="relu", name="fc1")(h)
    out = L.Dense(CLASSES, activation="softmax", name="fc2")(h)
    return k.Model(inp, out)


@pytest.fixture(scope="module")
def twins():
    rs = np.random.RandomState(0)
    tk = _layers(tfk)
    weights = []
    for w in tk.get_weights():
        if w.ndim == 1:  # biases, BN beta/mean: small; BN gamma/variance positive
            weights.append((rs.rand(*w.shape) * 0.5 + 0.5).astype(np.float32))
        else:
            weights.append((rs.randn(*w.shape) * np.sqrt(2.0 / np.prod(w.shape[:-1]))).astype(np.float32))
    tk.set_weights(weights)
    k3 = _layers(keras3())
    k3.set_weights(weights)
    x = np.random.default_rng(1).random((3, *SHAPE), dtype=np.float32)
    return tk, k3, x


def test_kinds_and_outputs_agree(twins):
    tk, k3, x = twins
    assert model_kind(tk) == "tf-keras" and model_kind(k3) == "keras3"
    np.testing.assert_allclose(tk(x).numpy(), np.asarray(k3(x)), atol=1e-6)


@pytest.mark.parametrize("name", [m for m in registry.list_methods()])
def test_every_method_same_maps_on_both(twins, name):
    if name in SKIP:
        pytest.skip(SKIP[name])
    tk, k3, x = twins
    targets = np.array([0, 1, 3])
    if name in REFUSED_BN:
        for model in (tk, k3):
            with pytest.raises(ModelError, match="BatchNormalization"):
                xaitf.create_explainer(name, model, **FAST.get(name, {}))
        return
    maps = []
    for model in (tk, k3):
        ex = xaitf.create_explainer(name, model, seed=0, progress=False, **FAST.get(name, {}))
        maps.append(ex(x, targets))
    a, b = maps
    assert a.shape == b.shape and a.shape[:3] == (3, 16, 16)
    scale = max(float(np.abs(a).max()), 1e-12)
    assert np.abs(a - b).max() <= 1e-4 * scale, name


class Scale(keras3().layers.Layer):
    """A custom layer tf-keras knows nothing about."""

    def call(self, x):
        return 2.0 * x


def _custom_model():
    k = keras3()
    inp = k.Input((8, 8, 1), name="image")
    h = k.layers.Conv2D(3, 3, activation="relu", name="conv")(inp)
    h = Scale(name="my_scale")(h)
    h = k.layers.Flatten()(h)
    return k.Model(inp, k.layers.Dense(3, name="out")(h))


class Sorted(keras3().layers.Layer):
    """A custom layer whose call native LRP cannot read (a sort)."""

    def call(self, x):
        return keras3().ops.sort(x, axis=-1)


def test_custom_layer_native_ok_lrp_reads_its_call_or_refuses_it():
    """Native methods run on custom layers. Native LRP reads a custom layer through its call when
    that is Keras layers and operations it reads (Scale: ``2.0 * x``): lrp.z gives the maps of the
    same model with Rescaling(2.0) in its place. A call it cannot read (a sort) is refused in one
    line naming the layer and the methods that still work."""
    k = keras3()
    model = _custom_model()
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    g = xaitf.create_explainer("grad", model)(x, [0, 1])
    assert g.shape == (2, 8, 8) and np.isfinite(g).all() and np.abs(g).sum() > 0
    inp = k.Input((8, 8, 1))
    h = k.layers.Rescaling(2.0)(model.get_layer("conv")(inp))
    plain = k.Model(inp, model.get_layer("out")(k.layers.Flatten()(h)))
    np.testing.assert_allclose(plain(x).numpy(), model(x).numpy(), rtol=1e-6)
    ref = xaitf.create_explainer("lrp.z", plain)(x, [0, 1])
    got = xaitf.create_explainer("lrp.z", model)(x, [0, 1])
    np.testing.assert_allclose(got, ref, atol=1e-6 * np.abs(ref).max())
    h = Sorted(name="my_sort")(k.layers.Conv2D(3, 3, activation="relu")(inp))
    sorting = k.Model(inp, k.layers.Dense(3)(k.layers.Flatten()(h)))
    with pytest.raises(ModelError) as err:
        xaitf.create_explainer("lrp.z", sorting)(x, [0, 1])
    msg = str(err.value)
    assert "'my_sort' (Sorted)" in msg and "\n" not in msg and "grad" in msg


def test_user_loaded_keras3_file_works(twins, tmp_path):
    """A .keras file saved by Keras 3, loaded by plain keras.models.load_model in user code."""
    _, k3, x = twins
    path = tmp_path / "k3.keras"
    k3.save(path)
    user_model = keras3().models.load_model(path)
    ours = xaitf.load_model(path)
    assert model_kind(ours) == "keras3"
    a = xaitf.create_explainer("lrp.epsilon", user_model)(x, [0, 1, 2])
    b = xaitf.create_explainer("lrp.epsilon", ours)(x, [0, 1, 2])
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_heatmap_script_custom_layer_lrp_fails_cleanly(tmp_path):
    """One clear line, non-zero exit, no figure half-written."""
    model = _custom_model()
    path = tmp_path / "custom.keras"
    model.save(path)
    out = tmp_path / "results"
    # the custom class is not importable from the file: the loader must refuse it in one line too
    proc = subprocess.run([sys.executable, "heatmap_script.py", "-mp", str(path), "-hm", "grad", "lrp",
                           "-op", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error")]
    assert len(errors) == 1, proc.stderr
    assert not out.exists() or not any(out.rglob("*.png"))


def test_heatmap_script_on_a_keras3_file(twins, tmp_path):
    """Issue acceptance: heatmap_script.py -mp <Keras 3 .keras> -hm grad ig lrp occlusion lime writes
    one figure, and every method's map (the four LRP rules through the twin) is finite and not all 0."""
    from PIL import Image

    _, k3, _ = twins
    path = tmp_path / "k3.keras"
    k3.save(path)
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(2).rand(20, 24, 3) * 255).astype(np.uint8)).save(png)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "heatmap_script.py", "-ip", str(png), "-mp", str(path),
                           "-hm", "grad", "ig", "lrp", "occlusion", "lime", "-op", str(out),
                           "--set", "ig.steps=8", "--set", "lime.num_samples=64", "--save-arrays"],
                          capture_output=True, text=True, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr
    pngs = sorted((out / "photo").glob("heatmap_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    arrays = np.load(pngs[0].with_suffix(".npz"), allow_pickle=False)
    assert sorted(arrays.files) == sorted(["grad", "ig", "lrp.z", "lrp.epsilon", "lrp.alpha_1_beta_0",
                                           "lrp.alpha_2_beta_1", "occlusion", "lime"])
    for k in arrays.files:
        assert arrays[k].shape == SHAPE[:2] and np.isfinite(arrays[k]).all() and np.abs(arrays[k]).max() > 0, k


def test_subclassed_keras3_model_gets_the_wrapping_recipe():
    """A Keras 3 model subclassed with its own call() has no graph of layers: one line that says
    how to wrap it, which then runs with the gradient methods (equal to the gradient of the
    subclassed model itself); a subclass built functionally (super().__init__(inputs, outputs))
    is a Keras 3 model like any other."""
    import tensorflow as tf

    k = keras3()

    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = k.layers.Conv2D(3, 3, activation="relu"), k.layers.Dense(2)

        def call(self, x):
            return self.fc(k.layers.Flatten()(self.conv(x)))

    net = Net()
    x = np.random.default_rng(0).random((2, 6, 6, 1), dtype=np.float32)
    net(x)
    with pytest.raises(ModelError, match=r"^Net is a subclassed Keras 3 model, .* wrap it as a functional model "
                                         r"first: inp = keras\.Input\(\(H, W, C\)\); model = keras\.Model\(inp, "
                                         r"net\(inp\)\)"):
        xaitf.create_explainer("grad", net)
    inp = k.Input((6, 6, 1))
    got = xaitf.create_explainer("grad", k.Model(inp, net(inp)), channel_reduce="none", progress=False)(x, [0, 1])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        total = tf.reduce_sum(tf.gather(net(xt), [0, 1], axis=1, batch_dims=1))
    np.testing.assert_allclose(got, tape.gradient(total, xt).numpy(), atol=1e-6)

    class Functional(k.Model):
        def __init__(self):
            i = k.Input((6, 6, 1))
            super().__init__(i, k.layers.Dense(2)(k.layers.Flatten()(i)))

    assert model_kind(Functional()) == "keras3"
    maps = xaitf.create_explainer("lrp.z", Functional(), progress=False)(x, [0, 1])
    assert maps.shape == (2, 6, 6) and np.isfinite(maps).all()


def _activations(k, form):
    """A CNN whose activations are layers (``form="layers"``) or operations called on tensors
    (``"ops"``: keras.ops / keras.activations in Keras 3, tf.nn in tf-keras); the same computation."""
    import tensorflow as tf

    L, ops = k.layers, form == "ops"
    k3 = k is not tfk
    inp = k.Input((8, 8, 2), name="image")
    h = L.Conv2D(6, 3, padding="same", name="conv1")(inp)
    h = (k.ops.relu(h) if k3 else tf.nn.relu(h)) if ops else L.Activation("relu", name="relu")(h)
    h = L.Conv2D(6, 3, name="conv2")(h)
    if k3:      # keras.activations.relu with a slope: a ReLU operation with parameters
        h = k.activations.relu(h, negative_slope=0.1) if ops else L.ReLU(negative_slope=0.1, name="leaky")(h)
    else:       # TF's default slope 0.2
        h = tf.nn.leaky_relu(h) if ops else L.LeakyReLU(0.2, name="leaky")(h)
    h = L.Conv2D(6, 1, name="conv3")(h)
    h = ((k.activations.gelu(h) if k3 else tf.nn.gelu(h)) if ops else L.Activation("gelu", name="gelu")(h))
    h = (k.ops.silu(h) if k3 else tf.nn.silu(h)) if ops else L.Activation("swish", name="silu")(h)
    return k.Model(inp, L.Dense(CLASSES, name="fc")(L.Flatten()(h)))


@pytest.mark.parametrize("kind", ["keras3", "tf-keras"])
def test_activations_written_as_operations(kind):
    """``keras.ops.relu(x)``, ``keras.activations.relu(x, negative_slope=...)``, ``gelu``, ``silu``
    (tf.nn.* in tf-keras) called on tensors read as the activation layers of the same computation:
    every method gives the maps it gives on the model built with layers (Guided Backprop and
    DeconvNet modify the gradient at the ReLU operation; native LRP and, for Keras 3, the tf-keras
    twin of iNNvestigate and tf-explain read it)."""
    k = keras3() if kind == "keras3" else tfk
    methods = ["gb", "deconvnet", "deeplift", "lrp.epsilon", "lrp.alpha_2_beta_1", "gradcam"]
    if kind == "keras3":
        methods += ["inn.gradient", "tfx.gradcam"]      # (iNNvestigate's LRP refuses a ReLU with a slope)
    _same_maps_as_layers(_activations(k, "ops"), _activations(k, "layers"), (8, 8, 2), methods, seed=2)


def _same_maps_as_layers(as_ops, as_layers, shape, methods, seed):
    """Random weights for ``as_layers``, copied into ``as_ops``: the outputs agree, and every method
    of ``methods`` gives the same non-zero maps on both (1e-5 of the map's scale)."""
    rs = np.random.RandomState(seed)
    as_layers.set_weights([rs.normal(0, 0.5, w.shape).astype(np.float32) for w in as_layers.get_weights()])
    as_ops.set_weights(as_layers.get_weights())
    x = np.random.default_rng(seed + 1).normal(size=(3, *shape)).astype(np.float32)
    ref = np.asarray(as_layers(x))
    np.testing.assert_allclose(np.asarray(as_ops(x)), ref, atol=1e-6 * np.abs(ref).max())
    t = np.array([0, 1, 3])
    for name in methods:
        a, b = (xaitf.create_explainer(name, m, progress=False)(x, t) for m in (as_layers, as_ops))
        assert np.abs(a).max() > 0, name
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max(), err_msg=name)


def test_inexact_activation_operation_keeps_its_function():
    """keras.ops.gelu defaults to the tanh approximation, Keras's gelu activation does not: the
    graph and the twin compute the operation's own function, not the activation of its name."""
    from xaitf import twin
    from xaitf.graph import read_model

    k = keras3()
    inp = k.Input((4, 4, 1))
    model = k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(k.ops.gelu(k.layers.Conv2D(3, 2)(inp) * 3.0))))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    ref = np.asarray(model(x))
    np.testing.assert_allclose(read_model(model).forward(x).numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(twin.tf_keras_twin(model)(x).numpy(), ref, atol=1e-6)


def _layout(form):
    """The same CNN with tensor operations written as keras.ops (``form="ops"``) or as layers."""
    k = keras3()
    L, ops = k.layers, form == "ops"
    inp = k.Input((6, 6, 2), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(4, 3, padding="same", name="b")(inp)
    h = (a - b) if ops else L.Subtract()([a, b])
    h = k.ops.maximum(h, b) if ops else L.Maximum()([h, b])
    h = k.ops.minimum(h, a) if ops else L.Minimum()([h, a])
    h = -h if ops else L.Rescaling(-1.0)(h)
    h = k.ops.concatenate([h, a], axis=-1) if ops else L.Concatenate()([h, a])
    h = k.ops.transpose(h, (0, 2, 1, 3)) if ops else L.Permute((2, 1, 3))(h)
    g = k.ops.max(h, axis=(1, 2)) if ops else L.GlobalMaxPooling2D()(h)
    h = k.ops.reshape(h, (-1, 6 * 6 * 8)) if ops else L.Reshape((6 * 6 * 8,))(h)
    out = L.Add()([L.Dense(CLASSES, name="fc")(h), L.Dense(CLASSES, name="fc_max")(g)])
    return k.Model(inp, out)


def test_tensor_operations_read_as_their_layers():
    """``a - b``, ``ops.maximum``/``minimum``, ``-x``, ``ops.concatenate``, ``ops.transpose``, ``ops.max``
    over the image axes and ``ops.reshape`` keeping the batch axis read as the layers of the same
    computation: native LRP and the tf-keras twin give the maps of the model built with layers."""
    _same_maps_as_layers(_layout("ops"), _layout("layers"), (6, 6, 2),
                         ("lrp.z", "lrp.epsilon", "inn.gradient", "tfx.gradcam"), seed=4)
