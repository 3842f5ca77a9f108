"""Localisation metrics: binarised maps against ground truth (study 5), centre mass (study 1).

* :func:`binarize` turns maps into masks by an explicit rule (top-k pixels, a threshold on the
  min-max normalised map, or Otsu's threshold).
* :func:`iou_1`: ``|A ∩ B| / |A ∪ B|`` of the binarised map A and the ground-truth mask B (the union
  of the digit boxes).
* :func:`iou_2`: IoU of the tightest box around A (:func:`heatmap_box`) and the ground-truth box
  (the union box of the digits, or with ``match="best"`` the best-matching digit box).
* :func:`centre_mass`: share of |relevance| on the centre pixel and the centred crop.
* :func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`,
  :func:`top_k_intersection`: Quantus' localisation scores against ground-truth masks.

Boxes are ``(left, top, width, height)`` in pixel-edge coordinates, as in
:mod:`xaitf.data.svhn`: pixel (row r, column c) covers ``[c, c+1) x [r, r+1)``.

Study 5's original code binarised a heatmap rendered as a 0..255 colour image by thresholding one
colour channel at 0.8, so nearly every pixel counted as active and IoU_1 was about the box area
over the image area (0.110 and 0.156 on its two examples). Here the rule is explicit and works on
the map's own values: ``rule="threshold"`` compares a map normalised to [0, 1] with a threshold in
[0, 1], and ``rule="top_k"`` keeps a fixed number of pixels.
"""
import numpy as np

from ..errors import InputError, MethodError
from ._checks import check_int, check_maps, count_of, pixel_order

RULES = ("top_k", "threshold", "otsu")


def _minmax(m):
    lo = m.min(axis=(1, 2), keepdims=True)
    span = m.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def otsu_thresholds(values, bins=256):
    """Otsu's threshold (Otsu 1979) of every row of ``values`` (N, P) with values in [0, 1].

    Histogram of ``bins`` equal bins over [0, 1]; for a split after bin ``t`` the between-class
    variance is ``w0 w1 (mu0 - mu1)^2`` (class weights and means from the histogram); the threshold
    is the centre of the bin that maximises it (the first maximum). Pixels ``> threshold`` are
    foreground, as in ``skimage.filters.threshold_otsu``.
    """
    v = np.asarray(values, np.float64)
    n = len(v)
    b = np.clip(np.floor(v * bins).astype(np.int64), 0, bins - 1)
    hist = np.bincount((b + np.arange(n)[:, None] * bins).ravel(), minlength=n * bins)
    hist = hist.reshape(n, bins).astype(np.float64)
    centres = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist, axis=1)[:, :-1]
    m0 = np.cumsum(hist * centres, axis=1)[:, :-1]
    total, mtotal = hist.sum(1, keepdims=True), (hist * centres).sum(1, keepdims=True)
    w1 = total - w0
    with np.errstate(invalid="ignore", divide="ignore"):
        var = w0 * w1 * (m0 / w0 - (mtotal - m0) / w1) ** 2
    var = np.where((w0 > 0) & (w1 > 0), var, -1.0)
    return centres[np.argmax(var, axis=1)]


def binarize(maps, rule="top_k", k=None, threshold=None, absolute=False):
    """Masks (N,H,W) bool from maps by an explicit rule.

    Study 5's original thresholded one colour channel of the heatmap rendered as a 0..255 image
    at 0.8, so nearly every pixel was active; here every rule works on the map's own values
    (a threshold applies to the min-max normalised map in [0, 1]).

    Args:
        maps: (N,H,W) relevance maps.
        rule: ``"top_k"``: the ``k`` pixels with the highest values (ties: first in row-major
            order); ``"threshold"``: pixels whose min-max normalised value ``(m - min)/(max - min)``
            is ``>= threshold`` (a constant map normalises to 0); ``"otsu"``: pixels above Otsu's
            threshold of the normalised map (:func:`otsu_thresholds`).
        k: for top_k: an int >= 1 (pixels), a float in (0, 1] (fraction of the pixels, rounded half
            up, at least 1), or an int array (N,) (pixels per map). Default 0.2.
        threshold: for "threshold": a value in [0, 1]. Default 0.5.
        absolute: rank / threshold ``|maps|`` instead of the signed values.
    """
    m = check_maps(maps)
    if absolute:
        m = np.abs(m)
    n, h, w = m.shape
    if rule == "top_k":
        counts = _top_k_counts(0.2 if k is None else k, n, h * w)
        return pixel_order(m) < counts[:, None, None]
    if rule == "threshold":
        t = 0.5 if threshold is None else threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
                or not 0 <= float(t) <= 1:
            raise MethodError(f"threshold must be a number in [0, 1] (the map is min-max normalised), "
                              f"got {threshold!r}")
        return _minmax(m) >= float(t)
    if rule == "otsu":
        norm = _minmax(m)
        t = otsu_thresholds(norm.reshape(n, -1))
        return norm > t[:, None, None]
    raise MethodError(f"unknown binarize rule {rule!r}; valid: {', '.join(RULES)}")


def _top_k_counts(k, n, pixels):
    if isinstance(k, (bool, np.bool_)):
        raise MethodError(f"k must be a pixel count or a fraction in (0, 1], got {k!r}")
    if np.ndim(k) == 1:
        c = np.asarray(k)
        if c.shape != (n,) or not np.issubdtype(c.dtype, np.integer) or c.min() < 1:
            raise MethodError(f"k as an array must hold {n} pixel counts >= 1, got {c!r}")
        return np.minimum(c, pixels)
    if isinstance(k, (int, np.integer)):
        if k < 1:
            raise MethodError(f"k must be a pixel count >= 1 or a fraction in (0, 1], got {k!r}")
        return np.full(n, min(int(k), pixels))
    if isinstance(k, (float, np.floating)) and 0 < k <= 1:
        return np.full(n, count_of(k, pixels))
    raise MethodError(f"k must be a pixel count >= 1 (int) or a fraction in (0, 1] (float), got {k!r}")


def heatmap_box(binary_map):
    """Tightest box ``(left, top, width, height)`` around the True pixels of each mask.

    Args:
        binary_map: (N,H,W) or (H,W) bool.

    Returns:
        (N,4) or (4,) float64; all NaN for an empty mask.
    """
    b = np.asarray(binary_map).astype(bool)
    single = b.ndim == 2
    if single:
        b = b[None]
    if b.ndim != 3:
        raise InputError(f"heatmap_box expects masks shaped (N,H,W) or (H,W), got {np.shape(binary_map)}")
    _, h, w = b.shape
    rows, cols = b.any(axis=2), b.any(axis=1)
    top = rows.argmax(1)
    bottom = h - rows[:, ::-1].argmax(1)
    left = cols.argmax(1)
    right = w - cols[:, ::-1].argmax(1)
    box = np.stack([left, top, right - left, bottom - top], axis=1).astype(np.float64)
    box[~rows.any(1)] = np.nan
    return box[0] if single else box


def box_iou(a, b):
    """IoU of boxes ``(left, top, width, height)`` row by row: (N,4), (N,4) -> (N,)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def _boxes_of(entry, i):
    """One image's ground truth as an array of boxes (B,4) (a leading label column is dropped)."""
    try:
        arr = np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"ground truth of image {i}: expected boxes (left, top, width, height) or "
                         f"(label, left, top, width, height), got {entry!r}") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (4, 5) or len(arr) == 0:
        raise InputError(f"ground truth of image {i}: expected boxes (left, top, width, height) or "
                         f"(label, left, top, width, height), got shape {arr.shape}")
    return arr[:, -4:]


def union_boxes(gt_boxes, n=None):
    """The union box (N,4) of each image's boxes: one box (N,4) per image, or per image a list of
    boxes ``(left, top, width, height)`` / ``(label, left, top, width, height)`` (SVHN's format)."""
    if n is not None and len(gt_boxes) != n:
        raise InputError(f"expected ground truth for {n} images, got {len(gt_boxes)}")
    out = []
    for i, entry in enumerate(gt_boxes):
        b = _boxes_of(entry, i)
        x0, y0 = b[:, 0].min(), b[:, 1].min()
        out.append([x0, y0, (b[:, 0] + b[:, 2]).max() - x0, (b[:, 1] + b[:, 3]).max() - y0])
    return np.asarray(out, np.float64).reshape(-1, 4)


def gt_mask(gt, shape):
    """Ground-truth masks (N,H,W) bool from masks, or from per-image boxes (their union)."""
    n, h, w = shape
    arr = None
    try:
        arr = np.asarray(gt)
    except (TypeError, ValueError):
        pass
    if arr is not None and arr.dtype != object and arr.ndim == 3:
        if arr.shape == (n, h, w):
            return arr.astype(bool)
        if arr.dtype == bool or arr.shape[-1] not in (4, 5):
            raise InputError(f"ground-truth masks shaped {arr.shape} do not match the maps {(n, h, w)}")
    if len(gt) != n:
        raise InputError(f"expected ground truth for {n} images, got {len(gt)}")
    return np.stack([_mask_of(_boxes_of(e, i), h, w) for i, e in enumerate(gt)])


def _mask_of(boxes, h, w):
    from ..data.svhn import boxes_mask

    return boxes_mask([(0, *b) for b in boxes], (h, w))


def _binarize_for(m, gt_counts, binarize_kw):
    kw = dict(binarize_kw)
    if isinstance(kw.get("k"), str):
        if kw["k"] != "gt":
            raise MethodError(f"k must be a count, a fraction or 'gt', got {kw['k']!r}")
        kw["k"] = np.maximum(gt_counts, 1).astype(np.int64)
    return binarize(m, **kw)


def iou_1(maps, gt_masks, **binarize_kw):
    """IoU_1 (study 5): ``|A ∩ B| / |A ∪ B|`` per image.

    A = :func:`binarize` (maps, ``**binarize_kw``); ``k="gt"`` keeps as many pixels as the
    ground-truth mask has. B = ``gt_masks``: (N,H,W) bool, or per image its boxes (the mask is
    their union, a pixel counted in when its centre lies in a box, :func:`xaitf.data.svhn.boxes_mask`).

    Returns:
        (N,) in [0, 1]; NaN where both masks are empty.
    """
    m = check_maps(maps)
    b = gt_mask(gt_masks, m.shape)
    a = _binarize_for(m, b.sum((1, 2)), binarize_kw)
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union.astype(np.float64)


def iou_2(maps, gt_boxes, return_boxes=False, match="union", **binarize_kw):
    """IoU_2 (study 5): IoU of the tightest box around the binarised map and the ground-truth box.

    Args:
        maps: (N,H,W).
        gt_boxes: one box (left, top, width, height) per image (N,4), or per image a list of digit
            boxes (4 values, or 5 with the label first as :mod:`xaitf.data.svhn` gives them).
        return_boxes: also return the predicted and ground-truth boxes (for figures).
        match: how an image's several boxes are compared: ``"union"`` (default): their union box
            (the one box enclosing them all) is the ground truth; ``"best"``: the box IoU with
            each box, the largest (the ground truth returned is that box), so that a digit that
            appears twice is scored against each copy's own box, not against a box that also
            encloses the digits between them.
        **binarize_kw: :func:`binarize` arguments; ``k="gt"`` keeps as many pixels as the
            ground truth covers (``"union"``: the union box; ``"best"``: the union of the boxes'
            masks, as :func:`iou_1`).

    Returns:
        (N,) IoU (NaN for an empty binarised map), or ``(iou, predicted (N,4), ground truth (N,4))``.
    """
    m = check_maps(maps)
    if match not in ("union", "best"):
        raise MethodError(f"iou_2 match must be 'union' or 'best', got {match!r}")
    counts = None
    if match == "union":
        gt = union_boxes(gt_boxes, len(m))
        if binarize_kw.get("k") == "gt":
            counts = np.array([_mask_of(b[None], *m.shape[1:]).sum() for b in gt])
        pred = heatmap_box(_binarize_for(m, counts, binarize_kw))
        iou = box_iou(pred, gt)
        return (iou, pred, gt) if return_boxes else iou
    if len(gt_boxes) != len(m):
        raise InputError(f"expected ground truth for {len(m)} images, got {len(gt_boxes)}")
    boxes = [_boxes_of(e, i) for i, e in enumerate(gt_boxes)]
    if binarize_kw.get("k") == "gt":
        counts = np.array([_mask_of(b, *m.shape[1:]).sum() for b in boxes])
    pred = heatmap_box(_binarize_for(m, counts, binarize_kw))
    iou, gt = np.empty(len(m)), np.empty((len(m), 4))
    for i, b in enumerate(boxes):
        each = box_iou(np.repeat(pred[i:i + 1], len(b), 0), b)
        j = int(np.nanargmax(each)) if np.isfinite(each).any() else 0
        iou[i], gt[i] = each[j], b[j]
    return (iou, pred, gt) if return_boxes else iou


def centre_mass(maps, crop=5):
    """Share of the absolute relevance on the centre pixel and on the centred crop (study 1).

    The centre pixel is row ``H // 2``, column ``W // 2``: for an odd height (study 1's 227x227)
    that is the pixel with flat index ``n // 2``, ``n = H*W`` (study 1's ``k``); for an even height
    flat ``n // 2`` would fall on the first column, so the row/column form is used. The crop is the
    ``crop x crop`` patch ``[r - crop//2, r - crop//2 + crop)`` in rows (likewise in columns):
    study 1's ``[c-2:c+3]`` for ``crop=5``.

    Returns:
        dict ``pixel=(N,)``, ``crop=(N,)``: ``sum |m| over the region / sum |m|`` (NaN for a
        map that is zero everywhere).
    """
    m = np.abs(check_maps(maps))
    n, h, w = m.shape
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 1:
        raise MethodError(f"crop must be a positive integer, got {crop!r}")
    r, c = h // 2, w // 2
    r0, c0 = r - crop // 2, c - crop // 2
    if r0 < 0 or c0 < 0 or r0 + crop > h or c0 + crop > w:
        raise MethodError(f"a {crop}x{crop} crop around pixel ({r},{c}) leaves the {h}x{w} map")
    total = m.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"pixel": m[:, r, c] / total,
                "crop": m[:, r0:r0 + crop, c0:c0 + crop].sum((1, 2)) / total}


# ------------------------------------------------------------------------------------------------
# ground-truth localisation scores (Quantus' definitions)
# ------------------------------------------------------------------------------------------------
def _maps_and_masks(maps, masks, owner):
    """``check_maps(maps)`` and :func:`gt_mask` of ``masks``, refusing missing or empty masks."""
    m = check_maps(maps)
    if masks is None:
        raise InputError(f"{owner} needs ground-truth masks shaped {m.shape} (bool, one per map), "
                         "got None")
    arr = None
    try:
        arr = np.asarray(masks)
    except (TypeError, ValueError):
        pass
    if arr is not None and arr.dtype != object:
        if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)) \
                or (arr.dtype != bool and not np.all(np.isfinite(arr))):
            raise InputError(f"{owner} needs ground-truth masks shaped {m.shape} (bool, one per "
                             f"map) with finite values, got dtype {arr.dtype}"
                             + ("" if arr.dtype.kind in "bOSU" else " with NaN or inf"))
        if arr.ndim == 4 and arr.shape[-1] == 1:      # (N,H,W,1) as the maps may come
            masks = arr[..., 0]
        elif arr.size == 0 or arr.ndim < 2:
            raise InputError(f"{owner} needs ground-truth masks shaped {m.shape} (bool, one per "
                             f"map), got shape {arr.shape}")
    b = gt_mask(masks, m.shape)
    empty = np.flatnonzero(~b.any(axis=(1, 2)))
    if len(empty):
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise InputError(f"{owner}: the ground-truth mask of image(s) {shown} is empty (no pixel "
                         "set); the score is undefined there: leave those images out")
    return m, b


def _disk(radius):
    """Footprint (2r+1, 2r+1) bool: the pixels whose centres lie within ``radius`` of the centre."""
    r = np.arange(-radius, radius + 1)
    return r[:, None] ** 2 + r[None, :] ** 2 <= radius ** 2


def pointing_game(maps, masks, tolerance=0):
    """Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop", IJCV).

    A hit when the pixel of maximal relevance lies in the ground-truth mask::

        hit = 1  if  argmax_p m_p  in  dilate(B, tolerance)  else 0

    As Quantus' ``PointingGame``: the signed map is used (no absolute value; Quantus' default
    normalisation keeps the argmax) and, when several pixels share the maximum, it is a hit if
    any of them lies in the mask. Zhang et al. count a point within 15 pixels of the object as a
    hit; ``tolerance`` does that: the mask is dilated by a disk, every pixel whose centre lies
    within Euclidean distance ``tolerance`` (pixels) of a mask pixel's centre is added
    (Quantus has no tolerance, i.e. ``tolerance=0``).

    Args:
        maps: (N,H,W) relevance maps.
        masks: (N,H,W) bool ground-truth masks (or per image its boxes, as :func:`iou_1`). Every
            image needs a non-empty mask (Quantus returns NaN for an empty one; here it is an
            InputError).
        tolerance: dilation radius in pixels, an int >= 0. Default 0.

    Returns:
        (N,) float64, 1.0 (hit) or 0.0 (miss).
    """
    m, b = _maps_and_masks(maps, masks, "pointing_game")
    tol = check_int(tolerance, "tolerance", minimum=0, owner="pointing_game")
    if tol > 0:
        from scipy.ndimage import binary_dilation

        b = binary_dilation(b, structure=_disk(tol)[None])
    top = m == m.max(axis=(1, 2), keepdims=True)
    return (top & b).any(axis=(1, 2)).astype(np.float64)


def relevance_mass(maps, masks, positive_only=False):
    """Relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI: A benchmark dataset for the ground
    truth evaluation of neural network explanations", Information Fusion 81).

    The share of the relevance that falls inside the ground-truth mask B::

        RMA = R_within / R_total,   R_within = sum_{p in B} r_p,   R_total = sum_p r_p

    Arras et al. take ``r = max(m, 0)``, the positive relevance only (``positive_only=True``).
    Quantus' ``RelevanceMassAccuracy`` (whose docstring says "positive attributions") sums the
    signed values as they are: ``(a * s).sum() / a.sum()`` (its default ``abs=False``; the default
    normalisation by max |a| cancels in the ratio). The default here follows Quantus: ``r = m``;
    on non-negative maps both agree. With negative relevance the signed ratio can leave [0, 1].

    Args:
        maps: (N,H,W) relevance maps.
        masks: (N,H,W) bool ground-truth masks (or per image its boxes); every one non-empty.
        positive_only: False (Quantus: signed sums) or True (Arras et al.: negatives set to 0).

    Returns:
        (N,) float64; in [0, 1] for non-negative maps or ``positive_only=True``; NaN where
        ``R_total`` is 0 (e.g. a zero map).
    """
    m, b = _maps_and_masks(maps, masks, "relevance_mass")
    if not isinstance(positive_only, (bool, np.bool_)):
        raise MethodError(f"relevance_mass needs positive_only to be True or False, got {positive_only!r}")
    r = np.maximum(m, 0.0) if positive_only else m
    within = np.where(b, r, 0.0).sum(axis=(1, 2))
    total = r.sum(axis=(1, 2))
    return np.where(total != 0, within / np.where(total != 0, total, 1.0), np.nan)


def relevance_rank(maps, masks):
    """Relevance rank accuracy (Arras et al. 2022, "CLEVR-XAI", Information Fusion 81).

    With K = |B| the number of pixels in the ground-truth mask, the share of the K pixels of
    highest relevance that lie in the mask::

        RRA = |top_K(m) ∩ B| / K

    As Quantus' ``RelevanceRankAccuracy``: signed values (no absolute value; its default
    normalisation keeps the order). Ties at the K-th value: the pixel that comes first in
    row-major order is taken first (:func:`xaitf.metrics.pixel_order`); Quantus' ``np.argsort``
    leaves the order of ties unspecified.

    Args:
        maps: (N,H,W) relevance maps.
        masks: (N,H,W) bool ground-truth masks (or per image its boxes); every one non-empty.

    Returns:
        (N,) float64 in [0, 1].
    """
    m, b = _maps_and_masks(maps, masks, "relevance_rank")
    k = b.sum(axis=(1, 2))
    top = pixel_order(m) < k[:, None, None]
    return (top & b).sum(axis=(1, 2)) / k.astype(np.float64)


def top_k_intersection(maps, masks, k=1000):
    """Top-k intersection (Theiner et al. 2021, "Interpretable semantic photo geolocalization").

    The share of the k pixels of highest relevance that lie in the ground-truth mask B::

        TKI = |top_k(m) ∩ B| / k

    As Quantus' ``TopKIntersection`` (``concept_influence=False``): signed values, k = 1000 by
    default. Quantus refuses a k that is not smaller than the input; here k is clipped to the
    number of pixels H*W (and the score divided by the clipped k), so on a map smaller than k
    pixels the score is the share of the mask in the image, ``|B| / (H*W)``. Ties: first in
    row-major order (:func:`xaitf.metrics.pixel_order`).

    Args:
        maps: (N,H,W) relevance maps.
        masks: (N,H,W) bool ground-truth masks (or per image its boxes); every one non-empty.
        k: pixels kept, an int >= 1 (clipped to H*W), or a fraction in (0, 1] of the pixels
            (rounded half up, at least 1) as :func:`binarize`. Default 1000.

    Returns:
        (N,) float64 in [0, 1].
    """
    m, b = _maps_and_masks(maps, masks, "top_k_intersection")
    counts = _top_k_counts(k, len(m), m.shape[1] * m.shape[2])
    top = pixel_order(m) < counts[:, None, None]
    return (top & b).sum(axis=(1, 2)) / counts.astype(np.float64)
