"""Composites: which rule (:mod:`xaitf.graph.rules`) each graph node gets, as data.

A composite is a dict ``{selector: rule}`` plus optional ``"params"`` (the rules' default
parameters: epsilon, gamma, alpha, beta, low, high) and ``"output"`` (``"logit"``: start from
``f_c``; ``"relu"``: from ``relu(f_c)``, Deep Taylor). A rule is a name of
:data:`xaitf.graph.rules.RULES` or ``(name, {param: value})``. Selectors, most specific first:

* linear nodes: ``first`` (the Conv2D/DepthwiseConv2D/Dense layers that read the input, possibly
  through Flatten, Reshape and input normalisation; a ``z_box`` rule there gets the bounds
  ``low``/``high`` of the model's input mapped through that normalisation), then ``dense`` / ``conv`` (Conv2D, DepthwiseConv2D) / ``batchnorm`` (a
  BatchNormalization left after folding) / ``normalization`` (Rescaling, Normalization), then
  ``linear``;
* other nodes: ``relu`` (a ReLU layer or Activation('relu'), not an ``activation=`` of a layer),
  ``activation`` (every other elementwise activation; UnitNormalization, its norm held
  constant), ``add``, ``multiply`` (a gated product, as in squeeze-and-excitation blocks),
  ``avgpool`` (average and global
  average pooling, Resizing, UpSampling2D), ``maxpool`` (max and global max pooling, Maximum and Minimum of
  tensors), ``shape`` (Flatten, Reshape, Permute, ZeroPadding2D, Cropping2D, Dropout, Concatenate,
  channel Gather and Stack), ``layernorm`` (LayerNormalization, GroupNormalization; default
  ``layer_norm``, the LN-rule of Ali et al. 2022), ``attention`` (the attention inside a
  MultiHeadAttention layer, whose value and output projections are ``dense``; default ``attention``,
  the AH-rule of Ali et al. 2022), ``custom`` (a layer the user declared affine, ``affine_layers=``;
  default ``proportional``, the z rule of its map through its own gradient, with the composite's
  ``epsilon`` as the layer rules get it; input-domain rules (flat, z_box) never reach it).

Unset selectors fall back to :data:`DEFAULTS` (``batchnorm`` falls back to ``linear``): the
activation of a layer passes relevance unchanged, a ReLU layer masks it (its gradient, as
iNNvestigate), Add and average pooling split it proportionally, max pooling is winner-takes-all,
a Multiply gives all of it to its full-size input and none to the gates (``signal``; the gate
branch, a sigmoid included, then needs no rule).

Registered composites (:data:`COMPOSITES`): the iNNvestigate analyzers ``lrp.z``,
``lrp.epsilon``, ``lrp.alpha_1_beta_0``, ``lrp.alpha_2_beta_1``, ``lrp.alpha_beta`` (parameters
alpha, beta), ``lrp.z_plus``, ``lrp.w_square``,
``lrp.flat``, ``lrp.sequential_preset_a``/``_b`` (+ ``_flat``; Kohlbrenner et al. 2020, "Towards
best practice in explaining neural network decisions with LRP", IJCNN), ``deep_taylor`` and
``deep_taylor.bounded`` (Montavon et al. 2017, as iNNvestigate: z+ on every kernel layer, relevance
masked at ReLU layers, copied at Add and spread uniformly by average pooling), and Zennit-style
``epsilon_plus``, ``epsilon_plus_flat``, ``epsilon_gamma_box``, ``epsilon_alpha_2_beta_1_flat``.
"""
import numpy as np

from ..errors import MethodError, ModelError
from . import ir
from .canonizers import HEADS
from .rules import RULES, ZBox, make_rule, receiving, rule_params, share_relu_outputs

LINEAR_SELECTORS = ("first", "dense", "conv", "batchnorm", "normalization", "linear")
OTHER_SELECTORS = ("relu", "activation", "add", "multiply", "avgpool", "maxpool", "shape", "layernorm", "attention",
                   "custom")
SELECTORS = LINEAR_SELECTORS + OTHER_SELECTORS
KEYS = SELECTORS + ("params", "output")
OUTPUTS = ("logit", "relu")
PARAMS = ("epsilon", "gamma", "alpha", "beta", "low", "high")

DEFAULTS = {"normalization": "pass", "relu": "gradient", "activation": "pass", "add": "proportional",
            "multiply": "signal", "layernorm": "layer_norm", "attention": "attention", "custom": "proportional",
            "avgpool": "proportional", "maxpool": "gradient", "shape": "gradient"}

_DT = {"linear": "z_plus", "batchnorm": "w_square", "relu": "gradient", "add": "gradient",
       "avgpool": "gradient", "output": "relu"}
_PRESET_A = {"dense": "epsilon", "conv": "alpha_1_beta_0", "batchnorm": "alpha_2_beta_1",
             "linear": "epsilon", "params": {"epsilon": 0.1}}
_PRESET_B = dict(_PRESET_A, conv="alpha_2_beta_1")
_ZENNIT = {"dense": "epsilon", "linear": "epsilon", "params": {"epsilon": 1e-6}}

COMPOSITES = {
    "lrp.z": {"linear": "z"},
    "lrp.epsilon": {"linear": "epsilon", "params": {"epsilon": 1.0}},
    "lrp.alpha_1_beta_0": {"linear": "alpha_1_beta_0"},
    "lrp.alpha_2_beta_1": {"linear": "alpha_2_beta_1"},
    "lrp.alpha_beta": {"linear": "alpha_beta", "params": {"alpha": 2.0, "beta": 1.0}},
    "lrp.z_plus": {"linear": "z_plus"},
    "lrp.w_square": {"linear": "w_square"},
    "lrp.flat": {"linear": "flat"},
    "lrp.sequential_preset_a": _PRESET_A,
    "lrp.sequential_preset_b": _PRESET_B,
    "lrp.sequential_preset_a_flat": dict(_PRESET_A, first="flat"),
    "lrp.sequential_preset_b_flat": dict(_PRESET_B, first="flat"),
    "deep_taylor": _DT,
    "deep_taylor.bounded": dict(_DT, first="z_box", params={"low": 0.0, "high": 1.0}),
    "epsilon_plus": dict(_ZENNIT, conv="z_plus"),
    "epsilon_plus_flat": dict(_ZENNIT, conv="z_plus", first="flat"),
    "epsilon_gamma_box": dict(_ZENNIT, conv="gamma", first="z_box",
                              params={"epsilon": 1e-6, "gamma": 0.25, "low": 0.0, "high": 1.0}),
    "epsilon_alpha_2_beta_1_flat": dict(_ZENNIT, conv="alpha_2_beta_1", first="flat"),
}


def register(name, composite):
    """Register a composite (a dict as described in the module docstring) under ``name``."""
    COMPOSITES[str(name)] = validate(composite, str(name))
    return COMPOSITES[str(name)]


def canonical(name):
    """The registered name of a composite (``"epsilon"`` -> ``"lrp.epsilon"``); MethodError with the
    valid names for an unknown one."""
    low = str(name).strip().lower()
    for key in (low, f"lrp.{low}"):
        if key in COMPOSITES:
            return key
    raise MethodError(f"unknown LRP composite {name!r}; valid: {', '.join(COMPOSITES)} "
                      f"(or a dict {{selector: rule}})")


def get(composite):
    """The composite dict for a registered name (with or without the ``lrp.`` prefix) or a user dict
    (validated); MethodError with the valid names otherwise."""
    if isinstance(composite, dict):
        return validate(composite, "composite")
    return COMPOSITES[canonical(composite)]


def _rule_spec(spec, where):
    if isinstance(spec, str):
        name, kw = spec, {}
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict):
        name, kw = spec
    else:
        raise MethodError(f"{where}: a rule is a name or (name, {{param: value}}), got {spec!r}")
    if name not in RULES:
        raise MethodError(f"{where}: unknown LRP rule {name!r}; valid: {', '.join(RULES)}")
    bad = [k for k in kw if k not in rule_params(name)]
    if bad:
        raise MethodError(f"{where}: rule {name!r} takes no parameter {', '.join(map(str, bad))}; "
                          f"valid: {', '.join(rule_params(name)) or 'none'}")
    return name, dict(kw)


def validate(composite, where="composite"):
    """Check a composite dict: selectors, rule names and parameters; returns it."""
    bad = [k for k in composite if k not in KEYS]
    if bad:
        raise MethodError(f"{where}: unknown selector(s) {', '.join(map(repr, bad))}; valid: {', '.join(KEYS)}")
    for sel in SELECTORS:
        if sel in composite:
            _rule_spec(composite[sel], f"{where} {sel!r}")
    params = composite.get("params", {})
    bad = [k for k in params if k not in PARAMS]
    if bad:
        raise MethodError(f"{where}: unknown parameter(s) {', '.join(map(repr, bad))}; valid: {', '.join(PARAMS)}")
    if composite.get("output", "logit") not in OUTPUTS:
        raise MethodError(f"{where}: output must be one of {', '.join(OUTPUTS)}, got {composite['output']!r}")
    if not any(s in composite for s in LINEAR_SELECTORS):
        raise MethodError(f"{where}: no rule for linear layers; set one of {', '.join(LINEAR_SELECTORS)}")
    return composite


def used_params(composite):
    """The parameter names the composite's rules read (fixed (name, {..}) values excluded)."""
    out = set()
    for sel in LINEAR_SELECTORS:
        if sel in composite:
            name, kw = _rule_spec(composite[sel], sel)
            out.update(p for p in rule_params(name) if p not in kw)
    return out


def _selectors(node, first):
    k = node.kind
    if k in ir.LINEAR:
        sel = ["first"] if node.id in first else []
        sel += {"Dense": ["dense"], "Conv2D": ["conv"], "DepthwiseConv2D": ["conv"],
                "BatchNormalization": ["batchnorm"], "Rescaling": ["normalization"],
                "Normalization": ["normalization"]}[k]
        return sel + ["linear"]
    if k in ("ReLU", "Activation") and not node.fused and ir.plain_relu(node):
        return ["relu"]
    if k in ir.ELEMENTWISE + ir.UNIT_NORM:
        return ["activation"]
    if k == "Add":
        return ["add"]
    if k == "Multiply":
        return ["multiply"]
    if k in ir.NORM:
        return ["layernorm"]
    if k in ir.ATTENTION:
        return ["attention"]
    if k in ir.CUSTOM:
        return ["custom"]
    if k in ("AveragePooling2D", "GlobalAveragePooling2D", "GlobalAveragePooling1D") + ir.RESIZE:
        return ["avgpool"]
    if k in ("MaxPooling2D", "GlobalMaxPooling2D", "GlobalMaxPooling1D", "Maximum", "Minimum"):
        return ["maxpool"]
    if k in ir.SHAPE + ir.INDEXING or k == "Concatenate":
        return ["shape"]
    return []


def assign(graph, composite, params=None):
    """``{node id: rule object}`` for every node but the input, and the composite's output mode.

    ``params`` override the composite's ``"params"``. ModelError for a node no rule can handle
    (an inner softmax or sigmoid... named with its layer)."""
    comp = get(composite)
    merged = dict(comp.get("params", {}))
    merged.update({k: v for k, v in (params or {}).items() if v is not None})
    first = graph.first_linear()
    rules, heads = {}, []
    for node in graph.nodes:
        if node.id == graph.input_id:
            continue
        if node.kind == "Softmax" or (node.kind == "Activation" and node.config.get("activation") in HEADS):
            heads.append(node)           # refused below unless it only feeds a gate
            rules[node.id] = make_rule("pass")
            continue
        spec, sel = None, None
        for sel in _selectors(node, first):
            spec = comp.get(sel, DEFAULTS.get(sel))
            if sel == "batchnorm" and sel not in comp:
                spec = None
            if spec is not None:
                break
        if spec is None:
            raise MethodError(f"composite has no rule for node {node.label()}")
        name, kw = _rule_spec(spec, "composite")
        # the composite's parameters go to the layer rules (and declared affine layers); weightless nodes
        # take only their own
        kw = {**merged, **kw} if sel in LINEAR_SELECTORS + ("custom",) else kw
        if name == "z_box":
            kw = {**kw, **_bounds_at(graph, node, kw.get("low", ZBox.low), kw.get("high", ZBox.high))}
        rules[node.id] = make_rule(name, **kw)
    live = receiving(graph, rules)
    for node in heads:
        if node.id in live:
            raise ModelError(f"native LRP cannot propagate relevance through {node.config.get('activation', 'softmax')} "
                             f"layer {node.name!r} ({node.kind}) inside the model (only a final one is stripped)")
    share_relu_outputs(graph, rules)
    return rules, comp.get("output", "logit")


def input_bounds(composite, params=None):
    """``(low, high)`` (float64 arrays: scalars or one per channel) that a ``z_box`` rule on the
    ``first`` layers assumes of the model's inputs, ``params`` overriding the composite's; None when
    the first layers take another rule."""
    comp = get(composite)
    if "first" not in comp:
        return None
    name, kw = _rule_spec(comp["first"], "first")
    if name != "z_box":
        return None
    merged = {**comp.get("params", {}), **(params or {}), **kw}
    return (np.asarray(merged.get("low", ZBox.low), np.float64),
            np.asarray(merged.get("high", ZBox.high), np.float64))


def _bounds_at(graph, node, low, high):
    """The input bounds ``low <= x <= high`` carried through the input normalisation before ``node``
    (Rescaling, Normalization, an input BatchNormalization: ``x * s + t`` per channel)."""
    path, i = [], node.inputs[0]
    while i != graph.input_id and i in graph.input_path():
        path.append(graph[i])
        i = graph[i].inputs[0]
    lo = np.asarray(low, np.float64)
    hi = np.asarray(high, np.float64)
    reshaped = False
    for n in reversed(path):
        if n.kind in ("Dropout",) + ir.RESIZE:   # an identity; a resize keeps each channel's range
            continue
        if n.kind in ir.INDEXING:               # channels reordered: per-channel bounds would move too
            if lo.size > 1 or hi.size > 1:
                raise MethodError(f"z_box: cannot carry per-channel bounds through {n.label()} (channel "
                                  "indexing); give scalar bounds or use 'flat' at the first layer")
            continue
        if n.kind in ("Flatten", "Reshape"):
            reshaped = True
            continue
        if reshaped and (lo.size > 1 or n.weights["scale"].size > 1):
            raise MethodError(f"z_box: cannot carry per-channel bounds through {n.label()} after a "
                              "Flatten/Reshape; give scalar bounds or use 'flat' at the first layer")
        a, b = lo * n.weights["scale"] + n.weights["shift"], hi * n.weights["scale"] + n.weights["shift"]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
    if all(n.kind not in ir.AFFINE for n in path):     # nothing on the path rescales the values
        return {"low": low, "high": high}
    return {"low": lo.astype(np.float32), "high": hi.astype(np.float32)}


def describe(composite):
    """One line: ``selector=rule`` pairs of a composite (messages, reports)."""
    comp = get(composite)
    parts = [f"{s}={comp[s] if isinstance(comp[s], str) else comp[s][0]}" for s in SELECTORS if s in comp]
    if comp.get("params"):
        parts.append("params=" + ",".join(f"{k}={v}" for k, v in comp["params"].items()))
    return " ".join(parts)

