"""Native LRP on attention models (xaitf.graph): a MultiHeadAttention layer is read as its value
projection, its attention and its output projection; the attention takes the AH-rule of Ali et al.
2022 (attention weights held constant). The graph recomputes the model (plain, causal, separate
key), the rule equals its formula written in numpy, lrp.z conserves the logit without biases,
tf-keras and Keras 3 copies agree, and unsupported calls are refused in one line."""
import numpy as np
import pytest

import xaitf
import tensorflow as tf

from xaitf.errors import ModelError
from xaitf.graph import read_model
from xaitf.graph.engine import propagator
from xaitf.keras_bridge import keras3, tfk

T, D, HEADS, KEY_DIM, VALUE_DIM, K = 6, 8, 2, 4, 3, 5


def _weights(model, seed):
    """Random weights for every layer: kernels N(0, 1/fan-in), biases and LN betas N(0, 0.1^2),
    LN gammas N(1, 0.3^2)."""
    rs = np.random.RandomState(seed)
    for layer in model.layers:
        for w in layer.weights:
            name = getattr(w, "path", None) or w.name
            if "bias" in name or "beta" in name:
                value = 0.1 * rs.randn(*w.shape)
            elif "gamma" in name:
                value = 1.0 + 0.3 * rs.randn(*w.shape)
            else:
                value = rs.randn(*w.shape) / np.sqrt(np.prod(w.shape[:-1]))
            w.assign(value.astype(np.float32))
    return model


def _zero_biases(model):
    """Every bias and LayerNormalization beta set to 0 (no relevance absorbed anywhere)."""
    for layer in model.layers:
        for w in layer.weights:
            name = getattr(w, "path", None) or w.name
            if "bias" in name or "beta" in name:
                w.assign(np.zeros(w.shape, np.float32))
    return model


def _attention_model(keras, causal=False, separate_key=False, tokens_in=True):
    """tokens (T, D) -> [LayerNorm] -> MHA -> + residual -> GlobalAveragePooling1D -> Dense(K);
    with ``tokens_in=False`` the tokens come from 16x16x3 images through a 4x4 patch Conv2D."""
    L = keras.layers
    if tokens_in:
        inp = keras.Input((T, D))
        x = inp
    else:
        inp = keras.Input((12, 8, 3))
        x = L.Reshape((T, D))(L.Conv2D(D, 4, strides=4)(inp))
    h = L.LayerNormalization()(x)
    mha = L.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)
    if separate_key:
        h = mha(h, h, L.Dense(D)(h), use_causal_mask=causal)
    else:
        h = mha(h, h, use_causal_mask=causal)
    x = L.Add()([x, h])
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(K)(x))


def _numpy_attention_lrp(model, x, targets, eps):
    """LRP-epsilon of ``Input(T,D) -> MHA(x, x) -> GlobalAveragePooling1D -> Dense(K)`` written with
    explicit matrices: Dense and the two projections with the epsilon rule, average pooling split in
    proportion, the attention with A held constant and the z rule (AH-rule)."""
    mha = next(l for l in model.layers if type(l).__name__ == "MultiHeadAttention")
    dense = model.layers[-1]
    wq, bq, wk, bk, wv, bv, wo, bo = [np.asarray(w, np.float64) for w in mha.get_weights()]
    wd, bd = [np.asarray(w, np.float64) for w in dense.get_weights()]

    def stab(z):
        return z + np.where(z >= 0, eps, -eps)

    out = []
    for xi, c in zip(np.asarray(x, np.float64), targets):
        q = np.einsum("tc,chd->thd", xi, wq) + bq
        k = np.einsum("tc,chd->thd", xi, wk) + bk
        v = np.einsum("tc,chd->thd", xi, wv) + bv                       # (T, H, dv)
        s = np.einsum("thd,shd->hts", q / np.sqrt(KEY_DIM), k)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)                                   # (H, T, S)
        m = np.einsum("hts,shd->thd", a, v)                             # (T, H, dv)
        o = np.einsum("thd,hde->te", m, wo) + bo                        # (T, D)
        g = o.mean(0)
        logit = g @ wd + bd
        r_g = g * wd[:, c] / stab(logit[c]) * logit[c]                 # Dense, epsilon
        r_o = (o / T) / g * r_g                                         # average pooling, proportional
        r_m = np.einsum("thd,hde,te->thd", m, wo, r_o / stab(o))         # output projection, epsilon
        r_v = v * np.einsum("hts,thd->shd", a, r_m / m)                 # attention, z (AH-rule)
        r_x = np.einsum("sc,chd,shd->sc", xi, wv, r_v / stab(v))         # value projection, epsilon
        out.append(r_x)
    return np.stack(out)


@pytest.mark.parametrize("causal,separate_key", [(False, False), (True, False), (False, True), (True, True)])
def test_graph_recomputes_attention_models_and_lrp_z_conserves(causal, separate_key):
    """Keras 3: the graph's forward pass equals the model's (with LayerNormalization, residual,
    causal mask, a key apart from the value); with every bias and beta 0, lrp.z's input relevance
    sums to the explained logit."""
    import keras

    model = _weights(_attention_model(keras, causal, separate_key), 3)
    x = np.random.RandomState(0).randn(4, T, D).astype(np.float32)
    graph = read_model(model)
    assert [n.kind for n in graph.nodes if n.name.startswith("multi_head_attention")] == ["Dense", "Attention",
                                                                                         "Dense"]
    np.testing.assert_allclose(graph.forward(x).numpy(), model(x).numpy(), atol=1e-5)
    _zero_biases(model)
    t = np.array([0, 1, 2, 3])
    r = propagator(model, "lrp.z")(x, t)
    f = model(x).numpy()[np.arange(4), t]
    np.testing.assert_allclose(r.reshape(4, -1).sum(1), f, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fmt", [".keras", ".h5"])
def test_attention_models_read_after_saving_and_by_keyword(tmp_path, fmt):
    """Saved and loaded (a tf-keras model loaded from a file passes value= and key= by keyword), and
    a Keras 3 call written with keywords: the graph still recomputes the model, causal mask and
    separate key included."""
    import keras

    m3 = _weights(_attention_model(keras, causal=True, separate_key=True, tokens_in=False), 4)
    m2 = _attention_model(tfk, causal=True, separate_key=True, tokens_in=False)
    m2.set_weights(m3.get_weights())
    x = np.random.RandomState(5).rand(2, 12, 8, 3).astype(np.float32)
    for model in (m3, m2):
        path = str(tmp_path / f"{model.name}{fmt}")
        model.save(path)
        loaded = xaitf.load_model(path)
        np.testing.assert_allclose(read_model(loaded).forward(x).numpy(), model(x).numpy(), atol=1e-5)
    L = keras.layers
    inp = keras.Input((T, D))
    h = L.MultiHeadAttention(HEADS, KEY_DIM)(query=inp, value=L.Dense(D)(inp), key=L.Dense(D)(inp))
    kw = _weights(keras.Model(inp, L.Dense(K)(L.GlobalAveragePooling1D()(h))), 6)
    xt = np.random.RandomState(6).randn(3, T, D).astype(np.float32)
    np.testing.assert_allclose(read_model(kw).forward(xt).numpy(), kw(xt).numpy(), atol=1e-5)


def test_attention_rule_equals_its_formula():
    """LRP-epsilon (epsilon 0.01 on the Dense layers) of a one-layer attention model equals the
    numpy formula of the AH-rule and the epsilon rule, biases included, on signed inputs."""
    import keras

    L = keras.layers
    inp = keras.Input((T, D))
    h = L.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)(inp, inp)
    model = _weights(keras.Model(inp, L.Dense(K)(L.GlobalAveragePooling1D()(h))), 5)
    x = np.random.RandomState(1).randn(6, T, D).astype(np.float32)
    t = np.arange(6) % K
    got = propagator(model, {"linear": ("epsilon", {"epsilon": 0.01})})(x, t)
    want = _numpy_attention_lrp(model, x, t, 0.01)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_tf_keras_and_keras3_attention_models_give_the_same_maps():
    """The same image ViT-like model (patch Conv2D, LayerNormalization, MultiHeadAttention) built
    with tf-keras and with Keras 3, the same weights: lrp.epsilon and lrp.z maps equal within
    1e-5 of their max, through create_explainer."""
    import keras

    if not keras3():
        pytest.skip("needs Keras 3")
    m3 = _weights(_attention_model(keras, causal=True, tokens_in=False), 7)
    m2 = _attention_model(tfk, causal=True, tokens_in=False)
    m2.set_weights(m3.get_weights())
    x = np.random.RandomState(2).rand(3, 12, 8, 3).astype(np.float32)
    np.testing.assert_allclose(m2(x).numpy(), m3(x).numpy(), atol=1e-5)
    for name in ("lrp.epsilon", "lrp.z"):
        a = xaitf.create_explainer(name, m3, progress=False)(x, [0, 1, 2])
        b = xaitf.create_explainer(name, m2, progress=False)(x, [0, 1, 2])
        assert a.shape == (3, 12, 8) and np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_attention_calls_it_cannot_read_are_refused_in_one_line():
    """An attention mask, returned attention scores, or attention over other axes: one ModelError
    naming the layer and what it reads."""
    import keras

    L = keras.layers
    inp = keras.Input((T, D))
    masked = keras.Model(inp, L.Dense(K)(L.GlobalAveragePooling1D()(
        L.MultiHeadAttention(2, 4, name="masked_mha")(inp, inp, attention_mask=L.Dense(T)(inp)))))
    with pytest.raises(ModelError, match=r"'masked_mha' \(MultiHeadAttention\).*no masks") as e:
        read_model(masked)
    assert "\n" not in str(e.value)
    out, _ = L.MultiHeadAttention(2, 4, name="scores_mha")(inp, inp, return_attention_scores=True)
    scored = keras.Model(inp, L.Dense(K)(L.GlobalAveragePooling1D()(out)))
    with pytest.raises(ModelError, match=r"'scores_mha' \(MultiHeadAttention\).*no attention scores returned"):
        read_model(scored)
    img = keras.Input((4, 4, D))
    axes = keras.Model(img, L.Dense(K)(L.GlobalAveragePooling2D()(
        L.MultiHeadAttention(2, 4, attention_axes=(1, 2), name="axes_mha")(img, img))))
    with pytest.raises(ModelError, match=r"'axes_mha' .*attention over the tokens"):
        read_model(axes)


def test_bench_vit_builder_is_read_and_explained():
    """bench.cases.vit_tiny (here at toy sizes): the graph recomputes it and lrp.epsilon gives
    finite, non-zero image maps through create_explainer."""
    import keras

    from bench.cases import vit_tiny

    keras.utils.set_random_seed(0)
    model = vit_tiny(keras, blocks=2, dim=8, heads=2, mlp=16, patch=4, size=16, classes=4)
    x = np.random.RandomState(3).rand(2, 16, 16, 3).astype(np.float32)
    np.testing.assert_allclose(read_model(model).forward(x).numpy(), model(x).numpy(), atol=1e-5)
    maps = xaitf.create_explainer("lrp.epsilon", model, progress=False)(x)
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_bench_vit_with_custom_patch_layers_is_read_when_declared():
    """bench.cases.vit_tiny(custom=True) (keras.io's Patches and PatchEncoder layers, toy sizes):
    read through the layers' calls or with them declared affine, the graph recomputes it, and
    lrp.epsilon gives finite, non-zero maps."""
    import keras

    from bench.cases import VIT_CUSTOM_LAYERS, vit_tiny

    keras.utils.set_random_seed(0)
    model = vit_tiny(keras, blocks=1, dim=8, heads=2, mlp=16, patch=4, size=16, classes=4, custom=True)
    x = np.random.RandomState(4).rand(2, 16, 16, 3).astype(np.float32)
    for affine in ((), VIT_CUSTOM_LAYERS):
        np.testing.assert_allclose(read_model(model, affine).forward(x).numpy(), model(x).numpy(), atol=1e-5)
    maps = xaitf.create_explainer("lrp.epsilon", model, progress=False, affine_layers=VIT_CUSTOM_LAYERS)(x)
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_randomisation_test_randomises_attention_without_retracing_warnings():
    """model_parameter_randomisation on an attention model: the MultiHeadAttention layers are
    randomised (their weights are kernels of sublayers), LayerNormalization is not, and native LRP
    on the model and its 5 randomised copies (one propagator each; TF warns from 5 traces of one
    code object) logs no retracing warning."""
    import logging

    import keras

    from bench.cases import vit_tiny
    from xaitf.metrics.randomisation import model_parameter_randomisation, randomisable_layers

    keras.utils.set_random_seed(1)
    model = vit_tiny(keras, blocks=1, dim=8, heads=2, mlp=16, patch=4, size=16, classes=4)
    names = [layer.name for layer in randomisable_layers(model)]
    assert [type(model.get_layer(n)).__name__ for n in names].count("MultiHeadAttention") == 1
    assert len(names) == 5 and not any("layer_normalization" in n for n in names)
    x = np.random.RandomState(9).rand(3, 16, 16, 3).astype(np.float32)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        res = model_parameter_randomisation(model, x, [0, 1, 2], "lrp.epsilon", similarities="spearman",
                                            progress=False)
    finally:
        tf_logger.removeHandler(handler)
    assert res.layers == names[::-1] and res.scores["spearman"].shape == (5, 3)
    assert not [m for m in seen if "retracing" in m]


def test_attention_pooling_with_fewer_queries_than_tokens():
    """Attention pooling (a MAP head): one query, the tokens' mean, attends over all T tokens
    (A is 1 x T per head). The graph recomputes it and lrp.z without biases conserves the logit;
    the relevance reaches the tokens only through the values (the query's mean gets none)."""
    import keras

    L = keras.layers
    inp = keras.Input((T, D))
    query = L.GlobalAveragePooling1D(keepdims=True)(inp)                     # (B, 1, D)
    pooled = L.MultiHeadAttention(HEADS, KEY_DIM)(query, inp)               # (B, 1, D)
    model = _weights(keras.Model(inp, L.Dense(K)(L.Flatten()(pooled))), 10)
    x = np.random.RandomState(11).randn(4, T, D).astype(np.float32)
    np.testing.assert_allclose(read_model(model).forward(x).numpy(), model(x).numpy(), atol=1e-5)
    _zero_biases(model)
    t = np.array([1, 2, 3, 4])
    r = propagator(model, "lrp.z")(x, t)
    np.testing.assert_allclose(r.reshape(4, -1).sum(1), model(x).numpy()[np.arange(4), t], rtol=1e-4, atol=1e-6)


def test_twin_rebuilds_attention_for_the_tf_keras_backends():
    """A Keras 3 attention model gets a tf-keras twin (MultiHeadAttention called with the source's
    query, value and key, causal mask included, equal outputs); on self-attention iNNvestigate's
    gradient equals the native gradient, tf-explain's Grad-CAM runs, and iNNvestigate's LRP refuses
    in one line naming the layers it does not implement. (iNNvestigate cannot build its graph
    through the causal mask: refused in one line.)"""
    import keras

    from xaitf.twin import tf_keras_twin

    x = np.random.RandomState(13).rand(2, 12, 8, 3).astype(np.float32)
    causal = _weights(_attention_model(keras, causal=True, separate_key=True, tokens_in=False), 11)
    twin = tf_keras_twin(causal)
    assert any(type(l).__name__ == "MultiHeadAttention" for l in twin.layers)
    np.testing.assert_allclose(twin(x).numpy(), causal(x).numpy(), atol=1e-5)
    model = _weights(_attention_model(keras, tokens_in=False), 12)
    grad = xaitf.create_explainer("grad", model, progress=False)(x, [0, 1])
    inn = xaitf.create_explainer("inn.gradient", model, progress=False)(x, [0, 1])
    np.testing.assert_allclose(inn, grad, atol=1e-5 * np.abs(grad).max())
    cam = xaitf.create_explainer("tfx.gradcam", model, progress=False)(x, [0, 1])
    assert cam.shape == (2, 12, 8) and np.isfinite(cam).all()
    with pytest.raises(ModelError, match=r"Check triggered by layers: \[.*MultiHeadAttention") as e:
        xaitf.create_explainer("inn.lrp.epsilon", model, progress=False)(x, [0, 1])
    assert "\n" not in str(e.value)
