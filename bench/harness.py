"""Measurement pieces of the benchmark: timing, peak memory, the floor, map agreement.

* :func:`measure`: one warm-up call, then the median wall time of ``repeats`` calls; during each
  timed call a thread samples the process's resident memory (``/proc/self/statm``) every 2 ms, and
  the peak memory of the call is the largest ``peak RSS - RSS just before the call`` over the
  repeats (on a GPU: the peak of ``tf.config.experimental.get_memory_info``). Memory the TF
  allocator kept from earlier calls can be reused, so on the CPU this is the extra memory the call
  needed, a lower bound of its working set.
* :func:`measure_paired`: ours and the floor in alternation, round by round (the machine is shared:
  the ratio is the median of the per-round ratios).
* :class:`Floor`: the same number of model evaluations as the method (forward, or forward +
  backward), as a compiled step over ``batch_size`` inputs built in advance, called once per chunk.
  Long floors are timed on a few chunks and scaled to the full count (``extrapolated``).
* :func:`pearson`: mean over maps of Pearson's r between two sets of maps.
"""
import math
import os
import statistics
import threading
import time

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf.keras_bridge import logits_model

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = float(1 << 20)


def rss_bytes():
    """Resident memory of this process in bytes (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def gpu_name():
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None


class PeakMemory:
    """Context manager: ``.delta`` = peak memory above the level at entry, in bytes (None if unknown)."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.delta = None
        self.kind = None

    def __enter__(self):
        self._gpu = gpu_name()
        if self._gpu:
            dev = self._gpu.split("device:")[-1]
            self._dev = dev
            tf.config.experimental.reset_memory_stats(dev)
            self._base = tf.config.experimental.get_memory_info(dev)["current"]
            self.kind = "GPU peak (tf.config.experimental.get_memory_info)"
            return self
        self._base = rss_bytes()
        if self._base is None:
            return self
        self.kind = "RSS peak above the level before the call (sampled every 2 ms)"
        self._peak = self._base
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                r = rss_bytes()
                if r is not None and r > self._peak:
                    self._peak = r
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._gpu:
            self.delta = tf.config.experimental.get_memory_info(self._dev)["peak"] - self._base
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            r = rss_bytes()
            self.delta = max(self._peak, r or 0) - self._base
        return False


def measure(fn, repeats, warmup=True, slow=None):
    """Call ``fn`` once (warm-up: tracing, analyzer builds), then ``repeats`` timed calls.

    With ``slow`` (seconds), when the first timed call takes longer than that, it is the only one
    (the stats say ``repeats: 1``). Returns ``(result of the warm-up call, stats)``; stats: ``time_s``
    (median), ``times``, ``repeats``, ``warmup_s`` and ``mem_mb`` (the largest peak extra memory
    of the timed calls).
    """
    t0 = time.perf_counter()
    out = fn() if warmup else None
    warm = time.perf_counter() - t0
    times, peak = [], None
    for _ in range(max(1, repeats)):
        with PeakMemory() as m:
            t0 = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t0)
        if out is None:
            out = res
        if m.delta is not None:
            peak = m.delta if peak is None else max(peak, m.delta)
        if slow is not None and times[0] > slow:
            break
    return out, {"time_s": statistics.median(times), "times": [round(t, 6) for t in times],
                 "repeats": len(times), "warmup_s": round(warm, 4), "mem_mb": None if peak is None else round(peak / MB, 2)}


class Floor:
    """The floor of a method: ``total`` model evaluations (forward or forward + backward) in compiled
    chunks of ``batch_size`` over inputs built in advance.

    One compiled step per chunk (a ``tf.function`` over a constant batch); the floor of a method is
    ``chunks - 1`` full steps plus one step of the remainder. When that is more than
    ``max_steps`` steps, ``max_steps`` full steps are timed and the time is scaled to the count
    (``extrapolated``): the steps are identical, so this is the same number, measured faster.
    """

    def __init__(self, model, x, targets, batch_size, max_steps=8):
        self.fwd, _ = logits_model(model)
        self.batch_size = int(batch_size)
        self.max_steps = max_steps
        idx = np.arange(self.batch_size) % len(x)
        self.x = tf.constant(np.asarray(x)[idx], tf.float32)
        self.t = tf.constant(np.asarray(targets)[idx], tf.int32)
        self._steps = {}
        self._cache = {}

    def _step(self, backward):
        if backward not in self._steps:
            fwd = self.fwd

            @tf.function(autograph=False)
            def step(x, t):
                if not backward:
                    return tf.reduce_sum(tf.cast(fwd(x, training=False), tf.float32))
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.gather(fwd(x, training=False), t, batch_dims=1)
                return tf.reduce_sum(tape.gradient(y, x))

            self._steps[backward] = step
        return self._steps[backward]

    def runner(self, total, backward, chunk=None):
        """``(run, info)``: ``run()`` does the floor of ``total`` evaluations once (its long part on
        at most ``max_steps`` chunks) and returns its seconds, scaled to the full count.

        ``chunk``: evaluations per step when a method's steps depend on each other (an optimisation
        of N inputs runs N evaluations per step, whatever the batch size); default ``batch_size``.
        """
        total = max(1, int(round(total)))
        bs = min(self.batch_size, int(chunk)) if chunk else self.batch_size
        full, last = divmod(total, bs)
        if last == 0:
            full, last = full - 1, bs
        step = self._step(bool(backward))
        xf, tf_ = self.x[:bs], self.t[:bs]
        xl, tl = self.x[:last], self.t[:last]
        timed_full = min(full, self.max_steps)

        def run():
            t0 = time.perf_counter()
            step(xl, tl).numpy()
            t_last = time.perf_counter() - t0
            if not timed_full:
                return t_last
            t0 = time.perf_counter()
            r = None
            for _ in range(timed_full):
                r = step(xf, tf_)
            r.numpy()
            return t_last + (time.perf_counter() - t0) * full / timed_full

        return run, {"chunks": full + 1, "chunk": bs, "extrapolated": timed_full < full, "total_evals": total}

    def time(self, total, backward, repeats):
        """Seconds for ``total`` evaluations: dict(time_s, chunks, extrapolated, mem_mb)."""
        total = max(1, int(round(total)))
        key = (total, bool(backward))
        if key in self._cache:
            return self._cache[key]
        run, info = self.runner(total, backward)
        run()                                       # warm-up (tracing)
        times, mem = [], None
        for _ in range(max(1, repeats)):
            with PeakMemory() as m:
                times.append(run())
            if m.delta is not None:
                mem = max(mem or 0, m.delta)
        res = {"time_s": statistics.median(times), "mem_mb": None if mem is None else round(mem / MB, 2),
               **info}
        self._cache[key] = res
        return res


def measure_paired(fn, floor_run, repeats, slow=None, min_seconds=0.0, max_rounds=None):
    """Ours and its floor in alternation: warm-up both, then ``repeats`` rounds of (ours, floor).

    On a shared machine the load changes within seconds; timing the two side by side, round by
    round, gives both the same conditions. Short calls get more rounds: rounds go on until ours
    has run ``min_seconds`` in all (at most ``max_rounds``, default ``10 * repeats``), so a 10 ms
    row is a median of dozens of ratios, not of a handful. Returns ``(result of the warm-up call,
    stats)`` like :func:`measure`, plus ``floor_s`` (median floor), ``floor_times`` and ``ratio``
    (median of the per-round ratios ours / floor).
    """
    max_rounds = max(repeats, max_rounds or 10 * repeats)
    t0 = time.perf_counter()
    out = fn()
    warm = time.perf_counter() - t0
    floor_run()
    times, ftimes, peak = [], [], None
    while len(times) < max(1, repeats) or (sum(times) < min_seconds and len(times) < max_rounds):
        with PeakMemory() as m:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if m.delta is not None:
            peak = m.delta if peak is None else max(peak, m.delta)
        ftimes.append(floor_run())
        if slow is not None and times[0] > slow:
            break
    return out, {"time_s": statistics.median(times), "times": [round(t, 6) for t in times],
                 "repeats": len(times), "warmup_s": round(warm, 4),
                 "mem_mb": None if peak is None else round(peak / MB, 2),
                 "floor_s": statistics.median(ftimes), "floor_times": [round(t, 6) for t in ftimes],
                 "ratio": statistics.median(a / b for a, b in zip(times, ftimes))}


def pearson(a, b):
    """Mean over maps of Pearson's r between ``a`` and ``b`` (N,...) (flattened per map).

    Maps that are constant in either set are skipped; None if every map is.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {a.shape} vs {b.shape}")
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    ok = den > 1e-30 * (1 + np.abs(a).max() * np.abs(b).max())
    if not ok.any():
        return None
    return float(np.mean((a * b).sum(1)[ok] / den[ok]))


def fmt_time(s):
    """Seconds as a short human string (ms below 1 s)."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
