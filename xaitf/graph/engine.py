"""The propagation engine: one batched ``tf.function`` per (model, composite, parameters).

The backward pass starts, as iNNvestigate's, from the value of the explained logit: ``R = onehot(c)
* f_c(x)`` (``relu(f_c)`` for Deep Taylor composites), then visits the graph's nodes in reverse
topological order; each node's rule (:mod:`xaitf.graph.composites`) turns the relevance of its
output into relevance of its inputs, and a node read by several others sums what they send back.
The result is the relevance of the input, per channel (N,H,W,C).

Graphs and functions live in the model's own cache (:func:`xaitf.keras_bridge.model_cache`). The
graphs copy the weights into variables; when the model's weights change, :func:`propagator` reads
them again into the same variables (:func:`reload`), so that the compiled functions are not traced
again (the randomisation metrics change the weights layer by layer). Every
result is checked: non-finite relevance raises MethodError naming the first node (and rule) where
it appeared, found by replaying the batch eagerly.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..compat import quiet_retracing
from ..errors import MethodError
from ..keras_bridge import input_shape, model_cache
from . import composites as C
from . import ir
from .canonizers import canonize
from .ir import read_model

_PREFIX = "graph."


def graph_of(model, batchnorm=True, affine=()):
    """The canonized graph of ``model`` (final softmax stripped; BatchNormalization folded unless
    ``batchnorm=False``; the layers named in ``affine`` read as declared affine maps), read once per
    model."""
    cache = model_cache(model)
    affine = tuple(sorted(set(affine or ())))
    key = (_PREFIX + "ir", bool(batchnorm), affine)
    if key not in cache:
        raw = cache.get((_PREFIX + "raw", affine))
        if raw is None:
            raw = cache[(_PREFIX + "raw", affine)] = read_model(model, affine)
        cache[key] = canonize(raw, batchnorm=batchnorm)
    return cache[key]


def _keys(cache, what=None):
    """The engine's keys in ``cache`` (those of one kind: ``"raw"``, ``"ir"``, ``"lrp"``)."""
    def ours(k):
        head = k if isinstance(k, str) else (k[0] if isinstance(k, tuple) and isinstance(k[0], str) else "")
        return head.startswith(_PREFIX) and (what is None or head == _PREFIX + what)

    return [k for k in cache if ours(k)]


def forget(model):
    """Drop the graphs and functions cached for ``model``."""
    cache = model_cache(model)
    for k in _keys(cache):
        del cache[k]


def reload(model):
    """Read ``model``'s weights again into its cached graphs, in place (:func:`xaitf.graph.ir.reload`):
    its propagators keep their compiled functions (Keras 3 MobileNetV2 at 96x96: 0.10 to 0.14 s per
    weight change, where reading the graphs and tracing again cost 0.75 to 1.6 s). A propagator
    whose rules depend on the weights (``z_box`` bounds carried through an input normalisation)
    and now differ is dropped, and everything is when a graph reads differently (not expected:
    new weights keep the layers). Reading again re-traces the calls of custom layers (one more
    call node on each of their sublayers per change)."""
    cache = model_cache(model)
    raws = {k: read_model(model, k[1]) for k in _keys(cache, "raw")}
    fresh = {k: canonize(raws[(_PREFIX + "raw", k[2])], batchnorm=k[1]) for k in _keys(cache, "ir")}
    try:
        for k, g in fresh.items():
            ir.reload(cache[k], g)
    except ValueError:
        forget(model)
        return
    cache.update(raws)
    for k in _keys(cache, "lrp"):
        if not cache[k].same_rules():
            del cache[k]


def propagate(graph, rules, output, x, targets, record=None):
    """Relevance of the input (same shape as ``x``) for int32 ``targets``.

    ``record`` (a list, eager use) receives ``(node, rule, output relevance, [input relevances])``
    per step."""
    acts = graph.activations(x)
    f = acts[graph.output_id]
    if output == "relu":
        f = tf.nn.relu(f)
    relevance = {graph.output_id: tf.one_hot(targets, tf.shape(f)[-1], dtype=f.dtype) * f}
    for node in reversed(graph.nodes):
        if node.id == graph.input_id or node.id not in relevance:
            continue
        r = relevance.pop(node.id)
        rule = rules[node.id]
        y = acts[node.id if rule.relu_output is None else rule.relu_output]
        ins = rule.backward(node, [acts[i] for i in node.inputs], y, r)
        if record is not None:
            record.append((node, rule, r, ins))
        for i, ri in zip(node.inputs, ins):
            if ri is None:          # an input the rule gives no relevance (a gate: rule 'signal')
                continue
            relevance[i] = relevance[i] + ri if i in relevance else ri
    return relevance.get(graph.input_id, tf.zeros_like(acts[graph.input_id]))


def _key(composite, params, batchnorm, affine):
    comp = C.canonical(composite) if isinstance(composite, str) else repr(sorted(composite.items(), key=str))
    ps = tuple(sorted((k, repr(np.asarray(v).tolist())) for k, v in (params or {}).items() if v is not None))
    return (_PREFIX + "lrp", comp, ps, bool(batchnorm), tuple(sorted(set(affine or ()))))


class Propagator:
    """Relevance maps of one model under one composite: ``prop(x, targets) -> (N,H,W,C)`` numpy.

    Use :func:`propagator` (cached per model) rather than the constructor."""

    def __init__(self, model, composite, params=None, batchnorm=True, affine=()):
        self.graph = graph_of(model, batchnorm, affine)
        self.composite_name = C.canonical(composite) if isinstance(composite, str) else "user composite"
        self.composite, self.params = composite, params
        self.rules, self.output = C.assign(self.graph, composite, params)
        spec = [tf.TensorSpec([None, *input_shape(model)], tf.float32), tf.TensorSpec([None], tf.int32)]
        graph, rules, output = self.graph, self.rules, self.output
        # no data-dependent Python control flow to convert; one function per (model, composite) on
        # purpose (the randomisation metrics make one per model copy): not a retracing to warn of
        self.fn = quiet_retracing(tf.function(lambda x, t: propagate(graph, rules, output, x, t),
                                              input_signature=spec, autograph=False))

    def same_rules(self):
        """True when the composite assigns the graph (as it is now) the rules it was traced with."""
        def spec(rules):
            return [(i, repr(r), r.relu_output) for i, r in sorted(rules.items())]

        return spec(C.assign(self.graph, self.composite, self.params)[0]) == spec(self.rules)

    def __call__(self, x, targets):
        x = tf.convert_to_tensor(np.asarray(x, np.float32))
        t = tf.convert_to_tensor(np.asarray(targets, np.int32))
        r = self.fn(x, t).numpy()
        if not np.all(np.isfinite(r)):
            raise self.diagnose(x, t)
        return r

    def diagnose(self, x, t):
        """The MethodError naming the first node whose output or relevance is not finite."""
        acts = self.graph.activations(x)
        for node in self.graph.nodes:
            if not np.all(np.isfinite(acts[node.id].numpy())):
                return MethodError(f"native LRP ({self.composite_name}): the forward pass is not finite at "
                                   f"node {node.label()}; check the model's weights and inputs")
        record = []
        propagate(self.graph, self.rules, self.output, x, t, record=record)
        for node, rule, _, ins in record:
            if not all(np.all(np.isfinite(r.numpy())) for r in ins if r is not None):
                return MethodError(f"native LRP ({self.composite_name}): relevance became NaN/inf at node "
                                   f"{node.label()} under rule {rule!r}; try a rule with a stabiliser "
                                   f"(epsilon) for this layer")
        return MethodError(f"native LRP ({self.composite_name}): non-finite relevance (not reproduced "
                           "eagerly)")


def propagator(model, composite, params=None, batchnorm=True, fingerprint=None, affine=()):
    """The cached :class:`Propagator` for (model, composite, params, batchnorm, affine: the layers
    declared affine, see :func:`xaitf.graph.ir.read_model`). When the model's weights have changed
    since they were read (:func:`xaitf.keras_bridge.weights_fingerprint`), its graphs are reloaded
    (:func:`reload`).
    ``fingerprint``: the model's current fingerprint when the caller has just computed it (an
    explainer's constructor), so the weights are not read twice."""
    from ..keras_bridge import weights_fingerprint

    cache = model_cache(model)
    fp = weights_fingerprint(model) if fingerprint is None else fingerprint
    if cache.get(_PREFIX + "weights", fp) != fp:
        reload(model)
    cache[_PREFIX + "weights"] = fp
    key = _key(composite, params, batchnorm, affine)
    prop = cache.get(key)
    if prop is None:
        prop = cache[key] = Propagator(model, composite, params, batchnorm, affine)
    return prop
