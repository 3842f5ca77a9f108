"""Binary and multi-label (sigmoid) heads ([SAFE] defect 6).

Found as: a one-unit sigmoid model was reported as p = 1 (a softmax over one unit) and its sigmoid
output was explained while the figure header said "pre-softmax logits". Sigmoid heads are explained
on their logit; their probabilities are the sigmoid of it.
"""
import re
import warnings

import numpy as np
import pytest

import xaitf
import keras

from test_heatmap_script import run_script
from xaitf.keras_bridge import (logit_activation, logits_model, output_head, probabilities,
                                probability_head, tfk)

SHAPE = (6, 6, 1)
RS = np.random.RandomState(0)
W = RS.randn(int(np.prod(SHAPE)), 3).astype(np.float32)
B = np.array([0.3, -0.2, 0.1], np.float32)
X = RS.rand(4, *SHAPE).astype(np.float32)


def sigmoid_net(units=1, km=tfk, separate=False):
    """logit = W . flatten(x) + b, then a sigmoid (in the Dense layer or as its own layer)."""
    inp = km.Input(SHAPE)
    dense = km.layers.Dense(units, activation=None if separate else "sigmoid", name="logit")
    out = dense(km.layers.Flatten()(inp))
    if separate:
        out = km.layers.Activation("sigmoid", name="prob")(out)
    model = km.Model(inp, out)
    dense.set_weights([W[:, :units], B[:units]])
    return model


def logits_of(x, units):
    return x.reshape(len(x), -1) @ W[:, :units] + B[:units]


@pytest.mark.parametrize("km", [tfk, keras], ids=["tf-keras", "keras3"])
@pytest.mark.parametrize("separate", [False, True], ids=["activation", "layer"])
@pytest.mark.parametrize("units", [1, 3])
def test_sigmoid_heads_are_explained_on_their_logit(km, separate, units):
    model = sigmoid_net(units, km, separate)
    assert output_head(model) == "sigmoid" and logit_activation(model) == "sigmoid"
    sub, note = logits_model(model)
    assert "sigmoid" in note
    z = logits_of(X, units)
    np.testing.assert_allclose(np.asarray(sub(X)), z, rtol=1e-5, atol=1e-5)
    p = probabilities(model, X)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert probability_head(model)[0] is None       # the output already is the probability
    # gradient of the logit of unit u is W[:, u] (the sigmoid's own gradient would scale it)
    grad = xaitf.create_explainer("grad", model, progress=False)(X, np.zeros(4, int))
    np.testing.assert_allclose(grad, np.broadcast_to(W[:, 0].reshape(SHAPE[:2]), grad.shape), rtol=1e-5)


def test_probability_methods_use_the_sigmoid_not_a_softmax_over_one_unit():
    model = sigmoid_net(1)
    z = logits_of(X, 1)[:, 0]
    # RISE with every cell kept (p=1) scores the unmasked image: its map is sigmoid(z) everywhere
    rise = xaitf.create_explainer("rise", model, masks=4, p=1.0, cell=2, progress=False)
    maps = rise(X, np.zeros(4, int))
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), 1 / (1 + np.exp(-z)), rtol=1e-5)
    # occlusion on probabilities: the drop of sigmoid(z) when a pixel is set to 0
    occ = xaitf.create_explainer("occlusion", model, output="probabilities", progress=False)(X[:1], [0])
    x0 = X[:1].reshape(1, -1)
    drops = []
    for i in range(x0.shape[1]):
        xi = x0.copy()
        xi[0, i] = 0
        zi = xi @ W[:, :1] + B[:1]
        drops.append(1 / (1 + np.exp(-z[0])) - 1 / (1 + np.exp(-zi[0, 0])))
    np.testing.assert_allclose(occ[0].ravel(), drops, rtol=1e-4, atol=1e-6)


def test_one_unit_logit_model_gets_sigmoid_probabilities():
    """A model that ends on one logit (study 5's ResNet-18 form) is a binary classifier."""
    inp = tfk.Input(SHAPE)
    dense = tfk.layers.Dense(1, name="logit")
    model = tfk.Model(inp, dense(tfk.layers.Flatten()(inp)))
    dense.set_weights([W[:, :1], B[:1]])
    assert output_head(model) is None and logit_activation(model) == "sigmoid"
    post, note = probability_head(model)
    assert post == "sigmoid" and "one unit" in note
    np.testing.assert_allclose(probabilities(model, X)[:, 0], 1 / (1 + np.exp(-logits_of(X, 1)[:, 0])),
                               rtol=1e-5)


def test_heatmap_script_reports_the_sigmoid_probability_and_the_logit(tmp_path):
    model = sigmoid_net(1)
    path = tmp_path / "binary.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    from PIL import Image

    gray = (RS.rand(*SHAPE[:2]) * 255).astype(np.uint8)      # already the model's size: no resizing
    Image.fromarray(gray, mode="L").save(tmp_path / "img.png")
    r = run_script("-mp", path, "-ip", tmp_path / "img.png", "-hm", "grad", "-op", tmp_path / "out",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "explained output: pre-sigmoid logit" in r.stdout
    assert "pre-softmax" not in r.stdout
    p = float(re.search(r"predicted unit 0 \(p=([0-9.e+-]+), sigmoid output\)", r.stdout).group(1))
    z = logits_of(gray[None, ..., None].astype(np.float32) / 255, 1)[0, 0]
    assert p == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-4) and p < 0.999
