"""Superpixel segmenters shared by LIME, Kernel SHAP and the metrics.

Every segmenter takes one image (H,W,C) or (H,W) and returns an int32 map (H,W) whose labels are
``0..S-1`` with no gaps (LIME and Kernel SHAP index their features by label).

* ``quickshift`` (Vedaldi & Soatto 2008, ``skimage.segmentation.quickshift``): study 1 uses
  ``kernel_size=4, max_dist=200, ratio=0.2`` on 227x227 images. Those settings make one or two
  segments on 28x28 or 32x32 images, so when a parameter is left ``None`` it is chosen from the
  image size (:func:`quickshift_params`; measured on MNIST / CIFAR-10 test images):

  ============  ===========  ========  =====  ===============================
  smaller side  kernel_size  max_dist  ratio  segments
  ============  ===========  ========  =====  ===============================
  < 64          1            5         0.2    ~13-21 (MNIST 28x28, CIFAR 32x32)
  64 .. 127     2            10        0.5    ~15-30 (CIFAR upscaled to 64/96)
  >= 128        4            200       0.2    study 1 (55 on its 227x227 noise image)
  ============  ===========  ========  =====  ===============================

* ``slic`` (Achanta et al. 2012, ``skimage.segmentation.slic``): study 1 / study 4 settings
  ``n_segments=50, compactness=30, sigma=3``; deterministic.
* ``grid``: square cells of ``cell`` pixels (the last row/column of cells may be smaller).

Colour handling: quickshift and SLIC see three channels, as in the studies (which segmented
``gray2rgb`` images): a gray image is replicated to RGB; an image with another channel count is
segmented on its channel mean, replicated.
"""
import numpy as np

from .errors import InputError, MethodError

SEGMENTERS = ("quickshift", "slic", "grid")


def _as_image(image):
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise InputError(f"a segmenter expects one image shaped (H,W,C) or (H,W), got {np.shape(image)}")
    return a


def _rgb(image):
    """(H,W,3) float64 for the colour segmenters (gray replicated; other channel counts averaged)."""
    a = _as_image(image)
    if a.shape[-1] == 3:
        return a
    if a.shape[-1] != 1:
        a = a.mean(-1, keepdims=True)
    return np.repeat(a, 3, axis=-1)


def relabel(labels):
    """Labels renumbered to ``0..S-1`` in order of first label value, as int32."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.reshape(np.shape(labels)).astype(np.int32)


def quickshift_params(height, width):
    """Quickshift settings for an image size (see the module table): dict kernel_size/max_dist/ratio."""
    side = min(int(height), int(width))
    if side < 64:
        return {"kernel_size": 1, "max_dist": 5, "ratio": 0.2}
    if side < 128:
        return {"kernel_size": 2, "max_dist": 10, "ratio": 0.5}
    return {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}


def quickshift(image, kernel_size=None, max_dist=None, ratio=None, seed=0):
    """Quickshift superpixels; ``None`` parameters come from :func:`quickshift_params`.

    Args:
        image: (H,W,C) or (H,W).
        kernel_size: width of the Gaussian kernel used to estimate the density.
        max_dist: cut-off distance of the links of the quickshift tree.
        ratio: balance of colour (1) against position (0) distances, in [0, 1].
        seed: seed of the random tie-breaking noise.
    """
    from skimage.segmentation import quickshift as _qs

    rgb = _rgb(image)
    auto = quickshift_params(*rgb.shape[:2])
    kernel_size = auto["kernel_size"] if kernel_size is None else kernel_size
    max_dist = auto["max_dist"] if max_dist is None else max_dist
    ratio = auto["ratio"] if ratio is None else ratio
    if not 0 <= float(ratio) <= 1:
        raise MethodError(f"quickshift ratio must lie in [0, 1], got {ratio!r}")
    if float(kernel_size) <= 0 or float(max_dist) <= 0:
        raise MethodError(f"quickshift needs kernel_size > 0 and max_dist > 0, got {kernel_size!r}, {max_dist!r}")
    seg = _qs(rgb, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=int(seed))
    return relabel(seg)


def slic(image, n_segments=50, compactness=30.0, sigma=3.0):
    """SLIC superpixels (k-means in colour + position): about ``n_segments`` compact regions.

    Args:
        image: (H,W,C) or (H,W).
        n_segments: approximate number of segments.
        compactness: weight of position against colour (higher: squarer segments).
        sigma: width of the Gaussian pre-smoothing.
    """
    from skimage.segmentation import slic as _slic

    if int(n_segments) < 1:
        raise MethodError(f"slic needs n_segments >= 1, got {n_segments!r}")
    if float(compactness) <= 0 or float(sigma) < 0:
        raise MethodError(f"slic needs compactness > 0 and sigma >= 0, got {compactness!r}, {sigma!r}")
    seg = _slic(_rgb(image), n_segments=int(n_segments), compactness=float(compactness),
                sigma=float(sigma), start_label=0)
    return relabel(seg)


def grid(image, cell=4):
    """Square cells of ``cell`` x ``cell`` pixels, numbered row by row.

    Args:
        image: an image (H,W,C)/(H,W), or its shape as a tuple ``(H, W, ...)``.
        cell: cell side in pixels (an int >= 1, or a pair (rows, cols)).
    """
    if isinstance(image, tuple) and all(isinstance(d, (int, np.integer)) for d in image):
        h, w = image[:2]
    else:
        h, w = _as_image(image).shape[:2]
    ch, cw = (cell, cell) if np.ndim(cell) == 0 else tuple(cell)
    if int(ch) != ch or int(cw) != cw or ch < 1 or cw < 1:
        raise MethodError(f"grid cell must be a positive integer (or a pair), got {cell!r}")
    ch, cw = int(ch), int(cw)
    cols = -(-w // cw)
    rows = np.arange(h)[:, None] // ch
    return (rows * cols + np.arange(w)[None, :] // cw).astype(np.int32)


def get_segmenter(method="quickshift", **params):
    """A function image -> label map: a name in :data:`SEGMENTERS` with its parameters, or a callable.

    Parameters that the chosen segmenter does not use are ignored (so one settings dict can hold
    the parameters of every segmenter). A callable is wrapped so its output is relabelled 0..S-1.
    """
    if callable(method):
        fn = method

        def custom(image):
            seg = np.asarray(fn(image))
            if seg.shape != np.shape(image)[:2]:
                raise MethodError(f"custom segmenter returned shape {seg.shape}, expected {np.shape(image)[:2]}")
            return relabel(seg)

        return custom
    name = str(method).lower()
    if name == "quickshift":
        keys = ("kernel_size", "max_dist", "ratio", "seed")
        fn = quickshift
    elif name == "slic":
        keys = ("n_segments", "compactness", "sigma")
        fn = slic
    elif name == "grid":
        keys = ("cell",)
        fn = grid
    else:
        raise MethodError(f"unknown segmenter {method!r}; valid: {', '.join(SEGMENTERS)} or a callable")
    kw = {k: params[k] for k in keys if k in params}

    def segmenter(image):
        return fn(image, **kw)

    segmenter.__name__ = name
    return segmenter


def segment(images, method="quickshift", **params):
    """Label maps (N,H,W) int32 for a batch (N,H,W,C), one segmentation per image."""
    x = np.asarray(images)
    if x.ndim == 3:  # (N,H,W) gray batch
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"segment expects images shaped (N,H,W,C), got {np.shape(images)}")
    fn = get_segmenter(method, **params)
    return np.stack([fn(im) for im in x]).astype(np.int32)
