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

  The quickshift tree is built by :func:`quickshift_batch`, an XLA program over a whole batch that
  gives skimage's labels (the same Lab conversion, window, strict comparisons, raster-order
  tie-breaking and noise ``default_rng(seed).normal(0, 1e-5)``; densities equal up to rounding,
  each pair's kernel value computed once): about 5x faster than skimage's single-threaded loop on
  a 227x227 image. Where XLA cannot compile, skimage runs.
* ``slic`` (Achanta et al. 2012, ``skimage.segmentation.slic``): study 1 / study 4 settings
  ``n_segments=50, compactness=30, sigma=3``; deterministic.
* ``grid``: square cells of ``cell`` pixels (the last row/column of cells may be smaller).

Colour handling: quickshift and SLIC see three channels, as in the studies (which segmented
``gray2rgb`` images): a gray image is replicated to RGB; an image with another channel count is
segmented on its channel mean, replicated.
"""
import functools
import math

import numpy as np

from .errors import InputError, MethodError

SEGMENTERS = ("quickshift", "slic", "grid")
QUICKSHIFT_ENGINES = ("auto", "xla", "skimage")
_QUICKSHIFT_KEYS = ("kernel_size", "max_dist", "ratio", "seed", "engine")
_QS_CHUNK_PIXELS = 1 << 21  # images per XLA call: about this many pixels (16 MiB per f64 plane)


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


def _quickshift_settings(shape, kernel_size, max_dist, ratio):
    auto = quickshift_params(*shape)
    kernel_size = auto["kernel_size"] if kernel_size is None else kernel_size
    max_dist = auto["max_dist"] if max_dist is None else max_dist
    ratio = auto["ratio"] if ratio is None else ratio
    if not 0 <= float(ratio) <= 1:
        raise MethodError(f"quickshift ratio must lie in [0, 1], got {ratio!r}")
    if float(kernel_size) <= 0 or float(max_dist) <= 0:
        raise MethodError(f"quickshift needs kernel_size > 0 and max_dist > 0, got {kernel_size!r}, {max_dist!r}")
    return float(kernel_size), float(max_dist), float(ratio)


@functools.lru_cache(maxsize=None)
def _quickshift_links(kernel_size):
    """XLA program: prepared images (N,H,W,3) f64 and noise (H,W) -> (parent, link length).

    Quickshift (Vedaldi & Soatto 2008) as skimage computes it: the density of pixel p is
    ``sum_q exp(-||f_p - f_q||^2 / (2 k^2))`` over the in-image window ``|dr|, |dc| <= ceil(3k)``
    (f = scaled Lab colour and row/column), plus the noise; p links to the nearest (first in raster
    order among equals) window pixel of strictly higher density. The kernel is symmetric, so each
    pair's value is computed once and added to both pixels (half the exps; the sums differ from
    skimage's by rounding, far below the 1e-5 tie noise); links visit the offsets in skimage's
    raster order, so every tie falls the same way. Channels are kept as separate planes: XLA
    vectorises those loops, not interleaved RGB.
    """
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    kw = int(math.ceil(3 * kernel_size))
    side = 2 * kw + 1
    scale = -0.5 / (kernel_size * kernel_size)

    def program(image, noise):
        n, h, w = image.shape[0], image.shape[1], image.shape[2]
        pads = [[0, 0], [kw, kw], [kw, kw]]
        planes = [image[..., c] for c in range(3)]
        padded = [tf.pad(p, pads) for p in planes]
        inside = tf.pad(tf.ones([n, h, w], tf.float64), pads)

        def squared_distance(i, j):  # to the pixel at offset (i - kw, j - kw); i, j tensors or ints
            d = tf.zeros_like(planes[0])
            for p, q in zip(planes, padded):
                t = p - tf.slice(q, [0, i, j], [n, h, w])
                d = d + t * t
            dr, dc = tf.cast(i - kw, tf.float64), tf.cast(j - kw, tf.float64)
            return d + dr * dr + dc * dc

        def add_pair(k, acc):  # offsets o and -o share one exp: it goes to p and to p + o
            i, j = k // side, k % side
            near = tf.exp(squared_distance(i, j) * scale) * tf.slice(inside, [0, i, j], [n, h, w])
            acc = tfxla.dynamic_update_slice(acc, tf.slice(acc, [0, kw, kw], [n, h, w]) + near, [0, kw, kw])
            return k + 1, tfxla.dynamic_update_slice(acc, tf.slice(acc, [0, i, j], [n, h, w]) + near,
                                                     tf.stack([0, i, j]))

        first = side * side // 2 + 1
        _, acc = tf.while_loop(lambda k, _: k < side * side, add_pair,
                               [tf.constant(first), tf.pad(tf.ones([n, h, w], tf.float64), pads)])
        density = tf.slice(acc, [0, kw, kw], [n, h, w]) + noise
        higher_pad = tf.pad(density, pads, constant_values=-np.inf)
        index = tf.reshape(tf.range(h * w), [1, h, w])

        def link_row(i, closest, parent):  # one row of offsets, unrolled: XLA fuses it into one pass
            denser = tf.slice(higher_pad, [0, i, 0], [n, h, w + 2 * kw])
            for j in range(side):
                d = squared_distance(i, j)
                better = (denser[:, :, j:j + w] > density) & (d < closest)
                closest = tf.where(better, d, closest)
                parent = tf.where(better, index + (i - kw) * w + (j - kw), parent)
            return i + 1, closest, parent

        far = tf.fill([n, h, w], tf.constant(np.finfo(np.float64).max, tf.float64))
        _, closest, parent = tf.while_loop(lambda i, *_: i < side, link_row,
                                           [tf.constant(0), far, tf.broadcast_to(index, [n, h, w])])
        return parent, tf.sqrt(closest)

    return tf.function(program, jit_compile=True, autograph=False)


def _quickshift_roots(parent, length, max_dist):
    """skimage's last step on a batch: cut links longer than max_dist, follow links to the roots,
    number each image's roots in increasing index order -> int32 labels (N,H,W)."""
    n, h, w = parent.shape
    own = np.arange(h * w).reshape(1, h, w)
    parent = np.where(length > max_dist, own, parent).astype(np.int64) + (np.arange(n) * h * w)[:, None, None]
    parent = parent.ravel()
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return np.stack([relabel(r) for r in parent.reshape(n, h, w)])


def _quickshift_xla(images, kernel_size, max_dist, ratio, seed):
    import tensorflow as tf
    from skimage.color import rgb2lab

    n, h, w = images.shape[:3]
    noise = tf.constant(np.random.default_rng(seed).normal(scale=0.00001, size=(h, w)))
    links = _quickshift_links(kernel_size)
    step = 1 << max(0, (_QS_CHUNK_PIXELS // (h * w)).bit_length() - 1)
    out = []
    for a in range(0, n, step):
        lab = rgb2lab(images[a:a + step]) * ratio  # skimage's sigma=0: no smoothing
        m = len(lab)
        size = 1 << (m - 1).bit_length()  # chunks padded to a power of two: few shapes to compile
        lab = np.concatenate([lab, np.zeros((size - m,) + lab.shape[1:])]) if size > m else lab
        parent, length = links(tf.constant(lab), noise)
        out.append(_quickshift_roots(parent.numpy()[:m], length.numpy()[:m], max_dist))
    return np.concatenate(out)


def quickshift_batch(images, kernel_size=None, max_dist=None, ratio=None, seed=0, engine="auto"):
    """:func:`quickshift` of each image of a batch (N,H,W,C) or (N,H,W): int32 labels (N,H,W).

    ``engine``: "xla" (one XLA program for the batch), "skimage" (its Cython loop, image by image)
    or "auto" (XLA where it compiles). Both give the same labels.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"quickshift_batch expects images shaped (N,H,W,C), got {np.shape(images)}")
    if engine not in QUICKSHIFT_ENGINES:
        raise MethodError(f"unknown quickshift engine {engine!r}; valid: {', '.join(QUICKSHIFT_ENGINES)}")
    rgb = np.stack([_rgb(im) for im in x]) if x.shape[-1] != 3 else x
    kernel_size, max_dist, ratio = _quickshift_settings(rgb.shape[1:3], kernel_size, max_dist, ratio)
    if engine == "auto":
        from .methods._xla import xla_available

        engine = "xla" if xla_available() else "skimage"
    if engine == "xla":
        return _quickshift_xla(rgb, kernel_size, max_dist, ratio, int(seed))
    from skimage.segmentation import quickshift as _qs

    return np.stack([relabel(_qs(im, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=int(seed)))
                     for im in rgb])


def quickshift(image, kernel_size=None, max_dist=None, ratio=None, seed=0, engine="auto"):
    """Quickshift superpixels of one image; ``None`` parameters come from :func:`quickshift_params`.

    Args:
        image: (H,W,C) or (H,W).
        kernel_size: width of the Gaussian kernel used to estimate the density.
        max_dist: cut-off distance of the links of the quickshift tree.
        ratio: balance of colour (1) against position (0) distances, in [0, 1].
        seed: seed of the random tie-breaking noise.
        engine: "auto" | "xla" | "skimage" (:func:`quickshift_batch`; the same labels).
    """
    return quickshift_batch(_rgb(image)[None], kernel_size, max_dist, ratio, seed, engine)[0]


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
        keys = _QUICKSHIFT_KEYS
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
    """Label maps (N,H,W) int32 for a batch (N,H,W,C), one segmentation per image (quickshift runs
    the whole batch as one program)."""
    x = np.asarray(images)
    if x.ndim == 3:  # (N,H,W) gray batch
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"segment expects images shaped (N,H,W,C), got {np.shape(images)}")
    fn = get_segmenter(method, **params)     # validates the name
    if not callable(method) and str(method).lower() == "quickshift":
        return quickshift_batch(x, **{k: params[k] for k in _QUICKSHIFT_KEYS if k in params})
    return np.stack([fn(im) for im in x]).astype(np.int32)
