"""Dataset-scale explanation runs: resumable, crash-safe, optionally distributed on Ray.

``python -m xaitf run --model models/mnist_cnn.h5 --data mnist --methods ig occlusion lrp
--limit 1000 --out results/runs/mnist_ig`` explains the first 1,000 test images with every method
and writes the maps, chunk by chunk, to ``<out>/store.h5``. Run the same command again after an
interruption and it continues where it stopped; nothing finished is computed twice.

The store (``store.h5``, HDF5 through h5py)
-------------------------------------------
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

Beside it: ``run.json`` (the identity and the command lines of every session), ``summary.json``
(throughput per method, failures, sessions), ``metrics.json`` (``--metrics``), ``overview.png``
and ``mlruns/`` (``--track mlflow``).

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

Engines
-------
* ``local``: methods one after the other, chunks in order, in this process.
* ``ray`` (``pip install 'xaitf[ray]'``): one Ray actor per worker holds the model (shipped as
  file bytes, so cluster nodes need no shared disk) and every explainer; the driver hands out
  (method, chunk) tasks and writes every result to the store itself. Chunks are the same as in
  the local engine, so the maps are the same (bit for bit in ``tests/test_runs.py``).
  ``ray.init(num_cpus=workers, include_dashboard=False)`` by default, ``--address`` joins a
  cluster; ``--worker-gpus`` gives each worker a share of a GPU (Ray hides GPUs otherwise).
  Workers get ``TF_USE_LEGACY_KERAS=1`` through ``runtime_env`` and by importing xaitf.
"""
import argparse
import contextlib
import copy
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import cli
from .errors import XaitfError

FORMAT = "xaitf.runs/1"
STORE_NAME = "store.h5"
DEFAULT_CHUNK = 32
IDENTITY_KEYS = ("model_sha256", "data_sha256", "n", "scale", "target", "chunk")
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


class StoreError(XaitfError):
    """A run store that cannot be used: unreadable, foreign, corrupted, or in use."""


class ExtraMissing(XaitfError):
    """An optional extra (ray, mlflow) is not installed."""


def require_extra(module, extra, pins):
    """Import ``module`` or raise ExtraMissing with the pip command that installs it."""
    if importlib.util.find_spec(module) is None:
        raise ExtraMissing(f"{module} is not installed; install it with: pip install 'xaitf[{extra}]' "
                           f"(or pip install '{pins}')")
    return importlib.import_module(module)


# -- hashing and JSON ----------------------------------------------------------------------------
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


def _jsonable(v):
    """JSON-safe copy: numpy scalars as numbers, arrays as shape/dtype/sha256, tuples as lists."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
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
    return json.dumps(_jsonable(obj), sort_keys=True, allow_nan=True)


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
    from importlib import metadata

    import h5py

    import xaitf

    out = {"xaitf": xaitf.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "h5py": h5py.__version__, "platform": platform.platform()}
    for dist in ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "innvestigate"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if engine == "ray":
        out["ray"] = metadata.version("ray")
    return out


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


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


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
              "scale": "scale", "target": "target rule", "chunk": "chunk size"}
    for key in IDENTITY_KEYS:
        if old.get(key) != meta.get(key):
            a, b = old.get(key), meta.get(key)
            if key == "model_sha256":
                what = (f"model sha256 {str(a)[:12]} ({old.get('model_path')}) there, {str(b)[:12]} "
                        f"({meta.get('model_path')}) now")
            elif key == "data_sha256":
                what = (f"data sha256 {str(a)[:12]} ({old.get('data')} {old.get('split')} "
                        f"{old.get('n')} images) there, {str(b)[:12]} ({meta.get('data')} "
                        f"{meta.get('split')} {meta.get('n')} images) now")
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


# -- interruption ------------------------------------------------------------------------------
class StopFlag:
    """SIGINT/SIGTERM set ``requested``; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self.signal = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        print(f"\n{signal.Signals(signum).name}: finishing the current chunk, then stopping "
              "(Ctrl-C again aborts at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
        return False


@contextlib.contextmanager
def settings_overrides(sets, seed=None, batch_size=None):
    """Apply ``--set``/``--seed``/``--batch-size`` to xaitf.settings and undo them on exit."""
    from . import settings as S

    saved = {name: copy.deepcopy(d) for name, d in S.SECTIONS.items()}
    try:
        yield cli.apply_sets(sets, seed=seed, batch_size=batch_size)
    finally:
        for name, d in S.SECTIONS.items():
            d.clear()
            d.update(saved[name])


# -- explaining one chunk (both engines) -----------------------------------------------------------
def explain_chunk(explainer, x, targets):
    """Maps (float32) and compute seconds for one chunk."""
    t0 = time.perf_counter()
    maps = np.asarray(explainer(x, targets), dtype=np.float32)
    return maps, time.perf_counter() - t0


def build_explainers(keys, model):
    from . import registry

    out = {}
    for k in keys:
        try:
            out[k] = registry.create_explainer(k, model, progress=False)
        except XaitfError as e:
            raise type(e)(f"{k}: {cli.one_line(e)}") from e
    return out


def explainer_settings(e):
    """What decides a method's maps: its parameters, batching, seed, reduction, explained output."""
    return {"params": e.params, "batch_size": e.batch_size, "seed": e.seed,
            "channel_reduce": e.channel_reduce, "explains": getattr(e, "output_note", None),
            "class": type(e).__name__}


def plan_chunks(n, chunk):
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


class Session:
    """What one invocation did: images and seconds per method, failures, interruption."""

    def __init__(self, keys):
        self.images = {k: 0 for k in keys}
        self.seconds = {k: 0.0 for k in keys}
        self.failures = {}            # method -> reason
        self.nonfinite = {k: 0 for k in keys}   # maps with NaN/inf values (stored as they are)
        self.interrupted = False
        self.t0 = time.perf_counter()

    def fail(self, method, a, b, exc):
        cause = getattr(exc, "cause", None) or exc   # a Ray task error wraps the original
        self.failures.setdefault(method, f"images {a}:{b}: {type(cause).__name__}: {cli.one_line(cause)}")


class Writer:
    """Validates a chunk's maps and writes them (adding the method's datasets on first use)."""

    def __init__(self, store, settings, session, bars, delay=0.0):
        self.store, self.settings, self.session, self.bars = store, settings, session, bars
        self.delay = delay

    def __call__(self, method, a, b, maps, seconds):
        if maps.ndim < 3 or maps.shape[0] != b - a:
            raise XaitfError(f"expected {b - a} maps, got an array shaped {maps.shape}")
        if method not in self.store.done:
            self.store.add_method(method, maps.shape[1:], self.settings[method])
        elif maps.shape[1:] != self.store.map_shape(method):
            raise XaitfError(f"maps shaped {maps.shape[1:]}, the store holds {self.store.map_shape(method)}")
        self.store.write_chunk(method, a, b, maps, seconds)
        bad = ~np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
        self.session.nonfinite[method] += int(bad.sum())
        self.session.images[method] += b - a
        self.session.seconds[method] += seconds
        self.bars.update(method, b - a)
        if self.delay:
            time.sleep(self.delay)


class Bars:
    """tqdm bars, images done out of N with rate and ETA: one per method, made when it starts."""

    def __init__(self, store, enabled):
        self.store, self.enabled, self.bars = store, enabled, {}

    def start(self, key, position=None):
        if not self.enabled or key in self.bars:
            return
        from tqdm.auto import tqdm

        self.bars[key] = tqdm(total=self.store.n, initial=self.store.done_count(key), desc=key,
                              unit="img", position=position, leave=True, dynamic_ncols=True,
                              smoothing=0.1, file=sys.stderr)

    def update(self, key, n):
        self.start(key)
        if key in self.bars:
            self.bars[key].update(n)

    def finish(self, key):
        bar = self.bars.get(key)
        if bar is not None and not bar.disable:
            bar.close()

    def close(self):
        for b in self.bars.values():
            b.close()


def run_local(store, explainers, todo, x, t, write, stop, session):
    """Chunks in order, one method after the other, in this process."""
    current = None
    for m, a, b in todo:
        if stop.requested:
            session.interrupted = True
            return
        if m in session.failures:
            continue
        if m != current:
            if current is not None:
                write.bars.finish(current)
            current = m
            write.bars.start(m)
        try:
            maps, seconds = explain_chunk(explainers[m], x[a:b], t[a:b])
            write(m, a, b, maps, seconds)
        except (XaitfError, ValueError, RuntimeError, TypeError, IndexError, ArithmeticError,
                MemoryError) as e:
            session.fail(m, a, b, e)
        except Exception as e:  # noqa: BLE001 - TensorFlow errors are not RuntimeErrors
            if type(e).__module__.startswith(("tensorflow", "h5py")) and not isinstance(e, OSError):
                session.fail(m, a, b, e)
            else:
                raise
    if stop.requested:
        session.interrupted = True


# -- Ray --------------------------------------------------------------------------------------
class RayWorker:
    """A Ray actor: one model and every explainer, built once; explains chunks on request.

    The model arrives as file bytes (checked against its sha256), the images and targets as
    object-store arrays; ``sets``/``seed``/``batch_size`` are applied exactly as on the driver.
    """

    def __init__(self, model_bytes, suffix, sha256, sets, seed, batch_size, keys, x, t,
                 safe_mode=True):
        import tempfile

        for k, v in WORKER_ENV.items():
            os.environ.setdefault(k, v)
        import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
        from .keras_bridge import load_model

        if hashlib.sha256(model_bytes).hexdigest() != sha256:
            raise StoreError("the model bytes reached the worker damaged (sha256 differs)")
        cli.apply_sets(sets, seed=seed, batch_size=batch_size)
        with tempfile.TemporaryDirectory(prefix="xaitf-ray-") as d:
            path = Path(d) / f"model{suffix}"
            path.write_bytes(model_bytes)
            self.model = load_model(path, safe_mode=safe_mode)
        self.explainers = build_explainers(keys, self.model)
        self.x, self.t = x, t

    def explain(self, method, a, b):
        return explain_chunk(self.explainers[method], self.x[a:b], self.t[a:b])


def run_ray(ctx, todo, x, t, write, stop, session):
    """Distribute (method, chunk) tasks over Ray actors; the driver writes every result."""
    import logging

    ray = require_extra("ray", "ray", "ray[data]==2.60.*")
    started = False
    if not ray.is_initialized():
        kw = {"log_to_driver": False, "logging_level": logging.ERROR,
              "runtime_env": {"env_vars": dict(WORKER_ENV)}}
        if ctx["address"]:
            ray.init(address=ctx["address"], **kw)
        else:
            ray.init(num_cpus=ctx["workers"], include_dashboard=False, **kw)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_workers = max(1, min(ctx["workers"] or cpus, len(todo)))
        Worker = ray.remote(num_cpus=1, num_gpus=ctx.get("gpus") or 0, max_restarts=0)(RayWorker)
        model_ref = ray.put(ctx["model_bytes"])
        x_ref, t_ref = ray.put(x), ray.put(t)
        actors = [Worker.remote(model_ref, ctx["model_suffix"], ctx["model_sha256"], ctx["sets"],
                                ctx["seed"], ctx["batch_size"], ctx["keys"], x_ref, t_ref,
                                safe_mode=ctx.get("safe_mode", True))
                  for _ in range(n_workers)]
        print(f"ray: {n_workers} worker(s) on {cpus} CPU(s)"
              + (f" at {ctx['address']}" if ctx["address"] else " (local)"), flush=True)
        for i, k in enumerate(dict.fromkeys(m for m, _, _ in todo)):
            write.bars.start(k, position=i)
        queue = list(reversed(todo))          # pop() from the end = original order
        inflight, load = {}, [0] * n_workers
        per_actor = 2                         # one computing, one queued: no idle gap between chunks
        while True:
            while queue and not stop.requested and min(load) < per_actor:
                m, a, b = queue.pop()
                if m in session.failures:
                    continue
                i = load.index(min(load))
                inflight[actors[i].explain.remote(m, a, b)] = (m, a, b, i)
                load[i] += 1
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                m, a, b, i = inflight.pop(ref)
                load[i] -= 1
                try:
                    maps, seconds = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError / RayActorError
                    session.fail(m, a, b, e)
                    continue
                if m in session.failures:
                    continue
                write(m, a, b, np.asarray(maps), seconds)
        session.interrupted = stop.requested and bool(queue)
    finally:
        if started:
            ray.shutdown()


# -- metrics ------------------------------------------------------------------------------------
def _metric_form(fn):
    """``"model"`` for f(model, x, maps, targets|labels, ...), ``"maps"`` for f(maps, ...), else None."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    if params[:3] == ["model", "x", "maps"] and len(params) > 3 and params[3] in ("targets", "labels"):
        return "model"
    if params[:1] == ["maps"]:
        rest = list(inspect.signature(fn).parameters.values())[1:]
        if all(q.default is not q.empty or q.kind in (q.VAR_POSITIONAL, q.VAR_KEYWORD) for q in rest):
            return "maps"
    return None


def find_metric(name):
    """A function of :mod:`xaitf.metrics` (the package or one of its modules) that can run on a
    finished store: ``f(model, x, maps, targets_or_labels, ...)`` or ``f(maps, ...)``."""
    import pkgutil

    if importlib.util.find_spec("xaitf.metrics") is None:
        raise XaitfError("--metrics needs xaitf.metrics, which this installation lacks")
    pkg = importlib.import_module("xaitf.metrics")
    fn = getattr(pkg, name, None) if not name.startswith("_") else None
    usable = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"xaitf.metrics.{info.name}")
        usable |= {k for k, v in vars(mod).items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", "") == mod.__name__ and _metric_form(v)}
        if fn is None and not name.startswith("_") and callable(getattr(mod, name, None)):
            fn = getattr(mod, name)
    if fn is None or _metric_form(fn) is None:
        what = "unknown metric" if fn is None else "metric that cannot run on a store"
        raise XaitfError(f"{what} {name!r}; usable with --metrics: {', '.join(sorted(usable)) or 'none'}")
    return fn


def _scalars(result):
    """The scalar summary of a metric's result: a dict's numbers, a curve's mean AUC, an array's mean."""
    if isinstance(result, dict):
        return {k: float(v) for k, v in result.items()
                if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    if hasattr(result, "auc"):
        return {"auc": float(np.mean(result.auc))}
    a = np.asarray(result, dtype=np.float64)
    return {"value": float(a.mean())}


def compute_metrics(store, model, keys, names, batch_size):
    """``{method: {metric.key: value}}`` for every method whose maps are all done."""
    import inspect

    fns = {name: find_metric(name) for name in names}
    x = store.array("inputs")
    labels, targets = store.array("labels"), store.array("targets")
    out = {}
    for m in keys:
        if m not in store.done or not store.done[m].all():
            continue
        maps = store.maps(m)
        if maps.ndim != 3:
            continue
        out[m] = {}
        for name, fn in fns.items():
            params = list(inspect.signature(fn).parameters)
            if _metric_form(fn) == "maps":
                result = fn(maps)
            else:
                classes = labels if params[3] == "labels" else targets
                kw = {"batch_size": batch_size} if "batch_size" in params else {}
                result = fn(model, x, maps, classes, **kw)
            for k, v in _scalars(result).items():
                out[m][f"{name}.{k}"] = v
    return out


# -- figures ------------------------------------------------------------------------------------
def overview_figure(store, keys, count=6):
    """Inputs (top row) and each method's maps for the first ``count`` images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if k in store.done][:10]
    count = min(count, store.n)
    x = store.f["inputs"][:count]
    fig, axes = plt.subplots(len(keys) + 1, count, figsize=(1.4 * count, 1.4 * (len(keys) + 1)),
                             squeeze=False)
    for j in range(count):
        img = x[j][..., 0] if x.shape[-1] == 1 else np.clip(x[j], 0, 1)
        axes[0, j].imshow(img, cmap="gray")
        axes[0, j].set_title(f"#{j} t={int(store.f['targets'][j])}", fontsize=7)
    for i, k in enumerate(keys, 1):
        maps = store.f["maps"][k][:count]
        for j in range(count):
            m = maps[j] if maps.ndim == 3 else maps[j].sum(-1)
            lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
            axes[i, j].imshow(m, cmap="seismic", vmin=-lim or -1, vmax=lim or 1)
        axes[i, 0].set_ylabel(k, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# -- command line --------------------------------------------------------------------------------
def add_parser(subparsers):
    """Add the ``run`` subcommand to ``python -m xaitf``."""
    p = subparsers.add_parser(
        "run", help="explain a dataset with several methods into a resumable HDF5 store",
        description="Explain the images of a dataset with several methods and write the maps to "
                    "<out>/store.h5, chunk by chunk. Rerun the same command after an interruption "
                    "to resume; a store made for another model, data or settings is refused.")
    p.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    p.add_argument("--data", required=True, help="dataset: mnist or cifar10")
    p.add_argument("--data-dir", default=None,
                   help="folder with the offline .npz files (default $XAITF_DATA_DIR)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="split (default test)")
    p.add_argument("--limit", type=cli.positive_int, default=None,
                   help="the first N images of the split (default all)")
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                   help="methods (registry keys, aliases or groups such as lrp)")
    p.add_argument("--out", default=None,
                   help="run folder (default results/runs/<model stem>-<data>)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted",
                   help="class explained: the model's prediction (default) or the true label")
    p.add_argument("--scale", type=float, default=255.0,
                   help="pixel values are divided by this (default 255)")
    p.add_argument("--chunk-size", type=cli.positive_int, default=None,
                   help=f"images per stored chunk (default {DEFAULT_CHUNK}, or the store's)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray (pip install 'xaitf[ray]')")
    p.add_argument("--workers", type=cli.positive_int, default=None,
                   help="Ray workers (default: the CPUs of the local Ray or of the cluster)")
    p.add_argument("--worker-gpus", type=float, default=0.0,
                   help="GPUs per Ray worker (e.g. 0.5 puts two workers on one GPU; default 0: "
                        "Ray hides GPUs from the workers)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. ray://host:10001 or auto); implies --engine ray")
    p.add_argument("--force", action="store_true",
                   help="discard an existing store in --out and start over")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="compute these xaitf.metrics (e.g. deletion_curve degradation) from the "
                        "store once every map is done")
    p.add_argument("--track", choices=("mlflow",), default=None,
                   help="log parameters, metrics and figures (pip install 'xaitf[track]')")
    p.add_argument("--track-uri", default=None,
                   help="MLflow tracking URI or folder (default <out>/mlruns, a file store)")
    p.add_argument("--experiment", default="xaitf-runs", help="MLflow experiment name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--chunk-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests
    p.add_argument("--unsafe-model", action="store_true",
                   help="allow the model file to run Python code stored in it (Lambda layers) "
                        "while it loads; only for files you trust (default: such files are refused)")
    cli.add_common_args(p)
    p.set_defaults(func=main)
    return p


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
        for stem in ("store", "run", "summary", "metrics", "overview"):   # left by a killed run
            for stale in out.glob(f".{stem}.*.part.*"):
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


def _write_json(path, obj):
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def main(args):
    """``python -m xaitf run``: ``args`` is the argparse namespace of :func:`add_parser`."""
    # ---- checks that need no TensorFlow ---------------------------------------------------------
    from . import registry

    keys = registry.expand(args.methods)
    model_path = Path(args.model)
    if not model_path.is_file():
        raise cli.CliError(f"model file not found: {model_path} (build one with create_model.py)")
    from .settings import positive_finite

    args.scale = cli.check_flag("--scale", positive_finite, args.scale)   # inf: the model sees zeros
    if args.chunk_delay < 0 or args.worker_gpus < 0:
        raise cli.CliError("--chunk-delay and --worker-gpus must be >= 0")
    engine = "ray" if args.address else args.engine
    if engine == "ray":
        require_extra("ray", "ray", "ray[data]==2.60.*")
    if args.track:
        require_extra("mlflow", "track", "mlflow-skinny==3.17.*")
    if args.metrics:
        for name in args.metrics:
            find_metric(name)
    out = Path(args.out) if args.out else Path("results") / "runs" / f"{model_path.stem}-{args.data}"
    if out.exists() and not out.is_dir():
        raise cli.CliError(f"--out {out} exists and is not a folder")
    with settings_overrides(args.sets, seed=args.seed, batch_size=args.batch_size), out_lock(out):
        return _run(args, keys, model_path, out, engine)


def _run(args, keys, model_path, out, engine):
    from . import settings as S
    from .data import load_dataset

    # ---- data -----------------------------------------------------------------------------------
    ds = load_dataset(args.data, data_dir=args.data_dir)
    images = ds.x_test if args.split == "test" else ds.x_train
    labels = ds.y_test if args.split == "test" else ds.y_train
    n = len(images) if args.limit is None else min(args.limit, len(images))
    if args.limit is not None and args.limit > len(images):
        print(f"note: --limit {args.limit} > {len(images)} images in the {args.split} split; "
              f"using {n}", file=sys.stderr)
    images, labels = images[:n], labels[:n]
    store_path = out / STORE_NAME
    model_sha = file_sha256(model_path)
    meta = {
        "format": FORMAT, "model_path": str(model_path), "model_sha256": model_sha,
        "data": ds.name, "split": args.split, "data_source": ds.source, "data_split": ds.split,
        "data_sha256": array_sha256(images, labels), "n": n, "scale": float(args.scale),
        "target": args.target, "chunk": args.chunk_size or DEFAULT_CHUNK,
        "versions": versions(engine), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    # ---- an existing store: check it before any heavy work --------------------------------------
    store = None
    if store_path.exists() and not args.force:
        store = Store.open(store_path)
        if args.chunk_size is None:
            meta["chunk"] = store.chunk
        check_identity(store, meta)
    try:
        # ---- model and explainers ------------------------------------------------------------
        cli.quiet_tensorflow()
        from .keras_bridge import input_shape, load_model

        model = load_model(model_path, safe_mode=not getattr(args, "unsafe_model", False))
        shape = input_shape(model)
        if tuple(shape) != tuple(images.shape[1:]):
            raise cli.CliError(f"{model_path} expects images shaped {tuple(shape)}, {ds.name} images "
                               f"are {tuple(images.shape[1:])}")
        x = (images.astype(np.float32) / np.float32(args.scale))
        explainers = build_explainers(keys, model)
        settings = {k: explainer_settings(e) for k, e in explainers.items()}
        if store is not None:
            for k in keys:
                check_method_settings(store, k, settings[k])
        else:
            if args.target == "label":
                targets = labels.astype(np.int64)
            else:
                bs = int(S.GLOBAL["batch_size"])
                targets = np.concatenate([np.asarray(model(x[a:b], training=False)).argmax(-1)
                                          for a, b in plan_chunks(n, bs)])
            if args.force:
                for name in ("run.json", "summary.json", "metrics.json", "overview.png"):
                    (out / name).unlink(missing_ok=True)
            store = Store.create(store_path, meta, x, labels, targets, np.arange(n))
        x = store.array("inputs")
        t = store.array("targets")

        # ---- run.json: identity, versions and every session's command line -------------------
        run_info = _read_json(out / "run.json")
        sessions = list(run_info.get("sessions", []))
        sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "engine": engine,
                         "argv": sys.argv[1:], "methods": keys, "versions": versions(engine)})
        _write_json(out / "run.json", {**store.meta, "store": str(store_path), "sessions": sessions,
                                      "settings": settings})

        chunks = plan_chunks(store.n, store.chunk)
        todo = [(m, a, b) for m in keys for a, b in store.pending(m, chunks)]
        done_before = {k: store.done_count(k) for k in keys}
        print(f"run: {store_path} | {ds.name} {args.split} {store.n} images | model {model_path} "
              f"(sha256 {model_sha[:12]}) | chunks of {store.chunk} | engine {engine}", flush=True)
        print(f"data: {ds.source}")
        for k, e in explainers.items():
            cli.print_settings(f"{k} ({done_before[k]}/{store.n} done)", e.params,
                               batch_size=e.batch_size, seed=e.seed)
        if not todo:
            print("nothing to do: every map is done")

        tracker = None
        if args.track:
            from . import tracking

            uri = args.track_uri or str(out / "mlruns")
            tracker = tracking.start_run(args.track, uri, args.experiment,
                                         run_name=out.name, run_id=run_info.get("mlflow_run_id"),
                                         tags={"store": str(store_path.resolve()), "engine": engine})
            if tracker.run_id != run_info.get("mlflow_run_id"):
                _write_json(out / "run.json", {**_read_json(out / "run.json"),
                                               "mlflow_run_id": tracker.run_id,
                                               "mlflow_uri": tracker.uri})
            tracker.log_params(_flat_params(store.meta, settings, args))

        # ---- explain ----------------------------------------------------------------------------
        session = Session(keys)
        bars = Bars(store, enabled=bool(todo) and not args.no_progress
                    and bool(S.GLOBAL.get("progress", True)))
        write = Writer(store, settings, session, bars, delay=args.chunk_delay)
        try:
            with StopFlag() as stop:
                if todo and engine == "ray":
                    ctx = {"address": args.address, "workers": args.workers,
                           "model_bytes": model_path.read_bytes(), "model_suffix": model_path.suffix,
                           "model_sha256": model_sha, "sets": list(args.sets), "seed": args.seed,
                           "batch_size": args.batch_size, "keys": keys, "gpus": args.worker_gpus,
                           "safe_mode": not getattr(args, "unsafe_model", False)}
                    run_ray(ctx, todo, x, t, write, stop, session)
                elif todo:
                    run_local(store, explainers, todo, x, t, write, stop, session)
        except KeyboardInterrupt:
            bars.close()
            print(f"error: aborted; the store keeps every finished chunk "
                  f"({_progress_line(store, keys)}); rerun the same command to resume",
                  file=sys.stderr, flush=True)
            if tracker:
                tracker.end("KILLED")
            raise SystemExit(130) from None
        bars.close()

        # ---- summary, metrics, figure, tracking ----------------------------------------------------
        summary = _summary(store, keys, session, engine, out)
        complete = all(store.done_count(k) == store.n for k in keys)
        metric_values = {}
        if args.metrics and complete and not session.interrupted:
            print("metrics:")
            metric_values = compute_metrics(store, model, keys, args.metrics,
                                            int(S.GLOBAL["batch_size"]))
            for m, vals in metric_values.items():
                print(f"  {m}: " + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))
            _write_json(out / "metrics.json", metric_values)
        elif args.metrics:
            print("metrics: skipped (not every map is done yet)")
        if tracker:
            _track_session(tracker, store, keys, summary, metric_values, complete, out)
    finally:
        if store is not None:
            store.close()

    if session.interrupted:
        print(f"interrupted: stopped after the current chunk ({_progress_line(store, keys)}); rerun "
              "the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if session.failures:
        raise XaitfError(f"{len(session.failures)} method(s) failed (details in {out / 'summary.json'}): "
                         + "; ".join(f"{k}: {v}" for k, v in session.failures.items()))
    return 0


def _progress_line(store, keys):
    return ", ".join(f"{k} {store.done_count(k)}/{store.n}" for k in keys)


def _flat_params(meta, settings, args):
    out = {k: meta[k] for k in ("model_path", "model_sha256", "data", "split", "n", "scale", "target",
                                "chunk", "data_sha256")}
    out["engine"] = "ray" if args.address else args.engine
    for m, s in settings.items():
        for k, v in s["params"].items():
            out[f"{m}.{k}"] = v
        for k in ("batch_size", "seed", "channel_reduce"):
            out[f"{m}.{k}"] = s[k]
    return {k: json.dumps(_jsonable(v)) if not isinstance(v, str) else v for k, v in out.items()}


def _summary(store, keys, session, engine, out):
    """Print the table (images/s per method, failures) and write summary.json."""
    wall = time.perf_counter() - session.t0
    rows = {}
    for k in keys:
        done = store.done_count(k)
        total_s = float(store.seconds(k)[store.done[k]].sum()) if k in store.done else 0.0
        now_img, now_s = session.images[k], session.seconds[k]
        rows[k] = {"done": done, "n": store.n, "computed_now": now_img, "seconds_now": now_s,
                   "images_per_s_now": now_img / now_s if now_s > 0 else None,
                   "seconds_total": total_s,
                   "images_per_s_total": done / total_s if total_s > 0 else None,
                   "recomputed": int((store.computed[k] > 1).sum()) if k in store.computed else 0,
                   "failure": session.failures.get(k)}
    print(f"summary ({store.path}, {wall:.1f} s wall, engine {engine}):")
    width = max(len(k) for k in keys + ["method"])
    print(f"  {'method':<{width}}  {'done':>13}  {'this run':>8}  {'compute s':>9}  {'images/s':>9}")
    for k, r in rows.items():
        ips = r["images_per_s_now"] or r["images_per_s_total"]
        done = f"{r['done']}/{r['n']}"
        print(f"  {k:<{width}}  {done:>13}  {r['computed_now']:>8}  {r['seconds_now']:>9.2f}  "
              f"{'-' if ips is None else f'{ips:.1f}':>9}")
    for k, why in session.failures.items():
        print(f"  FAILED {k}: {why}")
    for k, count in session.nonfinite.items():
        if count:
            print(f"  warning: {k}: {count} map(s) with NaN or infinite values (stored as they are)")
    old = _read_json(out / "summary.json")
    history = list(old.get("sessions", []))
    history.append({"engine": engine, "wall_seconds": wall, "interrupted": session.interrupted,
                    "images": session.images, "seconds": session.seconds,
                    "nonfinite_maps": session.nonfinite,
                    "failures": session.failures, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
    summary = {"store": str(store.path), "n": store.n, "methods": rows, "sessions": history}
    _write_json(out / "summary.json", summary)
    return summary


def _track_session(tracker, store, keys, summary, metric_values, complete, out):
    step = len(summary["sessions"]) - 1
    values = {}
    for k, r in summary["methods"].items():
        values[f"{k}.done"] = r["done"]
        if r["images_per_s_total"]:
            values[f"{k}.images_per_s"] = r["images_per_s_total"]
        values[f"{k}.failed"] = int(bool(r["failure"]))
    for k, vals in metric_values.items():
        for name, v in vals.items():
            values[f"{k}.{name}"] = v
    tracker.log_metrics(values, step=step)
    if complete:
        fig = overview_figure(store, keys)
        path = out / "overview.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
        import matplotlib.pyplot as plt

        plt.close(fig)
        tracker.log_artifact(path)
    for name in ("summary.json", "run.json", "metrics.json"):
        if (out / name).exists():
            tracker.log_artifact(out / name)
    status = "FAILED" if any(r["failure"] for r in summary["methods"].values()) else (
        "FINISHED" if complete else "KILLED")
    tracker.end(status)
