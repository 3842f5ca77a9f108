"""Single images: read a file, fit it to a model's input, and study 1's default random image.

``load_image`` keeps the file's intensities (0..255, float32, (H,W,C)); ``fit_to_model`` resizes to
the model's (H,W) (``resize=``: one of :data:`RESIZE_POLICIES`, ``"pil"`` being study 1's script),
converts channels and scales, giving the (1,H,W,C) batch a model takes. Model-specific
preprocessing (keras.applications families, caffe/tf/torch) is :mod:`xaitf.data.preprocess`.
"""
from pathlib import Path

import numpy as np

from ..errors import InputError

#: ITU-R BT.601 luma weights (what PIL's ``convert("L")`` uses): Y = 0.299 R + 0.587 G + 0.114 B.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4}

#: ``fit_to_model(..., resize=)`` / ``--resize`` policies (see :func:`fit_to_model`)
RESIZE_POLICIES = ("pil", "bilinear", "bicubic", "nearest", "crop")


def load_image(path):
    """Read an image file (PNG, JPEG, anything PIL opens) as float32 (H,W,C) in 0..255.

    Gray files give C=1 and colour files C=3. An alpha channel is dropped (the colour values are
    kept as stored, not composited). Palette images are expanded to RGB, 16-bit gray is scaled to
    0..255, 32-bit float gray with values in [0, 1] too (other float values are clipped to 0..255),
    and the EXIF orientation of photos is applied.

    Raises:
        InputError: the file is missing or PIL cannot read it (one line).
    """
    from PIL import Image, ImageOps

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float32)
                if mode != "I" or a.max(initial=0) > 255:
                    a = a * np.float32(255.0 / 65535.0)
                a = a[..., None]
            elif mode == "F":         # 32-bit float gray (TIFF): [0, 1] data scaled to 0..255
                a = np.asarray(im, dtype=np.float32)
                if not np.all(np.isfinite(a)):
                    raise InputError(f"image {p} has NaN or infinite values")
                a = np.clip(a * np.float32(255.0) if a.min(initial=0) >= 0 and a.max(initial=0) <= 1 else a,
                            0, 255)[..., None]
            elif mode in ("1", "L", "LA", "La"):
                a = np.asarray(im.convert("L"), dtype=np.float32)[..., None]
            else:  # RGB, RGBA, P, PA, CMYK, YCbCr, LAB, HSV, ...
                a = np.asarray(im.convert("RGB"), dtype=np.float32)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - UnidentifiedImageError, truncated files, ...
        msg = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"cannot read image {p}: {type(e).__name__}: {msg} "
                         "(expected a PNG or JPEG file)") from None
    if a.ndim != 3 or a.size == 0:
        raise InputError(f"cannot read image {p}: got an empty or malformed array {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _resize(a, h, w, resample):
    """Resize float32 (H,W,C) to (h,w,C) channel by channel with PIL's float ("F") mode.

    PIL samples on pixel centres (output pixel j covers input [j/s, (j+1)/s)) and widens the
    filter when shrinking (antialiasing).
    """
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    out = np.empty((h, w, a.shape[2]), dtype=np.float32)
    for c in range(a.shape[2]):  # at most 3 channels
        img = Image.fromarray(np.ascontiguousarray(a[..., c], dtype=np.float32))  # mode "F"
        out[..., c] = np.asarray(img.resize((w, h), resample=resample), dtype=np.float32)
    return out


def fit_to_model(img, input_shape, scale=255.0, resample="bilinear", resize=None):
    """Fit one image to a model's input: resize, convert channels, scale.

    Channel conversion: RGB -> gray by luminance ``Y = 0.299 R + 0.587 G + 0.114 B``; gray -> RGB by
    replicating the channel; an alpha channel (C=4) is dropped. Resizing (only when the size
    differs) is PIL's ``resample`` filter on float values, so intensities are not rounded.

    Args:
        img: (H,W), (H,W,C) or (1,H,W,C) array, C in {1,3,4}, e.g. from :func:`load_image`.
        input_shape: the model's input shape (H,W,C) (a leading batch entry is ignored), C in {1,3}.
        scale: the result is divided by this (255 gives 0..1 inputs; 1 keeps 0..255).
        resample: "bilinear" (default), "bicubic", "lanczos", "box" or "nearest"; used when
            ``resize`` is None.
        resize: a resize policy of :data:`RESIZE_POLICIES`, or None (``resample`` on floats):

            * ``"pil"``: study 1's script: the image as uint8 (rounded, clipped to 0..255),
              ``PIL.Image.resize((W, H))`` with Pillow's default filter, then the channels
              converted by Pillow (``convert("L")`` / ``convert("RGB")``, rounded to integers);
            * ``"bilinear"``, ``"bicubic"``, ``"nearest"``: that PIL filter on float values
              (channels converted first when going to gray, as with ``resample``);
            * ``"crop"``: the largest centred crop with the model's aspect ratio, then bilinear.

    Returns:
        float32 array (1,H,W,C).

    Raises:
        InputError: bad image shape or values, or a model input that is not (H,W,1) or (H,W,3).
    """
    a = np.asarray(img)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"expected a numeric image array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"expected an image shaped (H,W), (H,W,C) or (1,H,W,C) with C in 1, 3, 4; "
                         f"got {np.shape(img)}")
    if not np.all(np.isfinite(a)):
        raise InputError("image contains NaN or infinite values")
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or shape[2] not in (1, 3) or any(d is None or int(d) < 1 for d in shape[:2]):
        raise InputError(f"fit_to_model needs a model input (H,W,1) or (H,W,3), got {tuple(input_shape)}")
    h, w, c = (int(d) for d in shape)
    if resize is not None:
        resize = check_resize(resize)
        if resize == "pil":
            return (_pil_fit(a, h, w, c) / np.float32(_check_scale(scale))).astype(np.float32)[None]
        if resize == "crop":
            a = center_crop(a, h / w)
            resample = "bilinear"
        else:
            resample = resize
    if resample not in _RESAMPLE:
        raise InputError(f"unknown resample {resample!r}; valid: {', '.join(_RESAMPLE)}")
    _check_scale(scale)
    if a.shape[2] == 4:
        a = a[..., :3]
    if c == 1 and a.shape[2] == 3:  # convert before resizing: fewer channels to resize (both linear)
        a = (a @ LUMA)[..., None]
    a = _resize(a, h, w, _RESAMPLE[resample])
    if c == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return (a / np.float32(scale)).astype(np.float32)[None]


def check_resize(name):
    """A resize policy of :data:`RESIZE_POLICIES` (lower case), or InputError listing them."""
    key = str(name).strip().lower()
    if key not in RESIZE_POLICIES:
        raise InputError(f"unknown resize policy {name!r}; valid: {', '.join(RESIZE_POLICIES)}")
    return key


def _check_scale(scale):
    if not scale or not np.isfinite(scale):
        raise InputError(f"scale must be a non-zero finite number, got {scale!r}")
    return scale


def _pil_fit(a, h, w, c):
    """Study 1's resize: uint8 image, Pillow's default ``resize`` filter, then Pillow's channel
    conversion. ``a`` is float32 (H,W,1|3) in 0..255; returns float32 (h,w,c) with integer values."""
    from PIL import Image

    u8 = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    im = Image.fromarray(u8[..., 0] if u8.shape[2] == 1 else u8)
    if im.size != (w, h):
        im = im.resize((w, h))                      # Pillow's default filter, as study 1's script
    im = im.convert("L" if c == 1 else "RGB")
    out = np.asarray(im, dtype=np.float32)
    return out[..., None] if out.ndim == 2 else out


def center_crop(a, aspect):
    """The largest centred crop of (H,W,C) ``a`` whose height/width is ``aspect`` (>= 1 pixel a side)."""
    hh, ww = a.shape[:2]
    if hh / ww > aspect:                 # too tall: crop rows
        ch, cw = max(1, int(round(ww * aspect))), ww
    else:                                # too wide: crop columns
        ch, cw = hh, max(1, int(round(hh / aspect)))
    top, left = (hh - ch) // 2, (ww - cw) // 2
    return a[top:top + ch, left:left + cw]


def random_image(size=227, seed=0):
    """Study 1's default input: ``np.random.RandomState(seed).randint(256, (size, size))`` as float32.

    Returns an (size,size) array of integers 0..255 (one gray channel, not yet scaled).
    """
    return np.random.RandomState(seed).randint(256, size=(size, size)).astype(np.float32)
