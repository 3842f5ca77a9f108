"""Complexity of explanations: sparseness as the Gini index (Chalasani et al. 2020), complexity as
the entropy of the relevance shares (Bhatt et al. 2020), effective complexity (Nguyen & Martinez
2020)."""

import numpy as np

from .. import params
from ..errors import MethodError
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


def complexity(maps):
    """Entropy of the fractional contributions of ``|map|`` (Bhatt et al. 2020, "Evaluating and
    aggregating feature-based model explanations", IJCAI).

    With ``p_i = |a_i| / sum_j |a_j|`` over the ``n = H*W`` pixels::

        C = -sum_i p_i ln p_i          (0 ln 0 = 0)

    As Quantus' ``Complexity`` (``scipy.stats.entropy`` of ``a / sum |a|``: natural logarithm,
    absolute values by its default ``abs=True``). 0 for a map with all its mass on one pixel,
    ``ln n`` for a uniform map; lower is simpler. A map that is zero everywhere scores ``ln n``,
    the limit of a uniform map, as :func:`sparseness` scores it as uniform (Quantus returns NaN).

    Args:
        maps: (N,H,W) relevance maps.

    Returns:
        (N,) float64 in [0, ln(H*W)].
    """
    m = check_maps(maps)
    n = m.shape[1] * m.shape[2]
    a = np.abs(m).reshape(len(m), n)
    total = a.sum(axis=1, keepdims=True)
    p = a / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, terms.sum(axis=1), np.log(n))


def effective_complexity(maps, eps=1e-5, normalise=True):
    """Effective complexity (Nguyen & Martinez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584): the number of pixels with relevance above ``eps``::

        EC = #{ i : |a_i| / max_j |a_j| > eps }        (normalise=True)
        EC = #{ i : |a_i| > eps }                      (normalise=False)

    As Quantus' ``EffectiveComplexity`` (``abs=True``, ``normalise=True``, ``eps=1e-5``), except
    that every map is divided by its own maximum absolute value (Quantus 0.6.0's default
    ``normalise_by_max`` divides by the maximum over the batch passed: equal with
    ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``; bench/results-quantus.md), so ``eps``
    is relative to the map's largest relevance. A map that is zero everywhere scores 0.
    Lower is simpler.

    Args:
        maps: (N,H,W) relevance maps.
        eps: threshold, a number >= 0. Default 1e-5.
        normalise: divide ``|map|`` by its maximum first (Quantus' default). Default True.

    Returns:
        (N,) float64 counts in [0, H*W].
    """
    m = check_maps(maps)
    eps = params.number(eps, "eps", "effective_complexity", low=0)
    if not isinstance(normalise, (bool, np.bool_)):
        raise MethodError(f"effective_complexity needs normalise to be True or False, got {normalise!r}")
    a = np.abs(m)
    if normalise:
        top = a.max(axis=(1, 2), keepdims=True)
        a = a / np.where(top > 0, top, 1.0)
    return (a > eps).sum(axis=(1, 2)).astype(np.float64)

