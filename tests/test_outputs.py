"""[API] item 2: one output contract, ``output="logits" | "probabilities" | callable(outputs, targets)``.

Two independent routes to the same explained score must give the same maps: the named output
and a user's function that computes it from the model's own outputs. Plus analytic gradients of
a probability on a linear model, the defaults, and one-line refusals.
"""
import numpy as np
import pytest

import xaitf  # noqa: F401
import tensorflow as tf

from conftest import make_cnn, make_linear
from xaitf import create_explainer, get_method
from xaitf.errors import MethodError

SOFTMAX = make_cnn(shape=(8, 8, 1), classes=4, seed=5, softmax=True)
LOGITS = make_cnn(shape=(8, 8, 1), classes=4, seed=5, softmax=False)
X = np.random.RandomState(1).rand(3, 8, 8, 1).astype(np.float32)
T = np.array([0, 2, 3])

# every native method that takes any output, with small settings
NATIVE = {
    "grad": {}, "gb": {}, "deconvnet": {}, "inpgrad": {}, "ig": dict(steps=8),
    "sg": dict(samples=4), "gradcam": {}, "gradcampp": {},
    "occlusion": dict(window=2, stride=2), "shapley": dict(samples=2),
    "rise": dict(masks=40, cell=2), "mp": dict(max_iterations=4, blur_size=3, mask_scale=2),
    "lime": dict(num_samples=40, segmenter="grid", cell=4, mask_output=False),
    "kernelshap": dict(nsamples=40, segmenter="grid", cell=4),
}


def gather(outputs, targets):
    """The user's route to the target's own output: a column of what the model returns."""
    return tf.gather(outputs, targets, batch_dims=1)


def maps(name, model, output, **extra):
    kw = dict(NATIVE[name], progress=False, output=output, **extra)
    return create_explainer(name, model, **kw)(X, T)


def close(a, b, rel=1e-4):
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * scale)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_probabilities_equal_a_callable_reading_the_softmax_output(name):
    """``output="probabilities"`` (softmax of the stripped logits) == a callable reading the model's
    own softmax output; ``output="logits"`` == a callable on the model without a softmax."""
    close(maps(name, SOFTMAX, "probabilities"), maps(name, SOFTMAX, gather), 2e-4)
    close(maps(name, SOFTMAX, "logits"), maps(name, LOGITS, gather))
    # and the two outputs really differ (the contract is not ignored)
    a, b = maps(name, SOFTMAX, "logits"), maps(name, SOFTMAX, "probabilities")
    assert not np.allclose(a / (np.abs(a).max() + 1e-12), b / (np.abs(b).max() + 1e-12), atol=1e-3)


def test_gradient_of_a_probability_on_a_linear_model():
    """d p_c / d x = p_c (w_c - sum_k p_k w_k) for p = softmax(W x + b)."""
    model = make_linear(shape=(4, 4, 1), classes=3, seed=2)
    W, b = model.layers[-1].get_weights()
    x = np.random.RandomState(3).rand(2, 4, 4, 1).astype(np.float32)
    t = np.array([1, 2])
    z = x.reshape(2, -1).astype(np.float64) @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = np.stack([p[i, t[i]] * (W[:, t[i]] - W @ p[i]) for i in range(2)]).reshape(2, 4, 4)
    got = create_explainer("grad", model, output="probabilities", progress=False)(x, t)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # a callable: the log-probability's gradient is w_c - sum_k p_k w_k
    logp = create_explainer("grad", model, progress=False,
                            output=lambda z, t: tf.gather(tf.nn.log_softmax(z), t, batch_dims=1))(x, t)
    np.testing.assert_allclose(logp, want / p[np.arange(2), t][:, None, None], rtol=1e-4, atol=1e-6)


def test_ig_completeness_holds_for_a_callable():
    """Completeness sum(a) = s(x) - s(x0) for the user's score s (a margin of two logits)."""
    def margin(z, t):
        return tf.gather(z, t, batch_dims=1) - tf.gather(z, (t + 1) % 4, batch_dims=1)

    a = create_explainer("ig", LOGITS, steps=256, output=margin, progress=False)(X, T)
    z1, z0 = LOGITS(X).numpy(), LOGITS(np.zeros_like(X)).numpy()
    s = lambda z: z[np.arange(3), T] - z[np.arange(3), (T + 1) % 4]  # noqa: E731
    np.testing.assert_allclose(a.sum((1, 2)), s(z1) - s(z0), rtol=2e-2, atol=2e-3)


def test_defaults_and_notes():
    assert get_method("grad").parameters()["output"] == "logits"
    for name in ("occlusion", "rise", "mp", "lime", "kernelshap", "pda"):
        assert get_method(name).parameters()["output"] == "probabilities", name
    e = create_explainer("rise", SOFTMAX, masks=8, progress=False)
    assert e.output == "probabilities" and e.output_note.startswith("softmax probabilities of the logits")
    g = create_explainer("grad", SOFTMAX, progress=False, output=gather)
    assert g.output_note.startswith("gather(model output, target)")


@pytest.mark.parametrize("name,output,match", [
    ("deeplift", "probabilities", r"DeepLift cannot explain output='probabilities': it explains 'logits' only"),
    ("pda", "logits", r"PredictionDifference cannot explain output='logits': it explains 'probabilities' only"),
    ("lrp.epsilon", gather, r"cannot explain output=function: it explains 'logits' only"),
    ("interventional", "probabilities", r"explains 'logits' only"),
    ("lime.lib", gather, r"it explains 'probabilities', 'logits' only"),
    ("grad", "softmax", r"Gradient needs output to be one of 'logits', 'probabilities' or a callable"),
    ("occlusion", 3, r"got int"),
])
def test_refusals_are_one_line(name, output, match):
    with pytest.raises(MethodError, match=match) as info:
        create_explainer(name, SOFTMAX, output=output)
    assert "\n" not in str(info.value)


def test_a_callable_must_return_one_float_per_input():
    with pytest.raises(MethodError, match=r"one score per input, shape \(N,\); it returned shape \(None, 4\)"):
        create_explainer("grad", LOGITS, output=lambda z, t: z, progress=False)(X, T)
    with pytest.raises(MethodError, match="one score per input"):
        create_explainer("occlusion", LOGITS, output=lambda z, t: z, window=4, stride=4, progress=False)(X, T)
    with pytest.raises(MethodError, match="float scores, got int32"):
        create_explainer("grad", LOGITS, output=lambda z, t: t, progress=False)(X, T)


def test_two_callables_on_one_model_do_not_share_a_compiled_function():
    """Compiled functions are cached on the model per output; a user's function gets its own."""
    a = create_explainer("grad", LOGITS, output=gather, progress=False)(X, T)
    b = create_explainer("grad", LOGITS, output=lambda z, t: 3.0 * gather(z, t), progress=False)(X, T)
    np.testing.assert_allclose(b, 3.0 * a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["tf-keras", "keras3", "keras3-sequential"])
def test_a_nested_classifier_is_explained_on_its_logits(kind):
    """``Model(inp, base(preprocess(inp)))``: the softmax inside ``base`` is found and stripped
    (it used to be taken for logits: softmax applied twice, every map of the wrong score)."""
    from xaitf.keras_bridge import keras3, logits_model, output_head, tfk

    k = tfk if kind == "tf-keras" else keras3()
    L = k.layers
    inp = k.Input((8, 8, 3))
    base = k.Model(inp, L.Dense(5, activation="softmax")(L.Flatten()(L.Conv2D(4, 3)(inp))))
    if kind == "keras3-sequential":
        outer = k.Sequential([k.Input((8, 8, 3)), L.Rescaling(1 / 255.0), base])
    else:
        i2 = k.Input((8, 8, 3))
        outer = k.Model(i2, base(L.Rescaling(1 / 255.0)(i2)))
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32) * 255
    assert output_head(outer) == "softmax"
    logits, note = logits_model(outer)
    assert "in nested model" in note
    np.testing.assert_allclose(tf.nn.softmax(np.asarray(logits(x))).numpy(), np.asarray(outer(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(logits(x)), np.asarray(logits_model(base)[0](x / 255.0)), atol=1e-5)
    g_outer = create_explainer("grad", outer, progress=False)(x, [0, 1, 2])
    g_base = create_explainer("grad", base, progress=False)(x / 255.0, [0, 1, 2])
    np.testing.assert_allclose(g_outer * 255.0, g_base, rtol=1e-4, atol=1e-6)    # chain rule: d/dx = d/du / 255
