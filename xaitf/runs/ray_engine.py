"""The Ray engine of ``python -m xaitf run`` (``pip install 'xaitf[ray]'``).

One Ray actor per worker holds the model (shipped as file bytes, so cluster nodes need no shared
disk) and every explainer; the driver hands out (method, chunk) tasks and writes every result to
the store itself. Chunks are the same as in the local engine, so the maps are the same (bit for
bit in ``tests/test_runs.py``). ``ray.init(num_cpus=workers, include_dashboard=False)`` by
default, ``--address`` joins a cluster; ``--worker-gpus`` gives each worker a share of a GPU (Ray
hides GPUs otherwise). Workers get ``TF_USE_LEGACY_KERAS=1`` through ``runtime_env`` and by
importing xaitf.
"""
import hashlib
import os
from pathlib import Path

import numpy as np

from ..extras import RAY, require_extra
from .local import build_explainers, explain_chunk
from .store import StoreError

WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


class RayWorker:
    """A Ray actor: one model and every explainer, built once; explains chunks on request.

    The model arrives as file bytes (checked against its sha256), the images and targets as
    object-store arrays; the explainers are built from the driver's keyword arguments
    (``method_kwargs``, the presets with ``--set`` applied there): no settings are replayed here.
    """

    def __init__(self, model_bytes, suffix, sha256, method_kwargs, keys, x, t, safe_mode=True,
                 imports=(), import_path=None):
        import sys
        import tempfile

        for k, v in WORKER_ENV.items():
            os.environ.setdefault(k, v)
        import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
        from ..model_files import load_model

        if imports:                    # --import: the driver's folder first (a local cluster)
            from .. import cli

            if import_path and import_path not in sys.path:
                sys.path.insert(0, import_path)
            cli.import_modules(imports)
        if hashlib.sha256(model_bytes).hexdigest() != sha256:
            raise StoreError("the model bytes reached the worker damaged (sha256 differs)")
        with tempfile.TemporaryDirectory(prefix="xaitf-ray-") as d:
            path = Path(d) / f"model{suffix}"
            path.write_bytes(model_bytes)
            self.model = load_model(path, safe_mode=safe_mode)
        self.explainers = build_explainers(keys, self.model, method_kwargs)
        self.x, self.t = x, t

    def explain(self, method, a, b):
        return explain_chunk(self.explainers[method], self.x[a:b], self.t[a:b])


def run_ray(ctx, todo, x, t, write, stop, session):
    """Distribute (method, chunk) tasks over Ray actors; the driver writes every result."""
    import logging

    ray = require_extra(*RAY)
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
        actors = [Worker.remote(model_ref, ctx["model_suffix"], ctx["model_sha256"], ctx["method_kwargs"],
                                ctx["keys"], x_ref, t_ref, safe_mode=ctx.get("safe_mode", True),
                                imports=ctx.get("imports", ()), import_path=ctx.get("import_path"))
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
