"""Faithfulness metrics: does the model's output change where the map says the relevance is?

* :func:`pixel_flipping`: Bach et al. 2015, pixels removed one step at a time, most relevant first;
* :func:`region_perturbation`: Samek et al. 2016, square regions removed, AOPC;
* :func:`faithfulness_correlation`: Bhatt et al. 2020, random pixel subsets, correlation of the
  map's sum with the drop of the output;
* :func:`mufidelity`: the same on a coarse grid of cells, as Xplique's ``MuFidelity``;
* :func:`infidelity`: Yeh et al. 2019, squared error between ``I . map`` and the output change
  under noise ``I``;
* :func:`road`: Rong et al. 2022, ROAD, removed pixels imputed by noisy linear interpolation.

Every perturbed input is one row of a flat list of (image, step or sample) pairs, evaluated in
chunks of ``batch_size`` by one TensorFlow program; only one chunk of perturbed images exists at a
time. Removals by a pixel order go through :class:`xaitf.metrics._common.Scorer`; random subsets,
and grid cells through the masked program of this module, ``x' = x * (1 - m) + base * m``, with
``m`` (the removal mask) made per chunk; infidelity's noise through its own program. Random draws of input ``i`` come from
``numpy.random.default_rng([seed, i])``; infidelity's noise and ROAD's imputation noise are drawn
on the device, from the counter-based stream of :mod:`xaitf.methods._random` keyed by (input
``i``, sample or fraction ``j``). A result does not depend on ``batch_size`` or on which other
inputs are in the batch.

Scores are the target's ``output`` (``"probabilities"`` by default, ``"logits"`` or ``"raw"``;
see :func:`xaitf.metrics._common.output_transform`), in float64.
"""
import functools

import numpy as np

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from .. import params
from ..errors import InputError, MethodError
from ..explainer import chunks
from ..explainer import progress as _progress
from ..keras_bridge import model_cache
from ..methods._random import INFIDELITY_NOISE, ROAD_NOISE, hashed_normal, pair_ids
from ._checks import average_ranks
from ._common import Curve, fill_image, pixel_order, prepare
from .imputation import linear_impute_batch, noisy_linear_impute, worth_compiling  # noqa: F401

ORDERS = ("morf", "lerf")
LAYOUTS = ("grid", "sliding")
PERTURBATIONS = ("gaussian",)
CORRELATIONS = ("pearson", "spearman")
ROAD_SCORES = ("accuracy", "output")
ROAD_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

ROAD_SOLVERS = ("cg", "sparse")


# ------------------------------------------------------------------------------------------------
# shared pieces
# ------------------------------------------------------------------------------------------------
def _choice(value, name, owner, options):
    return params.choice(value, name, owner, options)


def _number(value, name, owner, **kw):
    return params.number(value, name, owner, **kw)


def _program(sc, shape):
    """The masked program of ``sc``'s model for images (H,W,C): one tf.function, traced once.

    ``(x_all, base_all, idx, idx_b, m, tgt) -> (target score, argmax class)`` of the images
    ``x_all[idx] * (1 - m) + base_all[idx_b] * m`` (``m``: (B,H,W) or (1,1,1), the same for every
    channel). ``m`` = 0 or 1 keeps the pixel or takes the base exactly.
    """
    cache = model_cache(sc.model)
    key = ("faithfulness-program", sc.output, tuple(shape))
    if key not in cache:
        h, w, c = shape
        vec = tf.TensorSpec([None], tf.int32)
        plane = tf.TensorSpec([None, None, None], tf.float32)
        sig = [tf.TensorSpec([None, h, w, c], tf.float32),
               tf.TensorSpec([None, None, None, None], tf.float32), vec, vec, plane, vec]

        def program(x_all, base_all, idx, idx_b, m, tgt):
            xs = tf.gather(x_all, idx)
            bs = tf.broadcast_to(tf.gather(base_all, idx_b), tf.shape(xs))
            m = m[..., None]
            xp = xs * (1.0 - m) + bs * m
            out = sc.transform(sc.forward(xp, training=False))
            return tf.gather(out, tgt, batch_dims=1), tf.argmax(out, axis=-1, output_type=tf.int32)

        cache[key] = tf.function(program, input_signature=sig, autograph=False)
    return cache[key]


_NONE = np.zeros((1, 1, 1), np.float32)


def _masked_scores(sc, x, base, targets, n_per, make, batch_size, desc, show):
    """Scores of the ``N * n_per`` perturbed images, input-major (row ``i * n_per + j``).

    ``make(s)`` gives the masks ``m`` of the rows of slice ``s``; returns (N, n_per) float64 scores.
    """
    n = len(x)
    run = _program(sc, tuple(int(v) for v in x.shape[1:]))
    x_t = tf.constant(x, tf.float32)
    base_t = tf.constant(base, tf.float32)
    per_image = base.shape[0] != 1
    idx = np.repeat(np.arange(n, dtype=np.int32), n_per)
    tgt = np.asarray(targets, np.int32)[idx]
    out = np.empty(n * n_per)
    for s in _progress(chunks(n * n_per, batch_size), show, desc=desc):
        m = make(s)
        i = idx[s]
        score, _ = run(x_t, base_t, tf.constant(i), tf.constant(i if per_image else np.zeros_like(i)),
                       tf.constant(m, tf.float32), tf.constant(tgt[s]))
        out[s] = score.numpy()
    return out.reshape(n, n_per)


def _clean_scores(sc, x, targets, batch_size):
    """(N,) target scores of the unperturbed images."""
    return _masked_scores(sc, x, np.zeros((1, 1, 1, 1), np.float32), targets, 1,
                          lambda s: _NONE, batch_size, "scores", False)[:, 0]


def _rows(s, per, get):
    """Rows ``s`` of the input-major flat list with ``per`` rows per input; ``get(i)`` gives the
    (per, ...) rows of input ``i``."""
    parts = []
    p = s.start
    while p < s.stop:
        i, r = divmod(p, per)
        e = min(s.stop, (i + 1) * per)
        parts.append(get(i)[r:r + e - p])
        p = e
    return np.concatenate(parts)


TIE_RTOL = 1e-5   # model outputs this close (relative to the row's largest score) rank as ties


def _rank_ties_within(v, tol):
    """Average ranks (1-based) of each row of ``v``, values within ``tol[row]`` of their neighbour
    in sorted order counted as one tie (``tol`` 0: scipy's ``rankdata``)."""
    return np.stack([average_ranks(row, t) for row, t in zip(v, tol)])


def _correlate(a, b, how, scores=None):
    """Row-wise Pearson or Spearman correlation of (N,S) arrays; NaN where a row is constant.

    ``scores``: the model outputs ``b`` was computed from, (N, S+1) or so. For Spearman, values of
    ``b`` within :data:`TIE_RTOL` of the row's largest |score| rank as ties: the same perturbed
    input scored in batches of other sizes can differ by an ulp of float32, which would otherwise
    turn a tie into an order and move the result with ``batch_size``."""
    if how == "spearman":
        a = _rank_ties_within(a, np.zeros(len(a)))
        tol = np.zeros(len(b)) if scores is None else TIE_RTOL * np.abs(scores).max(axis=1)
        b = _rank_ties_within(np.asarray(b, np.float64), tol)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    r[~(den > 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _uniform_base(x, seed, noise_range, owner):
    """One U[low, high) noise image per input, ``default_rng([seed, i])``, (N,H,W,C) float32."""
    try:
        low, high = (float(v) for v in noise_range)
    except (TypeError, ValueError):
        raise MethodError(f"{owner} needs noise_range to be two numbers (low, high), got "
                          f"{noise_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise MethodError(f"{owner} needs noise_range to be finite (low, high) with low <= high, got "
                          f"{noise_range!r}")
    shape = tuple(x.shape[1:])
    return np.stack([np.random.default_rng([int(seed), i]).uniform(low, high, shape)
                     for i in range(len(x))]).astype(np.float32)


def _fill(x, fill, seed, owner, name="fill"):
    """:func:`fill_image`, also refusing a fill that would widen the images (one value per channel
    of a different channel count broadcasts in numpy, e.g. (2,) against C = 1)."""
    try:
        image = fill_image(x, fill, seed)
        if np.broadcast_shapes(image.shape, x.shape) != x.shape:
            raise InputError(f"fill shaped {np.shape(fill)} does not broadcast to the images {x.shape} "
                             f"(a number, {x.shape[-1]} value(s) per channel, or an image)")
    except MethodError as e:
        raise MethodError(f"{owner} {name}: {e}") from None
    except InputError as e:
        raise InputError(f"{owner} {name}: {e}") from None
    return image


def _seed(seed, owner):
    return params.integer(seed, "seed", owner, low=0)


# ------------------------------------------------------------------------------------------------
# pixel flipping
# ------------------------------------------------------------------------------------------------
def pixel_flipping(model, x, maps, targets, features_in_step=1, fill=0.0, batch_size=256,
                   output="probabilities", progress=True):
    """Pixel flipping (Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation", PLoS ONE).

    Pixels (all channels) are removed in decreasing order of the map (ties: first in row-major
    order), ``features_in_step`` more at each step, and stay removed (set to ``fill``). With
    ``P = H*W`` pixels there are ``S = ceil(P / features_in_step)`` steps; after step ``k`` the
    ``t_k = min(k * features_in_step, P)`` most relevant pixels are removed (the last step removes
    what is left when ``features_in_step`` does not divide ``P``; Quantus refuses that case)::

        scores[i, k] = f_y(x_i with its t_k most relevant pixels set to fill),   k = 0..S
        auc[i] = trapezoid(scores[i], fractions),   fractions = t_k / P in [0, 1]

    Column 0 is the unperturbed score. Quantus' ``PixelFlipping`` (default ``perturb_baseline=
    "black"`` = fill 0) records only the scores after each step, ``scores[:, 1:]``, and its
    ``return_auc_per_sample`` area is ``numpy.trapezoid(scores[:, 1:], dx=1, axis=1)`` (no
    unperturbed point, unit spacing). A faithful map makes the score fall fast: lower auc is better.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W) relevance. targets: classes scored (ints, one-hot, or
            None = predicted class on x).
        features_in_step: pixels removed per step (1).
        fill: value of removed pixels: a number (0.0), one value per channel, an image, ``"mean"``,
            ``"blur"`` or ``"salt_pepper"`` (:func:`xaitf.metrics._common.fill_image`, seed 0).
        batch_size: perturbed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        progress: a progress bar on long runs (True).

    Returns:
        :class:`Curve` ``(fractions (S+1,), scores (N,S+1), auc (N,))``, float64.
    """
    owner = "pixel_flipping"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    p = h * w
    step = params.integer(features_in_step, "features_in_step", owner, low=1, high=p)
    counts = np.minimum(np.arange(-(-p // step) + 1, dtype=np.int64) * step, p)
    base = _fill(x, fill, 0, owner)
    s1 = len(counts)
    score, _, _ = sc.run(x, base, pixel_order(m), np.repeat(np.arange(n), s1), np.tile(counts, n), t,
                         insert=False, batch_size=bs, desc="pixel flipping", show_progress=progress)
    scores = score.reshape(n, s1).astype(np.float64)
    fractions = counts / float(p)
    return Curve(fractions, scores, np.trapezoid(scores, fractions, axis=1))


# ------------------------------------------------------------------------------------------------
# region perturbation
# ------------------------------------------------------------------------------------------------
def _grid_ranks(m, size, order):
    """Rank of every pixel's grid cell (cells of ``size`` x ``size``, the last row/column of cells
    cut by the image edge), cells ranked by their summed relevance; (N,H,W) int32 and cell count."""
    n, h, w = m.shape
    rows, cols = -(-h // size), -(-w // size)
    cell = (np.arange(h)[:, None] // size) * cols + np.arange(w)[None, :] // size     # (H,W)
    k = rows * cols
    flat = (cell.ravel()[None, :] + np.arange(n)[:, None] * k).ravel()
    sums = np.bincount(flat, weights=m.reshape(n, -1).ravel(), minlength=n * k).reshape(n, k)
    rank_of = np.argsort(-sums if order == "morf" else sums, axis=1, kind="stable")
    cell_rank = np.empty_like(rank_of)
    np.put_along_axis(cell_rank, rank_of, np.broadcast_to(np.arange(k), rank_of.shape), axis=1)
    return cell_rank[:, cell].astype(np.int32), k


def _sliding_ranks(m, size, order, regions):
    """Earlier Quantus releases' regions: every patch with its top-left corner in the image (patches past the
    bottom/right edge are cut), ranked by summed relevance; the first ``regions`` patches that do
    not overlap an earlier chosen one (greedy, in rank order). Pixels of chosen patch ``k`` get
    rank ``k``, the others ``H*W`` (never removed); (N,H,W) int32."""
    n, h, w = m.shape
    out = np.full((n, h, w), h * w, np.int32)
    for i in range(n):
        pad = np.zeros((h + size, w + size))
        pad[1:h + 1, 1:w + 1] = m[i]
        ii = pad.cumsum(0).cumsum(1)                     # ii[r, c] = sum of m[:r, :c]
        r0, c0 = np.arange(h)[:, None], np.arange(w)[None, :]
        r1, c1 = np.minimum(r0 + size, h), np.minimum(c0 + size, w)
        sums = ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]
        cand = np.argsort(-sums.ravel() if order == "morf" else sums.ravel(), kind="stable")
        blocked = np.zeros((h, w), bool)
        k = 0
        for q in cand:
            if k >= regions:
                break
            r, c = divmod(int(q), w)
            if blocked[r, c]:
                continue
            out[i, r:r + size, c:c + size] = k
            blocked[max(0, r - size + 1):r + size, max(0, c - size + 1):c + size] = True
            k += 1
    return out


def region_perturbation(model, x, maps, targets, patch_size=8, regions=None, order="morf",
                        fill="uniform", layout="grid", noise_range=(0.0, 1.0), batch_size=256,
                        output="probabilities", seed=0, progress=True):
    """Region perturbation and AOPC (Samek et al. 2016, "Evaluating the Visualization of What a
    Deep Neural Network Has Learned", IEEE TNNLS).

    The image is cut into square patches of ``patch_size`` x ``patch_size`` pixels, ranked by their
    summed relevance (``order="morf"``: most relevant first; ``"lerf"``: least relevant first; ties:
    first in row-major order). After step ``k = 1..L`` the first ``k`` patches (all channels) are
    replaced by ``fill`` (cumulatively) and the target score is recorded::

        scores[i, k] = f_y(x_i^(k)),   k = 0..L   (k = 0: the unperturbed image)
        AOPC[i] = 1/(L+1) * sum_{k=0}^{L} (f_y(x_i^(0)) - f_y(x_i^(k)))

    the paper's area over the perturbation curve (its ``k = 0`` term is 0). For MoRF a higher AOPC
    is better, for LeRF a lower one. Quantus' ``RegionPerturbation`` returns the ``L`` differences
    ``scores[:, :1] - scores[:, 1:]``; their mean is ``AOPC * (L+1) / L``.

    Patches (``layout``):

    * ``"grid"`` (default): the non-overlapping tiling from the top-left corner (cells on the
      bottom/right edge are cut when ``patch_size`` does not divide H or W). Quantus 0.6.0 tiles
      too, but pads the image to a multiple of ``patch_size`` (centred), so its blocks equal
      these only where ``patch_size`` divides H and W (bench/results-quantus.md: 7 on 28x28);
    * ``"sliding"``: earlier Quantus releases' choice: every patch whose top-left corner lies in
      the image (cut at the bottom/right edge) is ranked, and the first ``L`` that do not overlap an already chosen
      one are taken greedily in rank order. Where fewer than ``L`` fit, the last steps change
      nothing (the score repeats).

    ``fill="uniform"`` (default, as the paper and Quantus' ``perturb_baseline="uniform"``):
    removed pixels take values drawn from U[``noise_range``) = U[0, 1) independently per pixel
    and channel, one noise image per input drawn from ``numpy.random.default_rng([seed, i])``
    (the patches do not overlap, so every removed pixel gets its own draw, as Quantus' fresh draw
    per patch). Any other fill of :func:`xaitf.metrics._common.fill_image` (a number, one value per
    channel, an image, ``"mean"``, ``"blur"``, ``"salt_pepper"``) is used as it is.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        patch_size: side of the square patches in pixels (8; Samek et al. used 9, Quantus 8).
        regions: L, patches removed; None (default) = as many as the grid has cells,
            ``ceil(H/patch_size) * ceil(W/patch_size)`` (Quantus' default is 100).
        order: ``"morf"`` (default) or ``"lerf"``.
        fill: ``"uniform"`` (default) or a fill of ``fill_image``.
        layout: ``"grid"`` (default) or ``"sliding"`` (see above).
        noise_range: (low, high) of the uniform fill ((0.0, 1.0), Quantus' defaults).
        batch_size: perturbed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        seed: seed of the uniform (and salt-and-pepper) fill (0).
        progress: a progress bar on long runs (True).

    Returns:
        :class:`Curve` ``(fractions (L+1,) = k/L, scores (N,L+1), auc (N,) = AOPC)``, float64.
    """
    owner = "region_perturbation"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    size = params.integer(patch_size, "patch_size", owner, low=1)
    _choice(order, "order", owner, ORDERS)
    _choice(layout, "layout", owner, LAYOUTS)
    seed = _seed(seed, owner)
    cells = -(-h // size) * -(-w // size)
    L = cells if regions is None else params.integer(regions, "regions", owner, low=1)
    if layout == "grid":
        if L > cells:
            raise MethodError(f"{owner} needs regions to be at most the {cells} patches of "
                              f"{size}x{size} pixels in {h}x{w} images, got {regions!r}")
        ranks, _ = _grid_ranks(m, size, order)
    else:
        ranks = _sliding_ranks(m, size, order, L)
    if isinstance(fill, str) and fill.lower() not in ("uniform", "mean", "blur", "salt_pepper",
                                                      "salt-pepper", "saltpepper"):
        raise MethodError(f"{owner} needs fill to be 'uniform', a number, one value per channel, an "
                          f"image or one of mean, blur, salt_pepper, got {fill!r}")
    if isinstance(fill, str) and fill.lower() == "uniform":
        base = _uniform_base(x, seed, noise_range, owner)
    else:
        base = _fill(x, fill, seed, owner)
    counts = np.arange(L + 1)
    score, _, _ = sc.run(x, base, ranks, np.repeat(np.arange(n), L + 1), np.tile(counts, n), t,
                         insert=False, batch_size=bs, desc="region perturbation",
                         show_progress=progress)
    scores = score.reshape(n, L + 1).astype(np.float64)
    aopc = (scores[:, :1] - scores).mean(axis=1)
    return Curve(counts / float(L), scores, aopc)


# ------------------------------------------------------------------------------------------------
# faithfulness correlation, MuFidelity
# ------------------------------------------------------------------------------------------------
def faithfulness_correlation(model, x, maps, targets, subset_size=224, runs=100, fill=0.0,
                             batch_size=256, output="probabilities", correlation="pearson", seed=0,
                             progress=True):
    """Faithfulness correlation (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI, def. 3), as Quantus' ``FaithfulnessCorrelation``.

    For ``r = 1..runs`` a random subset ``S_r`` of ``subset_size`` pixels (all channels), drawn
    without replacement, is set to ``fill``::

        corr[i] = pearson_r( sum_{p in S_r} map_i[p],  f_y(x_i) - f_y(x_i with S_r = fill) )

    over the runs. 1: the map's sums predict the output drops exactly (a linear model and its
    ``w * x`` map with fill 0); about 0: unrelated. The subsets of input ``i``: with ``rng =
    default_rng([seed, i])`` and keys ``u = rng.integers(0, 2**16, (runs, H*W), dtype=uint16)``,
    run ``r`` takes the ``subset_size`` pixels of smallest ``u[r]``, ties at the threshold broken
    by further ``rng.random`` draws (:func:`_smallest_mask`): a uniform draw without replacement.
    One array call per input, not a ``choice`` call per run (a third of the metric's time on
    MNIST); 16-bit keys: drawn and partitioned in a third of the time of float32 ones (256 MNIST
    inputs, 100 runs: 36 vs 102 ms of host work while the model waits).
    Quantus' defaults are the same (224 pixels, 100 runs, ``perturb_baseline="black"`` = fill 0,
    Pearson) except that its ``FaithfulnessCorrelation`` scores logits unless called with
    ``softmax=True`` (use ``output="logits"`` to match its default) and that it normalises the
    maps first (``normalise=True``; 0.6.0: ``normalise_by_max``, one positive factor for the batch
    passed, which leaves the correlation unchanged).

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        subset_size: pixels per subset, at most H*W (224).
        runs: random subsets per input (100).
        fill: value of removed pixels (0.0): see :func:`xaitf.metrics._common.fill_image`.
        batch_size: perturbed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        correlation: ``"pearson"`` (default) or ``"spearman"``.
        seed: seed of the subsets (0).
        progress: a progress bar on long runs (True).

    Returns:
        (N,) float64 in [-1, 1]; NaN where the sums or the drops are constant over the runs.
    """
    owner = "faithfulness_correlation"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    p = h * w
    k = params.integer(subset_size, "subset_size", owner, low=1)
    if k > p:
        raise MethodError(f"{owner} needs subset_size to be at most the {p} pixels of the "
                          f"{h}x{w} images, got {subset_size!r}")
    runs = params.integer(runs, "runs", owner, low=2)
    _choice(correlation, "correlation", owner, CORRELATIONS)
    seed = _seed(seed, owner)
    base = _fill(x, fill, seed, owner)
    flat = m.reshape(n, p)
    att = np.empty(n * runs)

    @functools.lru_cache(maxsize=2)
    def subsets(i):
        rng = np.random.default_rng([seed, i])
        return _smallest_mask(rng.integers(0, 1 << 16, (runs, p), dtype=np.uint16), k, rng)

    def make(s):
        mask = _rows(s, runs, subsets)                      # (B, H*W), k ones a row
        rows = np.arange(s.start, s.stop) // runs
        att[s] = np.einsum("bp,bp->b", flat[rows], mask)
        return mask.reshape(-1, h, w)

    f0 = _clean_scores(sc, x, t, bs)
    scores = _masked_scores(sc, x, base, t, runs, make, bs, "faithfulness correlation", progress)
    return _correlate(att.reshape(n, runs), f0[:, None] - scores, correlation, np.c_[f0, scores])


def _smallest_mask(u, k, rng=None):
    """(R, P) float32 mask of the ``k`` smallest values of each row of ``u``: a threshold at the
    row's k-th smallest value (no sort). A row where keys equal to the threshold would give more
    than ``k`` (16-bit keys of 784 pixels, 224 taken: 0.5% of the rows) takes its first ``k`` in the
    order of (key, ``rng.random(P)``), one fresh draw per pixel of that row (None: the first in
    index order), so ties are broken at random and the subset stays uniform."""
    mask = u <= np.partition(u, k - 1, axis=1)[:, k - 1:k]
    for r in np.flatnonzero(np.count_nonzero(mask, axis=1) != k):
        mask[r] = False
        order = np.argsort(u[r], kind="stable") if rng is None else np.lexsort((rng.random(u.shape[1]), u[r]))
        mask[r, order[:k]] = True
    return mask.astype(np.float32)


def _cells(size, g):
    """Grid cell of every row (or column) of ``size`` pixels on a ``g`` grid: nearest-neighbour
    upsampling with half-pixel centres, as ``tf.image.resize(..., method="nearest")``."""
    return np.minimum(np.floor((np.arange(size) + 0.5) * g / size).astype(np.int64), g - 1)


def mufidelity(model, x, maps, targets, grid_size=9, subset_percent=0.2, nb_samples=128, fill=0.0,
               batch_size=256, output="probabilities", correlation="spearman", seed=0,
               progress=True):
    """MuFidelity (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI, def. 3) on a grid of cells, as Xplique's ``MuFidelity``.

    The image is cut into ``grid_size`` x ``grid_size`` cells (nearest-neighbour upsampling of the
    grid to H x W, as ``tf.image.resize(method="nearest")``). For each of ``nb_samples`` samples
    every cell is removed (set to ``fill``, all channels) independently with probability
    ``subset_percent`` (Xplique: ``uniform > subset_percent`` keeps a cell), giving a pixel set
    ``S``::

        mufidelity[i] = corr( sum_{p in S} map_i[p],  f_y(x_i) - f_y(x_i with S = fill) )

    over the samples, Spearman's rank correlation by default as in Xplique (Bhatt et al. write
    Pearson's: ``correlation="pearson"``); output drops within 1e-5 of the largest score rank as
    ties (float32 rounding; see ``_correlate``). A constant row (no variation) scores 0, as in Xplique.
    Xplique draws one set of masks per batch for all inputs of the batch with TensorFlow's global
    generator and returns the mean over inputs; here every input has its own masks from
    ``numpy.random.default_rng([seed, i])`` and the result is per input. Xplique's default is
    200 samples.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        grid_size: cells per side (9); above min(H, W) some cells hold no pixel (as in Xplique).
        subset_percent: probability that a cell is removed, in (0, 1] (0.2).
        nb_samples: random masks per input (128).
        fill: value of removed pixels (0.0, Xplique's ``baseline_mode``).
        batch_size: perturbed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        correlation: ``"spearman"`` (default) or ``"pearson"``.
        seed: seed of the masks (0).
        progress: a progress bar on long runs (True).

    Returns:
        (N,) float64 in [-1, 1].
    """
    owner = "mufidelity"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    g = params.integer(grid_size, "grid_size", owner, low=1)
    frac = params.fraction(subset_percent, "subset_percent", owner)
    samples = params.integer(nb_samples, "nb_samples", owner, low=2)
    _choice(correlation, "correlation", owner, CORRELATIONS)
    seed = _seed(seed, owner)
    base = _fill(x, fill, seed, owner)
    rows, cols = _cells(h, g), _cells(w, g)
    cell = rows[:, None] * g + cols[None, :]                             # (H,W)
    flat = (cell.ravel()[None, :] + np.arange(n)[:, None] * g * g).ravel()
    cell_sums = np.bincount(flat, weights=m.reshape(n, -1).ravel(), minlength=n * g * g)
    cell_sums = cell_sums.reshape(n, g * g)
    att = np.empty(n * samples)

    @functools.lru_cache(maxsize=2)
    def removed(i):
        u = np.random.default_rng([seed, i]).random((samples, g * g), dtype=np.float32)
        return u <= frac                                             # Xplique keeps u > frac

    def make(s):
        cut = _rows(s, samples, removed)                              # (B, g*g) bool
        att[s] = (cut * cell_sums[np.arange(s.start, s.stop) // samples]).sum(axis=1)
        return cut[:, cell].astype(np.float32)

    f0 = _clean_scores(sc, x, t, bs)
    scores = _masked_scores(sc, x, base, t, samples, make, bs, "mufidelity", progress)
    r = _correlate(att.reshape(n, samples), f0[:, None] - scores, correlation, np.c_[f0, scores])
    return np.nan_to_num(r, nan=0.0)


# ------------------------------------------------------------------------------------------------
# infidelity
# ------------------------------------------------------------------------------------------------
def _infidelity_eps(i, j, seed, std, shape):
    """Infidelity's perturbation of the rows (input ``i``, sample ``j``): (B, H, W) float32 tensors."""
    return std * hashed_normal(pair_ids(i, j), seed, shape, INFIDELITY_NOISE)


def _road_normals(i, j, seed, shape):
    """ROAD's standard normal imputation noise of the pairs (input ``i``, fraction ``j``): (B, H, W, C)."""
    return hashed_normal(pair_ids(i, j), seed, shape, ROAD_NOISE)


def _noise_program(sc, shape, relative):
    """Infidelity's program of ``sc``'s model for images (H,W,C): the noise is drawn on the device.

    ``(x_all, base_all, maps_all, i, j, seed, std, tgt) -> (target score, I . map)`` of the rows
    (input ``i``, sample ``j``): ``eps = std * hashed_normal(pair_ids(i, j), seed, (H,W),
    INFIDELITY_NOISE)``, the image ``x - eps * (x - base)`` (``relative``) or ``x - eps``, and
    ``I . map = sum_p eps_p map_p``."""
    cache = model_cache(sc.model)
    key = ("infidelity-program", sc.output, tuple(shape), bool(relative))
    if key not in cache:
        h, w, c = shape
        vec = tf.TensorSpec([None], tf.int64)
        sig = [tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None, None, None, None], tf.float32),
               tf.TensorSpec([None, h, w], tf.float32), vec, vec, tf.TensorSpec([], tf.int64),
               tf.TensorSpec([], tf.float32), tf.TensorSpec([None], tf.int32)]

        def program(x_all, base_all, maps_all, i, j, seed, std, tgt):
            eps = _infidelity_eps(i, j, seed, std, (h, w))                                  # (B,H,W)
            xs = tf.gather(x_all, i)
            e = eps[..., None]
            if relative:
                b = tf.gather(base_all, tf.where(tf.shape(base_all)[0] > 1, i, tf.zeros_like(i)))
                xp = xs - e * (xs - tf.broadcast_to(b, tf.shape(xs)))
            else:
                xp = xs - e
            dot = tf.reduce_sum(eps * tf.gather(maps_all, i), [1, 2])
            out = sc.transform(sc.forward(xp, training=False))
            return tf.gather(out, tgt, batch_dims=1), dot

        cache[key] = tf.function(program, input_signature=sig, autograph=False)
    return cache[key]


def infidelity_noise(inputs, samples, shape, std=0.2, seed=0):
    """The perturbations ``eps`` that :func:`infidelity` draws: (len(inputs), samples, H, W) float32
    for the input indices ``inputs`` (positions in the call), ``shape`` = (H, W); ``eps[a, j] =
    std * hashed_normal(pair_ids(inputs[a], j), seed, (H, W), INFIDELITY_NOISE)``."""
    i = np.repeat(np.asarray(inputs, np.int64).reshape(-1), samples)
    j = np.tile(np.arange(samples, dtype=np.int64), len(i) // samples if samples else 0)
    h, w = (int(v) for v in shape)
    eps = _infidelity_eps(tf.constant(i), tf.constant(j), tf.constant(int(seed), tf.int64),
                          tf.constant(float(std), tf.float32), (h, w))
    return eps.numpy().reshape(-1, samples, h, w)


def _noise_scores(sc, x, base, maps, targets, samples, seed, std, relative, batch_size, show):
    """Infidelity's (N, samples) scores and ``I . map`` values, input-major (row ``i * samples + j``)."""
    n = len(x)
    run = _noise_program(sc, tuple(int(v) for v in x.shape[1:]), relative)
    args = (tf.constant(x, tf.float32), tf.constant(base, tf.float32), tf.constant(maps, tf.float32))
    rows = np.arange(n * samples, dtype=np.int64)
    tgt = np.repeat(np.asarray(targets, np.int32), samples)
    out, dot = np.empty(n * samples), np.empty(n * samples)
    seed_t, std_t = tf.constant(seed, tf.int64), tf.constant(std, tf.float32)
    for s in _progress(chunks(n * samples, batch_size), show, desc="infidelity"):
        i, j = np.divmod(rows[s], samples)
        score, d = run(*args, tf.constant(i), tf.constant(j), seed_t, std_t, tf.constant(tgt[s]))
        out[s], dot[s] = score.numpy(), d.numpy()
    return out.reshape(n, samples), dot.reshape(n, samples)


def infidelity(model, x, maps, targets, perturbation="gaussian", std=0.2, samples=50,
               multiply_by_inputs=True, baseline=0.0, normalize=False, batch_size=256,
               output="probabilities", seed=0, progress=True):
    """Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations",
    NeurIPS), as Captum's ``infidelity``::

        INFD[i] = E_I[ (I . map_i - (f_y(x_i) - f_y(x_i - I)))^2 ]

    estimated over ``samples`` draws of the perturbation ``I``, with ``I . map`` the sum over the
    pixels of the per-pixel perturbation times the map. ``perturbation="gaussian"``: per pixel
    ``eps ~ N(0, std^2)``, the same in every channel (the maps have one value per pixel):

    * ``multiply_by_inputs=True`` (default; for maps that include the input, such as
      gradient x input, integrated gradients, LRP, Shapley values): the input moves by the fraction
      ``eps`` of its distance to ``baseline``, ``x - I = x - eps * (x - baseline)``, and
      ``I . map = sum_p eps_p * map_p`` (Captum's ``infidelity_perturb_func_decorator(True)``:
      perturbation ``(x - x') / (x - baseline)``). For a linear model and the map
      ``sum_c w * (x - baseline)`` the infidelity is 0.
    * ``multiply_by_inputs=False`` (for gradient-like maps): ``x - I = x - eps`` in every channel
      and ``I . map = sum_p eps_p * map_p``; for a linear model the map ``sum_c w`` has infidelity 0.

    ``normalize=True`` (Captum's ``normalize``, Yeh et al.'s optimal scaling of the map):
    ``beta = E[(I . map) * df] / E[(I . map)^2]`` and ``INFD = E[(beta * I . map - df)^2]``: the map's
    scale does not matter (beta = 0 where the map gives ``I . map = 0`` for every draw).
    ``std=0.2``: Yeh et al. perturb with Gaussian noise around the input; Captum leaves the noise to
    the user (its tutorial uses a std of 0.003 on [0, 1] images). Quantus' ``Infidelity`` is a
    different perturbation (square patches set to a baseline), not offered here. The noise is drawn
    on the device, from the counter-based stream of :mod:`xaitf.methods._random` keyed by (input
    ``i``, sample ``j``): :func:`infidelity_noise` gives the same values. Lower is better.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        perturbation: ``"gaussian"`` (the only one).
        std: standard deviation of ``eps`` (0.2), > 0.
        samples: draws of the perturbation per input (50; Captum's default 10).
        multiply_by_inputs: relative (True, default) or additive (False) noise, see above.
        baseline: the baseline of the relative noise (0.0): a number, one value per channel or an
            image (:func:`xaitf.metrics._common.fill_image`).
        normalize: scale the map by the optimal beta first (False).
        batch_size: perturbed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        seed: seed of the noise (0).
        progress: a progress bar on long runs (True).

    Returns:
        (N,) float64 >= 0.
    """
    owner = "infidelity"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    _choice(perturbation, "perturbation", owner, PERTURBATIONS)
    std = _number(std, "std", owner, low=0, low_open=True)
    samples = params.integer(samples, "samples", owner, low=1)
    if not isinstance(multiply_by_inputs, (bool, np.bool_)):
        raise MethodError(f"{owner} needs multiply_by_inputs to be True or False, "
                          f"got {multiply_by_inputs!r}")
    if not isinstance(normalize, (bool, np.bool_)):
        raise MethodError(f"{owner} needs normalize to be True or False, got {normalize!r}")
    seed = _seed(seed, owner)
    base = _fill(x, baseline, seed, owner, "baseline")
    f0 = _clean_scores(sc, x, t, bs)
    scores, dot = _noise_scores(sc, x, base, m, t, samples, seed, std, bool(multiply_by_inputs), bs, progress)
    df = f0[:, None] - scores
    a = dot.reshape(n, samples)
    if normalize:
        den = (a * a).mean(axis=1)
        beta = np.where(den > 0, (a * df).mean(axis=1) / np.where(den > 0, den, 1.0), 0.0)
        a = beta[:, None] * a
    return ((a - df) ** 2).mean(axis=1)


# ------------------------------------------------------------------------------------------------
# ROAD
# ------------------------------------------------------------------------------------------------
def road_noise(inputs, fractions, shape, seed=0):
    """ROAD's imputation noise, before its ``noise`` factor: (len(inputs), H, W, C) float32 standard
    normals for the pairs (input index ``inputs[a]``, fraction index ``fractions[a]``), ``shape`` =
    (H, W, C): ``hashed_normal(pair_ids(i, j), seed, (H,W,C), ROAD_NOISE)``. :func:`road` adds
    ``noise`` times it to the removed pixels."""
    i = tf.constant(np.asarray(inputs, np.int64).reshape(-1))
    j = tf.constant(np.asarray(fractions, np.int64).reshape(-1))
    return _road_normals(i, j, tf.constant(int(seed), tf.int64), tuple(int(v) for v in shape)).numpy()


@tf.function(autograph=False, reduce_retracing=True)
def _add_road_noise(images, gone, i, j, seed, std):
    """``images + std * gone * road_noise(i, j)`` on the device (gone: (B,H,W) 0/1)."""
    z = _road_normals(i, j, seed, tf.shape(images)[1:])
    return images + std * gone[..., None] * z


def road(model, x, maps, targets, percentages=ROAD_PERCENTAGES, order="morf", imputation="linear",
         noise=0.01, score="accuracy", batch_size=256, output="probabilities", seed=0, solver="cg",
         progress=True):
    """ROAD, RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML).

    For every fraction ``q`` in ``percentages`` the ``floor(q * H*W)`` pixels with the highest
    map values (``order="morf"``; ``"lerf"``: the lowest; ties: first in row-major order) are
    removed and imputed with ROAD's noisy linear imputation (:mod:`xaitf.metrics.imputation`: each
    removed pixel is the weighted mean of its 8 neighbours, one linear system per image and
    fraction, plus Gaussian noise of std ``noise``), without retraining. The curve records::

        score="accuracy" (default): scores[i, j] = 1 if argmax f(x_i^(q_j)) == y_i else 0
        score="output":             scores[i, j] = f_y(x_i^(q_j))
        auc[i] = trapezoid(scores[i], percentages)

    The mean of ``scores`` over the inputs is the accuracy curve of the paper and of Quantus'
    ``ROAD`` (which uses the percentages 1, 3, ..., 99 % and ``int(H*W * p / 100)`` pixels). MoRF:
    a faithful map makes the accuracy fall fast (low auc); LeRF: slowly (high auc). The noise of
    input ``i`` at fraction ``j`` is ``noise * road_noise([i], [j], (H,W,C), seed)`` on the removed
    pixels, drawn on the device from the counter-based stream of :mod:`xaitf.methods._random`.
    ``imputation`` may also be a number: the removed pixels take that value (no imputation, no
    noise), the "remove without debiasing" baseline of the paper.

    The pairs (image, fraction) are visited fraction by fraction in chunks of ``batch_size``; a
    chunk's systems of one fraction are solved together by conjugate gradients in one TensorFlow
    program (``solver="cg"``, float32, relative residual 1e-5: within 5e-5 of the exact solution on
    MNIST, far below the noise; compiled by XLA when the run solves at least ``JIT_MIN_VALUES``
    values in all; preconditioned by a multigrid V-cycle on images of 48x48 and more), so that a
    solve's systems need alike many steps. ``solver="sparse"`` solves
    each with scipy's sparse direct solver, as the paper's code (:func:`noisy_linear_impute`).
    The noise is the same for both solvers.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        percentages: increasing fractions in [0, 1) of pixels removed ((0.1, 0.2, ..., 0.9)).
        order: ``"morf"`` (default) or ``"lerf"``.
        imputation: ``"linear"`` (default) or a number.
        noise: std of the imputation noise (0.01, ROAD's default).
        score: ``"accuracy"`` (default) or ``"output"``.
        batch_size: imputed images per model call (256).
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"`` (for ``score="output"``).
        seed: seed of the noise (0).
        solver: ``"cg"`` (default: batched conjugate gradients) or ``"sparse"`` (scipy, per pair).
        progress: a progress bar on long runs (True).

    Returns:
        :class:`Curve` ``(fractions (P,) = percentages, scores (N,P), auc (N,))``, float64.
    """
    owner = "road"
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    try:
        q = np.asarray(percentages, np.float64).reshape(-1)
        ok = q.size > 0 and np.all(np.isfinite(q)) and np.all((q >= 0) & (q < 1)) \
            and np.all(np.diff(q) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MethodError(f"{owner} needs percentages to be increasing fractions in [0, 1), "
                          f"got {percentages!r}")
    _choice(order, "order", owner, ORDERS)
    _choice(score, "score", owner, ROAD_SCORES)
    _choice(solver, "solver", owner, ROAD_SOLVERS)
    linear = isinstance(imputation, str) and imputation == "linear"
    if not linear:
        try:
            value = _number(imputation, "imputation", owner)
        except MethodError:
            raise MethodError(f"{owner} needs imputation to be 'linear' or a number, "
                              f"got {imputation!r}") from None
    noise = _number(noise, "noise", owner, low=0)
    seed = _seed(seed, owner)
    counts = np.floor(q * h * w + 1e-9).astype(np.int64)
    ranks = pixel_order(m if order == "morf" else -m)
    P = len(q)

    # pairs (image i, fraction j) as rows i * P + j, visited fraction-major: a batch of the
    # conjugate gradients holds systems of similar size, which converge in similar numbers of steps
    visit = np.arange(n * P).reshape(n, P).T.ravel()
    jit = worth_compiling(n * P * x[0].size)           # XLA's compilation pays off on long runs

    def make_images(rows):
        i, j = np.divmod(rows, P)
        gone = ranks[i] < counts[j][:, None, None]
        if not linear:
            return tf.constant(np.where(gone[..., None], np.float32(value), x[i]).astype(np.float32))
        if solver == "cg":                    # one solve per fraction: its systems take alike many steps
            imgs = np.empty((len(i),) + x.shape[1:], np.float32)
            for f in np.unique(j):
                at = np.flatnonzero(j == f)
                imgs[at] = linear_impute_batch(x[i[at]], gone[at], jit=jit)
        else:
            imgs = np.stack([noisy_linear_impute(x[a], g, 0.0) for a, g in zip(i, gone)])
        imgs = tf.constant(np.asarray(imgs, np.float32))
        if not noise:
            return imgs
        return _add_road_noise(imgs, tf.constant(gone.astype(np.float32)), tf.constant(i),
                               tf.constant(j), seed_t, tf.constant(noise, tf.float32))

    run = _program(sc, tuple(int(v) for v in x.shape[1:]))
    zero = tf.constant(np.zeros((1, 1, 1, 1), np.float32))
    none = tf.constant(_NONE)
    seed_t = tf.constant(seed, tf.int64)
    tgt = np.repeat(t, P).astype(np.int32)
    out = np.empty(n * P)
    for s in _progress(chunks(n * P, bs), progress, desc="road"):
        rows = visit[s]
        imgs = make_images(rows)
        k = np.arange(len(imgs), dtype=np.int32)
        val, pred = run(imgs, zero, tf.constant(k), tf.constant(np.zeros_like(k)), none, tf.constant(tgt[rows]))
        out[rows] = (pred.numpy() == tgt[rows]).astype(np.float64) if score == "accuracy" else val.numpy()
    scores = out.reshape(n, P)
    auc = np.trapezoid(scores, q, axis=1) if P > 1 else np.zeros(n)
    return Curve(q, scores, auc)
