"""Explainers follow the model's weights: after ``set_weights`` (training, a randomisation test) an
existing explainer, and a new one, give the maps of a fresh model holding those weights. Caches
that copy weights (native LRP's graph, the tf-keras twin of a Keras 3 model) notice the change."""
import numpy as np
import pytest

import xaitf
from conftest import make_cnn

METHODS = ["grad", "inpgrad", "sg", "vargrad", "squaregrad", "gb", "deeplift", "ig", "gradcam", "gradcampp",
           "occlusion", "rise", "lrp.epsilon", "lrp.alpha_2_beta_1", "lrp.epsilon_gamma_box", "deep_taylor",
           "inn.lrp.epsilon", "tfx.occlusion"]
KW = {"ig": {"steps": 4}, "rise": {"masks": 32}, "occlusion": {"window": 4, "stride": 4}, "sg": {"samples": 3},
      "vargrad": {"samples": 3}, "squaregrad": {"samples": 3}}


def other_weights(model, seed=1):
    rs = np.random.RandomState(seed)
    return [(rs.randn(*w.shape) * 0.3).astype(np.float32) for w in model.get_weights()]


@pytest.mark.parametrize("name", METHODS)
def test_same_explainer_follows_new_weights(name):
    model = make_cnn(shape=(12, 12, 1), classes=4, seed=0)
    fresh = make_cnn(shape=(12, 12, 1), classes=4, seed=0)
    x = np.random.RandomState(0).rand(2, 12, 12, 1).astype(np.float32)
    ex = xaitf.create_explainer(name, model, progress=False, **KW.get(name, {}))
    before = ex(x, [0, 1])
    new = other_weights(model)
    model.set_weights(new)
    fresh.set_weights(new)
    expected = xaitf.create_explainer(name, fresh, progress=False, **KW.get(name, {}))(x, [0, 1])
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(ex(x, [0, 1]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xaitf.create_explainer(name, model, progress=False, **KW.get(name, {}))(x, [0, 1]),
                               expected, rtol=1e-5, atol=1e-6)


def test_keras3_twin_follows_new_weights():
    """The iNNvestigate path explains a Keras 3 model through a tf-keras twin (a copy)."""
    pytest.importorskip("innvestigate")
    import keras

    def build():
        keras.utils.set_random_seed(0)
        inp = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(3, 3, activation="relu")(inp)
        h = keras.layers.Flatten()(h)
        return keras.Model(inp, keras.layers.Dense(3)(h))

    model = build()
    x = np.random.RandomState(0).rand(2, 8, 8, 1).astype(np.float32)
    before = xaitf.create_explainer("inn.lrp.epsilon", model)(x, [0, 1])
    new = other_weights(model)
    model.set_weights(new)
    fresh = build()
    fresh.set_weights(new)
    expected = xaitf.create_explainer("inn.lrp.epsilon", fresh)(x, [0, 1])
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(xaitf.create_explainer("inn.lrp.epsilon", model)(x, [0, 1]), expected,
                               rtol=1e-5, atol=1e-6)


def test_only_methods_that_keep_copies_check_the_weights(monkeypatch):
    """The gradient family and Grad-CAM read the model's variables live and skip the weights
    fingerprint on every call (100 ms of a 237 ms gradient call on a ResNet50); methods whose setup
    keeps a copy (guided backprop's clone, native LRP's graph) check it on every call. Both follow
    new weights (test above), also through a Keras 3 softmax head's linear copy."""
    import keras

    from xaitf import explainer

    calls = []
    real = explainer.weights_fingerprint
    monkeypatch.setattr(explainer, "weights_fingerprint", lambda m: calls.append(1) or real(m))
    model = make_cnn(shape=(12, 12, 1), classes=4, seed=0)
    x = np.random.RandomState(0).rand(2, 12, 12, 1).astype(np.float32)
    for name in ("grad", "inpgrad", "ig", "sg", "vargrad", "squaregrad", "gradcam", "gradcampp"):
        xaitf.create_explainer(name, model, progress=False, **KW.get(name, {}))(x, [0, 1])
    assert calls == []
    for name in ("gb", "lrp.epsilon"):
        ex = xaitf.create_explainer(name, model, progress=False)
        ex(x, [0, 1])
        ex(x, [0, 1])
    assert len(calls) == 2 * 3                        # constructor, then each call

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(3, 3, activation="relu")(inp))
    k3 = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))
    grad = xaitf.create_explainer("grad", k3, progress=False)
    before = grad(x, [0, 1])
    k3.set_weights(other_weights(k3))
    fresh = xaitf.create_explainer("grad", keras.models.clone_model(k3), progress=False)
    fresh.model.set_weights(k3.get_weights())
    assert not np.allclose(before, fresh(x, [0, 1]))
    np.testing.assert_allclose(grad(x, [0, 1]), fresh(x, [0, 1]), rtol=1e-5, atol=1e-6)
