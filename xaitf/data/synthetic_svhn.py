"""A synthetic house-number set with known digit boxes, for study 5 when SVHN is not available.

SVHN (Netzer et al. 2011) is for non-commercial use and is never downloaded by xaitf; when the data
directory holds no SVHN format 1 folder, study 5 runs on this set instead and says so everywhere
(report, JSON, figure titles). It is NOT SVHN: results on it are results on synthetic data.

One "house number" (a full street-view-like image, before cropping) is made like this, all draws
from ``numpy.random.RandomState(seed)`` so the set is reproducible:

1. Digits: k = 1..4 digits (probabilities 0.2 / 0.35 / 0.3 / 0.15). In mode ``"target"`` half of
   the images contain the target digit at a random place (label 1) and the other half contain
   none (label 0), so the classes are balanced by construction (SVHN is balanced by undersampling).
2. Glyphs: each digit is drawn either with a TrueType font (matplotlib's bundled DejaVu / STIX /
   Computer Modern fonts, regular, bold, oblique; Pillow's own default font when those are
   missing) or as a stroke glyph (seven-segment style polylines with round joins, random
   thickness), at height h ~ U(18, 40) px, rotated by U(-8, 8) degrees and sheared a little.
3. Layout: digits left to right with random gaps (-5..35% of the digit width), a small vertical
   jitter, inside a canvas with random borders (12..60 px).
4. Background: a random base colour, a linear colour ramp in a random direction, a smooth random
   texture (Gaussian-blurred noise at a random scale), and a few distractors (lines, rectangles,
   blobs: door frames, plates, walls); the digit colour has a luminance contrast of at least 0.25
   with the local background; sometimes a darker outline/shadow; then a global blur
   (sigma 0..1 px) and pixel noise (std 0..6 / 255).
5. Boxes: the tight bounding box of each digit's own drawn pixels (after rotation), as
   ``(label, left, top, width, height)`` in pixel-edge coordinates, the convention of
   :mod:`xaitf.data.svhn`.
6. Crop: exactly the SVHN format 1 pipeline of study 5, :func:`xaitf.data.svhn.crop_to_digits`
   (union of the boxes + 10 px, black padding outside the image, bilinear resize to ``size``),
   which maps the boxes into the crop.

Public API: :func:`make_house_number` (one full image), :func:`load_synthetic_svhn` (N crops with
labels and boxes, the return type of :func:`xaitf.data.svhn.load_svhn_format1`) and
:func:`synthetic_svhn_dataset` (a train/test :class:`xaitf.data.Dataset` plus the test boxes).
"""
from pathlib import Path

import numpy as np

from ..errors import InputError
from .svhn import MODES, SvhnFormat1, crop_to_digits

NAME = "svhn_synthetic"
TITLE = "synthetic house numbers (NOT SVHN)"

_DIGIT_COUNTS = (1, 2, 3, 4)
_DIGIT_COUNT_P = (0.2, 0.35, 0.3, 0.15)

# matplotlib's bundled fonts (a pinned dependency, so the same glyphs everywhere)
_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
               "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf",
               "STIXGeneralBol.ttf", "cmr10.ttf", "cmss10.ttf")

# seven-segment strokes on a unit box (x right, y down): a top, b upper right, c lower right,
# d bottom, e lower left, f upper left, g middle
_SEG = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)),
        "d": ((0, 1), (1, 1)), "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)),
        "g": ((0, 0.5), (1, 0.5))}
_SEVEN = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc",
          7: "abc", 8: "abcdefg", 9: "abcdfg"}


def font_paths():
    """The TrueType files used for font glyphs (those of ``_FONT_FILES`` that exist)."""
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    except Exception:  # noqa: BLE001 - no matplotlib: Pillow's default font / strokes only
        return []
    return [str(folder / f) for f in _FONT_FILES if (folder / f).is_file()]


_FONT_CACHE = {}


def _font(path, size):
    from PIL import ImageFont

    key = (path, size)
    if key not in _FONT_CACHE:
        if path == "pillow-default":
            _FONT_CACHE[key] = ImageFont.load_default(size=size)
        else:
            _FONT_CACHE[key] = ImageFont.truetype(path, size)
    return _FONT_CACHE[key]


def _glyph_sources():
    """Names of the glyph sources: font files, Pillow's default font (FreeType), "strokes"."""
    from PIL import features

    fonts = font_paths()
    if not fonts and features.check("freetype2"):
        fonts = ["pillow-default"]
    return fonts + ["strokes"]


def _glyph_mask(digit, height, source, rs):
    """An (h, w) uint8 mask (0/255) of one digit about ``height`` px tall, tightly cropped."""
    from PIL import Image, ImageDraw

    if source == "strokes":
        w = max(4, int(round(height * rs.uniform(0.45, 0.65))))
        thick = max(2, int(round(height * rs.uniform(0.09, 0.17))))
        pad = thick
        img = Image.new("L", (w + 2 * pad, height + 2 * pad), 0)
        draw = ImageDraw.Draw(img)
        for seg in _SEVEN[int(digit)]:
            (x0, y0), (x1, y1) = _SEG[seg]
            p0 = (pad + x0 * (w - 1), pad + y0 * (height - 1))
            p1 = (pad + x1 * (w - 1), pad + y1 * (height - 1))
            draw.line([p0, p1], fill=255, width=thick)
            r = thick / 2.0   # round joints
            for px, py in (p0, p1):
                draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
        if int(digit) == 1 and rs.rand() < 0.5:   # a serif flag on some ones
            draw.line([(pad + (w - 1) * 0.55, pad + height * 0.15), (pad + w - 1, pad)], fill=255,
                      width=thick)
    else:
        font = _font(source, int(round(height * 1.35)))
        l, t, r, b = font.getbbox(str(int(digit)))
        img = Image.new("L", (r - l + 8, b - t + 8), 0)
        ImageDraw.Draw(img).text((4 - l, 4 - t), str(int(digit)), fill=255, font=font)
    # shear and rotate a little
    shear = rs.uniform(-0.15, 0.15)
    if abs(shear) > 0.02:
        w0, h0 = img.size
        extra = int(abs(shear) * h0) + 2
        img = img.transform((w0 + extra, h0), Image.AFFINE,
                            (1, shear, -extra / 2 if shear > 0 else 0, 0, 1, 0), resample=Image.BILINEAR)
    angle = rs.uniform(-8, 8)
    img = img.rotate(angle, resample=Image.BILINEAR, expand=True)
    a = np.asarray(img, dtype=np.uint8)
    rows, cols = np.flatnonzero(a.max(1) > 64), np.flatnonzero(a.max(0) > 64)
    if len(rows) == 0:
        raise RuntimeError(f"empty glyph for digit {digit} from {source}")  # pragma: no cover
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _luma(rgb):
    return float(np.dot(np.asarray(rgb, np.float64), (0.299, 0.587, 0.114)))


def _smooth_noise(rs, h, w, scale):
    """Gaussian-blurred white noise with unit std (a random texture of feature size ``scale``)."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rs.randn(h, w), sigma=scale, mode="reflect")
    return n / (n.std() + 1e-8)


def _background(rs, h, w):
    """(h, w, 3) float64 in [0, 1]: base colour + ramp + texture + distractors."""
    from PIL import Image, ImageDraw

    base = rs.uniform(0.05, 0.95, 3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    theta = rs.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy)[..., None] * rs.uniform(-0.35, 0.35, 3)
    tex = _smooth_noise(rs, h, w, rs.uniform(1.0, 6.0))[..., None] * rs.uniform(0.02, 0.12)
    tex = tex * (1 + 0.3 * rs.uniform(-1, 1, 3))          # a little colour in the texture
    bg = np.clip(base + ramp + tex, 0, 1)
    # distractors drawn on an RGB layer
    img = Image.fromarray((bg * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rs.randint(0, 4)):
        colour = tuple(int(v) for v in rs.randint(0, 256, 3))
        kind = rs.randint(3)
        if kind == 0:      # a line (frame edge, cable)
            pts = [(rs.uniform(0, w), rs.uniform(0, h)), (rs.uniform(0, w), rs.uniform(0, h))]
            draw.line(pts, fill=colour, width=int(rs.randint(1, 5)))
        elif kind == 1:    # a rectangle outline (plate, window)
            x0, y0 = rs.uniform(-0.2 * w, w), rs.uniform(-0.2 * h, h)
            draw.rectangle([x0, y0, x0 + rs.uniform(10, w), y0 + rs.uniform(10, h)], outline=colour,
                           width=int(rs.randint(1, 4)))
        else:              # a soft blob
            cx, cy, r = rs.uniform(0, w), rs.uniform(0, h), rs.uniform(4, 0.4 * max(h, w))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    out = np.asarray(img, dtype=np.float64) / 255.0
    blobs = rs.rand() < 0.5
    if blobs:   # blend distractors back towards the background so they stay secondary
        out = 0.5 * out + 0.5 * bg
    return out


def _digit_colour(rs, local_bg):
    """A colour with luminance contrast >= 0.25 against ``local_bg`` (mean RGB)."""
    lb = _luma(local_bg)
    for _ in range(50):
        c = rs.uniform(0, 1, 3)
        if abs(_luma(c) - lb) >= 0.25:
            return c
    return np.full(3, 0.0 if lb > 0.5 else 1.0)


def make_house_number(rs, digits, sources=None):
    """One full synthetic house-number image and its digit boxes.

    Args:
        rs: a ``numpy.random.RandomState`` (every random choice is drawn from it).
        digits: the digits 0..9, left to right.
        sources: glyph sources (default :func:`_glyph_sources`): font paths and/or ``"strokes"``.

    Returns:
        ``(image, boxes)``: uint8 (H, W, 3) and ``[(label, left, top, width, height), ...]``
        (floats, pixel-edge coordinates: the tight box of each digit's drawn pixels).
    """
    from scipy.ndimage import gaussian_filter

    sources = list(sources or _glyph_sources())
    height = int(rs.randint(18, 41))
    masks = []
    for d in digits:
        src = sources[rs.randint(len(sources))] if rs.rand() < 0.8 else "strokes"
        h = int(round(height * rs.uniform(0.92, 1.08)))
        masks.append(_glyph_mask(int(d), h, src, rs))
    gaps = [int(round(m.shape[1] * rs.uniform(-0.05, 0.35))) for m in masks[1:]]
    jitter = [int(rs.randint(-height // 10, height // 10 + 1)) for _ in masks]
    border = rs.randint(12, 61, size=4)          # left, top, right, bottom
    top_min = min(jitter)
    width = int(sum(m.shape[1] for m in masks) + sum(gaps) + border[0] + border[2])
    tallest = max(m.shape[0] + j - top_min for m, j in zip(masks, jitter))
    canvas_h = int(tallest + border[1] + border[3])
    img = _background(rs, canvas_h, width)
    boxes = []
    x = int(border[0])
    same_colour = rs.rand() < 0.8
    colour = None
    outline = rs.rand() < 0.3
    for i, (d, m) in enumerate(zip(digits, masks)):
        if i:
            x += gaps[i - 1]
        y = int(border[1] + jitter[i] - top_min)
        hh, ww = m.shape
        region = img[y:y + hh, x:x + ww]
        if colour is None or not same_colour:
            colour = _digit_colour(rs, region.reshape(-1, 3).mean(0))
        alpha = (m.astype(np.float64) / 255.0)[..., None]
        if outline:   # a darker/lighter rim one pixel around the glyph
            rim = np.clip(gaussian_filter(alpha[..., 0], 1.0) * 2.0, 0, 1)[..., None]
            rim_colour = np.clip(colour * 0.3 if _luma(colour) > 0.5 else colour + 0.5, 0, 1)
            region[:] = region * (1 - rim) + rim_colour * rim
        region[:] = region * (1 - alpha) + colour * alpha
        boxes.append((int(d), float(x), float(y), float(ww), float(hh)))
        x += ww
    sigma = rs.uniform(0.0, 1.0)
    if sigma > 0.2:
        img = gaussian_filter(img, sigma=(sigma, sigma, 0))
    img = img + rs.randn(*img.shape) * rs.uniform(0, 6 / 255)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), boxes


def _digits_for(rs, label, mode, target_digit):
    k = int(rs.choice(_DIGIT_COUNTS, p=_DIGIT_COUNT_P))
    if mode == "target":
        others = [d for d in range(10) if d != target_digit]
        digits = [others[rs.randint(9)] for _ in range(k)]
        if label == 1:
            digits[rs.randint(k)] = target_digit
            for j in range(k):   # more than one target digit now and then, as in real numbers
                if rs.rand() < 0.1:
                    digits[j] = target_digit
        return digits
    # one_vs_two: a 1 (label 1) or a 2 (label 0), never both
    keep, avoid = (1, 2) if label == 1 else (2, 1)
    pool = [d for d in range(10) if d != avoid]
    digits = [pool[rs.randint(len(pool))] for _ in range(k)]
    digits[rs.randint(k)] = keep
    return digits


def load_synthetic_svhn(n, size=64, target_digit=1, seed=0, mode="target", margin=10):
    """``n`` synthetic house-number crops with labels and digit boxes (study 5's task).

    Args:
        n: number of images (label 1 for the first draw with probability 0.5, then alternating
            balanced: exactly ``n // 2`` label-1 images, shuffled).
        size: side of the square crops (64 for training).
        target_digit: digit 0..9 whose presence gives label 1 (mode "target").
        seed: seed of every draw (same seed, same set).
        mode: "target" or "one_vs_two" (label 1 = has a 1, label 0 = has a 2, never both).
        margin: pixels around the union of the boxes before resizing (study 5: 10).

    Returns:
        :class:`xaitf.data.svhn.SvhnFormat1` ``(images, labels, boxes)``: uint8 (n, size, size, 3),
        int64 (n,) in {0, 1}, per image the boxes ``(label, left, top, width, height)`` in crop
        pixels; plus ``.names`` (``synthetic_00000`` ...), ``.source`` (how it was made: says it is
        synthetic) and ``.synthetic = True``.
    """
    n, size = int(n), int(size)
    if n < 1:
        raise InputError(f"n must be a positive number of images, got {n}")
    if size < 8:
        raise InputError(f"size must be at least 8 pixels, got {size}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "target" and int(target_digit) not in range(10):
        raise InputError(f"target_digit must be a digit 0..9, got {target_digit!r}")
    rs = np.random.RandomState(seed)
    labels = np.zeros(n, np.int64)
    labels[:n // 2] = 1
    labels = labels[rs.permutation(n)]
    sources = _glyph_sources()
    images = np.zeros((n, size, size, 3), np.uint8)
    boxes, names = [], []
    for i in range(n):
        digits = _digits_for(rs, int(labels[i]), mode, int(target_digit))
        full, bx = make_house_number(rs, digits, sources)
        images[i], new = crop_to_digits(full, bx, size, margin)
        boxes.append(new)
        names.append(f"synthetic_{i:05d}")
    out = SvhnFormat1(images, labels, boxes)
    out.names = names
    out.synthetic = True
    task = (f"label 1 = digit {int(target_digit)} present" if mode == "target"
            else "one-vs-two: label 1 = has a 1, label 0 = has a 2")
    fonts = [Path(s).name for s in sources if s != "strokes"]
    out.source = (f"SYNTHETIC house numbers (not SVHN): xaitf.data.synthetic_svhn, seed {seed}, "
                  f"{n} images ({task}; {int(labels.sum())} label 1 / {int(n - labels.sum())} label 0), "
                  f"1-4 digits drawn with {len(fonts)} fonts ({', '.join(fonts) or 'none'}) and stroke "
                  f"glyphs on textured colour backgrounds; crops {size}x{size}, margin {margin}")
    return out


def synthetic_svhn_dataset(n_train=2000, n_test=500, size=64, target_digit=1, seed=0, mode="target"):
    """A train/test :class:`xaitf.data.Dataset` named ``"svhn_synthetic"`` and the test boxes.

    Train and test are drawn with different seeds (``seed`` and ``seed + 1``), so no image is shared.

    Returns ``(dataset, test_boxes)``.
    """
    from .datasets import Dataset

    tr = load_synthetic_svhn(n_train, size, target_digit, seed, mode)
    te = load_synthetic_svhn(n_test, size, target_digit, seed + 1, mode)
    ds = Dataset(NAME, tr.images, tr.labels, te.images, te.labels,
                 f"train: {tr.source}; test: {te.source}",
                 f"train {n_train} (seed {seed}) / test {n_test} (seed {seed + 1}), synthetic")
    return ds, te.boxes
