"""A Keras model as a flat list of nodes, for relevance propagation.

:func:`read_model` walks the layer calls of a tf-keras or Keras 3 model (Sequential or functional,
nested models inlined, shared layers called once per call) into a :class:`Graph`: nodes in
topological order, each with its kind (the Keras class name, e.g. ``"Conv2D"``), its weights as
float32 numpy arrays, its configuration and the ids of its input nodes. The ``activation=`` of a
Conv2D/DepthwiseConv2D/Dense becomes its own ``Activation`` node (``fused=True``), so that rules
see the pre-activation ``z`` of every linear layer. BatchNormalization, Rescaling and
Normalization are exact per-channel affine nodes ``y = x * scale + shift`` (so is ConvNeXt's
LayerScale); LayerNormalization over the channels and GroupNormalization are their own kinds
(rule ``layer_norm``). A SeparableConv2D (Xception, NASNet) becomes its two linear maps,
``<name>/depthwise`` (strided, no bias) then ``<name>/pointwise`` (1x1, with the bias); each gets
the rule a composite gives convolutions. A Conv2D with one input channel per group is a
DepthwiseConv2D; with several it stays a grouped Conv2D (``config["groups"]``). Average and
Subtract become an Add with a Rescaling; Maximum and Minimum route relevance to the winner.
A Multiply layer is read as a gate (squeeze-and-excitation blocks of EfficientNet; ``x * f(x)``
with ``f`` elementwise, a self-gated activation such as swish): see the ``signal`` rule.
A MultiHeadAttention call is its value projection (a Dense node on the tokens), an ``Attention``
node (the attention weights from the query and key, mixing the values) and its output projection
(a Dense node): see the ``attention`` rule.
Operations written in a Keras 3 model's code (tf-keras: TFOpLambda layers) are read where they
are elementwise affine maps with a scalar or per-channel constant, ``x + c``, ``x - c``, ``c - x``,
``x * c`` and ``x / c`` (MobileNetV3's hard sigmoid ``relu6(x + 3) * (1 / 6)``; ``x / 255.0`` at
the input): a Rescaling node (input normalisation where it reads the input; elsewhere LRP passes
relevance through it, as through Rescaling layers); merges of two tensors, ``x + y`` (an ``Add``
node) and ``x * y`` (a ``Multiply`` gate); a spatial mean; elementwise activations
(``keras.ops.relu(x)``: a ReLU or Activation node); and keras.applications' channel indexing;
``x + C`` (or ``-``, ``*``, ``/``) with a constant of the tensor's whole shape, a position embedding
(a Rescaling node with per-position arrays); ``keras.ops.image.extract_patches`` (a Conv2D with an
identity kernel, as Keras computes it).
Other operations are refused with one line naming them.

A custom layer (the user's class, one input; Keras 3 or tf-keras) is read through its ``call``:
traced on a symbolic input into a functional model of its own sublayers and operations (an
MLP-Mixer or transformer block written as a layer), inlined where the graph reads all of it
(:func:`_traced_call`); otherwise it is refused by name, unless declared affine:
Custom layers (and Keras 3 operations) that the user declares affine maps of their one input
(``read_model(model, affine=("PatchEncoder", ...))``, by layer name or class name) become ``Affine``
nodes: a position embedding ``x + p``, a class token prepended, patch extraction, ``x @ W + b``
written by hand. The node calls the layer itself; its rule gets ``A^T s`` from the layer's own
gradient (exact for an affine map, whatever ``A``). Reading checks each declared layer on a probe
input (second differences of ``f`` along random directions vanish only for an affine map) and refuses
one that is not.

Everything computes in float32 (float64 layers are cast). :meth:`Graph.forward` recomputes the
model's output from the nodes alone; the tests hold it to ``model(x)`` within 1e-5.
The weights are copied when the graph is read: a graph follows later weight changes only through
:func:`reload` (the engine reloads a model's graphs when its weights change).
"""
import dataclasses
from dataclasses import dataclass, field

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from ..errors import ModelError
from ..keras_bridge import (ATTENTION_CALLS, AUGMENTATION_NOTE, INDEXING_READ, INFERENCE_IDENTITY, OPERATIONS_READ,
                            POSITIONAL_READ,
                            activation_name, attention_call, is_augmentation, is_keras_layer, is_operation, layer_type,
                            model_kind, read_operation, scaled_add, tfk)

KERNEL = ("Conv2D", "DepthwiseConv2D", "Dense")
AFFINE = ("BatchNormalization", "Rescaling", "Normalization")
LINEAR = KERNEL + AFFINE          # the nodes LRP's layer rules apply to: y = linear(x) + bias
ELEMENTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU")
POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
           "GlobalAveragePooling1D", "GlobalMaxPooling1D")
SHAPE = ("Flatten", "Reshape", "ZeroPadding2D", "Cropping2D", "Dropout", "Permute")
MERGE = ("Add", "Concatenate", "Multiply", "Maximum", "Minimum")
# channel indexing written in a Keras 3 model's code (keras.applications' caffe-style preprocess_input:
# stack([x[..., 2], x[..., 1], x[..., 0]], axis=-1)): a gather on the channel axis, a stack on a new one
INDEXING = ("Gather", "Stack")
# resizing the image (a Resizing layer; UpSampling2D by integer factors), bilinear or nearest: linear,
# weightless, weights >= 0
RESIZE = ("Resizing", "UpSampling2D")
# y = gamma (x - mean) / sqrt(var + eps) + beta, mean and var over the channels (LayerNormalization) or
# over the positions and the channels of each of `groups` channel groups (GroupNormalization)
NORM = ("LayerNormalization", "GroupNormalization")
# x / ||x|| over the channels (UnitNormalization): with the norm held constant a per-position scaling, which
# passes relevance unchanged (the rule ``pass``, as the LN-rule holds sigma constant)
UNIT_NORM = ("UnitNormalization",)
_NONNEGATIVE_ACTIVATIONS = ("relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "softplus", "exponential")
# the attention of a MultiHeadAttention layer (its value and output projections are Dense nodes): inputs
# (values, query, key), output sum_s A[t, s] v[s] per head, A = softmax(q k^T / sqrt(d)) from query and key
ATTENTION = ("Attention",)
# a layer or operation the user declares an affine map of its one input (read_model(affine=...)): computed
# by calling it, its A^T s read from its own gradient
CUSTOM = ("Affine",)
KINDS = ("InputLayer",) + LINEAR + ELEMENTWISE + NORM + UNIT_NORM + POOLING + SHAPE + MERGE + INDEXING + RESIZE + \
    ATTENTION + ("Softmax",)
# keras.applications' ConvNeXt layers read as built-in kinds: LayerScale (x * gamma per channel) is a
# Rescaling node; StochasticDepth (the identity at inference) is in keras_bridge.INFERENCE_IDENTITY
CONVNEXT_LAYERS = ("LayerScale",)
# layers read as several nodes: depthwise then pointwise; Inception-ResNet-v2's x + r * scale as a
# Rescaling of r, then an Add; Average as an Add, then a Rescaling by 1 / n; Subtract as a Rescaling by
# -1 of the second input, then an Add; MultiHeadAttention as its value projection (Dense), the
# attention (Attention) and its output projection (Dense)
SPLIT = ("SeparableConv2D", "CustomScaleLayer", "Average", "Subtract", "MultiHeadAttention")
# read as other kinds: tf-keras's ThresholdedReLU(theta) is ReLU(threshold=theta)
RENAMED = ("ThresholdedReLU",)
SUPPORTED_LAYERS = (tuple(k for k in KINDS if k not in ("Dropout",) + INDEXING) + INFERENCE_IDENTITY + SPLIT
                    + CONVNEXT_LAYERS + RENAMED)
# what may stand between the input and the first layers (Graph.input_path): reshaping, identities,
# channel indexing, resizing and input normalisation (the affine kinds)
INPUT_PATH = ("Flatten", "Reshape", "Dropout") + INDEXING + RESIZE + AFFINE


@dataclass
class Node:
    """One operation of the graph.

    Attributes:
        id: unique integer (the position in the original topological order).
        kind: one of :data:`KINDS` or :data:`CUSTOM`.
        name: the Keras layer's name (``conv1``; ``conv1/relu`` for a split-off activation).
        inputs: ids of the nodes whose outputs this node consumes, in call order.
        weights: float32 numpy arrays: ``kernel``/``bias`` (kernel kinds), ``scale``/``shift``
            (affine kinds).
        config: what the forward computation needs (strides, padding, axis, activation name...).
        layer: the Keras layer (None for the input node).
        fused: an activation split off a Conv2D/DepthwiseConv2D/Dense (``activation=``).
    """

    id: int
    kind: str
    name: str
    inputs: tuple = ()
    weights: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    layer: object = None
    fused: bool = False
    nonneg_input: object = False      # input >= 0: True by construction, None unknown (the model input)
    # tensors made from the weights (see const()) and how each is made; not copied by replace()
    consts: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    makers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def label(self):
        return f"{self.name!r} ({self.kind})"

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


class Graph:
    """Nodes in topological order, one input node and one output node."""

    def __init__(self, nodes, input_id, output_id, name="model"):
        self.nodes = list(nodes)
        self.by_id = {n.id: n for n in self.nodes}
        self.input_id, self.output_id, self.name = input_id, output_id, name

    def __getitem__(self, node_id):
        return self.by_id[node_id]

    def __repr__(self):
        return f"Graph({self.name!r}, {len(self.nodes)} nodes: " + \
            ", ".join(f"{n.id}:{n.kind}" for n in self.nodes) + ")"

    def consumers(self):
        """``{node id: [ids of the nodes that read its output]}``."""
        out = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.id)
        return out

    def activations(self, x):
        """``{node id: output tensor}`` of every node for the batch ``x`` (float32)."""
        acts = {self.input_id: tf.cast(x, tf.float32)}
        for n in self.nodes:
            if n.id != self.input_id:
                acts[n.id] = apply(n, [acts[i] for i in n.inputs])
        return acts

    def forward(self, x):
        """The output node's value for ``x``: the model's output recomputed from the graph."""
        return self.activations(x)[self.output_id]

    def input_path(self):
        """Ids of the nodes between the input and the first layers: Flatten, Reshape, identities
        (augmentation layers, Dropout), channel indexing, resizing and input normalisation (the
        affine kinds) reading the input directly or through each other."""
        direct = {self.input_id}
        for n in self.nodes:
            if n.kind in INPUT_PATH and all(i in direct for i in n.inputs):
                direct.add(n.id)
        return direct

    def nonnegative(self):
        """Ids of the nodes whose output is >= 0 by construction: ReLU-type activations (no negative
        slope, threshold >= 0), sigmoid/softmax, and pooling, reshaping, padding, Add and
        Concatenate of such nodes. (LRP's alpha-beta rules skip their x^- terms on these inputs.)"""
        out = set()
        for n in self.nodes:
            c = n.config
            if n.kind == "Activation":
                ok = c.get("activation") in _NONNEGATIVE_ACTIVATIONS
            elif n.kind == "ReLU":
                ok = c["negative_slope"] == 0.0 and c["threshold"] >= 0.0
            elif n.kind == "Softmax":
                ok = True
            elif n.kind in POOLING + SHAPE + MERGE + INDEXING + RESIZE:
                ok = bool(n.inputs) and all(i in out for i in n.inputs)
            else:
                ok = False
            if ok:
                out.add(n.id)
        return out

    def first_linear(self):
        """Ids of the Conv2D/DepthwiseConv2D/Dense nodes that read the input directly or through
        Flatten, Reshape and input normalisation only (iNNvestigate's "input layer", looking through
        normalisation): where input-domain rules (flat, z_box) apply."""
        direct = self.input_path()
        return {n.id for n in self.nodes if n.kind in KERNEL and all(i in direct for i in n.inputs)}


def plain_relu(node):
    """True for ``max(x, 0)`` itself: a ReLU layer without slope, threshold or cap, or Activation('relu')
    (also as a layer's ``activation=``)."""
    if node.kind == "Activation":
        return node.config.get("activation") == "relu"
    if node.kind == "ReLU":
        c = node.config
        return not c["negative_slope"] and not c["threshold"] and c["max_value"] is None
    return False


# -- forward computations ------------------------------------------------------------------------
@tf.autograph.experimental.do_not_convert
def const(node, key, make=None):
    """A float32 tensor made once per node from ``make()`` (default: the weight ``key``).

    Held in a variable created eagerly even while a ``tf.function`` traces, so that the function
    captures it by reference instead of embedding a copy of the array in its graph (ResNet50's
    rules would otherwise embed ~10 copies of its 100 MB of weights, and grappler copies the graph
    again), and so that :func:`reload` can give it new values without a new trace. ``make`` must
    read the weights from ``node`` when called (not from arrays taken before)."""
    if key not in node.consts:
        arr = _made(node, key, make)
        with tf.init_scope():     # not lifted: a tf.function whose trace creates variables traces twice
            node.consts[key] = tf.Variable(arr, trainable=False, name="lrp_const",
                                           experimental_enable_variable_lifting=False)
        node.makers[key] = make
    return node.consts[key]


def _made(node, key, make):
    return np.asarray(make() if make is not None else node.weights[key], np.float32)


def same_structure(a, b):
    """True when graphs ``a`` and ``b`` have the same nodes (ids, kinds, inputs, configurations,
    weight shapes)."""
    def shape(g):
        return [(n.id, n.kind, n.inputs, repr(n.config), sorted((k, np.shape(v)) for k, v in n.weights.items()))
                for n in g.nodes]

    return (a.input_id, a.output_id) == (b.input_id, b.output_id) and shape(a) == shape(b)


def reload(graph, fresh):
    """Give ``graph``'s nodes the weights of ``fresh`` (the same model read again after its weights
    changed; :func:`same_structure`), and every tensor made from them (:func:`const`) its new
    value, in place: the functions traced on ``graph`` compute with the new weights."""
    if not same_structure(graph, fresh):
        raise ValueError("reload needs a graph of the same structure")
    for node, new in zip(graph.nodes, fresh.nodes):
        node.weights = new.weights
        for key, var in node.consts.items():
            var.assign(_made(node, key, node.makers[key]))


def _own(node, kernel, bias):
    if kernel is None:
        kernel = const(node, "kernel" if node.kind in KERNEL else "scale")
    if bias is None:
        bias = const(node, "bias" if node.kind in KERNEL else "shift")
    return kernel, bias


def linear(node, x, kernel=None, bias=None):
    """The linear map of ``node`` on ``x`` with ``kernel``/``bias`` (default: its own weights; a bias
    of None or 0 adds nothing). ``kernel`` is ``scale`` for the affine kinds."""
    c = node.config
    kernel, bias = _own(node, kernel, bias)
    kernel = tf.cast(kernel, tf.float32)
    if node.kind == "Conv2D":
        y = tf.nn.conv2d(x, kernel, strides=c["strides"], padding=c["padding"], dilations=c["dilation_rate"])
    elif node.kind == "DepthwiseConv2D":
        s = c["strides"]
        y = tf.nn.depthwise_conv2d(x, kernel, strides=(1, s[0], s[1], 1), padding=c["padding"],
                                   dilations=c["dilation_rate"])
    elif node.kind == "Dense":
        y = tf.matmul(x, kernel) if x.shape.rank == 2 else tf.tensordot(x, kernel, [[x.shape.rank - 1], [0]])
    else:
        y = x * kernel
    if isinstance(bias, (int, float)) and bias == 0:
        return y
    bias = tf.cast(bias, tf.float32)
    if node.kind in KERNEL and bias.shape.rank == 1:
        return tf.nn.bias_add(y, bias)     # BiasAdd: TF fuses it (and a following ReLU) into the conv
    return y + bias


def linear_transpose(node, s, x, kernel=None):
    """``J^T s`` for the linear map of ``node`` (kernel ``kernel``, default its own) at inputs shaped
    like ``x``: the backward op itself (Conv2DBackpropInput, a transposed matmul...), with no forward
    computation recorded on a tape."""
    c = node.config
    k = tf.cast(_own(node, kernel, 0.0)[0], tf.float32)
    if node.kind == "Conv2D":
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=k, out_backprop=s, strides=[1, *c["strides"], 1],
            padding=c["padding"].upper(), dilations=[1, *c["dilation_rate"], 1])
    if node.kind == "DepthwiseConv2D":
        return tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
            input_sizes=tf.shape(x), filter=k, out_backprop=s, strides=[1, *c["strides"], 1],
            padding=c["padding"].upper(), dilations=[1, *c["dilation_rate"], 1])
    if node.kind == "Dense":
        return tf.matmul(s, k, transpose_b=True) if s.shape.rank == 2 else \
            tf.tensordot(s, k, [[s.shape.rank - 1], [1]])
    return s * k


def attention_weights(node, query, key):
    """The attention ``A`` (B, heads, T, S) of an Attention node for its query (B,T,D) and key
    (B,S,D) inputs: ``softmax(q k^T / sqrt(key_dim))`` per head, ``q`` and ``k`` their
    projections (with bias); with ``causal``, position t attends to s <= t only (as Keras'
    ``use_causal_mask``)."""
    c = node.config
    q = tf.tensordot(query, const(node, "q_kernel"), [[2], [0]]) + const(node, "q_bias")     # (B,T,H,d)
    k = tf.tensordot(key, const(node, "k_kernel"), [[2], [0]]) + const(node, "k_bias")       # (B,S,H,d)
    scores = tf.einsum("bthd,bshd->bhts", q * (1.0 / float(np.sqrt(c["key_dim"]))), k)
    if c["causal"]:
        t, s = tf.shape(scores)[2], tf.shape(scores)[3]
        keep = tf.range(t)[:, None] >= tf.range(s)[None, :]
        scores = tf.where(keep, scores, tf.constant(-1e9, scores.dtype))
    return tf.nn.softmax(scores, axis=-1)


def attention_mix(node, a, v):
    """``sum_s A[b, h, t, s] v[b, s, h, :]``: the values (B,S,heads*value_dim) mixed by the attention
    ``a`` (B,heads,T,S), as (B,T,heads*value_dim)."""
    heads = node.config["heads"]
    shape = tf.shape(v)
    vh = tf.reshape(v, [shape[0], shape[1], heads, -1])
    out = tf.einsum("bhts,bshd->bthd", a, vh)
    return tf.reshape(out, [shape[0], tf.shape(a)[2], shape[2]])


def attention_mix_transpose(node, a, s):
    """``J^T s`` of :func:`attention_mix` in the values, ``a`` held constant: (B,T,H*dv) -> (B,S,H*dv)."""
    heads = node.config["heads"]
    shape = tf.shape(s)
    sh = tf.reshape(s, [shape[0], shape[1], heads, -1])
    out = tf.einsum("bhts,bthd->bshd", a, sh)
    return tf.reshape(out, [shape[0], tf.shape(a)[3], shape[2]])


def norm_mean(node, t):
    """The mean of ``t`` over what a NORM node normalises together, broadcast back to ``t``'s shape:
    the channels (LayerNormalization), or every position and channel of a channel group
    (GroupNormalization, ``groups`` groups of consecutive channels)."""
    if node.kind == "LayerNormalization":
        return tf.reduce_mean(t, axis=-1, keepdims=True)
    groups, rank, channels = node.config["groups"], t.shape.rank, t.shape[-1]
    shape = tf.shape(t)
    grouped = tf.reshape(t, tf.concat([shape[:-1], [groups, channels // groups]], 0))
    mean = tf.reduce_mean(grouped, axis=list(range(1, rank - 1)) + [rank], keepdims=True)
    return tf.reshape(tf.broadcast_to(mean, tf.shape(grouped)), shape)


def _relu(x, c):
    return tfk.activations.relu(x, alpha=c["negative_slope"], max_value=c["max_value"],
                                threshold=c["threshold"])


def apply(node, xs):
    """The output of ``node`` for its input tensors ``xs``."""
    k, c = node.kind, node.config
    x = xs[0] if xs else None
    if k in LINEAR:
        return linear(node, x)
    if k == "Activation":
        return tf.cast(c["fn"](x), tf.float32)
    if k == "ReLU":
        return _relu(x, c)
    if k == "LeakyReLU":
        return tf.nn.leaky_relu(x, alpha=c["alpha"])
    if k == "PReLU":
        return tf.nn.relu(x) + const(node, "alpha") * tf.minimum(x, 0.0)
    if k == "ELU":
        return tf.where(x > 0, x, c["alpha"] * (tf.exp(tf.minimum(x, 0.0)) - 1.0))
    if k == "Softmax":
        return tf.nn.softmax(x, axis=c["axis"])
    if k in NORM:
        mean = norm_mean(node, x)
        var = norm_mean(node, tf.square(x - mean))
        return (x - mean) * tf.math.rsqrt(var + c["epsilon"]) * const(node, "gamma") + const(node, "beta")
    if k == "UnitNormalization":
        return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True), 1e-12))
    if k == "MaxPooling2D":
        return tf.nn.max_pool2d(x, c["pool_size"], c["strides"], c["padding"])
    if k == "AveragePooling2D":
        return tf.nn.avg_pool2d(x, c["pool_size"], c["strides"], c["padding"])
    if k in ("GlobalAveragePooling2D", "GlobalAveragePooling1D"):
        return tf.reduce_mean(x, axis=(1, 2) if k.endswith("2D") else 1, keepdims=c["keepdims"])
    if k in ("GlobalMaxPooling2D", "GlobalMaxPooling1D"):
        return tf.reduce_max(x, axis=(1, 2) if k.endswith("2D") else 1, keepdims=c["keepdims"])
    if k == "Affine":
        return tf.cast(c["call"](x), tf.float32)
    if k == "Attention":
        return attention_mix(node, attention_weights(node, xs[1], xs[2]), x)
    if k == "Flatten":
        return tf.reshape(x, (tf.shape(x)[0], -1))
    if k == "Reshape":
        return tf.reshape(x, (tf.shape(x)[0],) + tuple(c["target_shape"]))
    if k == "ZeroPadding2D":
        (t, b), (l, r) = c["padding"]
        return tf.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    if k == "Cropping2D":
        (t, b), (l, r) = c["cropping"]
        return x[:, t:x.shape[1] - b, l:x.shape[2] - r, :]
    if k == "Dropout":
        return x
    if k == "Permute":
        return tf.transpose(x, (0,) + tuple(c["dims"]))
    if k in ("Maximum", "Minimum"):
        out = xs[0]
        for v in xs[1:]:
            out = tf.maximum(out, v) if k == "Maximum" else tf.minimum(out, v)
        return out
    if k == "Add":
        out = xs[0]
        for v in xs[1:]:          # AddV2, not AddN: grappler's remapper fails on some AddN fan-outs
            out = out + v
        return out
    if k == "Concatenate":
        return tf.concat(list(xs), axis=c["axis"])
    if k == "Gather":
        return tf.gather(x, c["indices"][0] if c["squeeze"] else list(c["indices"]), axis=-1)
    if k == "Stack":
        return tf.stack(list(xs), axis=-1)
    if k == "Resizing":
        return tf.image.resize(x, c["size"], method=c["method"])
    if k == "UpSampling2D":
        return tf.image.resize(x, tf.shape(x)[1:3] * c["size"], method=c["method"])
    if k == "Multiply":
        out = xs[0]
        for v in xs[1:]:
            out = out * v
        return out
    raise ModelError(f"graph node {node.label()} has no forward computation")   # pragma: no cover


# -- reading a model -----------------------------------------------------------------------------
STILL_WORK = "grad, ig, sg, inpgrad, occlusion, rise, lime, kernelshap"   # need no model graph


def _declare_hint(layer):
    return (f"; if it computes A x + b of its one input (a position embedding, a class token, patch "
            f"extraction), declare it affine: affine_layers=[{layer_type(layer)!r}] (command lines: --set "
            f"lrp_graph.affine_layers={layer_type(layer)})")


def _unsupported(layer, why=""):
    return ModelError(f"native LRP cannot read layer {layer.name!r} ({layer_type(layer)}){why}; "
                      f"supported: {', '.join(SUPPORTED_LAYERS)}, {AUGMENTATION_NOTE}; methods that still work: "
                      f"{STILL_WORK}")


def _declared(layer, affine):
    """True when ``affine`` (names and class names the user declared affine) names this layer."""
    return bool(affine) and (getattr(layer, "name", None) in affine or layer_type(layer) in affine)


def _takes_training(layer):
    """Whether ``layer.call`` takes a ``training`` argument (declared and traced custom layers are
    called in inference mode)."""
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _affine_nodes(layer, inputs):
    """A layer (or operation) declared affine: one ``Affine`` node that calls it (inference mode
    where its call takes ``training``)."""
    if len(inputs) != 1:
        raise ModelError(f"native LRP: layer {getattr(layer, 'name', layer_type(layer))!r} ({layer_type(layer)}) "
                         f"was declared affine but takes {len(inputs)} inputs; affine_layers= reads layers of one "
                         "input only")
    call = (lambda x: layer(x, training=False)) if _takes_training(layer) else layer
    return [("Affine", getattr(layer, "name", layer_type(layer)), {}, {"call": call}, False)]


def _pair(v):
    v = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
    return tuple(int(i) for i in v)


def _channels_last(layer, cfg):
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, f" with data_format={cfg.get('data_format')!r} (channels_last only)")


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _input_rank(layer):
    from ..compat import inbound_node, node_inputs

    try:
        return len(node_inputs(inbound_node(layer, 0))[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _channel_axis(layer, axis):
    """Check that a per-channel layer works on the last axis."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _unsupported(layer, f" over axes {axis} (one channel axis, the last, only)")
        axis = axis[0]
    rank = _input_rank(layer)
    if axis != -1 and (rank is None or axis != rank - 1):
        raise _unsupported(layer, f" with axis={axis} (the last axis only)")


def _signal_input(layer):
    """Index of the one input of a Multiply layer with the output's full shape (the signal; the
    others are gates broadcast onto it), or None."""
    from ..compat import inbound_node, node_inputs

    try:
        shapes = [tuple(t.shape[1:]) for t in node_inputs(inbound_node(layer, 0))]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if len({len(s) for s in shapes}) != 1:
        return None

    def gate(i):       # broadcast: size 1 where another input is larger (or of unknown size)
        return any(d == 1 and any(s[k] != 1 for j, s in enumerate(shapes) if j != i)
                   for k, d in enumerate(shapes[i]))

    signals = [i for i in range(len(shapes)) if not gate(i)]
    return signals[0] if len(signals) == 1 else None


def _subtract_nodes(name):
    """``x - y`` (a Subtract layer or operation) as ``x + (-1) y``: a Rescaling of the second input,
    then an Add; the z rule's contributions are then ``x`` and ``-y``."""
    return [("Rescaling", f"{name}/negate", {"scale": _f32([-1.0]), "shift": _f32([0.0])}, {"op": "Multiply"},
             False, (("in", 1),)),
            ("Add", name, {}, {}, False, (("in", 0), ("node", 0)))]


def _operation_nodes(op):
    """The node of a Keras 3 operation written in the model's code (``x + 3.0``, ``x * y``): a
    Rescaling node (``x * scale + shift``, config ``op`` naming the operation), an ``Add`` or a
    ``Multiply`` gate, an activation (``keras.ops.relu(x)``) (:func:`keras_bridge.read_operation`);
    else ModelError naming it."""
    read = read_operation(op)
    name = getattr(op, "name", layer_type(op))
    if read is None:
        raise ModelError(f"native LRP cannot read {name!r} ({layer_type(op)}), an operation written in the "
                         f"model's code (keras.ops, or arithmetic on a layer's output), not a layer; it reads "
                         f"{OPERATIONS_READ}, {POSITIONAL_READ}, and {INDEXING_READ}{_declare_hint(op)}; methods "
                         f"that still work: "
                         f"{STILL_WORK}")
    kind = read.pop("kind")
    if kind == "ExtractPatches":     # a convolution with an identity kernel: patch value (i, j, c) -> (i*w + j)*C + c
        (ph, pw), channels = read["size"], read["channels"]
        depth = ph * pw * channels
        kernel = np.eye(depth, dtype=np.float32).reshape(ph, pw, channels, depth)
        return [("Conv2D", name, {"kernel": kernel, "bias": np.zeros(depth, np.float32)},
                 {"strides": read["strides"], "padding": read["padding"], "dilation_rate": read["dilation_rate"]},
                 False)]
    if kind == "Constant":     # x * S + P with arrays of the tensor's shape (a position embedding)
        return [("Rescaling", name, {"scale": _f32(read["scale"]), "shift": _f32(read["shift"])}, {"op": read["op"]},
                 False)]
    if kind == "Scalar":       # a number, or one per channel
        return [("Rescaling", name, {"scale": _f32(np.atleast_1d(read["scale"])),
                                     "shift": _f32(np.atleast_1d(read["shift"]))}, {"op": read["op"]}, False)]
    if kind in INDEXING or kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "ReLU", "Concatenate", "Permute",
                                    "Reshape"):
        return [(kind, name, {}, read, False)]
    if kind == "Subtract":
        return _subtract_nodes(name)
    if kind == "Activation":    # the name classifies it (relu, relu6, ...); fn computes it exactly
        return [(kind, name, {}, {"activation": read["activation"], "fn": read["fn"]}, False)]
    return [(kind, name, {}, {"signal": _signal_input(op)} if kind == "Multiply" else {}, False)]


def _attention_nodes(layer, inputs):
    """A MultiHeadAttention call as three nodes: the value projection (a Dense node on the tokens,
    its (D, heads, value_dim) kernel flattened to (D, heads * value_dim)), the Attention node
    (inputs: those values, the query, the key; holding the query and key projections) and the
    output projection (a Dense node, kernel (heads * value_dim, D_out)). Calls on (B, tokens,
    channels) inputs with attention over the tokens, ``mha(query, value[, key])`` (or by keyword)
    with at most ``use_causal_mask``; masks are refused."""
    from ..compat import attention_projections

    call = attention_call(layer)
    if call is None or len(inputs) <= max(call[0]):
        raise _unsupported(layer, f" (native LRP reads MultiHeadAttention {ATTENTION_CALLS})")
    (query, value, key), causal = call
    qd, kd, vd, od = attention_projections(layer)
    equations = [d.get_config()["equation"] for d in (qd, kd, vd, od)]
    if equations != ["abc,cde->abde"] * 3 + ["abcd,cde->abe"]:
        raise _unsupported(layer, f" with projections {equations}")

    def kernel_bias(dense, outputs):
        """kernel, bias (zeros without one: shaped like the kernel's axes from ``outputs`` on)"""
        ws = [_f32(w) for w in dense.get_weights()]
        return ws[0], (ws[1] if len(ws) > 1 else np.zeros(ws[0].shape[outputs:], np.float32))

    (qk, qb), (kk, kb), (vk, vb) = (kernel_bias(d, 1) for d in (qd, kd, vd))      # (D, heads, dim)
    ok, ob = kernel_bias(od, 2)                                                    # (heads, dim, D_out)
    heads, key_dim, value_dim = qk.shape[1], qk.shape[2], vk.shape[2]
    name = layer.name
    return [("Dense", f"{name}/value", {"kernel": vk.reshape(vk.shape[0], -1), "bias": vb.reshape(-1)}, {}, False,
             (("in", value),)),
            ("Attention", f"{name}/attention", {"q_kernel": qk, "q_bias": qb, "k_kernel": kk, "k_bias": kb},
             {"heads": int(heads), "key_dim": int(key_dim), "value_dim": int(value_dim),
              "causal": causal}, False, (("node", 0), ("in", query), ("in", key))),
            ("Dense", name, {"kernel": ok.reshape(-1, ok.shape[-1]), "bias": ob}, {}, False, (("node", 1),))]


def _layer_nodes(layer, inputs, affine=()):
    """The node(s) of one layer call: ``[(kind, name, weights, config, fused)]``, each reading
    the one before (the first: the layer's inputs), or ``[(kind, name, weights, config, fused,
    wiring)]`` where ``wiring`` names a node's inputs: ``("in", k)`` the layer's k-th input,
    ``("node", j)`` the j-th node of this list. ``affine``: the names and class names of the layers
    declared affine (read as one ``Affine`` node each)."""
    kind = layer_type(layer)
    if _declared(layer, affine):
        return _affine_nodes(layer, inputs)
    if is_operation(layer):                       # a Keras 3 operation node (keras.ops / x + 3.0)
        return _operation_nodes(layer)
    if kind == "CustomScaleLayer":
        scale = scaled_add(layer)
        if scale is None or len(inputs) != 2:
            raise _unsupported(layer, " (only keras.applications' InceptionResNetV2 layer, on two inputs)")
        return [("Rescaling", f"{layer.name}/scale", {"scale": _f32([scale]), "shift": _f32([0.0])},
                 {"op": "Multiply"}, False, (("in", 1),)),
                ("Add", layer.name, {}, {}, False, (("in", 0), ("node", 0)))]
    if kind == "MultiHeadAttention" and is_keras_layer(layer):
        return _attention_nodes(layer, inputs)
    if kind in ("Average", "Subtract") and is_keras_layer(layer):
        n = len(inputs)
        if kind == "Subtract":
            return _subtract_nodes(layer.name)
        return [("Add", f"{layer.name}/sum", {}, {}, False, tuple(("in", i) for i in range(n))),
                ("Rescaling", layer.name, {"scale": _f32([1.0 / n]), "shift": _f32([0.0])}, {"op": "Multiply"},
                 False, (("node", 0),))]
    cfg = layer.get_config()
    ws = [_f32(w) for w in layer.get_weights()]
    out = []
    if kind == "SeparableConv2D":      # tf.nn.separable_conv2d: depthwise (strided), then 1x1 pointwise
        _channels_last(layer, cfg)
        depthwise, pointwise = ws[0], ws[1]
        bias = ws[2] if cfg.get("use_bias", True) and len(ws) > 2 else np.zeros(pointwise.shape[-1], np.float32)
        padding = str(cfg["padding"]).upper()
        if padding not in ("SAME", "VALID"):
            raise _unsupported(layer, f" with padding={cfg['padding']!r}")
        conv = {"strides": _pair(cfg["strides"]), "padding": padding,
                "dilation_rate": _pair(cfg.get("dilation_rate", 1))}
        point = {"strides": (1, 1), "padding": "VALID", "dilation_rate": (1, 1)}
        zeros = np.zeros(depthwise.shape[2] * depthwise.shape[3], np.float32)
        out = [("DepthwiseConv2D", f"{layer.name}/depthwise", {"kernel": depthwise, "bias": zeros}, conv, False),
               ("Conv2D", f"{layer.name}/pointwise", {"kernel": pointwise, "bias": bias}, point, False)]
        act = activation_name(layer)
        if act not in (None, "linear"):
            out.append(("Activation", f"{layer.name}/{act}", {}, {"activation": act, "fn": layer.activation},
                        True))
        return out
    if kind in KERNEL:
        _channels_last(layer, cfg)
        kernel = ws[0]
        groups = int(cfg.get("groups", 1))
        if groups != 1 and kind == "Conv2D" and kernel.shape[2] == 1:
            # one input channel per group (ConvNeXt's 7x7 convolutions): a depthwise convolution,
            # output channel g * m + k of group g being its channel g's multiplier k, as Keras orders them
            kind, kernel = "DepthwiseConv2D", kernel.reshape(kernel.shape[0], kernel.shape[1], groups, -1)
        elif groups != 1 and kind != "Conv2D":
            raise _unsupported(layer, f" with groups={groups}")
        units = kernel.shape[2] * kernel.shape[3] if kind == "DepthwiseConv2D" else kernel.shape[-1]
        bias = ws[1] if cfg.get("use_bias", True) and len(ws) > 1 else np.zeros(units, np.float32)
        conf = {}
        if kind != "Dense":
            padding = str(cfg["padding"]).upper()
            if padding not in ("SAME", "VALID"):
                raise _unsupported(layer, f" with padding={cfg['padding']!r}")
            conf = {"strides": _pair(cfg["strides"]), "padding": padding,
                    "dilation_rate": _pair(cfg.get("dilation_rate", 1))}
            if kind == "Conv2D" and groups != 1:     # several input channels per group (RegNet, ResNeXt):
                conf["groups"] = groups              # tf.nn.conv2d groups by the kernel's input depth
        out.append((kind, layer.name, {"kernel": kernel, "bias": bias}, conf, False))
        act = activation_name(layer)
        if act not in (None, "linear"):
            out.append(("Activation", f"{layer.name}/{act}", {}, {"activation": act, "fn": layer.activation},
                        True))
        return out
    if kind == "BatchNormalization":
        _channel_axis(layer, cfg.get("axis", -1))
        i = 0
        gamma = beta = None
        if cfg.get("scale", True):
            gamma, i = ws[i], i + 1
        if cfg.get("center", True):
            beta, i = ws[i], i + 1
        mean, var = ws[i], ws[i + 1]
        scale = (1.0 / np.sqrt(var.astype(np.float64) + float(cfg["epsilon"])))
        if gamma is not None:
            scale = scale * gamma
        shift = -mean * scale + (beta if beta is not None else 0.0)
        return [(kind, layer.name, {"scale": _f32(scale), "shift": _f32(shift)}, {}, False)]
    if kind == "Rescaling":
        scale, offset = _f32(cfg["scale"]), _f32(cfg["offset"])
        return [(kind, layer.name, {"scale": scale, "shift": offset}, {}, False)]
    if kind == "Normalization":
        if cfg.get("invert"):
            raise _unsupported(layer, " with invert=True")
        _channel_axis(layer, cfg.get("axis", -1))
        mean = np.asarray(layer.mean, np.float64).reshape(-1)
        std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1)), 1e-7)
        return [(kind, layer.name, {"scale": _f32(1.0 / std), "shift": _f32(-mean / std)}, {}, False)]
    if kind in NORM:
        if cfg.get("rms_scaling"):
            raise _unsupported(layer, " with rms_scaling=True")
        _channel_axis(layer, cfg.get("axis", -1))
        i, gamma, beta = 0, np.ones(1, np.float32), np.zeros(1, np.float32)
        if cfg.get("scale", True):
            gamma, i = ws[i], i + 1
        if cfg.get("center", True):
            beta = ws[i]
        conf = {"epsilon": float(cfg["epsilon"])}
        if kind == "GroupNormalization":
            conf["groups"] = int(cfg["groups"])
        return [(kind, layer.name, {"gamma": gamma, "beta": beta}, conf, False)]
    if kind == "UnitNormalization":
        _channel_axis(layer, cfg.get("axis", -1))
        return [(kind, layer.name, {}, {}, False)]
    if kind in CONVNEXT_LAYERS:
        if len(ws) != 1 or ws[0].ndim != 1:
            raise _unsupported(layer, f" with weights {[w.shape for w in ws]} (one per-channel scale expected)")
        return [("Rescaling", layer.name, {"scale": ws[0], "shift": np.zeros_like(ws[0])}, {}, False)]
    if kind == "Activation":
        act = activation_name(layer)
        return [(kind, layer.name, {}, {"activation": act, "fn": layer.activation}, False)]
    if kind == "ThresholdedReLU":      # tf-keras: x where x > theta, else 0
        return [("ReLU", layer.name, {}, {"negative_slope": 0.0, "threshold": float(cfg["theta"]),
                                          "max_value": None}, False)]
    if kind == "Permute":
        return [(kind, layer.name, {}, {"dims": tuple(int(d) for d in cfg["dims"])}, False)]
    if kind == "ReLU":
        ns = cfg.get("negative_slope") or 0.0
        mv = cfg.get("max_value")
        return [(kind, layer.name, {}, {"negative_slope": float(ns), "threshold": float(cfg.get("threshold") or 0.0),
                                        "max_value": None if mv is None else float(mv)}, False)]
    if kind == "LeakyReLU":
        alpha = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return [(kind, layer.name, {}, {"alpha": float(alpha)}, False)]
    if kind == "ELU":
        return [(kind, layer.name, {}, {"alpha": float(cfg.get("alpha", 1.0))}, False)]
    if kind == "PReLU":                 # max(x, 0) + alpha * min(x, 0), alpha learned per position
        return [(kind, layer.name, {"alpha": ws[0]}, {}, False)]
    if kind == "Softmax":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        return [(kind, layer.name, {}, {"axis": axis}, False)]
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        _channels_last(layer, cfg)
        pool = _pair(cfg["pool_size"])
        strides = _pair(cfg["strides"]) if cfg.get("strides") is not None else pool
        return [(kind, layer.name, {}, {"pool_size": pool, "strides": strides,
                                        "padding": str(cfg["padding"]).upper()}, False)]
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling1D"):
        _channels_last(layer, cfg)
        return [(kind, layer.name, {}, {"keepdims": bool(cfg.get("keepdims", False))}, False)]
    if kind == "Flatten":
        _channels_last(layer, cfg)
        return [(kind, layer.name, {}, {}, False)]
    if kind == "Reshape":
        return [(kind, layer.name, {}, {"target_shape": tuple(int(d) for d in cfg["target_shape"])}, False)]
    if kind in ("ZeroPadding2D", "Cropping2D"):
        _channels_last(layer, cfg)
        key = "padding" if kind == "ZeroPadding2D" else "cropping"
        p = cfg[key]
        if isinstance(p, int):
            p = ((p, p), (p, p))
        p = tuple(_pair(q) for q in p)
        return [(kind, layer.name, {}, {key: p}, False)]
    if kind == "UpSampling2D":
        _channels_last(layer, cfg)
        if cfg.get("interpolation", "nearest") not in ("bilinear", "nearest"):
            raise _unsupported(layer, " (bilinear or nearest only)")
        return [(kind, layer.name, {}, {"size": _pair(cfg["size"]), "method": cfg.get("interpolation", "nearest")},
                 False)]
    if kind == "Resizing":
        _channels_last(layer, cfg)
        if cfg.get("interpolation") not in ("bilinear", "nearest") or any(
                cfg.get(k) for k in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias")):
            raise _unsupported(layer, " (bilinear or nearest only, without crop/pad to aspect ratio or antialias)")
        return [(kind, layer.name, {}, {"size": (int(cfg["height"]), int(cfg["width"])),
                                        "method": cfg["interpolation"]}, False)]
    if (kind in INFERENCE_IDENTITY and is_keras_layer(layer)) or is_augmentation(layer):
        return [("Dropout", layer.name, {}, {"layer_class": kind}, False)]
    if kind in MERGE:
        conf = {"axis": int(cfg.get("axis", -1))} if kind == "Concatenate" else {}
        if len(inputs) < 2:
            raise _unsupported(layer, f" with {len(inputs)} input(s)")
        if kind == "Multiply":
            conf = {"signal": _signal_input(layer)}
        return [(kind, layer.name, {}, conf, False)]
    raise _unsupported(layer, _declare_hint(layer))


def read_model(model, affine=()):
    """The :class:`Graph` of a tf-keras or Keras 3 model with one input and one output.

    ``affine``: names or class names of layers (or Keras 3 operations) to read as ``Affine`` nodes,
    maps ``A x + b`` of their one input that the user declares (see the module docstring).

    Raises ModelError (one line) naming the first layer it cannot read and its class, a declared
    name that matches no layer, or a declared layer that is not affine.
    """
    from ..twin import walk_layer_calls      # the walk over layer calls, nested models inlined

    model_kind(model)
    affine = frozenset(affine or ())
    nodes = [Node(0, "InputLayer", "input")]

    def visit(layer, args, bound=None):
        ids = []
        for a in args:
            if isinstance(a, tuple) and a and a[0] == "input":
                if bound is not None:                   # the input of a traced custom layer's call
                    ids.append(bound[a[1]])
                    continue
                if a[1] != 0:
                    raise ModelError(f"native LRP needs a model with one input, got input #{a[1]}")
                ids.append(0)
            else:
                ids.append(a)
        if layer_type(layer) == "InputLayer":       # a nested model's own input layer
            return ids
        traced = None if _declared(layer, affine) else _traced_call(layer)
        if traced is not None:                      # its sublayers and operations, inlined
            first = len(nodes)
            try:
                out = walk_layer_calls(traced, lambda inner, a: visit(inner, a, ids))[0]
                return [ids[out[1]] if isinstance(out, tuple) else out] * 8
            except ModelError:                      # not all readable: refused as the layer itself
                del nodes[first:]
        prev, made = tuple(ids), []
        for kind, name, weights, config, fused, *wiring in _layer_nodes(layer, ids, affine):
            if wiring:
                prev = tuple(ids[k] if src == "in" else made[k] for src, k in wiring[0])
            node = Node(len(nodes), kind, name, prev, weights, config, layer, fused)
            nodes.append(node)
            made.append(node.id)
            prev = (node.id,)
        return [prev[0]] * 8

    outs = walk_layer_calls(model, visit)
    if len(outs) != 1:
        raise ModelError(f"native LRP needs a model with one output, got {len(outs)}")
    out = outs[0]
    if isinstance(out, tuple):
        raise ModelError("native LRP: the model's output is its input (no layers)")
    _mark_self_gated(nodes)
    graph = Graph(nodes, 0, out, name=getattr(model, "name", "model"))
    if affine:
        _check_declared(graph, model, affine)
    return graph


def _traced_call(layer):
    """A custom layer (the user's class, one input; Keras 3 or tf-keras): its call traced on a
    symbolic input of the shape it was called with, as a functional model whose layers are the
    custom layer's own sublayers and operations (their weights are the model's; tf-keras writes
    the operations as TFOpLambda layers); None for any other layer, or when the trace fails.
    (:func:`read_model` inlines it, or refuses the layer as unsupported where the traced graph
    cannot be read.) Tracing adds a call node to each sublayer, as building any functional model
    from them would."""
    from ..compat import inbound_node, keras_history, node_inputs
    from ..keras_bridge import keras3

    if is_keras_layer(layer) or is_operation(layer) or layer_type(layer) in SUPPORTED_LAYERS + CONVNEXT_LAYERS:
        return None
    try:
        k = tfk if isinstance(layer, tfk.layers.Layer) else keras3()
        if not isinstance(layer, k.layers.Layer) or isinstance(layer, k.Model):
            return None
        tensors = node_inputs(inbound_node(layer, 0))
        if len(tensors) != 1:
            return None
        x = k.Input(batch_shape=tuple(tensors[0].shape), dtype=tensors[0].dtype)
        y = layer.call(x, training=False) if _takes_training(layer) else layer.call(x)
        if keras_history(y) is None:          # not one symbolic tensor (a tuple, a constant...)
            return None
        return k.Model(x, y, name=f"{layer.name}_call")
    except Exception:  # noqa: BLE001 - any failure: the layer is unsupported, refused by name
        return None


AFFINE_TOLERANCE = 1e-3    # of the output's scale: float32 rounding passes, a ReLU or a square does not


def _check_declared(graph, model, affine):
    """Every name in ``affine`` matched a layer, and every ``Affine`` node is affine on a probe: for a
    random image ``x`` and random directions ``d`` at the scale of the node's input, ``f(a + d) +
    f(a - d) - 2 f(a)`` and ``f(a + 2d) - 2 f(a + d) + f(a)`` vanish (second differences: 0 for
    ``A x + b``, of the order of ``f`` itself for a ReLU or a product). ModelError otherwise."""
    from ..keras_bridge import input_shape

    found = {n.layer for n in graph.nodes if n.kind == "Affine"}
    names = {getattr(l, "name", None) for l in found} | {layer_type(l) for l in found}
    missing = sorted(affine - names)
    if missing:
        raise ModelError(f"affine_layers names {', '.join(map(repr, missing))}, which is no layer name or class of "
                         f"model {graph.name!r}")
    rng = np.random.default_rng(0)
    acts = graph.activations(rng.uniform(0.0, 1.0, (1, *input_shape(model))).astype(np.float32))
    for node in graph.nodes:
        if node.kind != "Affine":
            continue
        a = acts[node.inputs[0]]
        d = tf.constant(rng.standard_normal(a.shape).astype(np.float32)) * (float(tf.math.reduce_std(a)) + 1e-3)
        f = [apply(node, [a + k * d]) for k in (-1.0, 0.0, 1.0, 2.0)]
        scale = max(float(tf.reduce_max(tf.abs(v))) for v in f) + 1e-12
        err = max(float(tf.reduce_max(tf.abs(f[2] + f[0] - 2.0 * f[1]))),
                  float(tf.reduce_max(tf.abs(f[3] - 2.0 * f[2] + f[1])))) / scale
        if not err <= AFFINE_TOLERANCE:
            raise ModelError(f"native LRP: layer {node.name!r} ({layer_type(node.layer)}) was declared affine but is "
                             f"not: its second differences on a probe input reach {err:.2g} of its output (0 for "
                             f"A x + b); declare only layers that compute A x + b of their input")


# what may stand between x and its gate f(x) in a product x * f(x): elementwise maps of one input
_GATE_PATH = ELEMENTWISE + AFFINE + ("Dropout",)


def _mark_self_gated(nodes):
    """A product ``x * f(x)`` of two same-size inputs, ``f`` a chain of elementwise maps of ``x``
    (swish written as ``x * sigmoid(x)``; tf-keras MobileNetV3's hard swish
    ``x * relu6(x + 3) / 6``), is an elementwise activation of ``x``: its Multiply node gets
    ``signal`` = the index of ``x`` (the rule ``signal`` then gives ``x`` all the relevance, as the
    rule ``pass`` does for the same activation written as one layer) and ``self_gated`` = True."""
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        if node.kind != "Multiply" or node.config.get("signal") is not None or len(node.inputs) != 2:
            continue
        for j in (0, 1):
            x, i = node.inputs[1 - j], node.inputs[j]
            while i != x and by_id[i].kind in _GATE_PATH and len(by_id[i].inputs) == 1:
                i = by_id[i].inputs[0]
            if i == x and node.inputs[j] != x:
                node.config.update(signal=1 - j, self_gated=True)
                break
