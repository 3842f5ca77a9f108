"""Interventional explanations: causal path graphs learned by weight interventions (study 2).

Reproduces the method of arXiv 2305.08950 (nbereux/Interventional-Explanations-of-Neural-Networks)
as batched TensorFlow programs, for any chain of Conv2D / Dense / pooling / Flatten / activation
layers (tf-keras or Keras 3).

**Graph learning (top-down).** The weight layers are walked from the last one (the logits) back to
the first Conv2D; each layer ``L`` is fed by the previous weight layer ``P``. Samples are the
correctly classified inputs of the target class (at most ``n_samples``); ``Y_obs`` is their target
logit. Starting from the effect set ``E = {target}``, for every parent unit ``j`` of ``P`` and
every sample the weights from ``j`` into every unit of ``E`` are set to ``u`` and the target logit
``Y_w`` recorded. Hard interventions use ``u = 0``; soft ones draw every weight of the slice from
``U(beta, beta + soft_width)`` (one independent draw per weight, per unit and per sample). A Dense
weight is ``W[j, e]``; a conv weight is the kernel slice ``W[:, :, j, e]``; a Dense layer after a
Flatten of a conv output has one block of rows per channel ``j`` (rows ``p * C + j``). Unit ``j``
is kept when (one-sided z-test, ``z = 1.65`` for p = 0.05)::

    mean(Y_w) < mean(Y_obs) - z * sqrt(std(Y_w)^2 / N + std(Y_obs)^2 / N)

and, if no unit passes, the units with ``mean(Y_w / Y_obs - 1) < fallback`` (-0.001) are kept.
``graph[L] = (kept parents, E)``; the kept parents become the next effect set.

**Batched and exact, the model is never edited.** The inputs ``x_L`` and pre-activations ``z_L``
of every weight layer are cached once. Changing unit ``j``'s weights into ``E`` to ``u`` changes
``z_L`` only in the channels of ``E``, by::

    Dense:  delta_z[e]       = sum_r (u[r, e] - W[r, e]) * x_L[r]     (rows r of channel j)
    Conv2D: delta_z[:, :, e] = conv(x_L[:, :, j], u - W[:, :, j, e])  (L's strides/padding)

so ``z_L + delta`` is formed for a chunk of ``(unit, sample)`` pairs at once (the per-pair conv
is one depthwise convolution with the pairs as channels) and only the layers after ``L`` are run.

**Attributions at a conv layer** (``layer_name``, study 2: ``conv2``): for each effect channel
``c`` of that layer and each parent channel ``i`` (of the previous conv layer) in the graph, the
parent's pre-activation map ``A_i`` is convolved in full mode with ``W[:, :, i, c]`` (a true
convolution, kernel flipped, output ``(h + kh - 1, w + kw - 1)``, like
``scipy.signal.convolve2d(..., mode="full")``), each map is passed through a spatial softmax,
maps are averaged over the parents ``i`` and resized (bilinear) to the input size. One map per
node ``c``; their sum is the map :class:`Interventional` returns.

**Graph stability**: ``layer_name_soft`` (``fc3``) is re-learned ``repeats`` times for every
``beta`` in ``0, 0.01, ..., 0.5`` with interventions of size ``U(0, beta)``; the appearance rate of
every node of the learned graph is reported per beta (figures in
:mod:`xaitf.interventional_plots`). Protocol ``"original"`` (study 2's code): every repeat draws a
fresh random subset of the eligible images and one scalar ``u`` for the whole layer; protocol
``"fixed"``: the graph's own first ``n_samples`` images every time and one draw per weight (see
:func:`graph_stability`).
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import DataError, InputError, MethodError, ModelError
from ..explainer import Explainer, as_batch, chunks, progress
from ..keras_bridge import activation_name, chain_layers, is_softmax_layer, layer_type, model_kind

GRAPH_FORMAT = "xaitf.interventional.graph/1"

# layer class -> role in the chain
_WEIGHT = {"Dense": "dense", "Conv2D": "conv"}
_PASS = {  # layers that keep channels (run as they are in the tail)
    "MaxPooling2D": "pool", "AveragePooling2D": "pool", "ZeroPadding2D": "pool",
    "ReLU": "act", "Activation": "act", "LeakyReLU": "act", "ELU": "act", "Softmax": "act",
    "Dropout": "dropout", "SpatialDropout2D": "dropout", "GaussianDropout": "dropout",
    "GaussianNoise": "dropout", "BatchNormalization": "bn",
    "GlobalAveragePooling2D": "gpool", "GlobalMaxPooling2D": "gpool",
    "Rescaling": "scale", "Normalization": "scale",      # input scaling inside the model
}
_SUPPORTED = "Conv2D, Dense, MaxPooling2D, AveragePooling2D, Global*Pooling2D, Flatten, " \
             "ReLU/Activation/LeakyReLU/ELU, Dropout, BatchNormalization, ZeroPadding2D, Rescaling, Normalization"


# ----------------------------------------------------------------------------------------------
# the model as a chain of layer operations
# ----------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    layer: object
    name: str
    role: str                      # dense | conv | pool | act | dropout | bn | gpool | flatten | scale
    in_shape: tuple = ()
    out_shape: tuple = ()
    kernel: object = None          # tf constant (weight layers)
    bias: object = None
    activation: object = None      # callable or None (weight layers)


def _shape(t):
    return tuple(None if d is None else int(d) for d in list(t.shape)[1:])


class Chain:
    """A chain model (one input, each layer feeding the next) as separately callable operations.

    Built once from a tf-keras or Keras 3 model; the model itself is never modified. A final
    softmax (separate layer, or the last Dense's activation) is stripped, so :meth:`forward`
    returns logits. Raises :class:`ModelError` naming the first layer that is not a supported
    chain layer.
    """

    def __init__(self, model):
        model_kind(model)
        self.model = model
        self.name = getattr(model, "name", "model")
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(f"interventional needs a model with one input and one output, got "
                             f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)")
        if not [l for l in model.layers if layer_type(l) != "InputLayer"]:
            raise ModelError("interventional needs a model with layers, got an empty model")
        layers, reason = chain_layers(model)
        if layers is None:
            raise ModelError(f"interventional needs a chain model (each layer feeding the next); {reason}: "
                             "rebuild the model as a Sequential chain")
        last = len(layers) - 1
        if is_softmax_layer(layers[last]) and layer_type(layers[last]) in ("Softmax", "Activation"):
            layers = layers[:-1]
            last -= 1
        self.entries = []
        for i, l in enumerate(layers):
            t = layer_type(l)
            e = _Entry(l, l.name, _WEIGHT.get(t) or _PASS.get(t) or ("flatten" if t == "Flatten" else ""),
                       _shape(l.input), _shape(l.output))
            if not e.role:
                raise ModelError(f"interventional cannot handle layer {l.name!r} ({t}); supported "
                                 f"layers: {_SUPPORTED}")
            if e.role in ("pool", "gpool", "conv", "flatten") and \
                    getattr(l, "data_format", "channels_last") != "channels_last":
                raise ModelError(f"interventional needs channels_last layers; {l.name!r} is "
                                 f"{l.data_format}")
            if e.role in ("dense", "conv"):
                w = l.get_weights()
                e.kernel = tf.constant(w[0])
                e.bias = tf.constant(w[1]) if getattr(l, "use_bias", True) and len(w) > 1 else None
                act = activation_name(l)
                e.activation = None if act in (None, "linear") or (i == last and act == "softmax") \
                    else l.activation
                if e.role == "dense" and len(e.in_shape) != 1:
                    raise ModelError(f"interventional needs Dense layers on vectors; {l.name!r} gets "
                                     f"{e.in_shape} (add a Flatten before it)")
                if e.role == "conv":
                    if getattr(l, "groups", 1) != 1:
                        raise ModelError(f"interventional cannot handle grouped convolution {l.name!r}")
                    if str(l.padding).lower() not in ("valid", "same"):
                        raise ModelError(f"interventional cannot handle padding {l.padding!r} of {l.name!r}")
            self.entries.append(e)
        self.weights = [i for i, e in enumerate(self.entries) if e.role in ("dense", "conv")]
        if not self.weights:
            raise ModelError("interventional needs at least one Conv2D or Dense layer")
        self.num_outputs = int(self.entries[-1].out_shape[-1])
        self._engines = {}

    # -- layer operations ----------------------------------------------------------------------
    def preact(self, i, h):
        """Pre-activation of weight layer ``i``: ``x @ W + b`` or ``conv(x, W) + b``."""
        e = self.entries[i]
        h = tf.cast(h, e.kernel.dtype)
        if e.role == "dense":
            z = tf.matmul(h, e.kernel)
        else:
            l = e.layer
            z = tf.nn.conv2d(h, e.kernel, strides=list(l.strides), padding=str(l.padding).upper(),
                             dilations=list(l.dilation_rate))
        return z if e.bias is None else z + e.bias

    def post(self, i, z):
        """Activation of weight layer ``i`` (none for a stripped final softmax)."""
        act = self.entries[i].activation
        return z if act is None else act(z)

    def apply(self, i, h):
        """Run layer ``i`` on ``h`` (inference mode)."""
        e = self.entries[i]
        if e.role in ("dense", "conv"):
            return self.post(i, self.preact(i, h))
        if e.role in ("dropout", "bn"):
            return e.layer(h, training=False)
        return e.layer(h)

    def run(self, h, start=0, stop=None):
        for i in range(start, len(self.entries) if stop is None else stop):
            h = self.apply(i, h)
        return h

    def tail(self, k):
        """``z_k -> logits``: the activation of weight layer ``k`` and every layer after it."""
        def fn(z):
            return self.run(self.post(k, z), k + 1)
        return fn

    def index(self, name):
        for i, e in enumerate(self.entries):
            if e.name == name:
                return i
        raise ModelError(f"model has no layer {name!r} in its chain; layers: "
                         f"{', '.join(e.name for e in self.entries)}")

    def map_layer(self, name=None):
        """Index of the node maps' layer: a Conv2D fed by another Conv2D (the parent whose channels
        the graph keeps); ``name`` None: the last such layer (LeNet: conv2, study 2's)."""
        fits = [k for k in self.weights if self.entries[k].role == "conv"
                and self.parent(k) is not None and self.entries[self.parent(k)].role == "conv"]
        if name is None and fits:
            return fits[-1]
        if name is not None and self.index(name) in fits:
            return self.index(name)
        convs = ", ".join(self.entries[k].name for k in self.weights if self.entries[k].role == "conv")
        what = f"{name!r} is not one" if name is not None else "this model has none"
        raise ModelError(f"interventional maps are read at a Conv2D fed by another Conv2D (layer_name); "
                         f"{what} (Conv2D layers: {convs or 'none'})")

    def parent(self, k):
        """Index of the weight layer feeding weight layer ``k`` (None for the first one)."""
        pos = self.weights.index(k)
        return self.weights[pos - 1] if pos > 0 else None

    # -- cached activations --------------------------------------------------------------------
    def forward(self, x, batch_size=256):
        """Logits for ``x`` (numpy), in chunks."""
        out = [np.asarray(self.run(tf.constant(x[s]))) for s in chunks(len(x), batch_size)]
        return np.concatenate(out)

    def cache(self, x, batch_size=256):
        """Inputs and pre-activations of every weight layer for ``x``: ``({k: x_k}, {k: z_k}, logits)``."""
        xs, zs, logits = {k: [] for k in self.weights}, {k: [] for k in self.weights}, []
        for s in chunks(len(x), batch_size):
            h = tf.constant(x[s])
            for i in range(len(self.entries)):
                if i in xs:
                    xs[i].append(h)
                    z = self.preact(i, h)
                    zs[i].append(z)
                    h = self.post(i, z)
                else:
                    h = self.apply(i, h)
            logits.append(h)
        cat = lambda v: tf.concat(v, 0)  # noqa: E731
        return ({k: cat(v) for k, v in xs.items()}, {k: cat(v) for k, v in zs.items()},
                np.asarray(cat(logits)))

    # -- parent units of a weight layer --------------------------------------------------------
    def parent_rows(self, k):
        """For Dense layer ``k``: array (C, P) of the input rows fed by each parent channel.

        A Flatten of an (h, w, C) map puts channel ``j`` at rows ``p * C + j`` (channels_last);
        a vector input (after a Dense or a global pooling) has one row per unit.
        """
        e = self.entries[k]
        d = int(e.in_shape[0])
        p = self.parent(k)
        flat = None
        for i in range(p + 1 if p is not None else 0, k):
            if self.entries[i].role == "flatten":
                flat = self.entries[i].in_shape
        if flat is not None and len(flat) == 3:
            c = int(flat[-1])
            rows = np.arange(d).reshape(-1, c).T
        else:
            rows = np.arange(d)[:, None]
        return rows.astype(np.int32)

    def n_parent_units(self, k):
        e = self.entries[k]
        return int(e.in_shape[-1]) if e.role == "conv" else int(self.parent_rows(k).shape[0])

    def units(self, k):
        return int(self.entries[k].out_shape[-1])


# ----------------------------------------------------------------------------------------------
# batched interventions
# ----------------------------------------------------------------------------------------------
class _Engine:
    """Target logit after intervening on (unit, sample) pairs of one weight layer, batched."""

    def __init__(self, chain, k, effects, target):
        self.chain, self.k = chain, k
        e = chain.entries[k]
        self.role = e.role
        effects = np.asarray(effects, np.int32)
        dt = e.kernel.dtype
        onehot = tf.one_hot(effects, chain.units(k), dtype=dt)          # (|E|, D_out)
        tail = chain.tail(k)
        target = int(target)
        if e.role == "dense":
            rows = tf.constant(chain.parent_rows(k))                      # (C, P)
            w_e = tf.gather(e.kernel, effects, axis=1)                    # (D_in, |E|)
            self.slice_shape = (int(rows.shape[1]), len(effects))

            def step(x, z, s, j, u):
                xs, zs = tf.gather(x, s), tf.gather(z, s)
                r = tf.gather(rows, j)                                    # (B, P)
                a = tf.gather(tf.cast(xs, dt), r, batch_dims=1)           # (B, P)
                delta = tf.einsum("bp,bpe->be", a, tf.cast(u, dt) - tf.gather(w_e, r))
                return tail(zs + tf.matmul(delta, onehot))[:, target]
            u_rank = 3
        else:
            l = e.layer
            w_t = tf.transpose(tf.gather(e.kernel, effects, axis=3), [2, 0, 1, 3])  # (Cin,kh,kw,|E|)
            kh, kw = int(w_t.shape[1]), int(w_t.shape[2])
            self.slice_shape = (kh, kw, len(effects))
            strides = [1, int(l.strides[0]), int(l.strides[1]), 1]
            dil = [int(d) for d in l.dilation_rate]
            pad = str(l.padding).upper()
            n_e = len(effects)

            def step(x, z, s, j, u):
                xs, zs = tf.gather(x, s), tf.gather(z, s)
                xj = tf.gather(tf.cast(xs, dt), j, axis=3, batch_dims=1)  # (B, H, W)
                kern = tf.cast(u, dt) - tf.gather(w_t, j)                 # (B, kh, kw, |E|)
                out = tf.nn.depthwise_conv2d(tf.transpose(xj, [1, 2, 0])[None],
                                             tf.transpose(kern, [1, 2, 0, 3]),
                                             strides=strides, padding=pad, dilations=dil)
                hw = tf.shape(out)[1:3]
                delta = tf.reshape(out[0], tf.concat([hw, [-1, n_e]], 0))  # (H', W', B, |E|)
                delta = tf.transpose(delta, [2, 0, 1, 3])
                return tail(zs + tf.einsum("bhwe,ed->bhwd", delta, onehot))[:, target]
            u_rank = 4
        self.u_rank = u_rank
        spec = lambda shape, dtype=tf.float32: tf.TensorSpec(shape, dtype)  # noqa: E731
        self._eager = step
        self._calls = 0
        self._step = tf.function(step, input_signature=[
            spec((None,) + tuple(e.in_shape)), spec((None,) + tuple(e.out_shape), dt),
            spec((None,), tf.int32), spec((None,), tf.int32), spec((None,) * u_rank)], autograph=False)

    def run(self, x, z, units, u_of_unit=None, batch_size=4096, show=False, desc=None):
        """Target logits (n_units, N) with unit ``units[q]`` intervened on, for every sample.

        ``u_of_unit(q)`` returns the intervention values for ``units[q]``: ``(N, *slice_shape)``
        (soft) or None (hard: u = 0). Pairs are taken unit-major in chunks of ``batch_size``.
        """
        n = int(x.shape[0])
        units = np.asarray(units, np.int32)
        total = len(units) * n
        out = np.empty(total, np.float64)
        hard = u_of_unit is None
        cur = {}
        pieces = chunks(total, batch_size)
        # tracing costs a few tenths of a second: the first two runs of a few chunks go eagerly
        # (the same ops); long runs and an engine used again and again (stability) are traced
        self._calls += 1
        step = self._step if (self._calls > 2 or len(pieces) > 3) else self._eager
        for sl in progress(pieces, show, desc=desc):
            p = np.arange(sl.start, sl.stop)
            q, s = p // n, p % n
            if hard:
                u = np.zeros((len(p),) + (1,) * (self.u_rank - 1), np.float32)
            else:
                cur = {k: v for k, v in cur.items() if k >= q[0]}   # chunks are unit-major
                for qq in np.unique(q):
                    if qq not in cur:
                        cur[qq] = np.asarray(u_of_unit(int(qq)), np.float32)
                u = np.concatenate([cur[qq][s[q == qq]] for qq in np.unique(q)])
            y = step(x, z, tf.constant(s, tf.int32), tf.constant(units[q], tf.int32),
                           tf.constant(u))
            out[sl] = np.asarray(y, np.float64)
        return out.reshape(len(units), n)


def _engine(chain, k, effects, target):
    key = (k, tuple(int(e) for e in effects), int(target))
    if key not in chain._engines:
        chain._engines[key] = _Engine(chain, k, effects, target)
    return chain._engines[key]


def soft_draw(seed, stream, shape, low, high):
    """Soft intervention values ``U(low, high)`` of ``shape`` for one unit; ``stream`` is a tuple
    of ints (layer, unit, repeat, ...) so that every unit's draw is fixed by the seed alone."""
    rng = np.random.default_rng([int(seed)] + [int(v) for v in stream])
    return rng.uniform(low, high, size=shape).astype(np.float32)


def intervene(model, layer, effects, x, target, units=None, u=None, low=0.0, high=0.01, seed=0,
              batch_size=4096, show=False):
    """Target logits after intervening on the weights from each parent unit into ``effects``.

    Args:
        model: a chain model or a :class:`Chain`.
        layer: name of the intervened Dense/Conv2D layer ``L``.
        effects: units/channels ``E`` of ``L`` whose incoming weights from the parent unit change.
        x: inputs (N, H, W, C).
        target: the logit recorded.
        units: parent units intervened on (default: all channels of ``L``'s parent).
        u: ``"hard"``/None (u = 0), ``"soft"`` (every weight drawn from ``U(low, high)`` per unit and
            sample, seeded by ``seed``), or an array ``(len(units), N, *slice)`` of values, where
            slice is ``(P, |E|)`` for Dense (P rows per parent channel) and ``(kh, kw, |E|)`` for
            Conv2D.
        batch_size: (unit, sample) pairs per forward chunk.

    Returns:
        ``(y_w, y_obs)``: (n_units, N) intervened target logits and (N,) unintervened ones.
    """
    chain = model if isinstance(model, Chain) else Chain(model)
    k = chain.index(layer)
    if chain.entries[k].role not in ("dense", "conv"):
        raise ModelError(f"layer {layer!r} is a {layer_type(chain.entries[k].layer)}, not Dense/Conv2D")
    x = np.asarray(x, np.float32)
    xs, zs, logits = chain.cache(x)
    units = np.arange(chain.n_parent_units(k)) if units is None else np.asarray(units)
    eng = _engine(chain, k, effects, target)
    n = len(x)
    if u is None or (isinstance(u, str) and u == "hard"):
        fn = None
    elif isinstance(u, str) and u == "soft":
        fn = lambda q: soft_draw(seed, (k, units[q]), (n,) + eng.slice_shape, low, high)  # noqa: E731
    elif isinstance(u, str):
        raise MethodError(f"u must be 'hard', 'soft' or an array, got {u!r}")
    else:
        arr = np.asarray(u, np.float32)
        if arr.ndim == 0:
            arr = np.full((len(units), n) + eng.slice_shape, arr, np.float32)
        want = (len(units), n) + eng.slice_shape
        if arr.shape != want:
            raise InputError(f"u must have shape {want} (units, samples, *slice), got {arr.shape}")
        fn = lambda q: arr[q]  # noqa: E731
    y = eng.run(xs[k], zs[k], units, fn, batch_size=batch_size, show=show)
    return y, logits[:, int(target)].astype(np.float64)


# ----------------------------------------------------------------------------------------------
# selection rule
# ----------------------------------------------------------------------------------------------
def select_units(y_w, y_obs, z=1.65, fallback=-0.001, ddof=1):
    """Parent units whose intervention lowers the target logit (one-sided z-test, then fallback).

    Keep unit j if ``mean(Y_w[j]) < mean(Y_obs) - z * sqrt(std(Y_w[j])^2/N + std(Y_obs)^2/N)``
    (``z = 1.65``: one-sided, p = 0.05). If no unit passes, keep the units with
    ``mean(Y_w[j] / Y_obs - 1) < fallback`` (-0.001: a mean relative drop of more than 0.1%).

    Args:
        y_w: (units, N) target logits under intervention; y_obs: (N,) without intervention.
        ddof: delta degrees of freedom of the standard deviations (1: sample std; 0 when N = 1).

    Returns:
        dict: ``selected`` (list of unit indices), ``rule`` ("z-test", "fallback" or "none"),
        ``mean`` (units,), ``threshold`` (units,), ``relative`` (units,).
    """
    y_w = np.asarray(y_w, np.float64)
    y_obs = np.asarray(y_obs, np.float64)
    if y_w.ndim != 2 or y_obs.ndim != 1 or y_w.shape[1] != y_obs.shape[0] or y_obs.size == 0:
        raise InputError(f"select_units needs y_w (units, N) and y_obs (N,), got {y_w.shape} "
                         f"and {y_obs.shape}")
    n = y_obs.size
    dd = ddof if n > ddof else 0
    mean_w = y_w.mean(1)
    std_w = y_w.std(1, ddof=dd)
    thr = y_obs.mean() - z * np.sqrt(std_w ** 2 / n + y_obs.std(ddof=dd) ** 2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (y_w / y_obs - 1.0).mean(1)
    sel = np.flatnonzero(mean_w < thr)
    rule = "z-test"
    if sel.size == 0:
        sel = np.flatnonzero(rel < fallback)
        rule = "fallback" if sel.size else "none"
    return {"selected": [int(v) for v in sel], "rule": rule, "mean": mean_w, "threshold": thr,
            "relative": rel}


# ----------------------------------------------------------------------------------------------
# the graph
# ----------------------------------------------------------------------------------------------
@dataclass
class Link:
    """``graph[layer] = (parents, effects)``: units of ``parent`` kept as causes of ``effects``."""
    layer: str
    parent: str
    parents: list
    effects: list
    rule: str = "z-test"


@dataclass
class CausalGraph:
    """A learned causal path graph: one :class:`Link` per layer, output side first."""
    target: int
    links: list
    model: str = ""
    settings: dict = field(default_factory=dict)
    n_samples: int = 0

    def __getitem__(self, layer):
        if layer == "label":
            return self.target
        for link in self.links:
            if link.layer == layer:
                return link.parents, link.effects
        raise KeyError(f"graph has no layer {layer!r}; layers: {', '.join(self.layers)}")

    def __contains__(self, layer):
        return any(link.layer == layer for link in self.links)

    @property
    def layers(self):
        return [link.layer for link in self.links]

    def link(self, layer):
        for lk in self.links:
            if lk.layer == layer:
                return lk
        raise KeyError(f"graph has no layer {layer!r}; layers: {', '.join(self.layers)}")

    def nodes(self):
        """``{layer name: sorted kept units}`` over parents and effects, input side first."""
        out = {}
        for lk in reversed(self.links):
            out.setdefault(lk.parent, set()).update(lk.parents)
            out.setdefault(lk.layer, set()).update(lk.effects)
        return {k: sorted(v) for k, v in out.items()}

    def to_dict(self):
        return {"format": GRAPH_FORMAT, "model": self.model, "target": int(self.target),
                "label": int(self.target), "n_samples": int(self.n_samples),
                "settings": self.settings,
                "layers": [{"layer": lk.layer, "parent": lk.parent,
                            "parents": [int(v) for v in lk.parents],
                            "effects": [int(v) for v in lk.effects], "rule": lk.rule}
                           for lk in self.links]}

    @classmethod
    def from_dict(cls, d):
        try:
            links = [Link(e["layer"], e["parent"], list(e["parents"]), list(e["effects"]),
                          e.get("rule", "z-test")) for e in d["layers"]]
            return cls(int(d["target"]), links, d.get("model", ""), dict(d.get("settings", {})),
                       int(d.get("n_samples", 0)))
        except (KeyError, TypeError) as e:
            raise DataError(f"not an interventional graph (missing {e}); expected the JSON written "
                            "by xaitf.methods.interventional.save_graph") from None


def save_graph(graph, path):
    """Write ``graph`` as JSON (layer -> parents, effects; target; settings; model name)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(graph.to_dict(), f, indent=1)
    os.replace(tmp, path)
    return path


def load_graph(path):
    """Read a graph written by :func:`save_graph`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"graph file not found: {path} (learn one with learn_graph and save_graph)")
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"graph file {path} is not valid JSON ({e})") from None
    return CausalGraph.from_dict(d)


# ----------------------------------------------------------------------------------------------
# learning
# ----------------------------------------------------------------------------------------------
def class_samples(chain, images, labels, target, n_samples, batch_size=256):
    """The first ``n_samples`` inputs of class ``target`` that the model classifies correctly."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(1)
    if len(images) != len(labels):
        raise InputError(f"data needs as many labels as images, got {len(images)} and {len(labels)}")
    idx = np.flatnonzero(labels == target)
    keep = []
    for s in chunks(len(idx), batch_size):
        pred = chain.forward(images[idx[s]], batch_size).argmax(1)
        keep.extend(idx[s][pred == target].tolist())
        if len(keep) >= n_samples:
            break
    keep = keep[:n_samples]
    if not keep:
        raise DataError(f"no correctly classified input of class {target} in the data "
                        f"({idx.size} inputs labelled {target}): pass more data or another class")
    return images[keep]


def learn_layer(chain, layer, effects, target, x, cache=None, soft=False, low=0.0, high=0.01,
                z=1.65, fallback=-0.001, seed=0, stream=(), batch_size=4096, show=False):
    """Learn one link: the parents of ``layer`` whose intervention into ``effects`` lowers the target.

    Returns the :func:`select_units` dict plus ``y_w`` (units, N) and ``y_obs`` (N,).
    """
    k = chain.index(layer) if isinstance(layer, str) else layer
    xs, zs, logits = cache if cache is not None else chain.cache(x)
    eng = _engine(chain, k, effects, target)
    n = int(xs[k].shape[0])
    units = np.arange(chain.n_parent_units(k))
    fn = None
    if soft:
        shape = (n,) + eng.slice_shape
        fn = lambda q: soft_draw(seed, (k,) + tuple(stream) + (q,), shape, low, high)  # noqa: E731
    y_w = eng.run(xs[k], zs[k], units, fn, batch_size=batch_size, show=show,
                  desc=f"interventions {chain.entries[k].name}")
    y_obs = logits[:, int(target)].astype(np.float64)
    res = select_units(y_w, y_obs, z=z, fallback=fallback)
    res.update(y_w=y_w, y_obs=y_obs)
    return res


def learn_graph(model, images, labels, target, n_samples=100, soft=True, beta=0.0, z=1.65,
                fallback=-0.001, soft_width=0.01, seed=0, batch_size=4096, show=False):
    """Learn the causal path graph of class ``target`` top-down (see the module docstring).

    Args:
        model: chain model (tf-keras or Keras 3) or :class:`Chain`.
        images, labels: data to draw samples from (labels as ints or one-hot).
        target: the explained class (``target_idx``).
        n_samples: at most this many correctly classified inputs of ``target`` (default 100).
        soft: soft interventions ``u ~ U(beta, beta + soft_width)`` per weight (default True);
            False: hard, u = 0.
        beta, soft_width: soft draws ``U(beta, beta + soft_width)`` (0 and 0.01).
        z, fallback: see :func:`select_units` (1.65 and -0.001).
        seed: seeds the soft draws (0).
        batch_size: (unit, sample) pairs per forward chunk (``intervention_batch``, 4096).
        show: progress bars (False).
    Returns:
        :class:`CausalGraph`.
    """
    chain = model if isinstance(model, Chain) else Chain(model)
    from .. import params as P

    own = "learn_graph"
    n_samples = P.integer(n_samples, "n_samples", own, low=1)
    soft = bool(soft)
    beta = P.number(beta, "beta", own)
    z = P.number(z, "z", own)
    fallback = P.number(fallback, "fallback", own)
    width = P.number(soft_width, "soft_width", own, low=0)
    batch_size = P.integer(batch_size, "batch_size", own, low=1)
    target = int(target)
    if not 0 <= target < chain.num_outputs:
        raise InputError(f"target must lie in [0, {chain.num_outputs - 1}], got {target}")
    if chain.units(chain.weights[-1]) != chain.num_outputs:
        raise ModelError(f"the last weight layer {chain.entries[chain.weights[-1]].name!r} must "
                         "produce the logits (its units = the classes)")
    x = class_samples(chain, images, labels, target, n_samples)
    cache = chain.cache(x)
    effects = [target]
    links = []
    walk = [k for k in reversed(chain.weights) if chain.parent(k) is not None]
    for k in progress(walk, show and len(walk) > 1, desc="graph layers"):
        name, parent = chain.entries[k].name, chain.entries[chain.parent(k)].name
        if not effects:
            links.append(Link(name, parent, [], [], "none"))
            continue
        res = learn_layer(chain, k, effects, target, x, cache, soft=soft, low=beta, high=beta + width,
                          z=z, fallback=fallback, seed=seed, batch_size=batch_size, show=show)
        links.append(Link(name, parent, res["selected"], list(effects), res["rule"]))
        effects = res["selected"]
    sett = {"n_samples": n_samples, "soft_interventions": soft, "beta": beta, "soft_width": width,
            "z": z, "fallback": fallback, "seed": int(seed)}
    return CausalGraph(target, links, chain.name, sett, len(x))


# ----------------------------------------------------------------------------------------------
# attributions
# ----------------------------------------------------------------------------------------------
def node_attributions(model, graph, x, layer_name=None, resize=True, batch_size=256):
    """Per-node maps at conv layer ``layer_name`` (None: the last Conv2D fed by a Conv2D, see
    :meth:`Chain.map_layer`; study 2: conv2).

    For each effect channel c of ``graph[layer_name]`` and parent channel i::

        M_ic = softmax_space(conv_full(A_i, W[:, :, i, c]))      map_c = mean_i M_ic

    ``A_i`` is the parent conv layer's pre-activation output (before its ReLU/pool) for ``x``,
    ``conv_full`` a true 2-D convolution in full mode. Maps are resized (bilinear) to the input
    size unless ``resize=False``.

    Returns:
        ``(maps, channels)``: (N, H, W, n_nodes) float32 and the effect channel of each node.
    """
    chain = model if isinstance(model, Chain) else Chain(model)
    k = chain.map_layer(layer_name)
    p = chain.parent(k)
    layer_name = chain.entries[k].name
    if layer_name not in graph:
        raise MethodError(f"the graph has no layer {layer_name!r} (layers: {', '.join(graph.layers)}); "
                          "learn the graph on this model")
    parents, effects = graph[layer_name]
    x = np.asarray(x, np.float32)
    h, w = x.shape[1:3]
    kern = chain.entries[k].kernel
    kh, kw = int(kern.shape[0]), int(kern.shape[1])
    if not parents or not effects:
        ph, pw = chain.entries[p].out_shape[:2]
        size = (h, w) if resize else (int(ph) + kh - 1, int(pw) + kw - 1)
        return np.zeros((len(x),) + size + (0,), np.float32), []
    pi, ci = np.asarray(parents, np.int32), np.asarray(effects, np.int32)
    # flipped kernel (true convolution), parents x effects, as a depthwise filter (kh,kw,|I|,|C|)
    filt = tf.gather(tf.gather(kern, pi, axis=2), ci, axis=3)[::-1, ::-1]
    n_i, n_c = len(pi), len(ci)
    out = []
    for s in chunks(len(x), batch_size):
        xs, zs, _ = _prefix(chain, p, x[s])
        a = tf.gather(zs, pi, axis=3)
        a = tf.pad(a, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        m = tf.nn.depthwise_conv2d(a, tf.cast(filt, a.dtype), [1, 1, 1, 1], "VALID")  # (n,H',W',I*C)
        sh = tf.shape(m)
        flat = tf.nn.softmax(tf.reshape(m, [sh[0], -1, n_i * n_c]), axis=1)
        m = tf.reshape(flat, [sh[0], sh[1], sh[2], n_i, n_c])
        m = tf.reduce_mean(m, axis=3)
        if resize:
            m = tf.image.resize(m, (h, w), method="bilinear")
        out.append(np.asarray(m, np.float32))
    return np.concatenate(out), [int(c) for c in ci]


def _prefix(chain, p, x):
    """Input and pre-activation of weight layer ``p`` for ``x``."""
    h = tf.constant(x)
    h = chain.run(h, 0, p)
    return h, chain.preact(p, h), None


def combined_attribution(model, graph, x, layer_name=None, batch_size=256):
    """The sum of the per-node maps (N, H, W): the single map used for metrics."""
    maps, _ = node_attributions(model, graph, x, layer_name, batch_size=batch_size)
    return maps.sum(-1)


# ----------------------------------------------------------------------------------------------
# graph stability
# ----------------------------------------------------------------------------------------------
STABILITY_PROTOCOLS = ("original", "fixed")
_STABILITY_STREAM = 0x57AB     # tags the stability draws apart from the learning draws


def stability_draw(seed, beta, repeat, n_eligible, n_samples):
    """The draws of one repeat of the ``"original"`` stability protocol.

    ``(subset, u)``: ``subset`` (sorted int64 indices into the ``n_eligible`` eligible images) is a
    uniformly random subset of ``min(n_samples, n_eligible)`` of them, without replacement, and
    ``u`` the one scalar value that every intervened weight takes, ``u ~ U(0, beta)`` (0.0 when
    ``beta`` is 0: a hard intervention). Counter-based: both come from
    ``numpy.random.default_rng([seed, tag, round(beta * 1e6), repeat])``, so the same
    ``(seed, beta, repeat)`` always gives the same draws, whatever the beta grid, the order of the
    jobs or the other repeats, and different repeats or betas give independent draws.
    """
    beta = float(beta)
    if not (np.isfinite(beta) and beta >= 0):
        raise MethodError(f"graph_stability needs every beta to be a finite number >= 0, got {beta!r}")
    n_eligible, n_samples = int(n_eligible), int(n_samples)
    rng = np.random.default_rng([int(seed), _STABILITY_STREAM, int(round(beta * 1e6)), int(repeat)])
    k = min(n_samples, n_eligible)
    subset = np.sort(rng.choice(n_eligible, size=k, replace=False)).astype(np.int64)
    u = float(rng.uniform(0.0, beta)) if beta > 0 else 0.0
    return subset, u


def graph_stability(model, images, labels, graph, layer_name_soft="fc3", betas=None, repeats=10,
                    n_samples=None, z=None, fallback=None, seed=0, batch_size=4096, show=False,
                    protocol="fixed"):
    """Appearance rate of the graph's nodes at ``layer_name_soft`` under soft interventions.

    For every ``beta`` (default None: ``0, 0.01, ..., 0.5``) and repeat r (``repeats``, 10), the
    link of ``layer_name_soft`` (study 2: "fc3") is re-learned with soft interventions of size
    ``U(0, beta)``, keeping the graph's effect set; a node's appearance rate is the fraction of
    repeats that select it. Two protocols:

    * ``"original"`` (what study 2's code does; the study command's default): on every repeat a
      fresh random subset of ``n_samples`` of the *eligible* images (every correctly classified
      image of the target class in ``images``; the original draws them through a random sampler)
      and ONE scalar ``u ~ U(0, beta)`` that every intervened weight of every unit and sample takes
      (:func:`stability_draw`). At beta 0 (u = 0) only the subsets vary, so a node that depends on
      which images were drawn does not appear every time.
    * ``"fixed"`` (this function's default, kept for comparison): always the first ``n_samples``
      eligible images (the ones the graph was learned on) and an independent ``U(0, beta)`` draw per
      weight, unit and sample (seeded by ``(seed, layer, beta index, repeat, unit)``). At beta 0 a
      graph learned with hard interventions is found again exactly: 100% by construction.

    ``n_samples``, ``z`` and ``fallback`` default (None) to the graph's own (else 100, 1.65,
    -0.001); ``batch_size`` is the (unit, sample) pairs per forward chunk (4096).

    Returns:
        dict: ``betas`` (B,), ``nodes`` (the graph's parents at that layer), ``counts``
        (B, n_parent_units) selections out of ``repeats``, ``rates`` (B, n_nodes) in [0, 1],
        ``mean_rate`` (B,) in percent, ``repeats``, ``layer``, ``target``, ``protocol``,
        ``n_eligible`` (images the subsets are drawn from), ``n_used`` (images per repeat),
        ``subsets`` ((B, repeats, n_used) indices into the eligible images; "fixed": the same
        ``0..n_used-1`` every time) and ``u`` ((B, repeats) scalars; None for "fixed").
    """
    chain = model if isinstance(model, Chain) else Chain(model)
    layer = layer_name_soft
    if protocol not in STABILITY_PROTOCOLS:
        raise MethodError(f"graph_stability needs protocol to be one of "
                          f"{', '.join(STABILITY_PROTOCOLS)}, got {protocol!r}")
    if betas is None:
        step, top = 0.01, 0.5           # study 2: beta_step, beta_max
        betas = np.round(np.arange(0.0, top + step / 2, step), 10)
    betas = np.asarray(betas, np.float64).reshape(-1)
    if not np.all(np.isfinite(betas) & (betas >= 0)):
        raise MethodError(f"graph_stability needs every beta to be a finite number >= 0, got "
                          f"{betas.tolist()}")
    repeats = int(repeats)
    if repeats < 1:
        raise MethodError(f"graph_stability needs repeats to be an integer >= 1, got {repeats}")
    n_samples = int(graph.n_samples or 100) if n_samples is None else int(n_samples)
    if n_samples < 1:
        raise MethodError(f"graph_stability needs n_samples to be an integer >= 1, got {n_samples}")
    z = float(graph.settings.get("z", 1.65) if z is None else z)
    fallback = float(graph.settings.get("fallback", -0.001) if fallback is None else fallback)
    batch_size = int(batch_size)
    nodes, effects = graph[layer]
    if not effects:
        raise MethodError(f"graph link {layer!r} has no effects: nothing to re-learn")
    k = chain.index(layer)
    target = int(graph.target)
    n_units = chain.n_parent_units(k)
    counts = np.zeros((len(betas), n_units), np.int64)
    jobs = [(b, r) for b in range(len(betas)) for r in range(repeats)]
    if protocol == "fixed":
        x = class_samples(chain, images, labels, target, n_samples)
        cache = chain.cache(x)
        n_eligible = n_used = len(x)
        us = None
        for b, r in progress(jobs, show, desc=f"stability {layer}"):
            res = learn_layer(chain, k, effects, target, x, cache, soft=True, low=0.0,
                              high=float(betas[b]), z=z, fallback=fallback, seed=seed,
                              stream=(b, r), batch_size=batch_size)
            counts[b, res["selected"]] += 1
        subsets = np.broadcast_to(np.arange(n_used), (len(betas), repeats, n_used))
    else:
        pool = class_samples(chain, images, labels, target, len(images))   # every eligible image
        xs, zs, logits = chain.cache(pool)
        xk, zk = xs[k], zs[k]
        del xs, zs
        y_all = logits[:, target].astype(np.float64)
        n_eligible = len(pool)
        n_used = min(n_samples, n_eligible)
        eng = _engine(chain, k, effects, target)
        units = np.arange(n_units)
        subsets = np.zeros((len(betas), repeats, n_used), np.int64)
        us = np.zeros((len(betas), repeats))
        for b, r in progress(jobs, show, desc=f"stability {layer}"):
            idx, u = stability_draw(seed, betas[b], r, n_eligible, n_samples)
            subsets[b, r], us[b, r] = idx, u
            fill = None if u == 0.0 else \
                (lambda q, shape=(n_used,) + eng.slice_shape, u=u: np.full(shape, u, np.float32))
            sel = tf.constant(idx.astype(np.int32))
            y_w = eng.run(tf.gather(xk, sel), tf.gather(zk, sel), units, fill, batch_size=batch_size)
            res = select_units(y_w, y_all[idx], z=z, fallback=fallback)
            counts[b, res["selected"]] += 1
    nodes = [int(v) for v in nodes]
    rates = counts[:, nodes] / repeats if nodes else np.zeros((len(betas), 0))
    mean_rate = 100.0 * rates.mean(1) if nodes else np.zeros(len(betas))
    return {"betas": betas, "nodes": nodes, "counts": counts, "rates": rates, "mean_rate": mean_rate,
            "repeats": repeats, "layer": layer, "target": target, "protocol": protocol,
            "n_eligible": int(n_eligible), "n_used": int(n_used), "subsets": np.asarray(subsets),
            "u": us}


# ----------------------------------------------------------------------------------------------
# the Explainer
# ----------------------------------------------------------------------------------------------
class Interventional(Explainer):
    """Interventional (causal path) attributions (study 2, arXiv 2305.08950).

    For each input, the graph of its target class is learned (once per class, cached) from
    ``data = (images, labels)`` or taken from ``graph``; the returned map (N, H, W) is the sum of
    the node maps at ``layer_name`` (see :func:`node_attributions`).

    Args:
        model: a chain model (Conv2D / Dense / pooling / Flatten / activation layers), tf-keras
            or Keras 3.
        n_samples: at most this many correctly classified inputs of a class learn its graph (100).
        soft_interventions: soft interventions ``u ~ U(beta, beta + soft_width)`` per weight
            (True); False: hard, u = 0.
        layer_name: conv layer of the attributions, fed by another conv layer (None: the last
            such layer, :meth:`Chain.map_layer`; LeNet's conv2, study 2's).
        beta: lower end of the soft draws (0.0).
        z: one-sided z-test threshold of :func:`select_units` (1.65, p = 0.05).
        soft_width: width of the soft draws (0.01).
        fallback: keep the units with ``mean(Y_w / Y_obs - 1) < fallback`` when none passes the
            z-test (-0.001).
        intervention_batch: (unit, sample) pairs per forward chunk of graph learning (4096).
        data: (images, labels) to draw the correctly classified samples of each class from,
            preprocessed as the explained inputs (None: every explained class needs a ``graph``).
            The command lines take a labelled image source here (``--set
            interventional.data=mnist``, an .npz with x/y, a folder of class sub-folders), fitted
            and preprocessed as their own images; ``python -m xaitf run`` defaults to its
            ``--data`` images and labels (study 2 learns from the test split it explains).
        graph: a :class:`CausalGraph`, a JSON path, or ``{class: graph or path}``; classes
            without one are learned from ``data`` (None). Data or a graph is needed.
        **common: batch_size (inputs per attribution chunk), channel_reduce, seed (seeds the soft
            interventions), progress, output (see :class:`xaitf.explainer.Explainer`).
        seed: the soft interventions' draws, keyed by (seed, unit, repeat) (counter-based: independent of batch_size and of the other inputs).

    Example::

        ex = xaitf.create_explainer("interventional", model, data=(x_test, y_test))
        maps = ex(x, targets)
    """

    key = "interventional"    # the preset section of xaitf.settings
    outputs = ("logits",)     # the causal effects are measured on the target logit (Chain)
    stochastic = True

    def __init__(self, model, *, n_samples=100, soft_interventions=True, layer_name=None,
                 beta=0.0, z=1.65, soft_width=0.01, fallback=-0.001, intervention_batch=4096,
                 data=None, graph=None, **common):
        super().__init__(model, params=dict(
            n_samples=n_samples, soft_interventions=soft_interventions, layer_name=layer_name,
            beta=beta, z=z, soft_width=soft_width, fallback=fallback,
            intervention_batch=intervention_batch, data=data, graph=graph), **common)

    def setup(self):
        self.chain = Chain(self.model)
        self.layer = self.chain.entries[self.chain.map_layer(self.params["layer_name"])].name
        self.graphs = {}
        g, data = self.params["graph"], self.params["data"]
        if g is None and data is None:
            raise MethodError("interventional learns a causal graph per explained class: pass "
                              "data=(images, labels) (command lines: --set interventional.data=SOURCE, a "
                              "labelled source such as mnist or an .npz with x/y) or graph= a learned "
                              "graph (a JSON file of python -m xaitf.studies interventional)")
        if isinstance(data, (str, os.PathLike)):
            raise MethodError(f"interventional data={os.fspath(data)!r}: expected (images, labels) "
                              "arrays; the command lines load a source named there")
        if g is not None:
            items = g.items() if isinstance(g, dict) else [(None, g)]
            for cls, item in items:
                graph = load_graph(item) if isinstance(item, (str, os.PathLike)) else item
                if not isinstance(graph, CausalGraph):
                    raise MethodError(f"graph must be a CausalGraph or a JSON path, got "
                                      f"{type(item).__name__}")
                self.graphs[int(graph.target if cls is None else cls)] = graph
        if data is not None:
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise MethodError("interventional data must be a pair (images, labels)")
            self.data = (as_batch(data[0], self.model), np.asarray(data[1]))
        else:
            self.data = None

    def graph_for(self, target):
        """The graph of class ``target``: given, cached, or learned from ``data``."""
        target = int(target)
        if target not in self.graphs:
            if self.data is None:
                raise MethodError(f"interventional needs data=(images, labels) to learn the graph of "
                                  f"class {target} (graphs given: {', '.join(map(str, sorted(self.graphs)))}; "
                                  "command lines: --set interventional.data=SOURCE)")
            p = self.params
            self.graphs[target] = learn_graph(
                self.chain, self.data[0], self.data[1], target, n_samples=p["n_samples"],
                soft=p["soft_interventions"], beta=p["beta"], z=p["z"], fallback=p["fallback"],
                seed=self.seed, batch_size=p["intervention_batch"], show=self.progress,
                soft_width=p["soft_width"])
        return self.graphs[target]

    def explain_batch(self, x, targets):
        out = np.zeros(x.shape[:3], np.float32)
        for t in np.unique(targets):
            idx = np.flatnonzero(targets == t)
            out[idx] = combined_attribution(self.chain, self.graph_for(t), x[idx], self.layer,
                                            batch_size=self.batch_size)
        return out
