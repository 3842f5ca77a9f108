"""Randomisation tests of explanations ("sanity checks").

* :func:`model_parameter_randomisation`: Adebayo et al. 2018, "Sanity Checks for Saliency Maps":
  the weights of the model are randomised layer by layer, from the output down (cascading) or one
  layer at a time (independent), and the maps of the randomised model are compared with the
  original maps. A method whose maps stay similar does not depend on what the model learned (the
  paper finds this for Guided Backprop and DeconvNet).
* :func:`random_logit`: Sixt et al. 2020, "When Explanations Lie": the map of the target class
  compared with the map of a randomly chosen other class; similar maps do not explain the class.

Similarities between two maps ``a`` and ``b`` of one image (:data:`SIMILARITIES`), after the
preprocessing of Adebayo et al. and Quantus (``absolute``: |map|; ``normalise``: divided by its
largest |value|):

* ``spearman``: Spearman rank correlation of the pixels (ties share their mean rank);
* ``ssim``: structural similarity (Wang et al. 2004, ``skimage.metrics.structural_similarity``,
  7x7 window or the largest odd window that fits, ``data_range`` = max - min over both maps);
* ``hog``: Pearson correlation of the maps' histograms of oriented gradients (Dalal & Triggs 2005,
  ``skimage.feature.hog``, 9 orientations, cells of max(2, min(H, W) // 7) pixels, 2x2 blocks).

A constant map has no rank or HOG correlation: the similarity is 1 when both maps are equal and
0 otherwise.
"""
import collections

import numpy as np

from ..errors import InputError, MethodError
from ._checks import average_ranks, check_int, check_maps

SIMILARITIES = ("spearman", "ssim", "hog")
ORDERS = ("cascading", "independent")
RANDOMISATIONS = ("normal", "permute", "shuffle")

Randomisation = collections.namedtuple("Randomisation", "layers scores maps original")
Randomisation.__doc__ = """Result of :func:`model_parameter_randomisation`: ``layers`` (L,) names of the
randomised layers, top first; ``scores`` ``{similarity: (L, N) float64}``; ``maps`` (L, N, H, W)
maps of the randomised models (None unless ``return_maps``); ``original`` (N, H, W) maps of the model."""


# -- similarities --------------------------------------------------------------------------------
def _prepare(m, absolute, normalise):
    m = np.abs(m) if absolute else m
    if normalise:
        top = np.max(np.abs(m), axis=(1, 2), keepdims=True)
        m = m / np.where(top > 0, top, 1.0)
    return m


def _degenerate(a, b):
    """1 for two equal maps, 0 otherwise: the similarity where a map is constant."""
    return 1.0 if np.allclose(a, b) else 0.0


def _pearson(u, v):
    u = u - u.mean()
    v = v - v.mean()
    d = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / d) if d > 0 else None


def _rank_features(a):
    return average_ranks(a.ravel())


def _hog_features(a):
    from skimage.feature import hog as _hog

    cell = max(2, min(a.shape) // 7)
    return _hog(a, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), feature_vector=True)


def spearman(a, b, fa=None):
    """Spearman rank correlation of two maps (H,W) (``fa``: the ranks of ``a``, when known)."""
    r = _pearson(_rank_features(a) if fa is None else fa, _rank_features(b))
    return _degenerate(a, b) if r is None else r


def ssim(a, b, fa=None):
    """Structural similarity of two maps (H,W); window 7 or the largest odd size that fits (``fa``:
    unused, for the common signature)."""
    from skimage.metrics import structural_similarity

    win = min(7, min(a.shape) - (1 - min(a.shape) % 2))
    if win < 3:
        raise InputError(f"ssim needs maps of at least 3x3 pixels, got {a.shape[0]}x{a.shape[1]}")
    rng = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if rng == 0:
        return 1.0
    return float(structural_similarity(a, b, win_size=win, data_range=rng))


def hog(a, b, fa=None):
    """Pearson correlation of the HOG features of two maps (H,W) (``fa``: the features of ``a``,
    when known)."""
    r = _pearson(_hog_features(a) if fa is None else fa, _hog_features(b))
    return _degenerate(a, b) if r is None else r


_SIM = {"spearman": spearman, "ssim": ssim, "hog": hog}
_FEATURES = {"spearman": _rank_features, "hog": _hog_features}     # what a reference computes once


class Reference:
    """Maps (N,H,W) to compare other maps with, prepared once: normalised, and the features of the
    ``how`` similarities that depend on one map only (Spearman's ranks, HOG's histograms) computed
    once, so that a randomisation test compares each state's maps with the original's at half the
    cost (224x224: Spearman 2 ms and HOG 4.5 ms a map)."""

    def __init__(self, a, how="spearman", absolute=True, normalise=True):
        self.sims = _check_similarities(how)
        self.single = isinstance(how, str)
        self.absolute, self.normalise = absolute, normalise
        self.maps = _prepare(check_maps(a, name="a"), absolute, normalise)
        self.features = {s: [_FEATURES[s](m) for m in self.maps] for s in self.sims if s in _FEATURES}

    def compare(self, b):
        """Per-image similarity of ``b`` (N,H,W) with the reference maps: (N,) float64, or a dict
        of them for several similarities."""
        b = _prepare(check_maps(b, self.maps.shape, name="b"), self.absolute, self.normalise)
        out = {}
        for s in self.sims:
            fa = self.features.get(s)
            out[s] = np.array([_SIM[s](self.maps[i], b[i], None if fa is None else fa[i])
                               for i in range(len(b))])
        return out[self.sims[0]] if self.single else out


def similarity(a, b, how="spearman", absolute=True, normalise=True):
    """Per-image similarity of map batches ``a``, ``b`` (N,H,W): (N,) float64 (see the module)."""
    return Reference(a, how, absolute, normalise).compare(b)


def _check_similarities(how):
    sims = (how,) if isinstance(how, str) else tuple(how)
    bad = [s for s in sims if s not in SIMILARITIES]
    if bad or not sims:
        raise MethodError(f"unknown similarity {bad[0] if bad else how!r}; valid: {', '.join(SIMILARITIES)}")
    return sims


# -- explainers on other models ------------------------------------------------------------------
def explainer_factory(method, method_kwargs=None):
    """``factory(model) -> explain(x, targets)`` for a method given as a registry name (with
    ``method_kwargs``), an :class:`xaitf.Explainer` (rebuilt on the new model with its own
    parameters, batch size and seed) or a callable ``factory(model)``.

    The factories of names and explainers are marked ``follows_weights``: an xaitf explainer
    follows new weights (it reads the variables live, or, where its setup keeps copies,
    ``copies_weights``, compares :func:`xaitf.keras_bridge.weights_fingerprint` when called and
    rebuilds them), so one explainer serves every randomised state of a model. A user's factory
    is called again for each state."""
    from .. import registry
    from ..explainer import Explainer

    def following(factory):
        factory.follows_weights = True
        return factory

    kw = dict(method_kwargs or {})
    if isinstance(method, str):
        registry.canonical(method)                  # unknown names: one line with the valid ones
        return following(lambda model: registry.create_explainer(method, model, **{"progress": False, **kw}))
    if isinstance(method, Explainer):
        if kw:
            raise MethodError("method_kwargs go with a method name, not with an explainer instance")
        common = dict(batch_size=method.batch_size, seed=method.seed, channel_reduce=method.channel_reduce,
                      progress=False)
        return following(lambda model: registry.create_explainer(method.name, model, **{**method.params, **common}))
    if callable(method):
        return method
    raise MethodError(f"method must be a method name, an xaitf Explainer or a callable factory(model) -> "
                      f"explainer, got {type(method).__name__}")


def randomisable_layers(model, kernels_only=True):
    """Layers with weights (with ``kernels_only``: a kernel, i.e. Dense, convolutions and layers
    whose weights include kernels, as MultiHeadAttention's projections; not BatchNormalization,
    whose variance must stay positive, nor LayerNormalization), nested models flattened, in the
    model's order (bottom first)."""
    from ..keras_bridge import leaf_layers

    def has_kernel(layer):
        if any(hasattr(layer, k) for k in ("kernel", "depthwise_kernel", "pointwise_kernel")):
            return True
        return any("kernel" in (getattr(w, "path", None) or w.name).rsplit("/", 1)[-1] for w in layer.weights)

    return [layer for layer in leaf_layers(model) if layer.get_weights() and (not kernels_only or has_kernel(layer))]


def clone(model):
    """A copy of ``model`` (same Keras) with its own weights, equal to the model's."""
    from ..keras_bridge import kmodule

    twin = kmodule(model).models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def randomise_layer(layer, how, seed, index):
    """Replace ``layer``'s weights: ``normal`` N(0, std of each weight array) (Adebayo et al.'s
    re-initialisation, with the array's own scale), ``permute`` (Quantus: each array permuted along
    its first axis) or ``shuffle`` (every element permuted). Seeded by ``(seed, index)``."""
    rng = np.random.default_rng([int(seed), int(index)])
    new = []
    for w in layer.get_weights():
        if how == "normal":
            std = float(np.std(w)) or 1.0
            new.append(rng.normal(0.0, std, w.shape).astype(w.dtype))
        elif how == "permute":
            new.append(rng.permutation(w))
        else:
            new.append(rng.permutation(w.ravel()).reshape(w.shape))
    layer.set_weights(new)


def _maps(explain, x, targets):
    """``explain``'s maps as float64 (N,H,W), channels summed."""
    maps = np.asarray(explain(x, targets), np.float64)
    return maps.sum(-1) if maps.ndim == 4 else maps


# -- the tests -----------------------------------------------------------------------------------
def model_parameter_randomisation(model, x, targets, method, method_kwargs=None, order="cascading",
                                  similarities=("spearman", "ssim", "hog"), randomisation="normal",
                                  layers=None, absolute=True, normalise=True, seed=0, return_maps=False,
                                  progress=True):
    """Model parameter randomisation test (Adebayo et al. 2018).

    With layers ``l_1 .. l_L`` holding weights, from the output down: ``cascading`` randomises
    ``l_1``, then ``l_1, l_2``, ... (each step adds the next layer); ``independent`` randomises
    ``l_k`` alone. After each step the method explains ``x`` on the randomised model and every
    similarity of :data:`SIMILARITIES` compares each map with the original model's. High
    similarity at every step: the maps do not depend on the weights.

    Args:
        model: tf-keras or Keras 3 classifier (not modified: the randomised models are copies).
        x: images (N,H,W,C). targets: classes explained (ints; the same on every model).
        method: a registry name (e.g. ``"grad"``), an :class:`xaitf.Explainer`, or a callable
            ``factory(model) -> explain(x, targets)``. method_kwargs: keyword arguments of a name.
        order: ``"cascading"`` (default) or ``"independent"``.
        similarities: names of :data:`SIMILARITIES` (all three by default).
        randomisation: ``"normal"`` (default: N(0, std of the original array), as the paper's
            re-initialisation), ``"permute"`` (Quantus) or ``"shuffle"``.
        layers: names of the layers to randomise, in the order given (None: every layer with a
            kernel, i.e. Dense and convolutions, top first; BatchNormalization keeps its statistics
            unless named here).
        absolute, normalise: |map| and division by max |map| before comparing (True, True; as
            the paper's rank correlation of absolute maps and Quantus' defaults).
        seed: layer k's new weights come from ``default_rng([seed, k])``.
        return_maps: keep the randomised models' maps for figures: True, all of them (L, N, H, W);
            an int k, those of the first k images (L, k, H, W); False (default), none.
        progress: progress over the layers.

    Returns:
        :class:`Randomisation`.
    """
    from ..explainer import as_batch, progress as _progress

    if order not in ORDERS:
        raise MethodError(f"unknown order {order!r}; valid: {', '.join(ORDERS)}")
    if randomisation not in RANDOMISATIONS:
        raise MethodError(f"unknown randomisation {randomisation!r}; valid: {', '.join(RANDOMISATIONS)}")
    sims = _check_similarities(similarities)
    if not isinstance(return_maps, (bool, np.bool_)) and not (
            isinstance(return_maps, (int, np.integer)) and return_maps >= 0):
        raise MethodError(f"return_maps must be True, False or a number of images >= 0, got {return_maps!r}")
    keep = None if isinstance(return_maps, (bool, np.bool_)) else int(return_maps)   # None: all images
    factory = explainer_factory(method, method_kwargs)
    x = as_batch(x, model)
    targets = np.asarray(targets)
    original = _maps(factory(model), x, targets)
    check_maps(original, x.shape[:3], name="the method's maps")
    reference = Reference(original, sims, absolute, normalise)       # the original's features, once
    twin = clone(model)
    weighted = randomisable_layers(twin)[::-1]
    if layers is not None:
        every = {l.name: l for l in randomisable_layers(twin, kernels_only=False)}
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in wanted if n not in every]
        if unknown:
            raise MethodError(f"no layer with weights named {unknown[0]!r}; layers with weights (top first): "
                              f"{', '.join(list(every)[::-1])}")
        weighted = [every[n] for n in wanted]
    if not weighted:
        raise MethodError("the model has no layer with weights to randomise")
    saved = twin.get_weights()
    reused = factory(twin) if getattr(factory, "follows_weights", False) else None
    scores = {s: [] for s in sims}
    kept = []
    for k, layer in enumerate(_progress(weighted, progress, desc="randomisation")):
        if order == "independent":
            twin.set_weights(saved)
        randomise_layer(layer, randomisation, seed, k)
        maps = _maps(factory(twin) if reused is None else reused, x, targets)
        sim = reference.compare(maps)
        for s in sims:
            scores[s].append(sim[s])
        if return_maps:
            kept.append(maps if keep is None else maps[:keep])
    return Randomisation([l.name for l in weighted], {s: np.stack(v) for s, v in scores.items()},
                         np.stack(kept) if return_maps else None, original)


def random_logit(model, x, targets, method, method_kwargs=None, similarity_name="ssim", num_classes=None,
                 absolute=False, normalise=True, seed=0):
    """Random logit test (Sixt et al. 2020; Quantus' ``RandomLogit``): the similarity between the
    map of the target class and the map of another class drawn uniformly from the rest, per image
    (``default_rng([seed, i])``). Lower is better (the map depends on the class).

    Args:
        model, x, targets, method, method_kwargs: as :func:`model_parameter_randomisation`.
        similarity_name: one of :data:`SIMILARITIES` (``"ssim"``: a 2-D SSIM with 7x7 windows;
            Quantus 0.6.0's default hands its SSIM the flattened maps, a 1-D SSIM, and normalises
            by the batch maximum: on 64 MNIST IG maps 0.72 against our 0.40, see
            bench/results-quantus.md).
        num_classes: classes to draw from (None: the model's outputs).
        absolute, normalise: preprocessing of both maps (False, True).
        seed: the other classes' draw.

    Returns:
        (N,) float64.
    """
    from ..explainer import as_batch
    from ..keras_bridge import output_units

    _check_similarities(similarity_name)
    factory = explainer_factory(method, method_kwargs)
    x = as_batch(x, model)
    k = int(num_classes or output_units(model))
    if k < 2:
        raise MethodError(f"random_logit needs at least 2 classes, got {k}")
    t = np.asarray(targets).astype(np.int64).reshape(-1)
    if len(t) != len(x) or t.min() < 0 or t.max() >= k:
        raise InputError(f"targets: expected {len(x)} class indices in 0..{k - 1}, got {np.asarray(targets).tolist()[:8]}")
    other = np.array([(t[i] + 1 + np.random.default_rng([int(seed), i]).integers(k - 1)) % k
                      for i in range(len(t))])
    explain = factory(model)
    return similarity(_maps(explain, x, t), _maps(explain, x, other), similarity_name, absolute, normalise)
