"""The run store of ``python -m xaitf run``: ``<out>/store.h5`` (HDF5 through h5py), its identity
and settings checks, and the lock that keeps two runs off one ``--out`` folder.

The store
---------
========================  ================================================================
``meta``                  JSON string: model path and sha256, data source and sha256, target
                          rule, scale, chunk size, versions (the run's identity)
``inputs``                float32 (N,H,W,C): the images exactly as the model saw them
``labels`` ``targets``    int64 (N,): true classes; classes explained
``indices``               int64 (N,): rows of the dataset split
``maps/<method>``         float32 (N,H,W) (or (N,H,W,C) with channel_reduce="none"); NaN = not done.
                          Attribute ``settings``: JSON of the method's effective parameters
``done/<method>``         bool (N,): set only AFTER the chunk's maps are on disk
``computed/<method>``     uint16 (N,): how many times each map was computed (1 in a clean run)
``seconds/<method>``      float32 (N,): compute seconds per image (chunk time / chunk length)
========================  ================================================================

Why a killed run (SIGKILL, a crash, a power cut with an honest disk) never corrupts the store
-------------------------------------------------------------------------------------------
* Every change of the file's STRUCTURE (creating the store, adding a method's datasets) builds
  a new file next to it (a copy plus the change), fsyncs it and ``os.replace``-s it into place:
  the store is the old file or the new one, never a mixture.
* Everything else is a write into datasets that already exist with contiguous layout and early
  allocation (``H5D_ALLOC_TIME_EARLY``, no timestamps): a chunk's write changes only the bytes
  of those datasets, no HDF5 metadata (``tests/test_runs.py`` checks this byte for byte). The
  one byte that HDF5 flips while the file is open for writing is the superblock's "open for
  write" flag, which superblock version 0 (h5py's default ``libver="earliest"``, kept on purpose:
  ``libver="latest"`` and SWMR would refuse to reopen a file left open by a killed writer) does
  not enforce.
* Per chunk: maps, counters -> flush + fsync -> ``done`` flags -> flush + fsync. A kill between
  the two leaves maps whose flags are still False: they are recomputed, never trusted.
* Ctrl-C (SIGINT) and SIGTERM only set a flag: the chunk being computed is finished and written
  before the run stops (exit code 130). A second Ctrl-C aborts at once (still safe, see above).
* A lock file (``<out>/.lock``, ``flock``) keeps two runs off one store.

The store is xaitf's one exception to write-then-move (``docs/architecture.md``): it is appended
in place, by design, with the guarantees above. Everything else in ``<out>`` (``run.json``,
``summary.json``, ``metrics.json``, ``overview.png``) is written to a temporary file and renamed.
A run that fails before it has written anything (data or model refused) removes the ``--out``
folder it created (see :func:`out_lock`). An empty (0-byte) ``store.h5`` is refused, never
rewritten: xaitf never leaves one (see :meth:`Store._open`).
"""
import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .. import cli
from ..data.sources import array_sha256, file_sha256  # noqa: F401 (re-exported)
from ..errors import XaitfError

FORMAT = "xaitf.runs/1"
STORE_NAME = "store.h5"
IDENTITY_KEYS = ("model_sha256", "data_sha256", "n", "scale", "target", "chunk")
#: compared when the store has them (stores written before they existed lack them)
LATER_IDENTITY_KEYS = ("source_sha256", "resize", "preprocess")


class StoreError(XaitfError):
    """A run store that cannot be used: unreadable, foreign, corrupted, or in use."""


# -- hashing and JSON ----------------------------------------------------------------------------
def jsonable(v):
    """JSON-safe copy: numpy scalars as numbers, arrays as shape/dtype/sha256, tuples as lists."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) or hasattr(v, "numpy"):
        a = np.asarray(v)
        if a.size <= 16:
            return a.tolist()
        return {"array": list(a.shape), "dtype": a.dtype.str, "sha256": array_sha256(a)}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _dumps(obj):
    return json.dumps(jsonable(obj), sort_keys=True, allow_nan=True)


def _first_difference(old, new, prefix=""):
    """``key: old -> new`` for the first differing leaf of two JSON-like values, else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                return f"{prefix}{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
            d = _first_difference(old[k], new[k], f"{prefix}{k}.")
            if d:
                return d
        return None
    if old != new:
        return f"{prefix.rstrip('.') or 'value'}: {old!r} -> {new!r}"
    return None


def versions(engine="local"):
    """Versions of what produced the maps (informational; not part of the identity)."""
    from ..reports import versions as _versions

    return _versions(extra=("ray",) if engine == "ray" else ())


# -- the store -----------------------------------------------------------------------------------
def _early_dcpl():
    """Contiguous layout, space and fill values written at creation: later writes are data only."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    return dcpl


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_dir = cli.fsync_dir


# temporary file + rename, usual permissions
atomic_write = cli.atomic_write


class Store:
    """The HDF5 store of one run (see the module docstring for its layout and guarantees).

    Open with :meth:`open` or make with :meth:`create`; :meth:`write_chunk` is the only way maps
    get in. Keeps ``done`` and ``computed`` in memory, so reading progress costs no I/O.
    """

    PER_METHOD = ("maps", "done", "computed", "seconds")

    def __init__(self, path):
        self.path = Path(path)
        self.f = None
        self._open()

    # -- opening and validation ----------------------------------------------------------------
    def _open(self):
        """Open the store for writing, or raise StoreError with one line saying which case it is:

        * locked: another process has the file open (HDF5's file lock, ``errno`` EAGAIN/EWOULDBLOCK
          or EACCES, "unable to lock file"): wait for it to end;
        * empty (0 bytes): never one of ours (stores are fsynced under a temporary name and renamed
          into place complete; the leftovers of a killed run are hidden ``.store.*.part.h5`` files,
          removed by the next run): refused, and not touched (HDF5 would silently turn an empty
          file opened for writing into a new, empty HDF5 file);
        * damaged/truncated: HDF5 says "truncated file" (a partial copy, a full disk);
        * not an HDF5 file at all, a foreign HDF5 file, or an inconsistent store.
        """
        import errno

        import h5py

        where = str(self.path)
        try:
            empty = os.path.getsize(where) == 0
        except OSError as e:
            raise StoreError(f"cannot read run store {where}: {e.strerror}") from None
        if empty:
            raise StoreError(f"run store is empty (0 bytes, not written by xaitf): {where}; delete "
                             "it, pass --force to start over, or use another --out")
        try:
            self.f = h5py.File(where, "r+")
        except (OSError, ValueError) as e:
            text = cli.one_line(e)
            low = str(e).lower()
            code = getattr(e, "errno", None)
            if (code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES) and "lock" in low) \
                    or "unable to lock file" in low:
                raise StoreError(f"run store is locked: {where} is open in another process (HDF5 "
                                 "file lock); wait for that process to end") from None
            if "truncated file" in low:
                raise StoreError(f"run store damaged/truncated: {where} ({text}); delete it, pass "
                                 "--force to start over, or use another --out") from None
            raise StoreError(f"{where} is not a readable HDF5 file ({text}); pass --force to start "
                             "over, or pick another --out") from None
        try:
            self._validate()
        except StoreError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - any inconsistency is corruption
            self.close()
            raise StoreError(f"{where} is corrupted ({type(e).__name__}: {cli.one_line(e)}); pass "
                             "--force to start over, or pick another --out") from None

    def _validate(self):
        f = self.f
        tag = f.attrs.get("format")
        tag = tag.decode() if isinstance(tag, bytes) else tag
        if tag != FORMAT:
            raise StoreError(f"{self.path} is not an xaitf run store (format tag {tag!r}, expected "
                             f"{FORMAT!r}); pass --force to replace it, or pick another --out")
        raw = f["meta"][()]
        self.meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        n = int(self.meta["n"])
        self.n, self.chunk = n, int(self.meta["chunk"])
        for name in ("inputs", "targets", "labels", "indices"):
            if f[name].shape[0] != n:
                raise ValueError(f"{name} has {f[name].shape[0]} rows, meta says {n}")
        self.done, self.computed = {}, {}
        for m in f["maps"]:
            for kind in self.PER_METHOD:
                if f[kind][m].shape[0] != n:
                    raise ValueError(f"{kind}/{m} has {f[kind][m].shape[0]} rows, expected {n}")
            self.done[m] = np.asarray(f["done"][m][()], dtype=bool)
            self.computed[m] = np.asarray(f["computed"][m][()], dtype=np.uint16)

    @classmethod
    def open(cls, path):
        return cls(path)

    @classmethod
    def create(cls, path, meta, inputs, labels, targets, indices):
        """Write a new store (no methods yet) atomically and open it."""
        import h5py

        path = Path(path)
        n = len(inputs)

        def write(tmp):
            with h5py.File(tmp, "w") as f:   # default libver: superblock v0, see module docstring
                f.attrs["format"] = FORMAT
                f.create_dataset("meta", data=_dumps(meta))
                f.create_dataset("inputs", data=np.asarray(inputs, np.float32),
                                 chunks=(min(n, 256),) + tuple(inputs.shape[1:]),
                                 compression="gzip", compression_opts=4, shuffle=True)
                f.create_dataset("labels", data=np.asarray(labels, np.int64))
                f.create_dataset("targets", data=np.asarray(targets, np.int64))
                f.create_dataset("indices", data=np.asarray(indices, np.int64))
                for g in cls.PER_METHOD:
                    f.create_group(g)
            _fsync_file(tmp)

        atomic_write(path, write)
        _fsync_dir(path.parent)
        return cls(path)

    def close(self):
        if self.f is not None:
            try:
                self.f.close()
            finally:
                self.f = None

    # -- reading ---------------------------------------------------------------------------------
    @property
    def methods(self):
        return list(self.done)

    def method_settings(self, method):
        raw = self.f["maps"][method].attrs.get("settings", "{}")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def array(self, name):
        return self.f[name][()]

    def maps(self, method):
        return self.f["maps"][method][()]

    def seconds(self, method):
        return self.f["seconds"][method][()]

    def done_count(self, method):
        return int(self.done[method].sum()) if method in self.done else 0

    def pending(self, method, chunks):
        """The chunks (start, stop) of ``method`` with at least one image not done."""
        if method not in self.done:
            return list(chunks)
        d = self.done[method]
        return [(a, b) for a, b in chunks if not d[a:b].all()]

    def map_shape(self, method):
        return tuple(self.f["maps"][method].shape[1:])

    # -- writing ---------------------------------------------------------------------------------
    def add_method(self, method, map_shape, settings):
        """Create ``method``'s datasets: copy the file, add them there, replace (atomic)."""
        import h5py

        n = self.n
        self.close()

        def write(tmp):
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                for kind, shape, dtype, fill in (
                        ("maps", (n,) + tuple(map_shape), np.float32, np.nan),
                        ("done", (n,), bool, False),
                        ("computed", (n,), np.uint16, 0),
                        ("seconds", (n,), np.float32, 0.0)):
                    f[kind].create_dataset(method, shape=shape, dtype=dtype, dcpl=_early_dcpl(),
                                           fillvalue=fill, track_times=False)
                f["maps"][method].attrs["settings"] = _dumps(settings)
            _fsync_file(tmp)

        try:
            atomic_write(self.path, write)
            _fsync_dir(self.path.parent)
        finally:
            self._open()

    def _sync(self):
        self.f.flush()
        os.fsync(self.f.id.get_vfd_handle())

    def write_chunk(self, method, start, stop, maps, seconds):
        """Maps and counters, flush + fsync, then the done flags, flush + fsync."""
        s = slice(start, stop)
        self.f["maps"][method][s] = maps
        self.computed[method][s] += 1
        self.f["computed"][method][s] = self.computed[method][s]
        self.f["seconds"][method][s] = np.full(stop - start, seconds / max(1, stop - start), np.float32)
        self._sync()
        self.f["done"][method][s] = True
        self._sync()
        self.done[method][s] = True


def check_identity(store, meta):
    """StoreError when ``store`` was made for another model, data or run definition."""
    old = store.meta
    labels = {"model_sha256": "model", "data_sha256": "data", "n": "number of images",
              "scale": "scale", "target": "target rule", "chunk": "chunk size",
              "resize": "resize rule", "preprocess": "preprocessing"}
    later = [k for k in LATER_IDENTITY_KEYS if k in old and k in meta]
    keys = [k for k in ("model_sha256", "source_sha256") if k in IDENTITY_KEYS or k in later]
    keys += [k for k in IDENTITY_KEYS + tuple(later) if k not in keys]
    for key in keys:
        if old.get(key) != meta.get(key):
            a, b = old.get(key), meta.get(key)
            if key == "model_sha256":
                what = (f"model sha256 {str(a)[:12]} ({old.get('model_path')}) there, {str(b)[:12]} "
                        f"({meta.get('model_path')}) now")
            elif key == "data_sha256":
                what = (f"data sha256 {str(a)[:12]} ({old.get('data')} {old.get('split')} "
                        f"{old.get('n')} images) there, {str(b)[:12]} ({meta.get('data')} "
                        f"{meta.get('split')} {meta.get('n')} images) now")
            elif key == "source_sha256":
                what = (f"data source content sha256 {str(a)[:12]} ({old.get('data_source')}) there, "
                        f"{str(b)[:12]} ({meta.get('data_source')}) now: the source changed")
            else:
                what = f"{labels[key]} {a!r} there, {b!r} now"
            raise StoreError(f"{store.path} belongs to another run: {what}; rerun with --force to "
                             "start over, or pick another --out")


def check_method_settings(store, method, settings):
    if method not in store.done:
        return
    old = store.method_settings(method)
    new = json.loads(_dumps(settings))
    diff = _first_difference(old, new)
    if diff:
        raise StoreError(f"{store.path}: {method} was computed with other settings ({diff}); "
                         "rerun with --force to start over, or pick another --out")


@contextlib.contextmanager
def out_lock(out):
    """An exclusive ``flock`` on ``<out>/.lock`` for the whole session (released on any exit).

    Under the lock, the hidden temporary files of a killed run (``.store.*.part.h5``, ...: this
    program's own leftovers, never anything else) are removed. When the session ends with nothing
    written (e.g. the data or the model was refused) and this session created ``out``, the lock
    file and the folders it created are removed again: a failed run leaves no empty ``--out``.
    """
    import fcntl

    made = []
    d = out
    while not d.exists():
        made.append(d)
        d = d.parent
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(lock).st_ino:   # removed by a run that just failed
                raise OSError
        except OSError:
            raise StoreError(f"another run is using {out} (lock {lock} is held); wait for "
                             "it to end or pick another --out") from None
        for stem in ("store", "run", "summary", "metrics", "overview", "report"):   # a killed run's
            for stale in out.glob(f".{stem}.*.part.*"):
                stale.unlink(missing_ok=True)
        for stale in out.glob("report_files/.*.part.png"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        try:
            if made and [p.name for p in out.iterdir()] == [".lock"]:
                lock.unlink()
                for folder in made:                  # innermost first; stops at a non-empty one
                    folder.rmdir()
        except OSError:
            pass
        finally:
            os.close(fd)
