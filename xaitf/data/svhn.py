"""SVHN (Street View House Numbers), study 5: format 1 (full images + digit boxes) and format 2 (32x32).

Y. Netzer, T. Wang, A. Coates, A. Bissacco, B. Wu, A. Y. Ng, Reading Digits in Natural Images with
Unsupervised Feature Learning, NIPS Workshop 2011. http://ufldl.stanford.edu/housenumbers/ ;
for non-commercial use only. xaitf never downloads SVHN: fetch ``train.tar.gz`` / ``test.tar.gz``
(format 1) or ``train_32x32.mat`` / ``test_32x32.mat`` (format 2) yourself and point the loaders at them.

Format 1: a folder of PNGs ``1.png, 2.png, ...`` and ``digitStruct.mat`` (MATLAB v7.3 = HDF5), a
1xN struct array with fields ``name`` (the file name) and ``bbox`` (a struct with ``label``,
``left``, ``top``, ``width``, ``height`` per digit, in pixels of the full image). SVHN stores the
digit 0 as label 10; every loader here maps it to 0.

Box convention: ``(label, left, top, width, height)`` with pixel edges as coordinates, so a box
covers ``[left, left + width) x [top, top + height)`` and pixel (row r, column c) is the square
``[c, c+1) x [r, r+1)``.
"""
import collections
from pathlib import Path

import numpy as np

from ..errors import DataError, InputError

HOME = "http://ufldl.stanford.edu/housenumbers/"
_WHERE = (f"SVHN is not downloaded automatically: get it from {HOME} "
          "(non-commercial use only) and pass its folder/file")
FIELDS = ("label", "left", "top", "width", "height")
MODES = ("target", "one_vs_two")


def _missing(path, what):
    return DataError(f"SVHN {what} not found: {path}. {_WHERE}")


def _digit(label):
    """SVHN's label 10 means the digit 0."""
    label = int(round(float(label)))
    return 0 if label == 10 else label


def load_digit_struct(mat_path, limit=None):
    """Read format 1's ``digitStruct.mat`` (MATLAB v7.3, read with h5py).

    The file holds ``/digitStruct/name`` and ``/digitStruct/bbox``, each an (N,1) array of object
    references. A name reference points to a uint16 character array; a bbox reference to a group
    with the datasets ``label, left, top, width, height``. Each such dataset is (k,1) for k digits:
    with one digit it holds the number itself, with several it holds references to (1,1) numbers.

    Args:
        mat_path: path of ``digitStruct.mat``.
        limit: read only the first ``limit`` images (the full train file has 33,402 and takes
            tens of seconds: HDF5 opens one small dataset per field and digit).

    Returns:
        list of ``{"name": "1.png", "boxes": [(label, left, top, width, height), ...]}``, labels
        0..9 (10 mapped to 0) as int, coordinates as float.
    """
    import h5py

    p = Path(mat_path)
    if not p.is_file():
        raise _missing(p, "digitStruct.mat")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"cannot read {p} as MATLAB v7.3 (HDF5): {str(e).splitlines()[0]}; expected "
                        "format 1's digitStruct.mat from train.tar.gz/test.tar.gz") from None
    with f:
        if "digitStruct" not in f or not {"name", "bbox"} <= set(f["digitStruct"].keys()):
            raise DataError(f"{p} has no /digitStruct/name and /digitStruct/bbox: not SVHN's digitStruct.mat")
        names = f["digitStruct/name"][()].ravel()
        bboxes = f["digitStruct/bbox"][()].ravel()
        if len(names) != len(bboxes):
            raise DataError(f"{p}: {len(names)} names but {len(bboxes)} bboxes")
        n = len(names) if limit is None else min(int(limit), len(names))

        fid = f.id

        def read(dsid):  # low-level read: about 10x faster than h5py's high-level objects here
            arr = np.empty(dsid.shape, dtype=dsid.dtype if dsid.dtype != object else h5py.ref_dtype)
            if arr.size:
                dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
            return arr.ravel()

        def values(group_id, field):
            dsid = h5py.h5d.open(group_id, field.encode())
            raw = read(dsid)
            if h5py.check_dtype(ref=dsid.dtype) is not None:  # several digits: references
                return [float(read(h5py.h5r.dereference(r, fid))[0]) for r in raw]
            return [float(v) for v in raw]  # one digit: the number itself

        records = []
        for i in range(n):
            chars = read(h5py.h5r.dereference(names[i], fid))
            name = chars.tobytes().decode() if chars.dtype.kind == "S" else "".join(map(chr, chars))
            group_id = h5py.h5r.dereference(bboxes[i], fid)
            try:
                cols = {k: values(group_id, k) for k in FIELDS}
            except KeyError as e:
                raise DataError(f"{p}: the bbox of image {name} lacks a field ({e}); "
                                f"expected {', '.join(FIELDS)}") from None
            k = len(cols["label"])
            if any(len(c) != k for c in cols.values()):
                raise DataError(f"{p}: image {name} has fields of different lengths "
                                f"({', '.join(f'{key} {len(c)}' for key, c in cols.items())})")
            boxes = [(_digit(cols["label"][j]), cols["left"][j], cols["top"][j],
                      cols["width"][j], cols["height"][j]) for j in range(k)]
            records.append({"name": name, "boxes": boxes})
    return records


def union_box(boxes, margin=10):
    """The crop window ``(x0, y0, x1, y1)`` in whole pixels: the union of ``boxes`` grown by ``margin``.

    ``x0 = floor(min(left) - margin)``, ``y0 = floor(min(top) - margin)``,
    ``x1 = ceil(max(left + width) + margin)``, ``y1 = ceil(max(top + height) + margin)``
    (exact for SVHN's integer boxes). The window may reach outside the image.
    """
    if len(boxes) == 0:
        raise InputError("crop_to_digits needs at least one digit box")
    b = np.asarray([bx[1:5] for bx in boxes], dtype=np.float64)
    x0 = int(np.floor(b[:, 0].min() - margin))
    y0 = int(np.floor(b[:, 1].min() - margin))
    x1 = int(np.ceil((b[:, 0] + b[:, 2]).max() + margin))
    y1 = int(np.ceil((b[:, 1] + b[:, 3]).max() + margin))
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"empty crop window {(x0, y0, x1, y1)} from boxes {list(boxes)} and margin {margin}")
    return x0, y0, x1, y1


def crop_to_digits(image, boxes, size, margin=10):
    """Crop an SVHN image to its digits and resize it to (size, size).

    1. Window = :func:`union_box` (union of all boxes, ``margin`` px more on every side).
    2. Cut the window out; where it leaves the image, pad with black (0).
    3. Resize the (y1-y0, x1-x0) window to (size, size) with PIL's bilinear filter (no aspect
       ratio kept, as in study 5), with scales ``sx = size / (x1 - x0)``, ``sy = size / (y1 - y0)``.
    4. Map every box into the result (pixel-edge coordinates, exact):
       ``left' = (left - x0) * sx``, ``top' = (top - y0) * sy``, ``width' = width * sx``,
       ``height' = height * sy``.

    Example: boxes (4,3,5,9) and (11,5,6,11) (left, top, width, height), margin 10 -> window
    x -6..27, y -7..26 (33 x 33, padded 6 columns left and 7 rows on top); size 66 -> scale 2, so
    the boxes become (20,20,10,18) and (34,24,12,22).

    Args:
        image: (H,W) or (H,W,C) array (uint8 for SVHN's PNGs).
        boxes: ``[(label, left, top, width, height), ...]`` in pixels of ``image``.
        size: side of the output in pixels.
        margin: pixels added around the union box on each side.

    Returns:
        ``(crop, new_boxes)``: crop (size,size[,C]) with the image's dtype, new_boxes the boxes
        as ``(label, left, top, width, height)`` floats in crop pixels.
    """
    from PIL import Image

    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"expected an image (H,W) or (H,W,C), got {img.shape}")
    size = int(size)
    if size < 1:
        raise InputError(f"size must be a positive number of pixels, got {size}")
    h, w = img.shape[:2]
    x0, y0, x1, y1 = union_box(boxes, margin)
    canvas = np.zeros((y1 - y0, x1 - x0) + img.shape[2:], dtype=img.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    if canvas.shape[:2] == (size, size):
        out = canvas
    elif img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
        flat = canvas[..., 0] if img.ndim == 3 and img.shape[2] == 1 else canvas
        out = np.asarray(Image.fromarray(flat).resize((size, size), resample=Image.BILINEAR))
        out = out.reshape((size, size) + img.shape[2:])
    else:
        from .images import _resize

        a = canvas.astype(np.float32).reshape(canvas.shape[:2] + (-1,))
        out = _resize(a, size, size, Image.BILINEAR).reshape((size, size) + img.shape[2:])
        out = out.astype(img.dtype) if np.issubdtype(img.dtype, np.floating) else out
    new = [(int(b[0]), (b[1] - x0) * sx, (b[2] - y0) * sy, b[3] * sx, b[4] * sy) for b in boxes]
    return out, new


def boxes_mask(boxes, shape):
    """Boolean (H,W) mask of the union of boxes: pixel (r,c) is inside when its centre
    (c + 0.5, r + 0.5) lies in ``[left, left + width) x [top, top + height)`` of some box."""
    h, w = int(shape[0]), int(shape[1])
    cy = np.arange(h)[:, None] + 0.5
    cx = np.arange(w)[None, :] + 0.5
    mask = np.zeros((h, w), dtype=bool)
    for _, left, top, width, height in boxes:
        mask |= (cx >= left) & (cx < left + width) & (cy >= top) & (cy < top + height)
    return mask


class SvhnFormat1(collections.namedtuple("SvhnFormat1", "images labels boxes")):
    """``(images, labels, boxes)`` of :func:`load_svhn_format1`, plus ``names`` (the PNG of each
    image) and ``source`` (which files were read and how they were filtered)."""


def _read_png(path):
    from PIL import Image

    if not path.is_file():
        raise _missing(path, "image")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read SVHN image {path}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def load_svhn_format1(folder, size=64, target_digit=1, balance=True, seed=0, limit=None,
                      mode="target", margin=10):
    """Study 5's binary task on SVHN format 1: is the target digit in the house number?

    Args:
        folder: folder with ``digitStruct.mat`` and the PNGs (an extracted ``train.tar.gz``).
        size: side of the crops (64 for training, 128 or 224 for explanations).
        target_digit: digit 0..9 whose presence gives label 1 (mode "target").
        balance: undersample the majority class to the minority's count, picking the kept images
            with ``np.random.RandomState(seed)`` (without replacement); file order is kept.
        seed: seed of the balancing draw.
        limit: read only the first ``limit`` entries of digitStruct.mat (before filtering).
        mode: "target" (label = target digit present) or "one_vs_two" (keep images holding a 1 or
            a 2 but not both; label 1 for a 1, 0 for a 2; ``target_digit`` is ignored).
        margin: pixels around the union of the digit boxes (see :func:`crop_to_digits`).

    Returns:
        :class:`SvhnFormat1` ``(images, labels, boxes)``: uint8 (N,size,size,3), int64 (N,) in
        {0,1}, and per image its boxes mapped into the crop; also ``.names`` and ``.source``.
    """
    folder = Path(folder)
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "target" and int(target_digit) not in range(10):
        raise InputError(f"target_digit must be a digit 0..9, got {target_digit!r}")
    if not folder.is_dir():
        raise _missing(folder, "format 1 folder")
    records = load_digit_struct(folder / "digitStruct.mat", limit=limit)
    if mode == "target":
        keep = list(range(len(records)))
        labels = [int(any(b[0] == int(target_digit) for b in r["boxes"])) for r in records]
        task = f"label 1 = digit {int(target_digit)} present"
    else:
        keep, labels = [], []
        for i, r in enumerate(records):
            digits = {b[0] for b in r["boxes"]}
            if (1 in digits) != (2 in digits):
                keep.append(i)
                labels.append(int(1 in digits))
        task = "one-vs-two: images with a 1 or a 2 but not both, label 1 = has a 1"
    keep, labels = np.asarray(keep, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if balance:
        if counts.min() == 0:
            raise DataError(f"cannot balance SVHN in {folder}: class counts {counts[0]} (label 0) / "
                            f"{counts[1]} (label 1) among {len(records)} images ({task}); "
                            "pass balance=False or more images")
        minority = int(np.argmin(counts))
        rs = np.random.RandomState(seed)
        major = np.flatnonzero(labels != minority)
        picked = rs.choice(major, size=int(counts[minority]), replace=False)
        sel = np.sort(np.concatenate([np.flatnonzero(labels == minority), picked]))
        keep, labels = keep[sel], labels[sel]
    images = np.zeros((len(keep), size, size, 3), dtype=np.uint8)
    boxes, names = [], []
    for j, i in enumerate(keep):
        r = records[i]
        img = _read_png(folder / r["name"])
        images[j], new = crop_to_digits(img, r["boxes"], size, margin)
        boxes.append(new)
        names.append(r["name"])
    out = SvhnFormat1(images, labels, boxes)
    out.names = names
    bal = (f"balanced by undersampling (seed {seed}) from {counts[0]} / {counts[1]}"
           if balance else f"unbalanced {counts[0]} / {counts[1]}")
    out.source = (f"{folder / 'digitStruct.mat'} + PNGs (SVHN format 1, {len(records)} images read"
                  f"{'' if limit is None else f' (limit {limit})'}; {task}; {bal}; "
                  f"{len(labels)} kept: {int((labels == 0).sum())} label 0 / {int(labels.sum())} label 1; "
                  f"crops {size}x{size}, margin {margin})")
    return out


def load_svhn_format2(mat_path):
    """SVHN format 2: the 32x32 cropped digits (``train_32x32.mat``, ``test_32x32.mat``).

    The files are MATLAB v5 (scipy.io.loadmat) with ``X`` (32,32,3,N) uint8 and ``y`` (N,1) in
    1..10, where 10 is the digit 0.

    Returns:
        ``(x, y)``: uint8 (N,32,32,3) and int64 (N,) labels 0..9.
    """
    import scipy.io

    p = Path(mat_path)
    if not p.is_file():
        raise _missing(p, "format 2 file")
    try:
        m = scipy.io.loadmat(p, variable_names=["X", "y"])
    except Exception as e:  # noqa: BLE001 - v7.3 files, truncation, not a .mat
        raise DataError(f"cannot read {p} as a MATLAB v5 .mat: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}; expected SVHN's *_32x32.mat") from None
    if "X" not in m or "y" not in m:
        raise DataError(f"{p} lacks X and/or y: not an SVHN format 2 file")
    x, y = np.asarray(m["X"]), np.asarray(m["y"]).ravel()
    if x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"{p}: expected X shaped (32,32,3,N), got {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f"{p}: {x.shape[3]} images but {len(y)} labels")
    if y.size and (y.min() < 0 or y.max() > 10 or np.any(y != np.round(y))):
        raise DataError(f"{p}: labels must be integers 1..10 (10 = digit 0), got {y.min()}..{y.max()}")
    x = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))).astype(np.uint8, copy=False)
    y = y.astype(np.int64)
    y[y == 10] = 0
    return x, y
