"""Data sources of ``python -m xaitf run --data``, and fitting their images to a model's input.

``--data`` takes:

==========================  ==========================================================================
``mnist`` / ``cifar10``     :func:`xaitf.data.load_dataset` (``--data-dir`` / ``$XAITF_DATA_DIR``),
                            ``--split test|train``
a folder of class folders   ``root/<class>/**/*.png|jpg|jpeg|bmp|gif``: labels from the folder names
                            in sorted order, files sorted by path (as
                            ``keras.utils.image_dataset_from_directory``); images at the top level
                            are then ignored (said in the report)
a flat folder               ``root/*.png|...``: no labels (the explained class is the prediction)
``file.npz``                arrays ``x`` or ``images`` (+ optional ``y`` / ``labels``), or
                            ``x_test``/``y_test`` (``x_train``/``y_train`` with ``--split train``)
``file.npy``                one image array, no labels
``file.h5:/group/dataset``  an HDF5 dataset of images; a sibling dataset ``y`` or ``labels`` with one
                            integer per image gives labels
==========================  ==========================================================================

Arrays are (N,H,W) or (N,H,W,C) with C 1, 3 or 4 (alpha dropped), numeric and finite; labels
integers >= 0. Everything is read without pickles (``np.load(..., allow_pickle=False)``, h5py).
Each :class:`Source` carries ``content_sha256``, a hash of what it was read from (a folder: every
image file's relative path, class and bytes; a .npz/.npy file: its bytes; an HDF5 dataset: its path
and the rows read), which the run store keeps in its identity: a changed source is refused on resume.

:func:`adapt` fits the images to the model's input (H,W,C) and says how in a policy dict (kept in
``run.json`` and the run's report):

* channels: gray -> RGB by repeating the channel; RGB -> gray by luminance
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (:data:`xaitf.data.images.LUMA`); alpha dropped;
* size (``--resize``): ``auto`` (default) keeps images of the model's size, applies the zoo's own
  rule for a zoo model file that has one (LeNet: 28x28 -> 32x32 bilinear, exactly as study 2 feeds it,
  :func:`xaitf.zoo.registry.prepare_inputs`), and refuses anything else in one line; ``none`` never
  resizes; ``pad`` zero-pads (or crops) centred, e.g. 2 pixels each side for 28 -> 32; a PIL filter
  name (``bilinear``, ``bicubic``, ``nearest``, ``lanczos``, ``box``) resizes each image with
  :func:`xaitf.data.images.fit_to_model` (aspect ratio not kept);
* scale: pixel values are divided by ``scale``.
"""
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import check_labels
from .images import LUMA

#: file types read from folders (those of ``keras.utils.image_dataset_from_directory``)
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
FILTERS = ("bilinear", "bicubic", "nearest", "lanczos", "box")
RESIZE_CHOICES = ("auto", "none", "pad") + FILTERS
BUILTIN = {"mnist": "mnist", "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10"}
_HDF5 = re.compile(r"^(.+\.(?:h5|hdf5|he5|hdf))(?::(.*))?$", re.IGNORECASE)


@dataclass(repr=False)
class Source:
    """Images read from one ``--data`` source.

    Attributes:
        kind: ``"builtin"``, ``"folder"``, ``"npz"``, ``"npy"`` or ``"hdf5"``.
        name: short name (``mnist``, the folder's or file's stem) for titles and default folders.
        images: uint8/float array (N,H,W,C), or a list of float32 (H,W,C) in 0..255 (folders).
        labels: int64 (N,) or None (no labels).
        description: where the images came from, in words.
        content_sha256: hash of the source's content (see the module docstring).
        default_scale: 255 for integer pixels and image files, 1 for float arrays.
        classes: class names (folders with class folders; None otherwise).
        files: image files, relative to ``root`` (folders; None otherwise).
        root: the folder or file read.
        split: the split used (``test``/``train``) or None.
        notes: remarks for the report (ignored files, ...).
    """

    kind: str
    name: str
    images: object
    labels: object
    description: str
    content_sha256: str
    default_scale: float = 255.0
    classes: list = None
    files: list = None
    root: Path = None
    split: str = None
    notes: list = field(default_factory=list)

    def __len__(self):
        return len(self.images)

    def take(self, n):
        """The first ``n`` images (and labels, files)."""
        self.images = self.images[:n]
        if self.labels is not None:
            self.labels = self.labels[:n]
        if self.files is not None:
            self.files = self.files[:n]
        return self


def is_builtin(spec):
    return str(spec).lower() in BUILTIN and not Path(str(spec)).exists()


# -- checks -------------------------------------------------------------------------------------
def check_images(x, where):
    """Images (N,H,W) or (N,H,W,C), C in 1/3/4 -> (N,H,W,C) with C 1 or 3; DataError otherwise."""
    x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: expected numeric images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or 0 in x.shape:
        raise DataError(f"{where}: expected images shaped (N,H,W) or (N,H,W,C) with C 1, 3 or 4, "
                        f"got shape {tuple(np.shape(x))}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where}: images contain NaN or infinite values")
    return np.ascontiguousarray(x)


def _default_scale(x):
    return 255.0 if np.issubdtype(np.asarray(x).dtype, np.integer) else 1.0


def file_sha256(path, block=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(block), b""):
            h.update(piece)
    return h.hexdigest()


def array_sha256(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- loaders ------------------------------------------------------------------------------------
def load_source(spec, data_dir=None, split=None, limit=None):
    """Read ``--data spec`` (see the module docstring) as a :class:`Source` of at most ``limit``
    images. ``split``: ``test``/``train`` for MNIST/CIFAR-10 and split .npz files (default test);
    refused for sources without splits. DataError (one line) for anything unreadable."""
    spec = str(spec)
    if is_builtin(spec):
        return _builtin(BUILTIN[spec.lower()], data_dir, split or "test", limit)
    m = _HDF5.match(spec)
    path = Path(m.group(1) if m else spec)
    if not path.exists():
        raise DataError(f"--data {spec}: not mnist or cifar10, and no such folder or file (expected "
                        "a folder of images, a .npz/.npy file or file.h5:/group/dataset)")
    if path.is_dir():
        src = _folder(path, limit)
    elif m:
        src = _hdf5(path, m.group(2), limit)
    elif path.suffix.lower() == ".npz":
        src = _npz(path, split, limit)
    elif path.suffix.lower() == ".npy":
        src = _npy(path, limit)
    else:
        raise DataError(f"--data {spec}: unknown file type {path.suffix or '(none)'} (expected a folder "
                        "of images, a .npz/.npy file or file.h5:/group/dataset)")
    if split is not None and src.split is None:
        raise DataError(f"--split {split}: {spec} has no train/test split (only mnist, cifar10 and "
                        ".npz files with x_train/x_test have one)")
    return src


def _builtin(name, data_dir, split, limit):
    from .datasets import load_dataset

    ds = load_dataset(name, data_dir=data_dir)
    x = ds.x_test if split == "test" else ds.x_train
    y = ds.y_test if split == "test" else ds.y_train
    n = len(x) if limit is None else min(limit, len(x))
    x, y = x[:n], y[:n]
    return Source("builtin", ds.name, x, y, ds.source, array_sha256(x, y), split=split,
                  notes=[f"split: {ds.split}"])


def list_folder(root):
    """``(files, labels, classes, ignored)`` of an image folder (sorted as Keras does); files are
    Paths. Class folders win over top-level images (which are then ``ignored``)."""
    def is_image(p):
        return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")

    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot read folder {root}: {e.strerror}") from None
    top = [p for p in entries if is_image(p)]
    classes = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted((p for p in (root / c).rglob("*") if is_image(p)
                        and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                       key=lambda p: p.relative_to(root).as_posix())
        files += found
        labels += [k] * len(found)
    if files:
        return files, labels, classes, top
    return top, None, None, []


def _folder(root, limit):
    from .images import load_image

    files, labels, classes, ignored = list_folder(root)
    if not files:
        raise DataError(f"no images in folder {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
                        "at the top level or in class sub-folders)")
    h = hashlib.sha256()
    h.update(("\0".join(classes or [])).encode() + b"\1")
    for i, p in enumerate(files):
        h.update(f"{p.relative_to(root).as_posix()}\0{labels[i] if labels else -1}\0".encode())
        h.update(bytes.fromhex(file_sha256(p)))
    n = len(files) if limit is None else min(limit, len(files))
    images = [load_image(p) for p in files[:n]]
    notes = []
    if ignored:
        notes.append(f"{len(ignored)} image(s) at the top level of {root} ignored (class folders "
                     f"are used), e.g. {ignored[0].name}")
    if classes:
        empty = [c for k, c in enumerate(classes) if k not in set(labels)]
        if empty:
            notes.append(f"class folder(s) without images: {', '.join(empty)}")
    desc = (f"folder {root}: {len(files)} images" + (f" in {len(classes)} class folders "
            f"({', '.join(classes)})" if classes else " (flat, no labels)"))
    src = Source("folder", root.resolve().name, images,
                 np.asarray(labels[:n], np.int64) if labels else None, desc, h.hexdigest(),
                 classes=classes, files=[p.relative_to(root).as_posix() for p in files[:n]],
                 root=root.resolve(), notes=notes)
    return src


def _npz(path, split, limit):
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.files)
            if "x_test" in keys or "x_train" in keys:
                which = split or "test"
                xk, yk = f"x_{which}", f"y_{which}"
                if xk not in keys:
                    raise DataError(f"{path}: no {xk} array (has: {', '.join(keys)})")
                x = f[xk]
                y = f[yk] if yk in keys else None
                got_split = which
            else:
                xk = next((k for k in ("x", "images") if k in keys), None)
                if xk is None:
                    raise DataError(f"{path}: no image array x, images or x_test (has: "
                                    f"{', '.join(keys) or 'nothing'})")
                yk = next((k for k in ("y", "labels") if k in keys), None)
                x, y = f[xk], (f[yk] if yk else None)
                got_split = None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip errors, pickled object arrays, truncation
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot read {path}: {type(e).__name__}: {first} (expected an .npz of plain "
                        "numeric arrays)") from None
    x = check_images(x, f"{path} [{xk}]")
    labels = check_labels(y, len(x), f"{path} [{yk}]") if y is not None else None
    n = len(x) if limit is None else min(limit, len(x))
    desc = f"{path} (arrays {xk}" + (f", {yk}" if y is not None else ", no labels") + f"; {len(x)} images)"
    return Source("npz", path.stem, x[:n], None if labels is None else labels[:n], desc,
                  file_sha256(path), default_scale=_default_scale(x), root=path.resolve(),
                  split=got_split)


def _npy(path, limit):
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot read {path}: {type(e).__name__}: {first} (expected a .npy array of "
                        "images)") from None
    n = len(x) if limit is None or x.ndim == 0 else min(limit, len(x))
    x = check_images(np.array(x[:n]) if x.ndim else x, str(path))
    return Source("npy", path.stem, x, None, f"{path} ({x.shape[0]} images, no labels)",
                  file_sha256(path), default_scale=_default_scale(x), root=path.resolve())


def _hdf5(path, dataset, limit):
    import h5py

    if not dataset:
        try:
            with h5py.File(path, "r") as f:
                names = []
                f.visititems(lambda k, v: names.append("/" + k) if isinstance(v, h5py.Dataset) else None)
        except OSError as e:
            raise DataError(f"cannot read {path} as HDF5: {e}") from None
        raise DataError(f"--data {path}: name the dataset as {path}:/group/dataset (datasets there: "
                        f"{', '.join(names[:10]) or 'none'})")
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise DataError(f"{path}: no dataset {dataset}")
            d = f[dataset]
            if d.ndim == 0:
                raise DataError(f"{path}:{dataset}: expected images shaped (N,H,W) or (N,H,W,C), got "
                                "a scalar")
            total = d.shape[0]
            n = total if limit is None else min(limit, total)
            x = d[:n]
            y, yname = None, None
            parent = d.parent
            for k in ("y", "labels"):
                if k in parent and isinstance(parent[k], h5py.Dataset) and parent[k].shape[:1] == (total,):
                    y, yname = parent[k][:n], parent[k].name
                    break
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - not HDF5, truncated, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot read {path}:{dataset}: {type(e).__name__}: {first}") from None
    x = check_images(x, f"{path}:{dataset}")
    labels = check_labels(y, len(x), f"{path}:{yname}") if y is not None else None
    h = hashlib.sha256(f"{dataset}\0{yname}\0{total}".encode())
    h.update(array_sha256(x, *([] if labels is None else [labels])).encode())
    desc = f"{path}:{dataset} ({total} images" + (f", labels {yname})" if yname else ", no labels)")
    return Source("hdf5", f"{path.stem}{dataset.replace('/', '_')}", x, labels, desc, h.hexdigest(),
                  default_scale=_default_scale(x), root=path.resolve())


# -- fitting to the model -----------------------------------------------------------------------
def zoo_name(model_path):
    """The zoo name stored in a zoo model file (``create_model.py``, :func:`xaitf.zoo.registry.save`),
    or None."""
    p = Path(model_path)
    if not p.is_file() or p.suffix.lower() not in (".h5", ".hdf5"):
        return None
    try:
        import h5py

        with h5py.File(p, "r") as f:
            for key in ("xaitf_zoo_name", "xaitf_zoo_builder"):
                v = f.attrs.get(key)
                if v is not None:
                    return v.decode() if isinstance(v, bytes) else str(v)
    except OSError:
        return None
    return None


def _convert_channels(a, c):
    if a.shape[-1] == c:
        return a.astype(np.float32, copy=False)
    if c == 1:
        return (a.astype(np.float32) @ LUMA)[..., None]
    return np.repeat(a.astype(np.float32), 3, axis=-1)


def _pad_or_crop(a, h, w):
    """Centre ``a`` (H,W,C) on an (h,w) zero canvas (cropping the excess centred)."""
    H, W = a.shape[:2]
    out = np.zeros((h, w, a.shape[2]), np.float32)
    sy, sx = max(0, (H - h) // 2), max(0, (W - w) // 2)
    dy, dx = max(0, (h - H) // 2), max(0, (w - W) // 2)
    ch, cw = min(h, H), min(w, W)
    out[dy:dy + ch, dx:dx + cw] = a[sy:sy + ch, sx:sx + cw]
    return out


def _size(hw):
    return f"{hw[0]}x{hw[1]}"


def adapt(images, input_shape, scale, resize="auto", zoo=None):
    """Fit ``images`` (array (N,H,W,C) or list of (H,W,C)) to a model input ``(H,W,C)``.

    Returns ``(x, policy)``: float32 (N,H,W,C) divided by ``scale``, and a dict saying what was done
    (``rule``, ``resize``, ``channels``, ``scale``, ``source_sizes``, ``input_shape``). DataError
    (one line) for sizes that do not fit under the chosen ``resize`` policy.
    """
    h, w, c = (int(d) for d in tuple(input_shape)[-3:])
    if c not in (1, 3):
        raise DataError(f"the model's input has {c} channels; run --data needs models that take 1 "
                        "(gray) or 3 (RGB) channels")
    if resize not in RESIZE_CHOICES:
        raise DataError(f"unknown --resize {resize!r}; valid: {', '.join(RESIZE_CHOICES)}")
    sizes = Counter(tuple(int(s) for s in np.shape(img)[:2]) for img in images)
    chans = Counter(int(np.shape(img)[-1]) for img in images)
    n = sum(sizes.values())
    sizes_text = ", ".join(f"{_size(s)}: {k}" for s, k in sorted(sizes.items()))
    if chans.get(c, 0) == n:
        channels = f"none (images have the model's {c} channel{'s' if c > 1 else ''})"
    elif c == 3:
        channels = f"gray -> RGB by repeating the channel ({chans.get(1, 0)} of {n} images)"
    else:
        channels = (f"RGB -> gray by luminance Y = 0.299 R + 0.587 G + 0.114 B ({chans.get(3, 0)} of "
                    f"{n} images)")
    entry = None
    if zoo:
        try:
            from ..zoo import registry

            entry = registry.get(zoo)
        except Exception:  # noqa: BLE001 - an unknown name: no zoo rule
            entry = None
    rule = resize
    if resize in ("auto", "none"):
        if set(sizes) == {(h, w)}:
            rule = "none"
        elif resize == "auto" and entry is not None and entry.preprocess == "resize32" and len(sizes) == 1:
            rule = f"zoo:{zoo}"
        elif len(sizes) > 1:
            raise DataError(f"the model expects images shaped {(h, w, c)}; these are of mixed sizes "
                            f"({sizes_text}) and --resize is {resize}: pass --resize pad or a filter "
                            f"({', '.join(FILTERS)})")
        else:
            raise DataError(f"the model expects images shaped {(h, w, c)}, the images are "
                            f"{_size(next(iter(sizes)))} (--resize {resize}): pass --resize pad or a "
                            f"filter ({', '.join(FILTERS)})")
    scale = float(scale)
    if rule == "none":
        x = np.stack([_convert_channels(np.asarray(img), c) for img in images]) if isinstance(images, list) \
            else _convert_channels(np.asarray(images), c)
        x = (x / np.float32(scale)).astype(np.float32)
        how = f"none (images are {_size((h, w))}, the model's size)"
    elif rule.startswith("zoo:"):
        from ..zoo import registry

        x = np.stack([_convert_channels(np.asarray(img), c) for img in images])
        x = registry.prepare_inputs(zoo, (x / np.float32(scale)).astype(np.float32))
        how = (f"zoo model {zoo}: {sizes_text.split(':')[0]} -> {_size((h, w))} bilinear "
               "(tf.image.resize, clipped to [0, 1]) after scaling, as its study feeds it "
               "(xaitf.zoo.registry.prepare_inputs); --resize pad zero-pads instead")
    elif rule == "pad":
        x = np.stack([_pad_or_crop(_convert_channels(np.asarray(img), c), h, w) for img in images])
        x = (x / np.float32(scale)).astype(np.float32)
        how = (f"zero-padded / cropped centred to {_size((h, w))}"
               + "".join(f"; {_size(s)}: {(h - s[0]) / 2:g} px each side vertically, "
                         f"{(w - s[1]) / 2:g} horizontally" for s in sorted(sizes)[:3]))
    else:
        from .images import fit_to_model

        x = np.concatenate([fit_to_model(np.asarray(img, np.float32), (h, w, c), scale=scale,
                                         resample=rule) for img in images])
        how = (f"each image resized to {_size((h, w))} with PIL {rule} "
               "(xaitf.data.images.fit_to_model; aspect ratio not kept)")
    policy = {"rule": rule, "resize": how, "channels": channels, "scale": scale,
              "source_sizes": {_size(s): k for s, k in sorted(sizes.items())},
              "input_shape": [h, w, c]}
    return np.ascontiguousarray(x, np.float32), policy


def source_info(src):
    """What run.json and the report record of a source (no arrays)."""
    out = {"kind": src.kind, "name": src.name, "description": src.description,
           "content_sha256": src.content_sha256, "labels": src.labels is not None,
           "notes": list(src.notes)}
    if src.split:
        out["split"] = src.split
    if src.classes is not None:
        out["classes"] = list(src.classes)
    if src.root is not None:
        out["root"] = str(src.root)
    return out


__all__ = ["Source", "load_source", "adapt", "list_folder", "zoo_name", "source_info", "check_images",
           "check_labels", "file_sha256", "array_sha256", "IMAGE_EXTENSIONS", "RESIZE_CHOICES", "FILTERS", "is_builtin"]
