"""Graph rewrites that keep the function and make LRP's rules apply to whole linear maps.

* :func:`fold_batchnorm`: a BatchNormalization whose input is a Conv2D/DepthwiseConv2D/Dense read
  by nothing else becomes part of that layer: ``w' = w * s``, ``b' = b * s + t`` for the BN's
  per-channel ``y = x * s + t`` (the "canonization" of Kohlbrenner et al. 2020 / Zennit). Any
  other BatchNormalization stays an exact affine node.
* :func:`strip_head`: a final softmax or sigmoid is removed; LRP explains the logit.

Both return new graphs; the original is unchanged.
"""
import numpy as np

from . import ir
from .ir import Graph

HEADS = ("softmax", "sigmoid")


def _rewired(graph, drop, alias):
    """A graph without the nodes ``drop``, with every input id ``i`` replaced by ``alias[i]``."""
    def to(i):
        while i in alias:
            i = alias[i]
        return i

    nodes = [n if not any(i in alias for i in n.inputs) else n.replace(inputs=tuple(to(i) for i in n.inputs))
             for n in graph.nodes if n.id not in drop]
    return Graph(nodes, graph.input_id, to(graph.output_id), graph.name)


def _fold(kernel_node, bn):
    k, b = kernel_node.weights["kernel"], kernel_node.weights["bias"]
    s, t = bn.weights["scale"].astype(np.float64), bn.weights["shift"].astype(np.float64)
    if kernel_node.kind == "DepthwiseConv2D":   # output channel c * multiplier + m
        k2 = k * s.reshape(k.shape[2], k.shape[3])
    else:
        k2 = k * s
    return kernel_node.replace(
        weights={"kernel": k2.astype(np.float32), "bias": (b * s + t).astype(np.float32)},
        name=f"{kernel_node.name}+{bn.name}")


def fold_batchnorm(graph):
    """Fold every BatchNormalization into the kernel layer before it, where that layer has no
    other consumer (and is not the output)."""
    consumers = graph.consumers()
    replaced, drop, alias = {}, set(), {}
    for n in graph.nodes:
        if n.kind != "BatchNormalization" or len(n.inputs) != 1:
            continue
        src = graph[n.inputs[0]]
        src = replaced.get(src.id, src)
        if src.kind not in ir.KERNEL or consumers[src.id] != [n.id] or src.id == graph.output_id:
            continue
        replaced[src.id] = _fold(src, n)
        drop.add(n.id)
        alias[n.id] = src.id
    g = Graph([replaced.get(n.id, n) for n in graph.nodes], graph.input_id, graph.output_id, graph.name)
    return _rewired(g, drop, alias)


def is_head(node):
    return (node.kind == "Softmax") or (node.kind == "Activation" and node.config.get("activation") in HEADS)


def strip_head(graph):
    """Remove a final softmax/sigmoid node (an activation of the last layer or its own layer)."""
    out = graph[graph.output_id]
    if not is_head(out):
        return graph
    return Graph([n for n in graph.nodes if n.id != out.id], graph.input_id, out.inputs[0], graph.name)


def mark_nonnegative_inputs(graph):
    """Set ``nonneg_input`` on every node: True where its one input is >= 0 by construction
    (:meth:`Graph.nonnegative`), None where it reads the model's input (through Flatten, Reshape or
    input normalisation: images are often >= 0, checked at run time), False otherwise."""
    nonneg, direct = graph.nonnegative(), graph.input_path()

    def sign(n):
        if len(n.inputs) != 1:
            return False
        return True if n.inputs[0] in nonneg else (None if n.inputs[0] in direct else False)

    nodes = [n.replace(nonneg_input=sign(n)) for n in graph.nodes]
    return Graph(nodes, graph.input_id, graph.output_id, graph.name)


def canonize(graph, batchnorm=True):
    """:func:`strip_head`, then :func:`fold_batchnorm` (unless ``batchnorm=False``), then
    :func:`mark_nonnegative_inputs`."""
    graph = strip_head(graph)
    return mark_nonnegative_inputs(fold_batchnorm(graph) if batchnorm else graph)
