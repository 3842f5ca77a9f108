"""The local engine of ``python -m xaitf run``, and what both engines share: explaining one chunk,
the explainers and their settings, the session's bookkeeping, the writer and the progress bars.

* ``local``: methods one after the other, chunks in order, in this process (:func:`run_local`).
* Ctrl-C (SIGINT) and SIGTERM only set a flag (:class:`StopFlag`): the chunk being computed is
  finished and written before the run stops (exit code 130). A second Ctrl-C aborts at once (the
  store stays consistent, see :mod:`xaitf.runs.store`).
"""
import signal
import sys
import time

import numpy as np

from .. import cli
from ..errors import XaitfError


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


# -- explaining one chunk (both engines) -----------------------------------------------------------
def explain_chunk(explainer, x, targets):
    """Maps (float32) and compute seconds for one chunk."""
    t0 = time.perf_counter()
    maps = np.asarray(explainer(x, targets), dtype=np.float32)
    return maps, time.perf_counter() - t0


def preset_arguments(keys):
    """``{method: keyword arguments}`` from the presets as they are now (``--set`` applied):
    what every engine builds its explainers from (:func:`xaitf.registry.preset_kwargs`)."""
    from .. import registry

    return {k: registry.preset_kwargs(k) for k in keys}


def build_explainers(keys, model, method_kwargs=None):
    """The explainers of ``keys`` for ``model`` from ``method_kwargs`` (:func:`preset_arguments`;
    None: the presets now), without progress bars (the run shows its own)."""
    from .. import registry

    method_kwargs = preset_arguments(keys) if method_kwargs is None else method_kwargs
    out = {}
    for k in keys:
        try:
            out[k] = registry.create_explainer(k, model, **{**method_kwargs[k], "progress": False})
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
