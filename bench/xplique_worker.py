"""Runs Xplique methods for the benchmark, inside Xplique's own virtualenv (bench/.venv-xplique).

Imports nothing from xaitf (Xplique 2.0.2 needs TensorFlow 2.20 and Keras 3). Usage::

    bench/.venv-xplique/bin/python bench/xplique_worker.py WORKDIR

WORKDIR holds ``jobs.json`` (repeats, slow threshold, jobs), ``data.npz`` (``x``, ``onehot``, and
``seg_<job>`` segment maps), ``probs.h5`` and ``logits.h5`` (the same weights as ours, saved by
tf-keras). Each job: build the explainer, one warm-up call, then the median of ``repeats`` timed
calls (only 1 when the first takes longer than ``slow`` seconds); memory is the peak RSS above the
level before each call, sampled every 2 ms by a thread (the same measure as the main process).
Writes ``results.json`` (times, memory, versions, errors) and ``maps.npz`` (the warm-up maps).
"""
import json
import os
import statistics
import sys
import threading
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def timed_call(fn):
    peak = [rss()]
    base = peak[0]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            r = rss()
            if r > peak[0]:
                peak[0] = r
            stop.wait(0.002)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    return out, dt, (max(peak[0], rss()) - base) / float(1 << 20)


def lime_kernel(width):
    """lime_image's weights: sqrt(exp(-d^2 / width^2)), d = cosine distance of z to all-ones."""
    import tensorflow as tf

    def kernel(_inp, samples, _perturbed):
        z = tf.cast(samples, tf.float32)
        on = tf.reduce_sum(z, axis=1)
        m = tf.cast(tf.shape(z)[1], tf.float32)
        d = tf.where(on > 0, 1.0 - tf.sqrt(on / m), tf.ones_like(on))
        return tf.sqrt(tf.exp(-(d ** 2) / width ** 2))

    return kernel


def make(xp, job, models, segs):
    cls = getattr(xp.attributions, job["cls"])
    kw = {k: tuple(v) if isinstance(v, list) and k != "ref_value" else v
          for k, v in job.get("kwargs", {}).items()}
    if job["cls"] in ("Lime", "KernelShap"):
        seg = segs[job["seg"]]
        counter = {"i": 0}

        def mapping(_inp):
            import tensorflow as tf

            i = counter["i"] % len(seg)
            counter["i"] += 1
            return tf.constant(seg[i], tf.int32)

        kw["map_to_interpret_space"] = mapping
        kw["ref_value"] = np.asarray(kw["ref_value"], np.float32)
        if job["cls"] == "Lime":
            from sklearn.linear_model import Ridge

            kw["interpretable_model"] = Ridge(alpha=1.0, fit_intercept=True)
            kw["similarity_kernel"] = lime_kernel(float(kw.pop("kernel_width")))
        return cls(models[job["model"]], **kw), counter
    return cls(models[job["model"]], **kw), None


def float32_outputs(keras, model):
    """The model with a float32 output: Xplique multiplies the output by float32 one-hot targets
    (the center-pixel model computes its head in float64, for its 1e-5-scale differences)."""
    if model.outputs[0].dtype == "float32":
        return model
    return keras.Model(model.inputs, keras.ops.cast(model.outputs[0], "float32"))


def main(workdir):
    import tensorflow as tf
    import keras
    import xplique as xp

    spec = json.load(open(os.path.join(workdir, "jobs.json")))
    data = np.load(os.path.join(workdir, "data.npz"))
    x, onehot = data["x"], data["onehot"]
    models = {k: float32_outputs(keras, keras.models.load_model(os.path.join(workdir, f"{k}.h5"),
                                                                compile=False))
              for k in ("probs", "logits")}
    versions = {"xplique": xp.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                "python": sys.version.split()[0]}
    results, maps = {}, {}
    for job in spec["jobs"]:
        n = int(job["n"])
        xi, yi = tf.constant(x[:n]), tf.constant(onehot[:n])
        try:
            explainer, counter = make(xp, job, models, data)

            def call():
                if counter is not None:
                    counter["i"] = 0
                return np.asarray(explainer.explain(xi, yi))

            t0 = time.perf_counter()
            out = call()
            warm = time.perf_counter() - t0
            times, mems = [], []
            for _ in range(int(spec["repeats"])):
                _, dt, mem = timed_call(call)
                times.append(dt)
                mems.append(round(mem, 2))
                if times[0] > spec["slow"]:
                    break
            maps[job["id"]] = out.reshape(out.shape[:3] + (-1,))
            results[job["id"]] = {"time_s": statistics.median(times), "times": times, "warmup_s": warm,
                                  "mem_mb": max(mems), "repeats": len(times), "n": n}
        except Exception as e:  # noqa: BLE001 - a peer failing is a result
            results[job["id"]] = {"error": f"{type(e).__name__}: {str(e)[:300]}",
                                  "trace": traceback.format_exc()[-800:]}
        print(job["id"], results[job["id"]].get("time_s", results[job["id"]].get("error")), flush=True)
    json.dump({"versions": versions, "results": results}, open(os.path.join(workdir, "results.json"), "w"),
              indent=1)
    np.savez(os.path.join(workdir, "maps.npz"), **maps)


if __name__ == "__main__":
    main(sys.argv[1])
