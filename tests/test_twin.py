"""The tf-keras twin (xaitf.twin) and the tf-explain wrappers that run on it."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xaitf
from xaitf import twin as T
from xaitf.errors import ModelError
from xaitf.keras_bridge import model_kind, tfk

from conftest import make_cnn, make_keras3_transfer_model, make_linear

keras = pytest.importorskip("keras")
L = keras.layers


def keras3_cnn():
    """Keras 3: zero padding, conv, batch norm (non-trivial statistics), pooling, a residual Add,
    global pools, concatenate, dropout, dense, reshape, a separate softmax layer."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1), name="image")
    h = L.ZeroPadding2D(1, name="pad")(inp)
    h = L.Conv2D(6, 3, activation="relu", name="c1")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.MaxPooling2D(2, name="mp")(h)
    a = L.ReLU(name="relu")(L.Conv2D(6, 3, padding="same", name="c2")(h))
    h = L.Add(name="add")([h, a])
    h = L.AveragePooling2D(2, name="ap")(h)
    h = L.Concatenate(name="cat")([L.Flatten(name="flat")(h), L.GlobalAveragePooling2D(name="gap")(h),
                                   L.GlobalMaxPooling2D(name="gmp")(h)])
    h = L.Dropout(0.5, name="drop")(h)
    h = L.Activation("relu", name="act")(L.Dense(16, name="fc1")(h))
    h = L.Flatten(name="flat2")(L.Reshape((4, 4), name="reshape")(h))
    out = L.Softmax(name="softmax")(L.Dense(5, name="fc2")(h))
    model = keras.Model(inp, out, name="k3_cnn")
    rs = np.random.RandomState(1)
    model.get_layer("bn1").set_weights([rs.uniform(0.5, 1.5, 6), rs.randn(6), rs.randn(6) * 0.3,
                                        rs.uniform(0.5, 2.0, 6)])
    return model


@pytest.fixture(scope="module")
def k3_cnn():
    return keras3_cnn()


@pytest.fixture(scope="module")
def x12():
    return np.random.default_rng(7).uniform(0, 1, (6, 12, 12, 1)).astype(np.float32)


def test_keras3_twin_agrees_and_is_cached(k3_cnn, x12):
    tw = T.tf_keras_twin(k3_cnn)
    assert model_kind(tw) == "tf-keras" and tw is not k3_cnn
    assert {l.name for l in tw.layers} == {l.name for l in k3_cnn.layers}
    ref = np.asarray(k3_cnn(x12, training=False))
    got = tw(x12, training=False).numpy()
    assert np.max(np.abs(ref - got)) <= 1e-5 * np.max(np.abs(ref))
    assert T.tf_keras_twin(k3_cnn) is tw  # cached: a second method costs nothing

    gt = T.graph_twin(k3_cnn)
    assert gt.note == "final softmax stripped" and T.graph_twin(k3_cnn) is gt
    np.testing.assert_allclose(gt.predict(x12, logits=False), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    logits = np.asarray(keras.Model(k3_cnn.inputs[0], k3_cnn.get_layer("fc2").output)(x12))
    np.testing.assert_allclose(gt.predict(x12, logits=True), logits, rtol=0, atol=1e-5 * np.abs(logits).max())


def test_float32_tf_keras_model_is_its_own_twin():
    m = make_cnn()
    assert T.tf_keras_twin(m) is m


def test_nested_keras3_sequential_and_dense_softmax():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, activation="relu"), L.Flatten()],
                             name="inner")
    i = keras.Input((8, 8, 2))
    model = keras.Model(i, L.Dense(4, activation="softmax", name="head")(inner(i)))
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    gt = T.graph_twin(model)
    assert gt.note == "final softmax stripped"
    ref = np.asarray(model(x))
    np.testing.assert_allclose(gt.predict(x, logits=False), ref, atol=1e-6)
    z = gt.predict(x, logits=True)  # the split-off pre-softmax output
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(1, keepdims=True), ref, atol=1e-6)


def test_center_pixel_twin_is_float32(center_pixel_small):
    tw = T.tf_keras_twin(center_pixel_small)
    assert {l.dtype for l in tw.layers} == {"float32"}
    x = T.probe_batch(center_pixel_small, n=2, seed=3)
    ref = np.asarray(center_pixel_small.get_layer("logits")(tfk.layers.Flatten()(x)))
    got = tw.get_layer("logits")(tfk.layers.Flatten()(x)).numpy()
    assert np.max(np.abs(ref - got)) <= 1e-5 * np.max(np.abs(ref))


def test_custom_layer_gives_one_clear_error():
    @keras.saving.register_keras_serializable(package="xaitf_tests")
    class Doubler(L.Layer):
        def call(self, x):
            return 2 * x

    i = keras.Input((6, 6, 1))
    model = keras.Model(i, L.Dense(3)(L.Flatten()(Doubler(name="doubler")(i))))
    for build in (T.tf_keras_twin, T.graph_twin, T.check_layers):
        with pytest.raises(ModelError, match=r"layer 'doubler' \(type Doubler\).*native methods still work: grad"):
            build(model)
    assert T._cached_twin(model, T._EAGER_KEY) is None and T._cached_twin(model, T._GRAPH_KEY) is None


def test_config_that_does_not_carry_over_is_caught(monkeypatch):
    """Keras 3's hard_sigmoid is relu6(x + 3)/6, tf-keras's clip(0.2 x + 0.5): same name, another
    function. The twin uses Keras 3's function; were it to take the name as tf-keras reads it, the
    check of the twin against its source catches it."""
    i = keras.Input((4, 4, 1))
    h = L.Activation("hard_sigmoid")(L.Dense(3)(L.Flatten()(i)))
    model = keras.Model(i, L.Dense(2)(h))
    model.layers[2].set_weights([np.full((16, 3), 0.4, np.float32), np.zeros(3, np.float32)])
    x = np.random.default_rng(0).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(T.tf_keras_twin(model)(x).numpy(), np.asarray(model(x)), atol=1e-5)
    T.clear_twins(model)
    monkeypatch.setattr(T, "_REDEFINED_ACTIVATIONS", ())
    with pytest.raises(ModelError, match="does not reproduce"):
        T.tf_keras_twin(model)


def test_eager_models_survive_graph_twins(x12):
    """tf-keras rewrites layer classes' bases for graph mode; the scope must switch them back."""
    m = make_cnn(shape=(12, 12, 1), classes=4)
    before = m(x12).numpy()
    gt = T.graph_twin(m)
    np.testing.assert_allclose(m(x12).numpy(), before, atol=1e-6)       # source still callable
    fresh = make_cnn(shape=(12, 12, 1), classes=4)                        # new eager layers
    np.testing.assert_allclose(fresh(x12).numpy(), before, atol=1e-6)
    np.testing.assert_allclose(gt.predict(x12, logits=False), before, atol=1e-6)  # graph still runs


# -- tf-explain wrappers --------------------------------------------------------------------------
def _linear_zero_bias(shape=(6, 6, 1), classes=3):
    m = make_linear(shape, classes)
    w, _ = m.layers[-1].get_weights()
    m.layers[-1].set_weights([w, np.zeros(classes, np.float32)])
    return m, w


def test_tfx_ig_is_path_averaged_gradient_without_input_factor():
    m, w = _linear_zero_bias()
    x = np.random.default_rng(1).uniform(0, 1, (4, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 2, 1, 2])
    maps = xaitf.create_explainer("tfx.ig", m, steps=8, progress=False)(x, t)
    # linear model: the gradient is W[:, c] everywhere on the path, and tf-explain omits (x - 0)
    np.testing.assert_allclose(maps, np.abs(w[:, t].T).reshape(4, 6, 6), rtol=1e-5)


def test_tfx_occlusion_analytic_on_linear_logits():
    m, w = _linear_zero_bias()
    x = np.random.default_rng(2).uniform(0, 1, (3, 6, 6, 1)).astype(np.float32)
    t = np.array([1, 0, 1])
    maps = xaitf.create_explainer("tfx.occlusion", m, patch_size=1, output="logits", progress=False)(x, t)
    wt = w[:, t].T.reshape(3, 6, 6)
    z = (x[..., 0] * wt).sum((1, 2))
    want = 1 - (z[:, None, None] - x[..., 0] * wt + 127.5 * wt)  # pixel set to tf-explain's 127.5
    np.testing.assert_allclose(maps, want, rtol=1e-4, atol=1e-3)


def test_tfx_methods_on_keras3_match_tf_keras():
    src = make_cnn(shape=(12, 12, 1), classes=4, seed=2)
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 1), name="image")
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(i)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(L.MaxPooling2D(2, name="pool1")(h))
    h = L.Dense(16, activation="relu", name="fc1")(L.Flatten(name="flatten")(h))
    k3 = keras.Model(i, L.Dense(4, activation="softmax", name="fc2")(h))
    k3.set_weights(src.get_weights())
    x = np.random.default_rng(3).uniform(0, 1, (5, 12, 12, 1)).astype(np.float32)
    t = np.array([0, 1, 2, 3, 1])
    for name, kw in [("tfx.gradcam", {}), ("tfx.smoothgrad", {"samples": 4}), ("tfx.ig", {"steps": 8}),
                     ("tfx.occlusion", {"patch_size": 3})]:
        a = xaitf.create_explainer(name, src, progress=False, **kw)(x, t)
        b = xaitf.create_explainer(name, k3, progress=False, **kw)(x, t)
        assert a.shape == (5, 12, 12) and np.all(np.isfinite(a)) and np.abs(a).max() > 0, name
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max(), err_msg=name)


def test_tfx_gradcam_layer_and_square_checks():
    m = make_cnn(shape=(12, 12, 1), classes=4)
    with pytest.raises(ModelError, match="no layer 'nope'"):
        xaitf.create_explainer("tfx.gradcam", m, layer="nope")
    assert xaitf.create_explainer("tfx.gradcam", m).layer_name == "conv2"
    # a model property (the CLIs leave the method out and run the others), not a bad input
    with pytest.raises(ModelError, match="needs a model with square inputs .* this one takes 8x10"):
        xaitf.create_explainer("tfx.occlusion", make_cnn(shape=(8, 10, 1)))


def keras3_mobile_blocks():
    """Keras 3 layers of keras.applications' mobile and efficient nets: Rescaling, Normalization, ReLU(6),
    depthwise and separable convolutions, a squeeze-and-excitation Multiply, the other merge
    layers, cropping and upsampling."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 3), name="image")
    h = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    h = L.Rescaling([1.0, 0.5, 2.0], name="rescale_ch")(h)
    h = L.Normalization(axis=-1, name="norm")(h)          # statistics set below, as if adapted
    h = L.ReLU(6.0, name="relu6")(L.Conv2D(4, 3, padding="same", name="c1")(h))
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="dw")(h)
    s = L.SeparableConv2D(8, 3, padding="same", name="sep")(h)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(d)
    se = L.Conv2D(8, 1, activation="sigmoid", name="se_fc")(se)
    h = L.Multiply(name="se_mul")([d, se])
    h = L.Add(name="add")([L.Subtract(name="sub")([h, s]), L.Average(name="avg")([h, s])])
    h = L.Maximum(name="max")([h, L.Minimum(name="min")([d, s])])
    h = L.UpSampling2D(2, name="up")(L.Cropping2D(((1, 1), (2, 0)), name="crop")(h))
    out = L.Dense(5, activation="softmax", name="fc")(L.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(inp, out, name="k3_mobile")
    model.get_layer("norm").set_weights([np.array([0.1, -0.2, 0.3], np.float32),
                                         np.array([0.5, 2.0, 1.5], np.float32), np.array(10.0, np.float32)])
    return model


def _twins_and_inn_gradient_agree(model, x, t, inn=True):
    """The eager and graph twins recompute the model (1e-5), and iNNvestigate's gradient on the
    twin equals the native gradient (1e-4; ``inn=False``: not run); returns the native gradient."""
    ref = np.asarray(model(x, training=False))
    got = T.tf_keras_twin(model)(x, training=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(T.graph_twin(model).predict(x, logits=False), ref, rtol=0,
                               atol=1e-5 * np.abs(ref).max())
    native = xaitf.create_explainer("grad", model, progress=False)(x, t)
    assert np.abs(native).max() > 0
    if inn:
        got = xaitf.create_explainer("inn.gradient", model, progress=False)(x, t)
        np.testing.assert_allclose(got, native, rtol=0, atol=1e-4 * np.abs(native).max())
    return native


def _twin_backends_run(model, x, t):
    """tf-explain's Grad-CAM and shap's GradientExplainer run on the twin: finite, non-zero maps."""
    for name in ("tfx.gradcam", "shap.gradient"):
        maps = xaitf.create_explainer(name, model, progress=False)(x, t)
        assert maps.shape == x.shape[:3] and np.all(np.isfinite(maps)) and np.abs(maps).max() > 0, name


def test_keras3_mobile_layers_twin_and_twin_backends_agree_with_native_gradient():
    model = keras3_mobile_blocks()
    x = np.random.default_rng(8).uniform(0, 255, (3, 12, 12, 3)).astype(np.float32)
    kinds = {kind for _, kind in T.check_layers(model)}
    assert {"DepthwiseConv2D", "SeparableConv2D", "Rescaling", "Normalization", "Multiply", "Subtract", "Average",
            "Maximum", "Minimum", "Cropping2D", "UpSampling2D"} <= kinds
    t = np.array([0, 3, 4])
    _twins_and_inn_gradient_agree(model, x, t)
    _twin_backends_run(model, x, t)


def keras3_v3_blocks():
    """MobileNetV3's pieces: hard_silu, Keras 3's hard_sigmoid (relu6(x + 3) / 6, not tf-keras's
    clip(0.2 x + 0.5)) and the hard sigmoid of its gates written as arithmetic, relu6(x + 3.0) *
    (1.0 / 6.0); plus x + y, c - x and x / c on layer outputs."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((10, 10, 3), name="image")
    h = L.Activation("hard_silu", name="hswish")(L.Conv2D(6, 3, padding="same", name="c1")(inp))
    se = L.Conv2D(6, 1, name="se_fc")(L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(h))
    h = L.Multiply(name="se_mul")([h, L.ReLU(6.0, name="se_relu6")(se + 3.0) * (1.0 / 6.0)])
    g = L.Activation("hard_sigmoid", name="hsig")(L.Conv2D(6, 1, name="c2")(h))
    h = 2.0 - (h + g) / 4.0
    out = L.Dense(4, name="fc")(L.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(inp, out, name="k3_v3")


def test_keras3_v3_activations_and_operations_twin():
    model = keras3_v3_blocks()
    x = np.random.default_rng(3).uniform(-4, 4, (3, 10, 10, 3)).astype(np.float32)
    kinds = [kind for _, kind in T.check_layers(model)]
    assert kinds.count("Rescaling") == 4 and "Add" in kinds        # x + 3.0, * (1 / 6), / 4.0, 2.0 - x; x + y
    t = np.array([0, 1, 3])
    _twins_and_inn_gradient_agree(model, x, t)
    maps = xaitf.create_explainer("shap.gradient", model, progress=False)(x, t)
    assert np.all(np.isfinite(maps)) and np.abs(maps).max() > 0
    i = keras.Input((4, 4, 1))
    sqrt = keras.Model(i, L.Dense(2)(L.Flatten()(keras.ops.sqrt(L.ReLU()(i)))))
    # Keras numbers auto-generated names per process: sqrt_1 where another test made a sqrt first
    with pytest.raises(ModelError, match=r"^cannot rebuild layer 'sqrt(_\d+)?' \(type Sqrt\) \(an operation written in "
                                         r"the model's code; the twin reads x \+ c, "):
        T.check_layers(sqrt)


def test_keras3_convnext_layers_twin():
    """ConvNeXt's pieces (keras.applications' own LayerScale and StochasticDepth classes; the second
    is in models built with a drop_path_rate): LayerNormalization, a grouped 7x7 convolution, GELU,
    LayerScale as a Rescaling, StochasticDepth as the identity and the grouped convolution as a
    DepthwiseConv2D (whose gradient builds in iNNvestigate's graph); the twins recompute the model."""
    from keras.src.applications import convnext

    cls = {"LayerScale": convnext.LayerScale, "StochasticDepth": convnext.StochasticDepth}
    keras.utils.set_random_seed(4)
    inp = keras.Input((9, 9, 4), name="image")
    stem = L.Conv2D(4, 2, name="stem")(inp)
    h = L.LayerNormalization(epsilon=1e-6, name="ln")(L.Conv2D(4, 7, padding="same", groups=4, name="dw")(stem))
    h = L.Dense(4, name="pw2")(L.Activation("gelu", name="gelu")(L.Dense(8, name="pw1")(h)))
    h = cls["StochasticDepth"](0.1, name="drop_path")(cls["LayerScale"](0.5, 4, name="scale")(h))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(stem + h)))
    model.get_layer("ln").set_weights([np.array([1.0, 0.5, 2.0, -1.0], np.float32), np.full(4, 0.1, np.float32)])
    rebuilt = {layer.name: kind for layer, kind in T.check_layers(model)}
    assert {k: rebuilt[k] for k in ("ln", "scale", "drop_path", "dw", "stem")} == {
        "ln": "LayerNormalization", "scale": "Rescaling", "drop_path": "Activation", "dw": "DepthwiseConv2D",
        "stem": "Conv2D"}
    x = np.random.default_rng(5).uniform(-1, 1, (3, 9, 9, 4)).astype(np.float32)
    t = np.array([0, 1, 2])
    native = _twins_and_inn_gradient_agree(model, x, t, inn=False)
    shap = xaitf.create_explainer("shap.gradient", model, channel_reduce="none", progress=False, seed=0)(x, t)
    assert shap.shape == native.shape[:3] + (4,) and np.isfinite(shap).all() and np.abs(shap).max() > 0
    # iNNvestigate's graph cannot take tf-keras's LayerNormalization: one line; without it, it runs
    with pytest.raises(ModelError, match="^iNNvestigate's gradient cannot analyse"):
        xaitf.create_explainer("inn.gradient", model, progress=False)(x, t)
    inp = keras.Input((9, 9, 4))
    stem = L.Conv2D(4, 2)(inp)
    h = cls["StochasticDepth"](0.1)(cls["LayerScale"](0.5, 4)(L.Conv2D(4, 7, padding="same", groups=4)(stem)))
    _twins_and_inn_gradient_agree(keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(stem + h))), x, t)


def test_keras3_inception_resnet_scaled_residual_twin():
    """Keras 3 InceptionResNetV2's ``CustomScaleLayer`` (x + r * scale) rebuilds as a Rescaling
    of r and an Add, both named for it; the twins recompute the model and the twin backends
    (iNNvestigate's gradient, tf-explain's Grad-CAM, shap.gradient) run on it."""
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    keras.utils.set_random_seed(9)
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    up = L.Conv2D(4, 1, name="up")(L.Conv2D(3, 3, padding="same", activation="relu", name="b1")(x))
    h = L.Activation("relu", name="block_ac")(CustomScaleLayer(0.2, name="block")([x, up]))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)))
    twin = T.tf_keras_twin(model)
    assert {type(layer).__name__ for layer in twin.layers if layer.name.startswith("block")} == {
        "Rescaling", "Add", "Activation"}
    x = np.random.default_rng(4).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    t = np.array([0, 1, 2])
    _twins_and_inn_gradient_agree(model, x, t)
    _twin_backends_run(model, x, t)


def test_keras3_augmentation_layers_twin_as_identity():
    """Keras's random augmentation layers (RandomFlip, RandomRotation, ... in a nested Sequential, as
    transfer-learning models have them) are the identity at inference: the twin rebuilds them as
    linear activations and its backends run on the model; a user's class of the same name is not
    taken for one."""
    model = make_keras3_transfer_model()
    rebuilt = {layer.name: kind for layer, kind in T.check_layers(model)}
    assert {rebuilt[k] for k in ("flip", "rotate", "zoom", "contrast")} == {"Activation"}
    x = np.random.default_rng(6).uniform(0, 255, (3, 12, 12, 3)).astype(np.float32)
    t = np.zeros(3, int)
    _twins_and_inn_gradient_agree(model, x, t)
    _twin_backends_run(model, x, t)

    class RandomFlip(L.Layer):                # same name, not Keras's: flips at inference too
        def call(self, x):
            return keras.ops.flip(x, axis=2)

    inp = keras.Input((6, 6, 1))
    own = keras.Model(inp, L.Dense(2)(L.Flatten()(RandomFlip(name="myflip")(inp))))
    with pytest.raises(ModelError, match=r"^cannot rebuild layer 'myflip' \(type RandomFlip\) as a tf-keras"):
        T.check_layers(own)


def test_tf_keras_nested_model_with_tf_ops_is_rebuilt_flat():
    """A tf-keras model as TF's transfer-learning tutorial builds it: an augmentation Sequential,
    preprocess_input (TFOpLambda layers: x / 255, + (-mean), / std per channel) and a nested base
    model. Its twin is rebuilt flat (tf-explain cut its Grad-CAM model at a layer inside the
    nested model: "Graph disconnected"), the TF ops as Rescaling layers; the twin backends run."""
    Lt = tfk.layers
    tfk.utils.set_random_seed(3)
    b_in = tfk.Input((10, 10, 3))
    base = tfk.Model(b_in, Lt.Conv2D(4, 3, activation="relu", name="b_conv")(Lt.Conv2D(4, 3, name="b_c0")(b_in)),
                     name="base")
    inp = tfk.Input((10, 10, 3))
    h = tfk.applications.densenet.preprocess_input(tfk.Sequential([Lt.RandomFlip()], name="augment")(inp))
    model = tfk.Model(inp, Lt.Dense(3)(Lt.GlobalAveragePooling2D()(base(h, training=False))))
    kinds = [kind for _, kind in T.check_layers(model)]
    assert kinds.count("Rescaling") == 3 and "TFOpLambda" not in kinds
    assert T.tf_keras_twin(model) is not model
    x = np.random.default_rng(2).uniform(0, 255, (3, 10, 10, 3)).astype(np.float32)
    t = np.array([0, 1, 2])
    _twins_and_inn_gradient_agree(model, x, t)
    _twin_backends_run(model, x, t)


def test_shap_deep_on_depthwise_and_upsampling_and_one_line_where_shap_cannot():
    """shap's DeepExplainer learns depthwise convolutions, ReLU6 and resizing for the call (its
    own additivity holds: sum phi = f(x) - f(0)); on a squeeze-and-excitation gate it fails, and
    says so in one line that names the alternatives."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 8, 2))
    h = L.ReLU(6.0)(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inp))
    h = L.UpSampling2D(2)(L.Conv2D(3, 1, activation="relu")(h))
    model = keras.Model(inp, L.Dense(4)(L.Flatten()(h)))
    x = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 2)).astype(np.float32)
    phi = xaitf.create_explainer("shap.deep", model, channel_reduce="none", progress=False)(x, [1, 3])
    logits = np.asarray(model(x)) - np.asarray(model(np.zeros_like(x)))
    np.testing.assert_allclose(phi.reshape(2, -1).sum(1), logits[[0, 1], [1, 3]], rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match=r"^ShapDeepExplainer: shap's DeepExplainer failed .* use deepliftshap"):
        xaitf.create_explainer("shap.deep", keras3_mobile_blocks(), progress=False)(
            np.ones((1, 12, 12, 3), np.float32), [0])
    # the failure leaves TF's gradients working (shap swaps TF's gradient recorder during a call)
    g = xaitf.create_explainer("grad", model, channel_reduce="none", progress=False)(x, [1, 3])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


_KERAS_FIRST = """
import warnings

import keras
import numpy as np

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import xaitf
print("warned", any("Import xaitf first" in str(w.message) for w in caught))
from xaitf.errors import ModelError

L = keras.layers
inp = keras.Input((8, 8, 3))
m = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(3, 3, name="conv")(inp))))
x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
for name in ("inn.gradient", "tfx.gradcam", "shap.gradient", "inn.gradient", "grad"):
    try:
        r = xaitf.create_explainer(name, m, progress=False)(x)
        print(name, "ran", bool(np.isfinite(r).all() and np.abs(r).max() > 0))
    except ModelError as e:
        print(name, "ModelError", str(e))
"""


def test_keras_imported_before_xaitf_gives_one_line_for_twin_backends():
    """``import keras`` before xaitf (without TF_USE_LEGACY_KERAS=1): importing iNNvestigate or
    tf-explain then leaves ``tf.keras`` as Keras 3, where they and shap fail deep in their own
    code (iNNvestigate's import itself fails on Keras 3's tf.keras, hence iNNvestigate first). Each
    twin backend either runs or says so in one line; the native methods run."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", _KERAS_FIRST], capture_output=True, text=True, timeout=300,
                          env=env, cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.split(" ")[0] in ("warned", "grad") or "." in l.split(" ")[0]]
    assert lines[0] == "warned True" and lines[-1] == "grad ran True", proc.stdout
    refused = [l for l in lines[1:-1] if " ModelError " in l]
    assert len(lines) == 6 and refused and all(l.endswith(" ran True") for l in lines[1:-1] if l not in refused)
    for line in refused:
        assert line.split(" ModelError ")[1].startswith(
            "tf.keras is Keras 3 in this process (TensorFlow or keras was imported before xaitf"), line
        assert "import xaitf first" in line and "the native methods still work: grad" in line
