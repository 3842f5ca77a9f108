"""Perturbation curves: deletion and insertion (Petsiuk et al. 2018), IROF (Rieger & Hansen 2020).

Deletion removes the most relevant pixels first and watches the target score fall: a faithful map
gives a low area under the curve. Insertion starts from an image without information (the fill,
or a blurred copy) and puts the most relevant pixels back first: a faithful map gives a high area.
IROF does the same as deletion with superpixels ranked by their mean relevance.

All perturbed images of all inputs are one flat list of (image, step) pairs evaluated in chunks of
``batch_size`` (see :mod:`xaitf.metrics._common`).
"""
import numpy as np

from ..errors import InputError, MethodError
from ._common import Curve, check_int, fill_image, pixel_order, prepare

STARTS = ("fill", "blur")


def _steps(steps, n_pixels):
    s = check_int(steps, "steps")
    counts = np.floor(np.arange(s + 1) / s * n_pixels + 0.5).astype(np.int64)
    return counts


def _curve(model, x, maps, targets, steps, fill, batch_size, output, insert, start, blur_sigma,
           seed, desc, progress):
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n, h, w = m.shape
    counts = _steps(steps, h * w)
    base = fill_image(x, "blur" if start == "blur" else fill, seed, blur_sigma)
    order = pixel_order(m)
    s1 = len(counts)
    idx = np.repeat(np.arange(n), s1)
    thr = np.tile(counts, n)
    score, _, _ = sc.run(x, base, order, idx, thr, t, insert=insert, batch_size=bs, desc=desc,
                         show_progress=progress)
    scores = score.reshape(n, s1)
    fractions = counts / float(h * w)
    return Curve(fractions, scores, np.trapezoid(scores, fractions, axis=1))


def deletion_curve(model, x, maps, targets, steps=20, fill=0.0, batch_size=256,
                   output="probabilities", seed=0, progress=True):
    """Deletion curve (Petsiuk et al. 2018, RISE): remove pixels in order of relevance.

    At step ``s = 0..S`` the ``t_s = floor(s/S * H*W + 1/2)`` pixels with the highest map values
    (ties: first in row-major order) are set to ``fill``, and the target score is recorded;
    ``auc = trapezoid(scores, fractions)`` with ``fractions = t_s / (H*W)`` from 0 to 1.
    Lower is better.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W) relevance. targets: classes scored (ints, one-hot, or
            None = predicted class on x).
        steps: S, number of steps (S+1 points).
        fill: value of removed pixels: a number, one value per channel, an image, ``"mean"``,
            ``"blur"`` or ``"salt_pepper"`` (see :func:`xaitf.metrics._common.fill_image`).
        batch_size: perturbed images per model call.
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        seed: seed of ``"salt_pepper"`` (one noise image per input, the same at every step).
        progress: a progress bar on long runs (True).

    Returns:
        :class:`Curve` ``(fractions (S+1,), scores (N,S+1), auc (N,))``.
    """
    return _curve(model, x, maps, targets, steps, fill, batch_size, output, False, "fill", 5.0,
                  seed, "deletion", progress)


def insertion_curve(model, x, maps, targets, steps=20, fill=0.0, batch_size=256,
                    output="probabilities", start="fill", blur_sigma=5.0, seed=0, progress=True):
    """Insertion curve (Petsiuk et al. 2018, RISE): put pixels back in order of relevance.

    Starts from the ``fill`` image (``start="fill"``) or from a Gaussian-blurred copy of each image
    (``start="blur"``, 11x11 kernel with ``blur_sigma`` 5 as in the paper); at step ``s`` the
    ``t_s`` most relevant pixels carry their original values. ``auc`` over the pixel fraction in
    [0, 1]; higher is better. Other arguments as :func:`deletion_curve`.

    Returns:
        :class:`Curve` ``(fractions (S+1,), scores (N,S+1), auc (N,))``.
    """
    if start not in STARTS:
        raise MethodError(f"unknown start {start!r}; valid: {', '.join(STARTS)}")
    return _curve(model, x, maps, targets, steps, fill, batch_size, output, True, start,
                  blur_sigma, seed, "insertion", progress)


def _segment_order(maps, segments):
    """Segment rank per pixel (N,H,W) int32 and number of segments per image (N,).

    Segments are ranked by mean map value, highest first (ties: lower label first); labels are
    renumbered per image so that only labels present count.
    """
    from ..segmentation import relabel

    n = len(maps)
    seg = np.stack([relabel(s) for s in segments]).reshape(n, -1).astype(np.int64)
    nseg = seg.max(axis=1) + 1
    top = int(nseg.max())
    flat = seg + np.arange(n)[:, None] * top
    sums = np.bincount(flat.ravel(), weights=maps.reshape(n, -1).ravel(), minlength=n * top)
    cnt = np.bincount(flat.ravel(), minlength=n * top)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / cnt).reshape(n, top)
    means[cnt.reshape(n, top) == 0] = -np.inf  # labels past an image's own count: ranked last
    seg_order = np.argsort(-means, axis=1, kind="stable")
    seg_rank = np.empty_like(seg_order)
    np.put_along_axis(seg_rank, seg_order, np.broadcast_to(np.arange(top), seg_order.shape), axis=1)
    pix = np.take_along_axis(seg_rank, seg, axis=1)
    return pix.reshape(maps.shape).astype(np.int32), nseg


#: IROF's segmentation when none is given: scikit-image's SLIC defaults, which Quantus uses
IROF_SEGMENTS = {"method": "slic", "n_segments": 100, "compactness": 10.0, "sigma": 0.0}


def irof_segments(x, segments=None, segment_params=None):
    """IROF's label maps of images ``x`` (N,H,W,C): ``segments`` itself when it is label maps, else
    :func:`xaitf.segmentation.segment` with :data:`IROF_SEGMENTS`, ``segments`` as the method
    (a name or a callable) and ``segment_params`` over them."""
    from ..segmentation import segment

    if segments is None or isinstance(segments, str) or callable(segments):
        params = dict(IROF_SEGMENTS)
        if segments is not None:
            params["method"] = segments
        params.update(segment_params or {})
        return segment(x, **params)
    return segments


def irof(model, x, maps, targets, segments=None, batch_size=256, output="probabilities",
         segment_params=None, progress=True):
    """IROF, Iterative Removal Of Features (Rieger & Hansen 2020).

    Each image is cut into superpixels; they are ranked by their mean map value (highest first)
    and removed one by one, in that order, by setting their pixels to the image's mean value per
    channel (computed on the original image). With ``S`` segments, after ``k = 0..S`` removals the
    curve is ``r_k = P_y(x with k segments removed) / P_y(x)``; the result is its trapezoid area
    over ``k / S`` in [0, 1]: lower is better (removing the relevant segments first drops the
    score fast). ``1 - irof`` is the normalised area over the curve that the paper reports (its
    "AOC", higher = better). Quantus' ``IROF`` leaves out the point ``k = 0``, replaces by the
    mean over all channels and does not divide by ``S``.

    Args:
        model: tf-keras or Keras 3 classifier.
        x: images (N,H,W,C). maps: (N,H,W). targets: classes (ints, one-hot, None = predicted).
        segments: (N,H,W) int label maps, or None for SLIC per image through
            :func:`xaitf.segmentation.segment` (``segment_params`` default ``method="slic",
            n_segments=100, compactness=10, sigma=0``: scikit-image's SLIC defaults, which Quantus
            uses), or a segmenter name / callable passed to ``segment``.
        batch_size: perturbed images per model call.
        output: ``"probabilities"`` (default), ``"logits"`` or ``"raw"``.
        segment_params: keyword arguments of :func:`xaitf.segmentation.segment`.
        progress: a progress bar on long runs (True).

    Returns:
        (N,) areas in [0, 1] for scores that only fall (NaN where ``P_y(x) = 0``).
    """
    sc, x, m, t, bs = prepare(model, x, maps, targets, output, batch_size)
    n = len(x)
    seg = np.asarray(irof_segments(x, segments, segment_params))
    if seg.shape != m.shape or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"segments must be integer label maps shaped {m.shape}, got "
                         f"{seg.dtype} {seg.shape}")
    order, nseg = _segment_order(m, seg)
    base = fill_image(x, "mean")
    idx = np.repeat(np.arange(n), nseg + 1)
    thr = np.concatenate([np.arange(s + 1) for s in nseg])
    score, _, _ = sc.run(x, base, order, idx, thr, t, insert=False, batch_size=bs, desc="irof",
                         show_progress=progress)
    out = np.empty(n)
    start = np.concatenate([[0], np.cumsum(nseg + 1)])
    for i in range(n):  # per image: its own number of segments
        curve = score[start[i]:start[i + 1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = curve / curve[0]
        out[i] = np.trapezoid(ratio, np.arange(nseg[i] + 1) / nseg[i]) if nseg[i] > 0 else np.nan
    return out
