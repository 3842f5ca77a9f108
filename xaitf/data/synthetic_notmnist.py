"""A synthetic stand-in for notMNIST (letters A-J in many fonts), for study 4's refusal test.

notMNIST (Yaroslav Bulatov, 2011) is ten classes of letters A-J rendered in many publicly available
fonts, 28x28 gray, the letter light on a dark background like MNIST's digits. Study 4 showed its
Bayesian MLP 399 notMNIST images and reported 395 refused. xaitf never downloads notMNIST; when the
data directory has no copy of it, the study runs on this generator instead and calls the result
"synthetic notMNIST" everywhere (report, results.json, figure titles). It is NOT notMNIST: the fonts
are the dozen that matplotlib bundles, not the thousands of notMNIST's.

One image, all draws from ``numpy.random.RandomState(seed)`` so a seed gives the same set:

1. Class ``k`` (0..9) is the letter ``"ABCDEFGHIJ"[k]``; classes are balanced (image ``i`` has class
   ``i % 10``, then the set is shuffled).
2. Font: one of :data:`FONT_FILES` (DejaVu Sans / Serif / Sans Mono in regular, bold, oblique or
   italic variants, shipped in matplotlib's ``mpl-data/fonts/ttf``), drawn uniformly.
3. Glyph: rendered white on black with PIL ``ImageFont.truetype`` at 96 px, stroke width 0..4 px
   (thicker strokes), cropped to its ink box, then scaled (Lanczos) so that its larger side is
   ``U(18, 27)`` px (notMNIST's letters fill most of the frame), keeping its aspect ratio, slightly
   stretched (width factor ``U(0.85, 1.15)``), at most 28 px either way.
4. Placement: centred in the 28x28 frame, shifted by up to the free margin (uniform), each side
   clipped to the frame; intensity scaled by ``U(0.85, 1.0)``.

Values are float32 in [0, 1] (uint8 quantised, as an image file would be), shape (N, 28, 28).

A real notMNIST copy is used instead when the data directory holds ``notmnist.npz`` with arrays
``x`` (uint8 (N, 28, 28) or (N, 28, 28, 1), the letter light on a dark background as in MNIST;
invert a dark-on-light copy before saving it) and optionally ``y`` (int labels 0-9 for A-J):
:func:`load_notmnist_file`, or :func:`notmnist_images` which picks one or the other.
"""
from pathlib import Path

import numpy as np

from ..errors import DataError, InputError

NAME = "notmnist_synthetic"
TITLE = "synthetic notMNIST"            # every output that uses the generator says this
REAL_TITLE = "notMNIST"
FILE_NAME = "notmnist.npz"             # the real copy looked for in the data directory
LETTERS = "ABCDEFGHIJ"
SIZE = 28
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
              "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
              "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
              "DejaVuSansMono-BoldOblique.ttf")
_RENDER_PX = 96


def font_paths():
    """The bundled font files that exist (paths), in :data:`FONT_FILES` order; DataError if none."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [folder / f for f in FONT_FILES if (folder / f).is_file()]
    if not found:
        raise DataError(f"no DejaVu fonts under {folder}: the synthetic notMNIST needs matplotlib's bundled fonts")
    return found


_FONT_CACHE = {}


def _font(path):
    from PIL import ImageFont

    key = str(path)
    if key not in _FONT_CACHE:
        _FONT_CACHE[key] = ImageFont.truetype(key, _RENDER_PX)
    return _FONT_CACHE[key]


def render_letter(letter, font_path, rng):
    """One letter as a float32 (28, 28) image in [0, 1], with the jitter of the module docstring
    drawn from ``rng`` (a ``numpy.random.RandomState``)."""
    from PIL import Image, ImageDraw

    font = _font(font_path)
    stroke = int(rng.randint(0, 5))
    canvas = Image.new("L", (_RENDER_PX * 2, _RENDER_PX * 2), 0)
    ImageDraw.Draw(canvas).text((_RENDER_PX // 2, _RENDER_PX // 4), letter, fill=255, font=font,
                                stroke_width=stroke, stroke_fill=255)
    box = canvas.getbbox()
    if box is None:                                          # pragma: no cover - a font without the glyph
        raise DataError(f"font {Path(font_path).name} drew nothing for {letter!r}")
    glyph = canvas.crop(box)
    gw, gh = glyph.size
    side = rng.uniform(18.0, 27.0)
    stretch = rng.uniform(0.85, 1.15)
    scale = side / max(gw, gh)
    w = int(np.clip(round(gw * scale * stretch), 4, SIZE))
    h = int(np.clip(round(gh * scale), 4, SIZE))
    small = np.asarray(glyph.resize((w, h), Image.LANCZOS), np.float32) / 255.0
    out = np.zeros((SIZE, SIZE), np.float32)
    top = (SIZE - h) // 2 + int(round(rng.uniform(-1, 1) * (SIZE - h) / 2))
    left = (SIZE - w) // 2 + int(round(rng.uniform(-1, 1) * (SIZE - w) / 2))
    top, left = int(np.clip(top, 0, SIZE - h)), int(np.clip(left, 0, SIZE - w))
    out[top:top + h, left:left + w] = np.clip(small, 0.0, 1.0) * rng.uniform(0.85, 1.0)
    return np.round(out * 255.0).astype(np.float32) / 255.0


def make_synthetic_notmnist(n=400, seed=0):
    """``n`` synthetic notMNIST letters: ``(x, y, fonts)``.

    Returns x float32 (n, 28, 28) in [0, 1], y int64 (n,) in 0..9 (A..J, balanced: each class
    ``n // 10`` or one more), fonts (n,) the font file name of each image. The same ``(n, seed)``
    always gives the same arrays.
    """
    n = int(n)
    if n < 1:
        raise InputError(f"make_synthetic_notmnist needs n >= 1 images, got {n}")
    rng = np.random.RandomState(int(seed))
    fonts = font_paths()
    y = np.arange(n, dtype=np.int64) % 10
    y = y[rng.permutation(n)]
    x = np.empty((n, SIZE, SIZE), np.float32)
    names = []
    for i, k in enumerate(y):
        path = fonts[rng.randint(len(fonts))]
        x[i] = render_letter(LETTERS[int(k)], path, rng)
        names.append(path.name)
    return x, y, np.asarray(names)


def load_notmnist_file(path):
    """A real notMNIST copy saved as ``.npz`` (module docstring): ``(x, y)``, x float32 (N, 28, 28)
    in [0, 1], y int64 (N,) or None. DataError if the file is unreadable or has the wrong arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(f"{path}: no array 'x' (expected x uint8 (N,28,28) and optional y)")
            x = np.asarray(f["x"])
            y = np.asarray(f["y"]).astype(np.int64).reshape(-1) if "y" in f.files else None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE) or len(x) == 0:
        raise DataError(f"{path}: x must be (N,28,28) or (N,28,28,1), got {x.shape}")
    x = x.astype(np.float32) / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"{path}: x must be uint8 0..255 or floats in [0, 1]")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: y has {len(y)} labels for {len(x)} images")
    return x, y


def find_notmnist_file(data_dir=None):
    """``<data dir>/notmnist.npz`` if it exists (data dir: ``data_dir`` or ``$XAITF_DATA_DIR``), else None."""
    from .datasets import data_dir as resolve

    folder = resolve(data_dir)
    if folder is None:
        return None
    path = Path(folder) / FILE_NAME
    return path if path.is_file() else None


def notmnist_images(n=400, data_dir=None, source="auto", seed=0):
    """Letters for the refusal test: a dict ``x`` (N, 28, 28) float32, ``y``, ``synthetic`` (bool),
    ``title`` ("synthetic notMNIST" or "notMNIST"), ``source`` (where the images came from).

    ``source``: "auto" (the real file if the data directory has one, else the generator),
    "synthetic" or "real" (DataError when there is no file). A real file gives its first ``n``
    images.
    """
    source = str(source).lower()
    if source not in ("auto", "synthetic", "real"):
        raise InputError(f"notMNIST source must be auto, synthetic or real, got {source!r}")
    path = None if source == "synthetic" else find_notmnist_file(data_dir)
    if source == "real" and path is None:
        raise DataError(f"no {FILE_NAME} in the data directory (arrays x uint8 (N,28,28), optional y 0-9 "
                        "for A-J); use notmnist=synthetic or auto")
    if path is not None:
        x, y = load_notmnist_file(path)
        x = x[:int(n)]
        y = None if y is None else y[:int(n)]
        return {"x": x, "y": y, "synthetic": False, "title": REAL_TITLE,
                "source": f"{path} (first {len(x)} images)"}
    x, y, fonts = make_synthetic_notmnist(n, seed)
    return {"x": x, "y": y, "synthetic": True, "title": TITLE, "fonts": sorted(set(fonts.tolist())),
            "source": f"xaitf.data.synthetic_notmnist (seed {int(seed)}, {len(set(fonts.tolist()))} matplotlib "
                      "DejaVu fonts; NOT notMNIST)"}
