"""Model evaluations per explained input, per method: the benchmark's floors.

The table and its helpers live in :mod:`xaitf.budget` (the command lines' cost estimates use the
same numbers); this module re-exports them under the names the benchmark uses.

``cost(name, explainer)`` returns ``(evals_per_input, backward, note)``: ``evals_per_input`` model
evaluations (whole images through the model) per input, ``backward`` whether each also needs a
backward pass, and a short note saying where the number comes from. The floor of a method on N
inputs is ``N * evals_per_input`` such evaluations (see :class:`bench.harness.Floor`), in chunks of
the case's batch size, or of N for methods whose steps depend on each other (``SEQUENTIAL``: MP).

It is each method's published algorithm at its settings (what a straightforward implementation
would evaluate). Methods with the exact first-layer shortcut (occlusion, PDA, Shapley sampling on
simple chains) evaluate only part of the model per perturbation and can run below this floor.
"""
from xaitf.budget import COSTS, SEQUENTIAL, cost, floor_chunk  # noqa: F401
