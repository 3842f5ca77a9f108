"""The iNNvestigate backend (xaitf.methods.propagation): LRP / Deep Taylor / iNN gradients."""
import importlib.util

import numpy as np
import pytest

import xaitf
from xaitf.errors import MethodError, ModelError
from xaitf.keras_bridge import tfk
from xaitf.methods import propagation as P

from conftest import make_cnn, make_linear

LRP_FAMILY = ["inn.lrp.z", "inn.lrp.epsilon", "inn.lrp.alpha_1_beta_0", "inn.lrp.alpha_2_beta_1", "inn.deep_taylor"]


def explain(name, model, x, t, **kw):
    return xaitf.create_explainer(name, model, progress=False, **kw)(x, t)


@pytest.fixture(scope="module")
def cnn28():
    return make_cnn(shape=(28, 28, 1), classes=10)


@pytest.fixture(scope="module")
def cnn28_keras3(cnn28):
    """The same CNN built with Keras 3, the same weights."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    i = keras.Input((28, 28, 1), name="image")
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(i)
    h = L.MaxPooling2D(2, name="pool1")(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.Dense(16, activation="relu", name="fc1")(L.Flatten(name="flatten")(h))
    model = keras.Model(i, L.Dense(10, activation="softmax", name="fc2")(h), name="k3_cnn28")
    model.set_weights(cnn28.get_weights())
    return model


@pytest.fixture(scope="module")
def x28():
    return np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)


T8 = np.array([0, 1, 2, 3, 4, 5, 6, 7])


def test_lrp_family_on_tf_keras_and_keras3(cnn28, cnn28_keras3, x28):
    for name in LRP_FAMILY:
        a = explain(name, cnn28, x28, T8)
        assert a.shape == (8, 28, 28) and np.all(np.isfinite(a)) and np.abs(a).max() > 0, name
        b = explain(name, cnn28_keras3, x28, T8)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max(), err_msg=name)
    raw = explain("inn.lrp.z", cnn28, x28, T8, channel_reduce="none")
    assert raw.shape == (8, 28, 28, 1)


def _linear_zero_bias():
    m = make_linear((6, 6, 1), 3, seed=4)
    w, _ = m.layers[-1].get_weights()
    m.layers[-1].set_weights([w, np.zeros(3, np.float32)])
    return m, w


def test_lrp_on_linear_model_is_analytic():
    m, w = _linear_zero_bias()
    x = np.random.default_rng(1).uniform(-1, 1, (5, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0])
    wt = w[:, t].T.reshape(5, 6, 6)
    contrib = x[..., 0] * wt                    # input x gradient = W[:, c] * x
    z = contrib.sum((1, 2))
    np.testing.assert_allclose(explain("inn.lrp.z", m, x, t), contrib, rtol=1e-4, atol=1e-6)
    eps = 0.5
    r = explain("inn.lrp.epsilon", m, x, t, epsilon=eps)
    factor = z / (z + eps * np.where(z >= 0, 1.0, -1.0))
    np.testing.assert_allclose(r, contrib * factor[:, None, None], rtol=1e-4, atol=1e-6)
    total = r.sum((1, 2))                       # conservation up to the epsilon absorbed
    assert np.all(np.abs(total - z) <= eps + 1e-4) and np.all(np.abs(total) <= np.abs(z) + 1e-4)
    np.testing.assert_allclose(explain("inn.lrp.epsilon", m, x, t, epsilon=1e-6).sum((1, 2)), z, rtol=1e-4)


def test_center_pixel_float64_through_twin(center_pixel_small):
    from xaitf.zoo import center_index

    rs = np.random.RandomState(0)
    x = (rs.randint(256, size=(3, 15, 15, 1)) / 255.0).astype(np.float32)
    maps = explain("inn.lrp.z", center_pixel_small, x, None)
    assert maps.shape == (3, 15, 15) and np.all(np.isfinite(maps))
    # one Dense (+ReLU, identity here) layer: LRP-0 gives x_i W_ic
    r, c = center_index(15)
    t = np.asarray(center_pixel_small(x)).argmax(1)
    np.testing.assert_array_equal(t, np.round(x[:, r, c, 0] * 255).astype(int))
    w = center_pixel_small.get_layer("logits").get_weights()[0]
    want = x[..., 0] * w[:, t].T.reshape(3, 15, 15)
    np.testing.assert_allclose(maps, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_analyzer_is_built_once(cnn28, x28):
    e = xaitf.create_explainer("inn.lrp.epsilon", cnn28, epsilon=0.25, progress=False)
    builds = P.STATS["builds"]
    first = e(x28, T8)
    second = e(x28[:3], T8[:3])
    xaitf.create_explainer("inn.lrp.epsilon", cnn28, epsilon=0.25, progress=False)(x28, T8)
    assert P.STATS["builds"] == builds          # nothing built after the explainer's setup
    np.testing.assert_allclose(second, first[:3], rtol=1e-6, atol=1e-7)
    xaitf.create_explainer("inn.lrp.epsilon", cnn28, epsilon=0.5, progress=False)
    assert P.STATS["builds"] == builds + 1      # other parameters: a new analyzer


def _pearson(a, b):
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


@pytest.mark.skipif(importlib.util.find_spec("xaitf.methods.gradients") is None,
                    reason="native gradient methods (xaitf/methods/gradients.py) not present")
@pytest.mark.parametrize("inn,native,kw", [
    ("inn.gradient", "grad", {}), ("inn.input_t_gradient", "inpgrad", {}),
    ("inn.integrated_gradients", "ig", {"steps": 32}), ("inn.guided_backprop", "gb", {}),
    ("inn.deconvnet", "deconvnet", {})])
def test_agrees_with_native(cnn28, x28, inn, native, kw):
    from xaitf.keras_bridge import logits_model

    t = T8
    if native in ("gb", "deconvnet"):
        # iNNvestigate seeds these backward passes with f_c instead of 1: the maps are f_c times
        # the native ones where f_c > 0 (and differ where f_c <= 0), so explain positive logits
        z = np.asarray(logits_model(cnn28)[0](x28))
        t = z.argmax(1)
        fc = z[np.arange(len(t)), t]
        assert np.all(fc > 0)
    a = explain(inn, cnn28, x28, t, **kw)
    nkw = dict(kw, rule="left") if native == "ig" else kw  # iNNvestigate's path: k/m, k = 0..m-1
    b = explain(native, cnn28, x28, t, **nkw)
    assert np.all(_pearson(a, b) >= 0.999), (inn, _pearson(a, b))
    if native in ("gb", "deconvnet"):
        np.testing.assert_allclose(a, fc[:, None, None] * b, rtol=1e-3, atol=1e-4 * np.abs(a).max())
    else:
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(a).max())
    if native == "ig":  # also against the default midpoint rule
        assert np.all(_pearson(a, explain("ig", cnn28, x28, t, steps=32)) >= 0.99)


def test_smoothgrad_only_at_its_real_noise(cnn28, x28):
    with pytest.raises(MethodError, match="ignores noise_scale"):
        xaitf.create_explainer("inn.smoothgrad", cnn28, noise_scale=0.1)
    maps = explain("inn.smoothgrad", cnn28, x28[:2], T8[:2], samples=4)
    assert maps.shape == (2, 28, 28) and np.all(np.isfinite(maps))


def test_parameter_checks(cnn28):
    with pytest.raises(MethodError, match="unknown parameter.*epsilon"):
        xaitf.create_explainer("inn.lrp.z", cnn28, epsilon=0.1)
    with pytest.raises(MethodError, match="epsilon > 0"):
        xaitf.create_explainer("inn.lrp.epsilon", cnn28, epsilon=0)
    with pytest.raises(MethodError, match="low < high"):
        xaitf.create_explainer("inn.deep_taylor.bounded", cnn28, low=1.0, high=0.0)
    with pytest.raises(MethodError, match="unknown iNNvestigate analyzer"):
        P.InnvestigateExplainer(cnn28, analyzer="lrp.nope")


def _tf_keras_model(act, name):
    i = tfk.Input((8, 8, 1), name="image")
    h = tfk.layers.Conv2D(3, 3, activation=act, name=name)(i)
    return tfk.Model(i, tfk.layers.Dense(4, activation="softmax")(tfk.layers.Flatten()(h)))


def test_unsupported_models_fail_before_any_build():
    builds = P.STATS["builds"]
    tanh = _tf_keras_model("tanh", "tanh_conv")
    with pytest.raises(ModelError, match=r"deep_taylor needs ReLU.*'tanh_conv' \(type Conv2D\).*'tanh'"):
        xaitf.create_explainer("inn.deep_taylor", tanh)
    with pytest.raises(ModelError, match=r"softmax layer 'inner_sm'"):
        xaitf.create_explainer("inn.lrp.z", _tf_keras_model("softmax", "inner_sm"))
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="xaitf_tests")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 3 * x

    i = keras.Input((8, 8, 1))
    custom = keras.Model(i, keras.layers.Dense(2)(keras.layers.Flatten()(Scale(name="scale")(i))))
    with pytest.raises(ModelError, match=r"layer 'scale' \(type Scale\)"):
        xaitf.create_explainer("inn.lrp.alpha_2_beta_1", custom)
    assert P.STATS["builds"] == builds
    assert explain("inn.lrp.epsilon", tanh, np.ones((1, 8, 8, 1), np.float32), [1]).shape == (1, 8, 8)


def test_auto_named_layers_do_not_clash_with_innvestigate_layers():
    """iNNvestigate adds auto-named layers ("input_1", "add", "re_lu") to the twin's graph; a source
    with layers of those names must still work (the graph twin renames its layers)."""
    from xaitf.keras_bridge import tfk

    i = tfk.Input((8, 8, 1), name="input_1")
    h = tfk.layers.Add(name="add")([tfk.layers.Conv2D(1, 3, padding="same", name="re_lu")(i), i])
    m = tfk.Model(i, tfk.layers.Dense(3, activation="softmax")(tfk.layers.Flatten()(h)))
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    ig = explain("inn.integrated_gradients", m, x, [0, 1], steps=4)
    dt = explain("inn.deep_taylor", m, x, [0, 1])
    assert ig.shape == dt.shape == (2, 8, 8) and np.all(np.isfinite(ig)) and np.all(np.isfinite(dt))


def test_innvestigate_refusal_of_relu6_layers_is_one_line_and_native_runs():
    """iNNvestigate 2.1.2 raises a bare NotImplementedError on ReLU layers (LeNet's plain ones reach
    it as Activation('relu'), which it implements; a capped ReLU(6) does not): one ModelError line
    instead, and the native engine explains the same model."""
    L = tfk.layers
    inp = tfk.Input((8, 8, 1))
    model = tfk.Model(inp, L.Dense(3)(L.Flatten()(L.ReLU(max_value=6.0)(L.Conv2D(2, 3)(inp)))))
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    with pytest.raises(ModelError, match=r"iNNvestigate cannot run lrp\.z on model .*native lrp") as err:
        xaitf.create_explainer("inn.lrp.z", model, progress=False)(x, [0, 1])
    assert "\n" not in str(err.value)
    maps = xaitf.create_explainer("lrp.z", model, progress=False)(x, [0, 1])
    assert maps.shape == (2, 8, 8) and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_innvestigate_refusal_names_the_layer_its_check_warned_about():
    """iNNvestigate's LRP refuses some layers (here a Rescaling inside the network) by warning
    "Check triggered by layers: [...]" and then raising a bare NotImplementedError: the one line
    names the layer's class (not its object repr)."""
    L = tfk.layers
    inp = tfk.Input((8, 8, 1))
    h = L.Rescaling(2.0, name="scale")(L.Conv2D(2, 3, activation="relu")(inp))
    model = tfk.Model(inp, L.Dense(3)(L.Flatten()(h)))
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    with pytest.raises(ModelError) as err:
        xaitf.create_explainer("inn.lrp.epsilon", model, progress=False)(x, [0, 1])
    msg = str(err.value)
    assert "Check triggered by layers: [Rescaling]" in msg and "object at" not in msg and "\n" not in msg


def test_nested_batchnorm_refused_for_wrapper_analyzers_and_relu_layers_run_deconvnet():
    """A BatchNormalization inside a nested model is found too (iNNvestigate's integrated_gradients
    and smoothgrad fail on it with a resource-dtype TypeError deep in TF): one line. Plain ReLU
    layers, which iNNvestigate's Deconvnet cannot copy (a TypeError), run as Activation('relu')."""
    L = tfk.layers
    b_in = tfk.Input((8, 8, 1))
    base = tfk.Model(b_in, L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(2, 3)(b_in))), name="base")
    inp = tfk.Input((8, 8, 1))
    model = tfk.Model(inp, L.Dense(3)(L.Flatten()(base(inp))))
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    for name, native in (("inn.integrated_gradients", "ig"), ("inn.smoothgrad", "sg")):
        with pytest.raises(ModelError, match=rf"^iNNvestigate's {name[4:]} cannot run models with "
                                             rf"BatchNormalization \(layer 'bn'\); use the native {native} method"):
            xaitf.create_explainer(name, model, progress=False)(x, [0, 1])
    maps = xaitf.create_explainer("inn.deconvnet", model, progress=False)(x, [0, 1])
    assert maps.shape == (2, 8, 8) and np.isfinite(maps).all() and np.abs(maps).max() > 0
