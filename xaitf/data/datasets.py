"""MNIST and CIFAR-10: from ``.npz`` files in a data directory, or the real ``keras.datasets`` download.

Where the data comes from, in order:

1. ``download=True``: the ``keras.datasets`` download only (tf-keras, else Keras 3).
2. A data directory: the ``data_dir`` argument (the CLIs' ``--data-dir``), else the environment
   variable ``XAITF_DATA_DIR``. Files read there (``np.load(path, allow_pickle=False)``), the first
   one found wins:

   ========  =====================================================  ==================================
   dataset   file(s)                                                split
   ========  =====================================================  ==================================
   mnist     ``mnist.npz`` (x_train, y_train, x_test, y_test)       the file's own train/test split
   mnist     ``mnist_test10k.npz`` (x, y): the 10k MNIST test set   rows 0-7999 train / 8000-9999 test
   cifar10   ``cifar10.npz`` (x_train, y_train, x_test, y_test)     the file's own train/test split
   cifar10   ``cifar10_train2000.npz`` + ``cifar10_test1000.npz``   2,000 train / 1,000 test
   ========  =====================================================  ==================================

3. No file found and ``download`` is not False: the ``keras.datasets`` download. It needs network
   access (or Keras' cache in ``~/.keras/datasets``); when it fails, :class:`DataError` says in one
   line every place that was looked at and how to fix it.

There is never a silent fallback to synthetic data. Every :class:`Dataset` says in ``source``
exactly which files or download it came from and in ``split`` how train and test were formed.
Images are uint8 (N,H,W,C) (MNIST always (N,28,28,1)), labels int64 (N,).

MNIST: Y. LeCun, C. Cortes, C. J. C. Burges (CC BY-SA 3.0). CIFAR-10: A. Krizhevsky, Learning
Multiple Layers of Features from Tiny Images, 2009.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

ENV_VAR = "XAITF_DATA_DIR"

#: name -> (image shape, number of classes)
SPECS = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}
_ALIASES = {"mnist": "mnist", "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10"}
_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
_FULL_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: The first rows of the MNIST test set used for training when only ``mnist_test10k.npz`` exists.
MNIST_SUBSET_TRAIN = 8000


@dataclass(repr=False)
class Dataset:
    """A train/test dataset: images uint8 (N,H,W,C), labels int64 (N,).

    Attributes:
        name: ``"mnist"`` or ``"cifar10"``.
        x_train, y_train, x_test, y_test: the arrays.
        source: which files or download were used, in words (put it in reports and model cards).
        split: how train and test were formed, e.g.
            ``"train 8000 / test 2000 (from the 10k MNIST test set)"``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    split: str

    @property
    def num_classes(self):
        if self.name in SPECS:
            return SPECS[self.name][1]
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        return (f"Dataset({self.name!r}, x_train {self.x_train.shape} {self.x_train.dtype}, "
                f"x_test {self.x_test.shape} {self.x_test.dtype}, split={self.split!r}, "
                f"source={self.source!r})")


def data_dir(explicit=None):
    """The data directory: ``explicit`` if given, else ``$XAITF_DATA_DIR`` if set, else None."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


_resolve_dir = data_dir  # load_dataset's argument shadows the name


def _canonical(name):
    key = str(name).lower().strip()
    if key not in _ALIASES:
        raise DataError(f"unknown dataset {name!r}; valid: mnist, cifar10 "
                        "(SVHN: xaitf.data.svhn; single images: xaitf.data.images)")
    return _ALIASES[key]


def _expected_files(name):
    if name == "mnist":
        return "mnist.npz (x_train, y_train, x_test, y_test) or mnist_test10k.npz (x, y)"
    return ("cifar10.npz (x_train, y_train, x_test, y_test) or "
            "cifar10_train2000.npz + cifar10_test1000.npz (x, y)")


def _read_npz(path, keys, optional=()):
    """The arrays ``keys`` (and those of ``optional`` present) of an .npz file, without pickles.

    DataError when the file is unreadable or lacks one of ``keys``.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path} lacks the arrays {', '.join(missing)} (has: "
                                f"{', '.join(f.files) or 'nothing'}); expected {', '.join(keys)}")
            return {k: f[k] for k in list(keys) + [k for k in optional if k in f.files]}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip errors, pickled object arrays, truncation
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot read {path}: {type(e).__name__}: {first} "
                        "(expected an .npz of plain numeric arrays)") from None


def _images(name, x, where):
    """Check and normalise images to uint8 (N,H,W,C) for ``name``."""
    shape, _ = SPECS[name]
    x = np.asarray(x)
    if name == "mnist" and x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise DataError(f"{where}: expected {name} images shaped (N,{','.join(map(str, shape))}), "
                        f"got {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{where}: expected uint8 images in 0..255, got {x.dtype}")
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)


def check_labels(y, n, where, classes=None):
    """Check and normalise labels to int64 (N,) (Keras' CIFAR-10 gives (N,1)): integers >= 0, one
    per image, below ``classes`` when given; DataError naming ``where`` otherwise."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: expected integer labels shaped (N,), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels")
    if y.size and classes is not None and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{where}: labels must lie in 0..{classes - 1}, got {y.min()}..{y.max()}")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def _labels(name, y, n, where):
    return check_labels(y, n, where, SPECS[name][1])


def _make(name, x_train, y_train, x_test, y_test, source, split, where):
    x_train = _images(name, x_train, where)
    x_test = _images(name, x_test, where)
    y_train = _labels(name, y_train, len(x_train), where)
    y_test = _labels(name, y_test, len(x_test), where)
    return Dataset(name, x_train, y_train, x_test, y_test, source, split)


def _index_range(idx):
    idx = np.asarray(idx).ravel()
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return f"[{idx[0]}:{idx[0] + idx.size}]"
    return f" ({idx.size} listed rows)"


def _from_dir(name, folder):
    """The dataset from ``folder``, or ``(None, what was missing)``."""
    full = folder / f"{name}.npz"
    if full.is_file():
        a = _read_npz(full, _FULL_KEYS)
        n, m = len(a["x_train"]), len(a["x_test"])
        return _make(name, a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                     f"{full} ({_TITLES[name]}, Keras-style full file)",
                     f"train {n} / test {m} (the file's own train/test split)", str(full)), None
    if name == "mnist":
        sub = folder / "mnist_test10k.npz"
        if not sub.is_file():
            return None, "no mnist.npz or mnist_test10k.npz there"
        a = _read_npz(sub, ("x", "y"))
        x, y = _images(name, a["x"], str(sub)), _labels(name, a["y"], len(a["x"]), str(sub))
        k = MNIST_SUBSET_TRAIN
        if len(x) <= k:
            raise DataError(f"{sub}: expected the 10,000-image MNIST test set, got {len(x)} images")
        return Dataset(name, x[:k], y[:k], x[k:], y[k:],
                       f"{sub} (the MNIST test set, t10k; train = rows 0-{k - 1}, "
                       f"test = rows {k}-{len(x) - 1})",
                       f"train {k} / test {len(x) - k} (from the 10k MNIST test set)"), None
    tr, te = folder / "cifar10_train2000.npz", folder / "cifar10_test1000.npz"
    if not (tr.is_file() and te.is_file()):
        found = [p.name for p in (tr, te) if p.is_file()]
        extra = f" (found only {found[0]})" if found else ""
        return None, f"no cifar10.npz or cifar10_train2000.npz + cifar10_test1000.npz there{extra}"
    a = _read_npz(tr, ("x", "y"), optional=("train_index",))
    b = _read_npz(te, ("x", "y"), optional=("test_index",))
    rows_tr = _index_range(a["train_index"]) if "train_index" in a else ""
    rows_te = _index_range(b["test_index"]) if "test_index" in b else ""
    n, m = len(a["x"]), len(b["x"])
    return _make(name, a["x"], a["y"], b["x"], b["y"],
                 f"{tr} (CIFAR-10 train{rows_tr}) + {te} (CIFAR-10 test{rows_te})",
                 f"train {n} / test {m} (subsets of the CIFAR-10 train and test sets)",
                 f"{tr} / {te}"), None


def _download(name):
    """``keras.datasets.<name>.load_data()``: tf-keras if it has it, else Keras 3.

    Returns ``((x_train, y_train), (x_test, y_test)), description``. Network errors propagate.
    """
    from ..keras_bridge import keras3, tfk

    try:
        module, which = getattr(tfk.datasets, name), "tf-keras"
    except (AttributeError, ImportError):  # pragma: no cover - tf-keras without datasets
        module, which = getattr(keras3().datasets, name), "Keras 3"
    return module.load_data(), (f"keras.datasets.{name}.load_data() ({which} download, "
                                "cached in ~/.keras/datasets)")


def load_dataset(name, data_dir=None, download=None):
    """Load MNIST or CIFAR-10 as a :class:`Dataset` (see the module docstring for the file names).

    Args:
        name: ``"mnist"`` or ``"cifar10"``.
        data_dir: folder holding the ``.npz`` files; default ``$XAITF_DATA_DIR``.
        download: None (default) = use the folder's files, else download; True = download only;
            False = never download (offline runs fail fast with the fix in the message).

    Returns:
        A :class:`Dataset` with uint8 (N,H,W,C) images and int64 labels.

    Raises:
        DataError: nothing found (one line naming every place looked at and the fix), or a file
            that is malformed (wrong arrays, shapes, dtypes or labels).
    """
    name = _canonical(name)
    explicit = data_dir is not None and str(data_dir) != ""
    folder = _resolve_dir(data_dir)
    env = os.environ.get(ENV_VAR, "").strip()
    looked = []
    if download is True:
        looked.append("no data directory searched (download=True)")
    elif folder is None:
        looked.append(f"no data directory (no --data-dir/data_dir argument and {ENV_VAR} is not set)")
    else:
        origin = "data_dir argument" if explicit else f"from {ENV_VAR}"
        if not folder.is_dir():
            looked.append(f"{folder} ({origin}) does not exist")
        else:
            ds, why = _from_dir(name, folder)
            if ds is not None:
                return ds
            looked.append(f"{folder} ({origin}): {why}")
        if explicit:
            looked.append(f"{ENV_VAR} " + (f"={env} not used (the argument wins)" if env else "is not set"))
    if download is False:
        looked.append("download not attempted (download=False)")
    else:
        try:
            ((xtr, ytr), (xte, yte)), how = _download(name)
            return _make(name, xtr, ytr, xte, yte, how,
                         f"train {len(xtr)} / test {len(xte)} (the standard {_TITLES[name]} split)", how)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - offline: URLError, "URL fetch failure", ...
            msg = str(e).splitlines()[0] if str(e) else ""
            looked.append(f"the keras.datasets download failed ({type(e).__name__}: {msg[:160]})")
    raise DataError(f"cannot load {name}: " + "; ".join(looked) +
                    f". Fix: pass --data-dir DIR (or set {ENV_VAR}=DIR) for a folder holding "
                    f"{_expected_files(name)}, or run once with network access")

