"""Native LRP through custom layers: one whose call is Keras layers and operations is read through
its call (traced); one the user declares affine (``affine_layers=``), computing ``A x + b`` of its
one input, is called as it is and its ``A^T s`` comes from its own gradient.
Checked against the same model written with a Dense layer (identical maps), by conservation on a
keras.io-style ViT (patch extraction, patch encoder with a position embedding) without biases, by
the z rule's formula at a position embedding, and by one-line refusals (undeclared, not affine,
unknown names, several inputs)."""
import numpy as np
import pytest

import xaitf
import tensorflow as tf

from conftest import run_heatmap
from xaitf.errors import MethodError, ModelError
from xaitf.graph.engine import propagate, propagator
from xaitf.keras_bridge import keras3, tfk

KERASES = {"keras3": keras3(), "tf-keras": tfk}


def _custom_classes(keras):
    """A hand-written Dense (x @ W + b), a learned position embedding (x + p), a square (not
    affine) and a two-input sum, as custom layers of ``keras``."""
    class MatMul(keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units

        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1], self.units), initializer="glorot_uniform")
            self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")

        def call(self, x):
            return tf.matmul(x, self.w) + self.b

    class PositionEmbedding(keras.layers.Layer):
        def build(self, shape):
            self.p = self.add_weight(name="p", shape=tuple(shape[1:]), initializer="random_normal")

        def call(self, x, training=None):
            return x + self.p

    class Square(keras.layers.Layer):
        def call(self, x):
            return x * x

    class Pair(keras.layers.Layer):
        def call(self, inputs):
            return inputs[0] + inputs[1]

    return MatMul, PositionEmbedding, Square, Pair


def _dense_twins(keras, seed=0):
    """The same CNN twice: its hidden layer a Dense, then a custom MatMul with the same weights."""
    MatMul, *_ = _custom_classes(keras)
    L = keras.layers
    rs = np.random.RandomState(seed)

    def build(hidden):
        inp = keras.Input((6, 6, 2))
        h = L.Conv2D(4, 3, activation="relu")(inp)
        h = L.Flatten()(h)
        h = L.ReLU()(hidden(h))
        return keras.Model(inp, L.Dense(3)(h))

    plain, custom = build(L.Dense(8)), build(MatMul(8))
    for layer in plain.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([0.5 * rs.randn(*w.shape).astype(np.float32) for w in ws])
    for a, b in zip(plain.layers, custom.layers):
        b.set_weights(a.get_weights())
    return plain, custom


@pytest.mark.parametrize("which", list(KERASES))
@pytest.mark.parametrize("composite", ["lrp.z", "lrp.epsilon", "lrp.epsilon_plus"])
def test_declared_matmul_gives_the_dense_layers_maps(which, composite):
    """The custom MatMul's rule (the z / epsilon rule through its own gradient, with the
    composite's epsilon) equals the Dense layer's (z / epsilon rule from the kernel)."""
    plain, custom = _dense_twins(KERASES[which])
    x = np.random.default_rng(1).random((5, 6, 6, 2), dtype=np.float32)
    t = np.arange(5) % 3
    ref = xaitf.create_explainer(composite, plain, channel_reduce="none")(x, t)
    got = xaitf.create_explainer(composite, custom, channel_reduce="none", affine_layers=["MatMul"])(x, t)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())


class MixerBlock(keras3().layers.Layer):
    """An MLP-Mixer block written as a custom layer: token mixing (LayerNormalization, transpose, a
    nested Sequential MLP, transpose back, residual) then channel mixing (the same over channels)."""

    def __init__(self, tokens, dim, **kw):
        super().__init__(**kw)
        L = keras3().layers
        self.n1, self.n2 = L.LayerNormalization(epsilon=1e-6), L.LayerNormalization(epsilon=1e-6)
        self.tok = keras3().Sequential([L.Dense(2 * tokens, activation="gelu"), L.Dense(tokens)])
        self.ch = keras3().Sequential([L.Dense(2 * dim, activation="gelu"), L.Dense(dim)])

    def call(self, x):
        ops = keras3().ops
        y = ops.transpose(self.tok(ops.transpose(self.n1(x), (0, 2, 1))), (0, 2, 1))
        x = x + y
        return x + self.ch(self.n2(x))


def test_custom_block_is_read_through_its_call():
    """A custom layer whose call is Keras layers and operations (an MLP-Mixer block) needs no
    declaration: native LRP reads its call, traced on a symbolic input, as its own sublayers. The
    graph recomputes the model, and the maps equal those of the same model written as one
    functional graph with the block's sublayers (Permute for the transposes)."""
    from xaitf.graph import read_model

    k = keras3()
    L = k.layers
    k.utils.set_random_seed(3)
    inp = k.Input((16, 16, 3))
    patches = L.Reshape((16, 12))(L.Conv2D(12, 4, strides=4)(inp))
    block, head = MixerBlock(16, 12, name="mixer"), L.Dense(3)
    model = k.Model(inp, head(L.GlobalAveragePooling1D()(block(patches))))
    x = np.random.default_rng(5).random((3, 16, 16, 3), dtype=np.float32)
    t = np.array([0, 1, 2])
    np.testing.assert_allclose(read_model(model).forward(x).numpy(), model(x).numpy(), atol=1e-5)
    y = L.Permute((2, 1))(block.tok(L.Permute((2, 1))(block.n1(patches))))
    h = L.Add()([patches, y])
    h = L.Add()([h, block.ch(block.n2(h))])
    flat = k.Model(inp, head(L.GlobalAveragePooling1D()(h)))
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-5)
    for composite in ("lrp.epsilon", "lrp.z"):
        ref = xaitf.create_explainer(composite, flat, progress=False)(x, t)
        got = xaitf.create_explainer(composite, model, progress=False)(x, t)
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())


def test_tf_keras_custom_layers_are_read_through_their_calls():
    """tf-keras custom layers are traced as Keras 3 ones are (their operations become TFOpLambda
    layers): a residual MLP block ``x + 0.5 * d2(d1(x))`` and a ``2 * x`` layer give the maps of the
    same model written with Add and Rescaling layers around the block's own Dense layers; a custom
    layer calling an operation the graph does not read (a sort) is refused in one line naming it."""
    L = tfk.layers

    class Block(L.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d1, self.d2 = L.Dense(8, activation="relu"), L.Dense(4)

        def call(self, x):
            return x + self.d2(self.d1(x)) * 0.5

    class Double(L.Layer):
        def call(self, x):
            return 2.0 * x

    class Sorted(L.Layer):
        def call(self, x):
            return tf.sort(x, axis=-1)

    tf.keras.utils.set_random_seed(4)
    inp = tfk.Input((6, 6, 4))
    block, head = Block(name="blk"), L.Dense(3, name="head")
    model = tfk.Model(inp, head(L.Flatten()(Double(name="dbl")(block(inp)))))
    h = L.Add()([inp, L.Rescaling(0.5)(block.d2(block.d1(inp)))])
    flat = tfk.Model(inp, head(L.Flatten()(L.Rescaling(2.0)(h))))
    x = np.random.default_rng(2).random((3, 6, 6, 4), dtype=np.float32)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-5)
    for composite in ("lrp.epsilon", "lrp.z"):
        ref = xaitf.create_explainer(composite, flat, progress=False)(x, [0, 1, 2])
        got = xaitf.create_explainer(composite, model, progress=False)(x, [0, 1, 2])
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    sort = tfk.Model(inp, L.Dense(2)(L.Flatten()(Sorted(name="srt")(inp))))
    with pytest.raises(ModelError) as err:
        xaitf.create_explainer("lrp.z", sort)
    assert "'srt'" in str(err.value) and "\n" not in str(err.value)


def _vit(seed=0):
    """keras.io's ViT example at toy size (bench.cases.vit_tiny(custom=True): its Patches layer,
    keras.ops.image.extract_patches, and PatchEncoder, a Dense projection plus an Embedding of the
    positions; two transformer blocks), 16x16x3 images, 4x4 patches."""
    from bench.cases import vit_tiny

    keras3().utils.set_random_seed(seed)
    return vit_tiny(keras3(), blocks=2, dim=16, heads=2, mlp=32, patch=4, size=16, classes=4, custom=True)


def test_keras_io_vit_read_through_its_calls_or_declared_conserves_without_biases():
    """keras.io's ViT needs no declaration: Patches' extract_patches reads as a convolution with an
    identity kernel and PatchEncoder's position embedding (an Embedding of constant positions, a
    constant of the tokens' shape) as a per-position shift; the graph recomputes the model. Read so,
    or with both layers declared affine, lrp.z with every bias, LayerNorm beta and the position
    embedding at 0 gives maps summing to the explained logit; with them, lrp.epsilon's maps are
    finite."""
    from bench.cases import VIT_CUSTOM_LAYERS
    from xaitf.graph import read_model

    model = _vit()
    x = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    t = np.array([0, 1, 3])
    graph = read_model(model)
    kinds = [(n.name, n.kind) for n in graph.nodes]
    assert [k for name, k in kinds if name.startswith("extract_patches")] == ["Conv2D"]
    assert "Affine" not in {k for _, k in kinds}
    np.testing.assert_allclose(graph.forward(x).numpy(), model(x).numpy(), atol=1e-5)
    declared = VIT_CUSTOM_LAYERS
    for kw in ({}, {"affine_layers": declared}):
        with_bias = xaitf.create_explainer("lrp.epsilon", model, **kw)(x, t)
        assert np.isfinite(with_bias).all() and np.abs(with_bias).max() > 0
    for w in model.weights:
        if (getattr(w, "path", None) or w.name).rsplit("/", 1)[-1] in ("bias", "beta", "embeddings"):
            w.assign(np.zeros(w.shape, np.float32))
    logits = model(x).numpy()[np.arange(3), t]
    for kw in ({}, {"affine_layers": declared}):
        got = xaitf.create_explainer("lrp.z", model, channel_reduce="none", **kw)(x, t)
        np.testing.assert_allclose(got.reshape(3, -1).sum(1), logits, rtol=1e-4, atol=1e-5 * np.abs(logits).max())


@keras3().saving.register_keras_serializable(package="xaitf_tests")
class Flip(keras3().layers.Layer):
    """Tokens in reverse order (keras.ops.flip, which native LRP does not read): linear, declarable."""

    def call(self, x):
        return keras3().ops.flip(x, axis=1)


def _flip_model():
    k = keras3()
    L = k.layers
    k.utils.set_random_seed(2)
    inp = k.Input((16, 16, 3))
    h = Flip(name="flip")(L.Reshape((16, 48))(L.Conv2D(48, 4, strides=4)(inp)))
    return k.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(L.Dense(8, activation="relu")(h))))


@pytest.mark.parametrize("which", list(KERASES))
def test_position_embedding_takes_the_z_rule_of_its_map(which):
    """At a declared x + p the relevance of x is x * R / (x + p) (lrp.z; p absorbs the rest) and
    x * R / (x + p + eps sign) with the composite's epsilon (lrp.epsilon)."""
    keras = KERASES[which]
    _, PositionEmbedding, *_ = _custom_classes(keras)
    L = keras.layers
    inp = keras.Input((6, 6, 1))
    h = PositionEmbedding(name="pos")(L.Conv2D(3, 3, activation="relu")(inp))
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(h)))
    x = tf.constant(np.random.default_rng(2).random((2, 6, 6, 1), dtype=np.float32))
    for composite, eps in (("lrp.z", 0.0), ("lrp.epsilon", 1.0)):
        prop = propagator(model, composite, affine=["pos"])
        record = []
        propagate(prop.graph, prop.rules, prop.output, x, tf.constant([0, 1]), record=record)
        (node, rule, r, ins), = [s for s in record if s[0].kind == "Affine"]
        acts = prop.graph.activations(x)
        a, y = acts[node.inputs[0]].numpy(), acts[node.id].numpy()
        stab = y + np.where(y >= 0, eps, -eps)
        np.testing.assert_allclose(ins[0].numpy(), a * r.numpy() / stab, rtol=1e-5, atol=1e-7)
        assert rule.name == "proportional" and float(rule.epsilon) == eps


def test_declared_keras3_operation_and_refusals():
    """A Keras 3 operation (keras.ops.image.extract_patches in the model's code) is read as a
    convolution with an identity kernel, or, declared by its class, called as it is: lrp.z gives the
    same maps both ways (the z rule of one linear map) and conserves without biases. Refused in one
    line each: a declared layer that is not affine, a declared name that is no layer, a declared
    layer of two inputs, affine_layers that are not strings."""
    k = keras3()
    L = k.layers
    _, _, Square, Pair = _custom_classes(k)
    inp = k.Input((8, 8, 3))
    h = L.Reshape((4, 48))(k.ops.image.extract_patches(inp, 4))
    h = L.GlobalAveragePooling1D()(L.ReLU()(L.Dense(6, use_bias=False)(h)))
    model = k.Model(inp, L.Dense(3, use_bias=False)(h))
    x = np.random.default_rng(3).random((2, 8, 8, 3), dtype=np.float32)
    read = xaitf.create_explainer("lrp.z", model)(x, [0, 1])
    got = xaitf.create_explainer("lrp.z", model, affine_layers="ExtractPatches")(x, [0, 1])
    np.testing.assert_allclose(read, got, atol=1e-5 * np.abs(got).max())
    logits = model(x).numpy()[[0, 1], [0, 1]]
    np.testing.assert_allclose(got.reshape(2, -1).sum(1), logits, rtol=1e-4)

    square = k.Model(inp, L.Dense(2)(L.Flatten()(Square(name="sq")(inp))))
    with pytest.raises(ModelError, match=r"layer 'sq' \(Square\) was declared affine but is not"):
        xaitf.create_explainer("lrp.z", square, affine_layers=["sq"])
    with pytest.raises(ModelError, match=r"affine_layers names 'nope', which is no layer"):
        xaitf.create_explainer("lrp.z", square, affine_layers=["Square", "nope"])
    pair = k.Model(inp, L.Dense(2)(L.Flatten()(Pair()([inp, inp]))))
    with pytest.raises(ModelError, match="declared affine but takes 2 inputs"):
        xaitf.create_explainer("lrp.z", pair, affine_layers=["Pair"])
    with pytest.raises(MethodError, match="affine_layers must be layer names"):
        xaitf.create_explainer("lrp.z", square, affine_layers=[3])


def test_command_line_declares_affine_layers(tmp_path, capsys, restore_settings):
    """heatmap_script on a saved model with a custom layer native LRP cannot read (a flip): without
    a declaration lrp.epsilon fails in one line that gives the --set to use; with ``--set
    lrp_graph.affine_layers=Flip`` every LRP composite runs (the section is read by all of them) and
    the figure is written."""
    from PIL import Image

    path = tmp_path / "flip.keras"
    _flip_model().save(path)
    png = tmp_path / "img.png"
    Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)).save(png)
    common = ["-ip", png, "-mp", path, "-op", tmp_path / "out"]
    code, _, err = run_heatmap(capsys, *common, "-hm", "lrp.epsilon")
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code != 0 and "'flip' (Flip)" in errors[0] and "--set lrp_graph.affine_layers=Flip)" in errors[0], err
    code, out, err = run_heatmap(capsys, *common, "-hm", "lrp.epsilon", "lrp.z",
                                 "--set", "lrp_graph.affine_layers=Flip")
    assert code == 0, err
    assert "lrp.z: " in out and "lrp.epsilon: " in out
    assert len(list((tmp_path / "out").rglob("heatmap_*.png"))) == 1
