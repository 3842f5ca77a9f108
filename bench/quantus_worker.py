"""Runs Quantus metrics for bench/quantus_compare.py, inside Quantus' own virtualenv (bench/.venv-quantus).

Imports nothing from xaitf (Quantus 0.6.0 runs here on TensorFlow 2.15 / Keras 2). Usage::

    bench/.venv-quantus/bin/python bench/quantus_worker.py WORKDIR

WORKDIR holds ``jobs.json`` (``{"jobs": [{"id", "cls", "kwargs", "call"}...]}``), ``data.npz``
(``x`` (N,H,W,C) float32, ``y`` (N,) int, ``maps`` (N,H,W) float32, ``masks`` (N,H,W) bool) and
``model.h5`` (the same weights as ours, saved by tf-keras). Every job builds the Quantus metric
with the given keyword arguments (explicit settings: no normalisation or abs unless asked) and the
functions named in ``funcs`` (``{keyword: name}``, names in :func:`named_funcs`) or, with
``replay``, a ``perturb_func`` that replays xaitf's noise (:func:`replay_func`), calls
it once on fresh copies of the arrays (some Quantus metrics change ``a_batch`` in place) and times
the call. Writes ``results.json`` (times, versions, errors) and ``scores.npz`` (the raw scores).
"""
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def to_array(out):
    if isinstance(out, dict):    # ROAD: {percentage: mean accuracy}; MPRT: {layer: per-input scores}
        return np.array([out[k] for k in out], np.float64)
    return np.asarray(out, np.float64)


def load_model(tf, path):
    """The .h5 written by tf-keras 2.20 in the main venv; Keras 2.15 does not know InputLayer's
    newer ``optional`` argument, dropped here."""
    class InputLayer(tf.keras.layers.InputLayer):
        def __init__(self, *args, optional=False, **kwargs):
            super().__init__(*args, **kwargs)

    return tf.keras.models.load_model(path, compile=False, custom_objects={"InputLayer": InputLayer})


def ig_explainer(tf, model, steps):
    """Integrated gradients as xaitf's default ``ig``: baseline 0, midpoint rule with ``steps``
    points, gradients of the pre-softmax output of the target, summed over channels. For the
    metrics that call an explainer (the sensitivities, LocalLipschitzEstimate, MPRT, RandomLogit);
    returns (N,1,H,W)."""
    last = model.layers[-1]
    cfg = dict(last.get_config(), activation="linear", name=last.name + "_logits")

    def explain(model, inputs, targets, **kwargs):
        head = type(last).from_config(cfg)
        logits = tf.keras.Model(model.inputs, head(model.layers[-2].output))
        head.set_weights(model.layers[-1].get_weights())
        x = np.asarray(inputs, np.float32)
        first = x.ndim == 4 and x.shape[1] == 1 and x.shape[-1] != 1
        if first:
            x = np.moveaxis(x, 1, -1)
        t = tf.constant(np.asarray(targets).reshape(-1), tf.int32)
        xs = tf.constant(x)
        total = tf.zeros_like(xs)
        for k in range(steps):
            a = (k + 0.5) / steps
            with tf.GradientTape() as tape:
                xi = xs * a
                tape.watch(xi)
                out = tf.gather(logits(xi, training=False), t, batch_dims=1)
            total += tape.gradient(out, xi)
        m = (xs * total / steps).numpy().sum(-1)
        return m[:, None]

    return explain


def named_funcs(quantus, shape):
    """Functions a job may pass by name (``"funcs": {"perturb_func": "batch_gaussian_noise"}``)."""
    from quantus.functions import perturb_func, similarity_func

    def ssim_2d(a, b, batched=False, **kwargs):
        """Quantus' ``ssim`` (skimage, default 7-wide window, data_range = max - min of both
        maps) on the maps as (H,W) images: RandomLogit hands its similarity the maps flattened to
        (N, H*W), on which Quantus' own ``ssim`` is a 1-D SSIM with 7-value windows."""
        if not batched:
            return similarity_func.ssim(np.reshape(a, shape), np.reshape(b, shape), **kwargs)
        return [similarity_func.ssim(np.reshape(aa, shape), np.reshape(bb, shape), **kwargs)
                for aa, bb in zip(a, b)]

    return {"batch_gaussian_noise": perturb_func.batch_gaussian_noise, "ssim_2d": ssim_2d}


def replay_func(spec, n, n_features, data=None, batch_size=64):
    """A Quantus ``perturb_func`` that adds xaitf's noise instead of drawing its own: the noise of
    input i is ``default_rng([seed, i]).uniform(low, high, (samples, D))`` (``dist="uniform"``, as
    xaitf's ``uniform_noise``), ``.normal(mean, std, (samples, D))`` (as xaitf's ``noise``) or
    ``data[key][i]`` (``dist="stored"``: noise xaitf drew on the device and stored in the data
    file, as infidelity's), float32, D = H*W (one channel). Quantus calls it once per sample and batch
    (batches of ``batch_size`` inputs in order, samples in order): call c gets sample c % samples
    of batch c // samples; returns ``arr + sign * noise``."""
    samples, seed, sign = int(spec["samples"]), int(spec.get("seed", 0)), float(spec.get("sign", 1))
    size = (samples, n_features)
    if spec["dist"] == "stored":
        draw = list(np.asarray(data[spec["key"]])[:n])
    elif spec["dist"] == "uniform":
        draw = [np.random.default_rng([seed, i]).uniform(spec["low"], spec["high"], size) for i in range(n)]
    else:
        draw = [np.random.default_rng([seed, i]).normal(spec["mean"], spec["std"], size) for i in range(n)]
    noise = np.stack(draw).astype(np.float32)                     # (n, samples, D)
    calls = [0]

    def perturb(arr, indices=None, **kwargs):
        b, j = divmod(calls[0], samples)
        calls[0] += 1
        rows = noise[b * batch_size:b * batch_size + len(arr), j]
        assert rows.shape == arr.shape, (rows.shape, arr.shape)
        return arr + sign * rows

    return perturb


def main(workdir):
    import tensorflow as tf
    import quantus

    spec = json.load(open(os.path.join(workdir, "jobs.json")))
    data = np.load(os.path.join(workdir, "data.npz"), allow_pickle=False)
    x, y, maps, masks = data["x"], data["y"].astype(np.int64), data["maps"], data["masks"]
    model = load_model(tf, os.path.join(workdir, "model.h5"))
    versions = {"quantus": quantus.__version__, "tensorflow": tf.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0]}
    funcs = named_funcs(quantus, maps.shape[1:])
    results, scores = {}, {}
    for job in spec["jobs"]:
        n = int(job.get("n", len(x)))
        try:
            np.random.seed(int(job.get("np_seed", 0)))
            named = {k: funcs[v] for k, v in job.get("funcs", {}).items()}
            if "replay" in job:
                named["perturb_func"] = replay_func(job["replay"], n, int(np.prod(maps.shape[1:])), data)
            metric = getattr(quantus, job["cls"])(disable_warnings=True, display_progressbar=False,
                                                  **job.get("kwargs", {}), **named)
            call = dict(job.get("call", {}))
            if "explain_ig_steps" in job:
                call["explain_func"] = ig_explainer(tf, model, int(job["explain_ig_steps"]))
            # maps (N,1,H,W) and masks (N,1,H,W): channel-first like Quantus' x after it moves the
            # channel axis; x goes in channel-last with channel_first=False
            a = data[job.get("maps", "maps")][:n, None].astype(np.float32).copy()
            s = masks[:n, None].astype(np.float32).copy() if job.get("masks") else None
            t0 = time.perf_counter()
            out = metric(model=model, x_batch=x[:n].copy(), y_batch=y[:n].copy(), a_batch=a, s_batch=s,
                         channel_first=False, **call)
            dt = time.perf_counter() - t0
            scores[job["id"]] = to_array(out)
            results[job["id"]] = {"time_s": dt, "n": n, "shape": list(scores[job["id"]].shape)}
        except Exception as e:  # noqa: BLE001 - a metric failing is a result
            results[job["id"]] = {"error": f"{type(e).__name__}: {str(e)[:300]}",
                                  "trace": traceback.format_exc()[-1200:]}
        print(job["id"], results[job["id"]].get("time_s", results[job["id"]].get("error")), flush=True)
    json.dump({"versions": versions, "results": results}, open(os.path.join(workdir, "results.json"), "w"),
              indent=1)
    np.savez(os.path.join(workdir, "scores.npz"), **scores)


if __name__ == "__main__":
    main(sys.argv[1])
