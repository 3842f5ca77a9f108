"""Relevance propagation rules, applied per graph node (:mod:`xaitf.graph.ir`).

Layer rules (Bach et al. 2015, PLoS ONE 10(7); Montavon et al. 2017, Pattern Recognition 65;
Montavon et al. 2019, "Layer-wise relevance propagation: an overview") for a linear node
``z_j = sum_i x_i w_ij + b_j``, all computed with the gradient trick
``R_i = x_i * d/dx_i sum_j f'(x)_j * stop_grad(R_j / stab(z'_j))`` for the rule's modified map f':

* ``z``: ``R_i = sum_j x_i w_ij / z_j R_j``;
* ``epsilon``: denominator ``z_j + eps sign(z_j)`` with sign(0) = 1;
* ``gamma``: weights and bias ``w + gamma w^+``, ``b + gamma b^+``;
* ``alpha_beta`` (and ``alpha_1_beta_0``, ``alpha_2_beta_1``): ``alpha R^act - beta R^inh`` where
  the activating part pairs (x^+, w^+) and (x^-, w^-), the inhibiting part (x^+, w^-) and
  (x^-, w^+), each normalised by its own z; as in iNNvestigate 2.1.2 both z's contain the full bias
  (b^+ with the positive weights plus b^- with the negative ones);
* ``z_plus``: ``alpha_1_beta_0`` without bias (iNNvestigate's ZPlus; for x >= 0 it is the z+ rule);
* ``w_square``, ``flat``: ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`` (w = 1 for flat), no input;
* ``z_box`` (z^B, Montavon 2017): ``(x w - l w^+ - h w^-)`` terms for inputs bounded by l <= x <= h.

Each has an ``_ib`` variant (``z_ib``, ``epsilon_ib``, ...) that ignores the bias. Denominators that
are not sign-stabilised get iNNvestigate's guard: an exact zero becomes 1e-7 (never a division by 0).

Other nodes: ``pass`` (relevance unchanged; elementwise activations), ``gradient`` (relevance routed
by the gradient: max pooling is winner-takes-all, ReLU masks, reshapes move it) and
``proportional`` (the z rule of a weightless linear node: Add and average pooling split the
relevance in proportion to their inputs; optional ``epsilon`` stabiliser) and ``signal`` (a
Multiply by a broadcast gate: the signal takes all the relevance); ``layer_norm`` (Ali et al. 2022:
LayerNormalization with its standard deviation held constant, then the z rule); ``attention``
(Ali et al. 2022: a MultiHeadAttention's attention weights held constant, then the z rule on the
values).
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..errors import MethodError
from . import ir

GUARD = 1e-7   # iNNvestigate's safe_divide: z == 0 -> z + 1e-7


def safe_div(a, b):
    """``a / b`` with exact zeros of ``b`` replaced by :data:`GUARD`."""
    return a / tf.where(tf.equal(b, 0.0), GUARD, b)


def eps_div(a, b, eps):
    """``a / (b + eps * sign(b))`` with sign(0) = 1."""
    return a / (b + tf.where(b >= 0.0, eps, -eps))


def vjp(fn, xs, s):
    """``J_fn(xs)^T s`` for each tensor of ``xs`` (a list)."""
    with tf.GradientTape() as tape:
        for x in xs:
            tape.watch(x)
        y = fn(*xs)
    grads = tape.gradient(y, xs, output_gradients=s)
    return [tf.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]


def weights_of(node):
    """``(kernel, bias)`` of a linear node as numpy (``scale``/``shift`` for the affine kinds)."""
    w = node.weights
    return (w["kernel"], w["bias"]) if node.kind in ir.KERNEL else (w["scale"], w["shift"])


def _pos(a):
    return np.maximum(a, 0).astype(np.float32)


def _neg(a):
    return np.minimum(a, 0).astype(np.float32)


# tensors derived from a linear node's (kernel, bias), made once per node (ir.const)
_DERIVED = {
    "kernel": lambda k, b: k, "bias": lambda k, b: b,
    "pos": lambda k, b: _pos(k), "neg": lambda k, b: _neg(k),
    "pos_neg": lambda k, b: np.concatenate([_pos(k), _neg(k)], axis=-1),       # side by side (outputs)
    "bias_both": lambda k, b: np.concatenate([b, b]).astype(np.float32),       # its bias, side by side
    "box": lambda k, b: np.concatenate([k, _pos(k), _neg(k)], axis=-2),       # stacked along inputs
}


@tf.autograph.experimental.do_not_convert     # plain Python on numpy; not for AutoGraph
def derived(node, key):
    """The tensor ``key`` of :data:`_DERIVED` for ``node`` (w, b, w^+, w^-, b^+, b^-, stacks)."""
    return ir.const(node, key, lambda: _DERIVED[key](*weights_of(node)))


class Rule:
    """A rule: ``backward(node, xs, y, r)`` -> one relevance tensor per input of the node."""

    name = "rule"
    linear_only = False
    params = ()
    relu_output = None   # id of the ReLU node whose output the engine passes as ``y`` (share_relu_outputs)

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.params)
        return f"{self.name}({args})" if args else self.name

    def backward(self, node, xs, y, r):
        raise NotImplementedError


class _Linear(Rule):
    linear_only = True
    bias = True


class Z(_Linear):
    """LRP-0 (Bach et al. 2015)."""

    name = "z"

    def denominator(self, z, r):
        return safe_div(r, z)

    def relu_denominator(self, a, r):
        """``denominator(z, r)`` from ``a = max(z, 0)`` where ``r`` is 0 wherever ``a`` is: for z > 0
        the two are the same numbers, elsewhere both are 0."""
        return tf.math.divide_no_nan(r, a)

    def modified(self, node):
        return derived(node, "kernel"), (derived(node, "bias") if self.bias else 0.0)

    own_weights = True        # the rule's kernel is the node's: z is the node's output (less the bias)

    def backward(self, node, xs, y, r):
        x = xs[0]
        k, b = self.modified(node)
        if self.relu_output is not None:      # y is the ReLU's output (see share_relu_outputs)
            s = self.relu_denominator(y, r)
        elif self.own_weights:      # no second forward computation: z = y (or y - b without the bias)
            s = self.denominator(y if self.bias else y - derived(node, "bias"), r)
        else:
            s = self.denominator(ir.linear(node, x, k, b), r)
        g = ir.linear_transpose(node, s, x, k)
        return [x * g]


class Epsilon(Z):
    """LRP-epsilon: the denominator moved away from zero by eps in the direction of its sign."""

    name = "epsilon"
    params = ("epsilon",)
    epsilon = 1e-6

    def denominator(self, z, r):
        return eps_div(r, z, float(self.epsilon))

    def relu_denominator(self, a, r):
        eps = float(self.epsilon)
        return r / (a + eps) if eps else tf.math.divide_no_nan(r, a)


class Gamma(Z):
    """LRP-gamma (Montavon et al. 2019): positive weights (and bias) favoured by ``gamma``."""

    name = "gamma"
    params = ("gamma",)
    gamma = 0.25
    own_weights = False

    def modified(self, node):
        g = float(self.gamma)

        def plus(a):          # a + gamma a^+ of the node's current weights (kernel or bias)
            return lambda: weights_of(node)[a] + g * _pos(weights_of(node)[a])

        kernel = ir.const(node, ("gamma", g), plus(0))
        return kernel, (ir.const(node, ("gamma_bias", g), plus(1)) if self.bias else 0.0)


class AlphaBeta(_Linear):
    """LRP-alpha-beta (Bach et al. 2015) in iNNvestigate's form (see the module docstring).

    Where the input is non-negative (``node.nonneg_input``, set by the canonizer: by construction
    after a ReLU, as every layer but the first as a rule; checked per batch at the model's input), x^- = 0
    and each part is one linear map: ``z_act = x w^+ + b``, ``z_inh = x w^- + b``; for Conv2D and
    Dense both run as one map on the kernels stacked side by side, forward and backward. (Deriving
    ``z_inh`` from the node's output, ``y + b - z_act``, would save a map but loses float32 digits
    where ``z_inh`` is small.) Other inputs take the general four-term form."""

    name = "alpha_beta"
    params = ("alpha", "beta")
    alpha, beta = 2.0, 1.0

    def _part(self, node, xp, xn, k1, k2, r):
        # x+ k1 + x- k2 + b, the bias (b+ with one kernel, b- with the other: b in all) added once
        # after the sum: two BiasAdds feeding one Add made grappler's remapper leave a node without
        # an op (three "E0000 ... has an empty op name" log lines on MobileNetV3, results unchanged)
        z = ir.linear(node, xp, k1, 0.0) + ir.linear(node, xn, k2, 0.0)
        if self.bias:
            z = z + derived(node, "bias")
        s = safe_div(r, z)
        g1 = ir.linear_transpose(node, s, xp, k1)
        g2 = ir.linear_transpose(node, s, xn, k2)
        return xp * g1 + xn * g2

    def _general(self, node, x, r):
        kp, kn = derived(node, "pos"), derived(node, "neg")
        xp, xn = tf.nn.relu(x), tf.minimum(x, 0.0)
        out = self._part(node, xp, xn, kp, kn, r)
        if float(self.alpha) != 1.0:
            out = float(self.alpha) * out
        if float(self.beta):
            out = out - float(self.beta) * self._part(node, xp, xn, kn, kp, r)
        return out

    def _nonnegative(self, node, x, r):
        alpha, beta = float(self.alpha), float(self.beta)
        b = derived(node, "bias")
        bias = b if self.bias else 0.0
        kp = derived(node, "pos")
        if not beta:
            za = ir.linear(node, x, kp, bias)
            g = ir.linear_transpose(node, safe_div(r, za), x, kp)
            return x * g if alpha == 1.0 else alpha * (x * g)
        kn = derived(node, "neg")
        if node.kind in ("Conv2D", "Dense") and not node.config.get("groups"):   # one map: kernels side by side
            both = derived(node, "pos_neg")
            z = ir.linear(node, x, both, derived(node, "bias_both") if self.bias else 0.0)   # [z_act, z_inh]
            coef = ir.const(node, ("alpha_beta", alpha, beta),
                            lambda: np.repeat(np.float32([alpha, -beta]), weights_of(node)[0].shape[-1]))
            s = safe_div(tf.concat([r, r], -1), z) * coef
            g = ir.linear_transpose(node, s, x, both)
            return x * g
        za, zi = ir.linear(node, x, kp, bias), ir.linear(node, x, kn, bias)
        ga = ir.linear_transpose(node, alpha * safe_div(r, za), x, kp)
        gi = ir.linear_transpose(node, -beta * safe_div(r, zi), x, kn)
        return x * (ga + gi)

    def backward(self, node, xs, y, r):
        x = xs[0]
        if node.nonneg_input is None:        # the model's input: images are often >= 0, checked per batch
            return [tf.cond(tf.reduce_min(x) >= 0.0, lambda: self._nonnegative(node, x, r),
                            lambda: self._general(node, x, r))]
        return [self._nonnegative(node, x, r) if node.nonneg_input else self._general(node, x, r)]


class WSquare(_Linear):
    """w^2 rule (Montavon et al. 2017): relevance spread by squared weights, whatever the input."""

    name = "w_square"
    bias = False

    def kernel(self, node):
        with np.errstate(over="ignore"):      # an overflow is reported by the engine's finiteness check
            return np.square(weights_of(node)[0].astype(np.float64)).astype(np.float32)

    def backward(self, node, xs, y, r):
        x = xs[0]
        k = ir.const(node, self.name, lambda: self.kernel(node))
        z = ir.linear(node, tf.ones_like(x[:1]), k, 0.0)     # the same for every input: computed once
        g = ir.linear_transpose(node, safe_div(r, z), x, k)
        return [g]


class Flat(WSquare):
    """Flat rule: the w^2 rule with all weights 1 (relevance spread uniformly over the receptive field)."""

    name = "flat"

    def kernel(self, node):
        return np.ones_like(weights_of(node)[0], dtype=np.float32)


class ZBox(_Linear):
    """z^B rule (Montavon et al. 2017) for inputs bounded by ``low <= x <= high``."""

    name = "z_box"
    params = ("low", "high")
    bias = False
    low, high = 0.0, 1.0

    def backward(self, node, xs, y, r):
        x = xs[0]
        k, kp, kn = derived(node, "kernel"), derived(node, "pos"), derived(node, "neg")
        lo = tf.zeros_like(x) + tf.constant(np.asarray(self.low, np.float32))
        hi = tf.zeros_like(x) + tf.constant(np.asarray(self.high, np.float32))
        bounds = ir.linear(node, lo[:1], kp, 0.0) + ir.linear(node, hi[:1], kn, 0.0)   # input-independent
        z = y - derived(node, "bias") - bounds
        s = safe_div(r, z)
        if (node.kind == "Conv2D" and not node.config.get("groups")) or (node.kind == "Dense" and x.shape.rank == 2):
            # the three backward maps as one: kernels stacked along their input axis
            g = ir.linear_transpose(node, s, tf.concat([x, lo, hi], -1), derived(node, "box"))
            ga, gl, gh = tf.split(g, 3, axis=-1)
        else:
            ga = ir.linear_transpose(node, s, x, k)
            gl = ir.linear_transpose(node, s, lo, kp)
            gh = ir.linear_transpose(node, s, hi, kn)
        return [x * ga - lo * gl - hi * gh]


class Pass(Rule):
    """Relevance passes unchanged (elementwise nodes: activations, identities)."""

    name = "pass"

    def backward(self, node, xs, y, r):
        if len(xs) != 1 or not xs[0].shape.is_compatible_with(r.shape):
            raise MethodError(f"rule 'pass' needs a node with one input of its output's shape, got "
                              f"{node.label()}")
        return [r]


class Gradient(Rule):
    """Relevance routed by the node's gradient (max pooling: winner-takes-all; ReLU: masked)."""

    name = "gradient"

    def backward(self, node, xs, y, r):
        if node.kind == "MaxPooling2D":     # the backward op on the forward's own output
            c = node.config
            return [tf.raw_ops.MaxPoolGrad(orig_input=xs[0], orig_output=y, grad=r,
                                           ksize=[1, *c["pool_size"], 1], strides=[1, *c["strides"], 1],
                                           padding=c["padding"].upper())]
        return vjp(lambda *v: ir.apply(node, list(v)), list(xs), r)


class Proportional(Rule):
    """The z rule of a weightless node that is linear in its inputs (Add, average pooling):
    ``R_i = x_i * d/dx_i sum_j f_j(x) R_j / stab(f_j(x))``."""

    name = "proportional"
    params = ("epsilon",)
    epsilon = 0.0

    def backward(self, node, xs, y, r):
        eps = float(self.epsilon)
        if self.relu_output is not None:      # y is the ReLU's output (see share_relu_outputs)
            s = r / (y + eps) if eps else tf.math.divide_no_nan(r, y)
        else:
            s = eps_div(r, y, eps) if eps else safe_div(r, y)
        grads = vjp(lambda *v: ir.apply(node, list(v)), list(xs), s)
        return [x * g for x, g in zip(xs, grads)]


class LayerNorm(Rule):
    """The LN-rule of Ali et al. 2022 ("XAI for Transformers: Better Explanations through
    Conservative Propagation", ICML) for LayerNormalization over the channels: the standard
    deviation is held constant, which leaves the linear map ``z_j = gamma_j (x_j - mean(x)) / sigma``,
    and the z rule of that map, ``R_i = x_i * sum_j dz_j/dx_i R_j / stab(y_j)`` with
    ``J^T s = (gamma s - mean(gamma s)) / sigma`` per position. GroupNormalization is the same map
    with the mean and sigma of each channel group over its positions and channels
    (:func:`ir.norm_mean`). Without beta the relevance is conserved (beta absorbs its share, as a
    bias does); ``epsilon`` stabilises as LRP-epsilon."""

    name = "layer_norm"
    params = ("epsilon",)
    epsilon = 0.0

    def backward(self, node, xs, y, r):
        x, eps = xs[0], float(self.epsilon)
        s = (eps_div(r, y, eps) if eps else safe_div(r, y)) * ir.const(node, "gamma")
        var = ir.norm_mean(node, tf.square(x - ir.norm_mean(node, x)))
        g = (s - ir.norm_mean(node, s)) * tf.math.rsqrt(var + node.config["epsilon"])
        return [x * g]


class Attention(Rule):
    """The AH-rule of Ali et al. 2022 ("XAI for Transformers: Better Explanations through
    Conservative Propagation", ICML) for the attention of a MultiHeadAttention layer: the attention
    weights ``A = softmax(q k^T / sqrt(d))`` are held constant, which leaves the linear map
    ``z_t = sum_s A_ts v_s`` (per head and channel), and the z rule of that map,
    ``R_s = v_s * sum_t A_ts R_t / stab(z_t)``. The query and key get no relevance (as the gates of
    ``signal``); the value and output projections around it are Dense nodes with the layer rule.
    Conservative: the rows of ``A`` sum to 1 and there is no bias. ``epsilon`` stabilises as
    LRP-epsilon."""

    name = "attention"
    params = ("epsilon",)
    epsilon = 0.0

    def backward(self, node, xs, y, r):
        eps = float(self.epsilon)
        s = eps_div(r, y, eps) if eps else safe_div(r, y)
        a = ir.attention_weights(node, xs[1], xs[2])
        return [xs[0] * ir.attention_mix_transpose(node, a, s)] + [None] * (len(xs) - 1)


# nodes that hand their output's relevance to their input unchanged or moved, never spread onto
# positions of value 0 (max pooling routes it to the winner, which holds the output's value)
_ROUTING = ("MaxPooling2D", "GlobalMaxPooling2D", "Maximum", "Minimum", "Flatten", "Reshape", "ZeroPadding2D",
            "Cropping2D", "Dropout", "Permute", "Concatenate") + ir.INDEXING


def _vanishing_relevance(graph, rules):
    """Ids of the nodes whose relevance is 0 wherever their output is 0, as the rules of their
    consumers send it back: rules of the form ``R_i = x_i * (...)`` (z, epsilon, gamma,
    alpha-beta, proportional), and pass/gradient through a plain ReLU or a routing node that has
    the property itself; the output node's relevance is ``onehot * f``."""
    consumers, out = graph.consumers(), set()
    for node in reversed(graph.nodes):
        ok = True
        for c in consumers[node.id]:
            cn, rule = graph[c], rules.get(c)
            if isinstance(rule, (Z, AlphaBeta, Proportional)):
                continue
            if isinstance(rule, (Pass, Gradient)) and c in out and (ir.plain_relu(cn) or cn.kind in _ROUTING):
                continue
            ok = False
        if ok:
            out.add(node.id)
    return out


def share_relu_outputs(graph, rules):
    """Let z/epsilon/proportional rules of a node read by one plain ReLU take their denominator from
    the ReLU's output ``a = max(z, 0)``, in place (sets ``rule.relu_output``).

    The relevance reaching such a node is 0 wherever ``a`` is (:func:`_vanishing_relevance`), so
    ``R / stab(z)`` is ``R / (a + eps)`` (``R / a``, 0 where ``a`` = 0, for z) with the same
    numbers. The pre-activation then has no reader in the backward pass and TF fuses the layer's
    bias and ReLU into its convolution or matmul, as in a gradient's forward pass: fewer passes
    over the largest tensors (MNIST CNN lrp.epsilon 1.28x -> 1.07x of the gradient floor)."""
    consumers, vanishing = graph.consumers(), _vanishing_relevance(graph, rules)
    for node in graph.nodes:
        rule = rules.get(node.id)
        own = isinstance(rule, Z) and rule.own_weights and rule.bias
        if not (own or isinstance(rule, Proportional)) or node.id == graph.output_id:
            continue
        (c, *more) = consumers[node.id] or [None]
        if more or c is None or not ir.plain_relu(graph[c]) or c not in vanishing:
            continue
        if isinstance(rules[c], (Pass, Gradient)):
            rule.relu_output = c
    return rules


class Signal(Rule):
    """A gated product (Multiply of a feature map by a broadcast gate, as squeeze-and-excitation
    blocks): the gate is held constant and the signal takes all the relevance, the gate none
    ("signal-take-all", Arras et al. 2017, "Explaining recurrent neural network predictions in
    sentiment analysis", WASSA; the treatment of multiplicative gates in LRP). The signal is the one
    input of the output's own shape, or ``x`` in ``x * f(x)`` with ``f`` elementwise (a self-gated
    activation, swish; :func:`ir.read_model` marks it); other products of same-size inputs are
    refused."""

    name = "signal"

    def backward(self, node, xs, y, r):
        signal = node.config.get("signal")
        if signal is None:
            raise MethodError(f"rule 'signal' needs a product of one full-size signal and gates broadcast "
                              f"onto it; {node.label()} multiplies inputs of the same size; use a gradient "
                              "method for this model")
        return [r if i == signal else None for i in range(len(xs))]


def receiving(graph, rules):
    """Ids of the nodes that receive relevance: all the output depends on, except what reaches it
    only through the gates of a ``signal`` rule or the query and key of an ``attention`` rule."""
    out = {graph.output_id}
    for node in reversed(graph.nodes):
        if node.id not in out:
            continue
        rule = rules.get(node.id)
        signal = node.config.get("signal") if isinstance(rule, Signal) else 0 if isinstance(rule, Attention) else None
        for j, i in enumerate(node.inputs):
            if signal is None or j == signal:
                out.add(i)
    return out


# name -> (class, fixed keyword arguments)
RULES = {
    "z": (Z, {}), "z_ib": (Z, {"bias": False}),
    "epsilon": (Epsilon, {}), "epsilon_ib": (Epsilon, {"bias": False}),
    "gamma": (Gamma, {}), "gamma_ib": (Gamma, {"bias": False}),
    "alpha_beta": (AlphaBeta, {}), "alpha_beta_ib": (AlphaBeta, {"bias": False}),
    "alpha_1_beta_0": (AlphaBeta, {"alpha": 1.0, "beta": 0.0}),
    "alpha_1_beta_0_ib": (AlphaBeta, {"alpha": 1.0, "beta": 0.0, "bias": False}),
    "alpha_2_beta_1": (AlphaBeta, {"alpha": 2.0, "beta": 1.0}),
    "alpha_2_beta_1_ib": (AlphaBeta, {"alpha": 2.0, "beta": 1.0, "bias": False}),
    "z_plus": (AlphaBeta, {"alpha": 1.0, "beta": 0.0, "bias": False}),
    "w_square": (WSquare, {}), "flat": (Flat, {}), "z_box": (ZBox, {}),
    "pass": (Pass, {}), "gradient": (Gradient, {}), "proportional": (Proportional, {}), "signal": (Signal, {}),
    "layer_norm": (LayerNorm, {}), "attention": (Attention, {}),
}


def rule_params(name):
    """The parameters (names) a rule reads from its composite (fixed ones excluded)."""
    cls, fixed = _lookup(name)
    return tuple(p for p in cls.params if p not in fixed)


def _lookup(name):
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise MethodError(f"unknown LRP rule {name!r}; valid: {', '.join(RULES)}") from None


def make_rule(name, **params):
    """A rule object by name; ``params`` beyond the rule's own are ignored, missing ones default."""
    cls, fixed = _lookup(name)
    kw = {k: v for k, v in params.items() if k in cls.params and k not in fixed}
    for k, v in kw.items():
        try:
            v = float(v) if np.ndim(v) == 0 else np.asarray(v, np.float32)
        except (TypeError, ValueError):
            raise MethodError(f"LRP rule {name!r}: {k} must be a number, got {v!r}") from None
        if k in ("epsilon", "gamma", "alpha", "beta") and not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            raise MethodError(f"LRP rule {name!r}: {k} must be a finite number >= 0, got {v!r}")
        kw[k] = v
    if cls is ZBox:
        lo, hi = kw.get("low", ZBox.low), kw.get("high", ZBox.high)
        if not np.all(np.asarray(lo) < np.asarray(hi)):
            raise MethodError(f"LRP rule 'z_box' needs low < high, got low={lo!r}, high={hi!r}")
    rule = cls(**fixed, **kw)
    rule.name = name
    return rule
