"""Models are freed when the user drops them: xaitf's caches live on the model ([SAFE] defect 3).

Found as: 200 clones of a model explained with ``grad`` in one process, RSS 620 -> 997 MiB and 201 of
201 models alive (module-level caches keyed by ``id(model)`` held every model and its tf.functions).
"""
import gc
import weakref

import numpy as np
import pytest

import xaitf
import keras

from conftest import make_cnn
from xaitf import twin as T
from xaitf.keras_bridge import logits_model, model_cache

X = np.random.RandomState(0).rand(2, 8, 8, 1).astype("float32")


def _keras3_cnn():
    i = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(i)
    return keras.Model(i, keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(h)))


def _explained_then_dropped(method, build, **kw):
    """A weak reference to a model that was explained with ``method`` and then dropped."""
    model = build()
    explainer = xaitf.create_explainer(method, model, progress=False, **kw)
    maps = explainer(X)
    assert maps.shape == (2, 8, 8) and np.all(np.isfinite(maps))
    ref = weakref.ref(model)
    del model, explainer
    gc.collect()
    return ref


# one method of each cache: tf.function (grad, ig), modified-gradient clone (gb), DeepLIFT's
# references, perturbation engine (occlusion), native surrogate (lime), RISE, twins (inn.lrp.epsilon),
# the native LRP graph and propagator (lrp.epsilon, deep_taylor)
@pytest.mark.parametrize("method,kw", [("grad", {}), ("ig", {"steps": 4}), ("gb", {}),
                                       ("deeplift", {}), ("occlusion", {"window": 4, "stride": 4}),
                                       ("lime", {"num_samples": 16}), ("rise", {"masks": 8}),
                                       ("inn.lrp.epsilon", {}), ("lrp.epsilon", {}), ("deep_taylor", {})])
@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
def test_a_dropped_model_is_freed(method, kw, kind):
    build = make_cnn if kind == "tf-keras" else _keras3_cnn
    assert _explained_then_dropped(method, build, **kw)() is None


def test_the_cache_lives_on_the_model_and_is_reused():
    model = make_cnn()
    n_weights = len(model.weights)
    sub, note = logits_model(model)
    assert logits_model(model)[0] is sub and "softmax" in note
    assert model_cache(model)["logits"] == (sub, note)
    # the cache is not a tracked Keras attribute: nothing new among the weights or sub-layers
    assert len(model.weights) == n_weights and "_xaitf_cache" not in {l.name for l in model.layers}
    other = make_cnn()
    assert logits_model(other)[0] is not sub


def test_metric_scorers_do_not_hold_models():
    from xaitf.metrics import deletion_curve

    model = make_cnn()
    curve = deletion_curve(model, X, np.random.RandomState(1).rand(2, 8, 8), None, steps=4, batch_size=8)
    assert curve.scores.shape == (2, 5)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_clear_twins_forgets_every_model_without_holding_any():
    a, b = _keras3_cnn(), _keras3_cnn()
    ta = T.tf_keras_twin(a)
    T.tf_keras_twin(b)
    assert T.tf_keras_twin(a) is ta
    T.clear_twins()
    assert T._cached_twin(a, T._EAGER_KEY) is None and T._cached_twin(b, T._EAGER_KEY) is None
    assert T.tf_keras_twin(a) is not ta
    ref = weakref.ref(b)
    del b
    gc.collect()
    assert ref() is None and len(T._TWINNED) == 1


@pytest.mark.slow
def test_two_hundred_fresh_models_leave_none_alive():
    """The defect's own form: 200 fresh models explained with grad in one process."""
    refs = []
    for i in range(200):
        model = make_cnn(seed=i % 7)
        xaitf.create_explainer("grad", model, progress=False)(X)
        refs.append(weakref.ref(model))
        del model
        if i % 50 == 49:
            gc.collect()
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of 200 models still alive"
