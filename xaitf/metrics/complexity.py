"""Complexity of explanations: sparseness as the Gini index (Chalasani et al. 2020)."""
import numpy as np

from ._checks import check_maps


def sparseness(maps):
    """Gini index of ``|map|`` per map (Chalasani et al. 2020; Hurley & Rickard 2009).

    With the ``n`` values ``a_(1) <= ... <= a_(n)`` of ``|map|`` sorted ascending::

        G = sum_k (2k - n - 1) a_(k) / (n sum_k a_(k))

    0 for a uniform map, ``1 - 1/n`` for a map with all its mass on one pixel; higher is sparser.
    A map that is zero everywhere scores 0 (the limit of a uniform map).

    Args:
        maps: (N,H,W) relevance maps.

    Returns:
        (N,) float64 in [0, 1 - 1/n].
    """
    m = check_maps(maps)
    n = m.shape[1] * m.shape[2]
    a = np.sort(np.abs(m).reshape(len(m), n), axis=1)
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    total = a.sum(axis=1)
    g = (a * weights).sum(axis=1) / (n * np.where(total > 0, total, 1.0))
    return np.where(total > 0, g, 0.0)
