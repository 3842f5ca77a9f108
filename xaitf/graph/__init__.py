"""A small model graph for native relevance propagation (LRP, Deep Taylor).

:mod:`.ir` reads a tf-keras or Keras 3 model into a list of nodes, :mod:`.canonizers` folds
BatchNormalization and strips the final softmax, :mod:`.rules` holds the propagation rules,
:mod:`.composites` maps nodes to rules by name, and :mod:`.engine` runs one batched
``tf.function`` per (model, composite).
"""
from .ir import Graph, Node, read_model  # noqa: F401
