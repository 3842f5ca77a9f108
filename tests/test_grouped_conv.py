"""Keras 3 grouped convolutions run by TensorFlow's own ops (xaitf.grouped_conv): the runner is the
model's function, shares its variables and is what the methods call."""
import numpy as np
import pytest

import xaitf
import tensorflow as tf
from xaitf import grouped_conv
from xaitf.grouped_conv import is_grouped_conv, runner
from xaitf.keras_bridge import keras3, tfk


def _grouped_model(nested=False, act="gelu"):
    k = keras3()
    L = k.layers
    k.utils.set_random_seed(3)
    inp = k.Input((12, 12, 4))
    h = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    # one input channel per group (ConvNeXt's depthwise 7x7 form), strided with a bias and activation
    h = L.Conv2D(16, 5, strides=2, padding="same", groups=8, activation=act, name="depthwise")(h)
    # four input channels per group (RegNet/ResNeXt), dilated, no bias
    h = L.Conv2D(8, 3, dilation_rate=2, padding="valid", groups=4, use_bias=False, name="grouped")(h)
    body = k.Model(inp, h, name="body")
    if nested:
        inp = k.Input((12, 12, 4))
        h = body(inp)
    out = L.Dense(5, name="head")(L.GlobalAveragePooling2D()(h))
    model = k.Model(inp, out)
    for layer in (body.get_layer("depthwise"), body.get_layer("grouped")):
        ws = layer.get_weights()
        layer.set_weights([np.random.default_rng(len(w.shape)).normal(0, 0.5, w.shape).astype(np.float32)
                           for w in ws])
    return model


@pytest.mark.parametrize("nested", [False, True])
def test_runner_is_the_model_function_and_follows_weights(nested):
    model = _grouped_model(nested)
    fast = runner(model)
    assert fast is not model and runner(model) is fast                    # made once per model
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 12, 12, 4)).astype(np.float32))
    ref = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(fast(x, training=False)), ref, atol=1e-5 * np.abs(ref).max())

    def grad(f):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(f(x, training=False)[:, 2])
        return tape.gradient(y, x).numpy()

    g = grad(model)
    np.testing.assert_allclose(grad(fast), g, atol=1e-5 * np.abs(g).max())
    # the variables are shared: new weights are followed without any copy
    model.set_weights([w * 1.5 + 0.1 for w in model.get_weights()])
    ref = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(fast(x, training=False)), ref, atol=1e-5 * np.abs(ref).max())


def test_runner_leaves_other_models_alone():
    k = keras3()
    inp = k.Input((6, 6, 2))
    plain = k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(k.layers.Conv2D(3, 3)(inp))))
    assert runner(plain) is plain
    inp = tfk.Input((6, 6, 4))
    tk = tfk.Model(inp, tfk.layers.Dense(2)(tfk.layers.Flatten()(tfk.layers.Conv2D(4, 3, groups=2)(inp))))
    assert not is_grouped_conv(tk.layers[1]) and runner(tk) is tk        # tf-keras runs TF's op itself


def test_methods_call_the_runner():
    """grad, ig and occlusion on a grouped model run the runner and give the model's maps."""
    model = _grouped_model()
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 4)).astype(np.float32)
    ex = xaitf.create_explainer("grad", model, channel_reduce="none", progress=False)
    assert ex.runner is runner(model) and ex.forward is model
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.gather(model(xt, training=False), [1, 3], axis=1, batch_dims=1)
    want = tape.gradient(y, xt).numpy()
    np.testing.assert_allclose(ex(x, [1, 3]), want, atol=1e-5 * np.abs(want).max())
    occ = xaitf.create_explainer("occlusion", model, progress=False)
    assert occ.runner is runner(model)
    maps = occ(x, [1, 3])
    assert maps.shape == (2, 12, 12) and np.isfinite(maps).all() and np.abs(maps).max() > 0


@pytest.mark.parametrize("name", ["gb", "deeplift", "gradcam"])
def test_clones_and_gradcam_skip_xla(name, monkeypatch):
    """The Guided Backprop / DeepLIFT clones compute their grouped convolutions by TensorFlow's ops
    too (the modified ReLU of the layer's activation kept), and Grad-CAM cuts the runner at the
    layer's counterpart (here the grouped layer itself): the maps of Keras's own path."""
    from xaitf.methods._modified_grad import modified_clone

    x = np.random.default_rng(2).normal(size=(2, 12, 12, 4)).astype(np.float32)
    model = _grouped_model(act="relu")
    ex = xaitf.create_explainer(name, model, channel_reduce="none", progress=False)
    fast = ex(x, [0, 4])
    rule = {"gb": "guided", "deeplift": "rescale"}.get(name)
    if rule:
        assert sum(type(l).__name__ == "GroupedConvTF" for l in modified_clone(model, rule).layers) == 2
    else:
        assert ex.layer.name == "grouped" and type(grouped_conv.counterpart(ex.runner, ex.layer)).__name__ == \
            "GroupedConvTF"
    monkeypatch.setattr(grouped_conv, "is_grouped_conv", lambda layer: False)     # Keras's XLA path
    other = _grouped_model(act="relu")
    assert runner(other) is other
    if rule:
        assert not any(type(l).__name__ == "GroupedConvTF" for l in modified_clone(other, rule).layers)
    slow = xaitf.create_explainer(name, other, channel_reduce="none", progress=False)(x, [0, 4])
    assert np.abs(slow).max() > 0
    np.testing.assert_allclose(fast, slow, atol=1e-5 * np.abs(slow).max())


def test_metrics_score_with_the_runner():
    from xaitf.keras_bridge import logits_model
    from xaitf.metrics._common import output_transform

    model = _grouped_model()
    for output, fwd in (("logits", logits_model(model)[0]), ("probabilities", model)):
        assert output_transform(model, output)[0] is runner(fwd) is not fwd


def test_budget_times_the_runner(monkeypatch):
    """The time estimates measure what the methods run: the runner, not Keras's XLA path."""
    from xaitf import budget

    model = _grouped_model()
    asked, real = [], grouped_conv.runner
    monkeypatch.setattr(grouped_conv, "runner", lambda m: (asked.append(m), real(m))[1])
    out = budget.measure(model, backward=True, batch=2, batch_backward=2)
    assert out["forward"] > 0 and out["backward"] > 0 and asked == [model]


def test_the_runner_check_prints_no_retracing_warning(caplog):
    """Keras traces a new XLA function for each grouped convolution it runs; the runner's one check
    against the model (here 7 grouped layers, ConvNeXtTiny has 18) says nothing about it, and
    TensorFlow's logger keeps its level."""
    import logging

    k = keras3()
    inp = k.Input((8, 8, 4))
    h = inp
    for i in range(7):
        h = k.layers.Conv2D(4, 3, padding="same", groups=4, name=f"dw{i}")(h)
    model = k.Model(inp, k.layers.Dense(3)(k.layers.Flatten()(h)))
    level = tf.get_logger().level
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        assert runner(model) is not model
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    assert tf.get_logger().level == level
