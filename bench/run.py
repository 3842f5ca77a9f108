"""Benchmark: every method against its floor and its peers, in one run.

For each (model, method): wall time (median of ``--repeats`` calls after one warm-up), the floor (the
same number of model evaluations, forward or forward+backward, as one compiled call per chunk of
``batch_size`` over inputs built in advance), the ratio to the floor, and for methods a peer also has
(iNNvestigate, tf-explain) the peer's time, our/peer ratio and the Pearson correlation of the maps
(so that a fast wrong answer cannot look good). Writes ``bench/results.json`` and ``bench/results.md``.

    python -m bench.run               # full
    python -m bench.run --quick       # a smaller run (fewer repeats/methods)
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf import registry, settings as S
from xaitf.keras_bridge import logits_model

HERE = Path(__file__).resolve().parent

# model evaluations per input and whether a backward pass is needed, from the method's params
COST = {
    "grad": lambda p: (1, True), "inpgrad": lambda p: (1, True), "gb": lambda p: (1, True),
    "deconvnet": lambda p: (1, True), "gradcam": lambda p: (1, True), "gradcampp": lambda p: (1, True),
    "deeplift": lambda p: (1, True),  # + one shared-baseline row per chunk "ig": lambda p: (p["steps"], True),
    "sg": lambda p: (p["samples"], True), "vargrad": lambda p: (p["samples"], True),
    "squaregrad": lambda p: (p["samples"], True),
}
# our method -> peers that have it (registry names of the wrappers around the peers' code)
PEERS = {
    "grad": ["inn.gradient"], "inpgrad": ["inn.input_t_gradient"], "ig": ["inn.integrated_gradients", "tfx.ig"],
    "gb": ["inn.guided_backprop"], "deconvnet": ["inn.deconvnet"], "sg": ["tfx.smoothgrad"],
    "gradcam": ["tfx.gradcam"],
}
# peers whose maps are not the same quantity as ours (documented deviations): no correlation check
PEER_NOTES = {
    "tfx.ig": "tf-explain IG omits the (x - baseline) factor",
    "tfx.smoothgrad": "tf-explain SmoothGrad differentiates a cross-entropy, noise 1.0",
    "tfx.gradcam": "tf-explain Grad-CAM applies no ReLU to its map",
}


def mnist_case(n, seed=0):
    from xaitf.zoo import build_mnist_cnn

    tf.keras.utils.set_random_seed(seed)
    model = build_mnist_cnn()
    x = mnist_images(n, seed)
    return "mnist_cnn", model, x


DATA_NOTE = {}


def mnist_images(n, seed=0):
    """Real MNIST test images from the data directory (XAITF_DATA_DIR), else seeded noise (recorded)."""
    try:
        from xaitf.data import load_dataset

        ds = load_dataset("mnist", download=False)
        DATA_NOTE["inputs"] = f"MNIST: {ds.source}"
        x = ds.x_test[:n].astype(np.float32) / 255.0
        return np.repeat(x, 3, axis=-1)
    except Exception as e:  # noqa: BLE001  - timing does not need real images, but say so
        DATA_NOTE["inputs"] = f"seeded uniform noise (no MNIST found: {str(e)[:120]})"
        return np.random.default_rng(seed).random((n, 28, 28, 3), dtype=np.float32)


def timeit(fn, repeats):
    fn()  # warm-up (tracing, analyzer build)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_fn(model, x, targets, evals_per_input, backward, batch_size):
    """Same number of evaluations as the method, in compiled chunks over inputs built in advance."""
    fwd, _ = logits_model(model)
    total = len(x) * evals_per_input
    reps = int(np.ceil(total / batch_size))
    idx = np.arange(batch_size) % len(x)
    xb = tf.constant(x[idx])
    tb = tf.constant(targets[idx])

    @tf.function(reduce_retracing=True)
    def step(xb, tb):
        if not backward:
            return fwd(xb, training=False)
        with tf.GradientTape() as tape:
            tape.watch(xb)
            y = tf.gather(fwd(xb, training=False), tb, batch_dims=1)
        return tape.gradient(y, xb)

    last = total - (reps - 1) * batch_size
    xl, tl = xb[:last], tb[:last]

    def run():
        for _ in range(reps - 1):
            step(xb, tb)
        return step(xl, tl).numpy()

    return run


def pearson(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1)) + 1e-30
    return float(np.mean((a * b).sum(1) / den))


def bench_model(name, model, x, methods, repeats, batch_size):
    rows = []
    targets = np.concatenate([np.asarray(model(x[s]).numpy().argmax(-1)) for s in
                              [slice(i, i + batch_size) for i in range(0, len(x), batch_size)]])
    for key in methods:
        if key not in COST:
            continue
        ex = registry.create_explainer(key, model, batch_size=batch_size, progress=False)
        evals, backward = COST[key](ex.params)
        ours_maps = ex(x, targets)
        t_ours = timeit(lambda: ex(x, targets), repeats)
        t_floor = timeit(floor_fn(model, x, targets, evals, backward, batch_size), repeats)
        row = {"model": name, "method": key, "n": len(x), "evals_per_input": evals,
               "backward": backward, "time_s": t_ours, "floor_s": t_floor, "ratio_floor": t_ours / t_floor,
               "peers": []}
        for peer in PEERS.get(key, []):
            try:
                pex = registry.create_explainer(peer, model, batch_size=batch_size, progress=False,
                                                **peer_params(key, peer, ex.params))
                pmaps = pex(x, targets)
                t_peer = timeit(lambda: pex(x, targets), repeats)
                row["peers"].append({"peer": peer, "time_s": t_peer, "ratio": t_ours / t_peer,
                                     "pearson": None if peer in PEER_NOTES else pearson(ours_maps, pmaps),
                                     "note": PEER_NOTES.get(peer, "")})
            except Exception as e:  # noqa: BLE001  (a peer failing is a result, not a crash)
                row["peers"].append({"peer": peer, "error": f"{type(e).__name__}: {str(e)[:200]}"})
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


def peer_params(key, peer, params):
    """The same hyperparameters for the peer where it has them."""
    if peer in ("inn.integrated_gradients", "tfx.ig"):
        return {"steps": params["steps"]}
    if peer == "tfx.smoothgrad":
        return {"samples": params["samples"]}
    return {}


def format_row(r):
    peers = "; ".join(
        f"{p['peer']}: " + (f"{p['time_s'] * 1e3:.1f} ms, ours/peer {p['ratio']:.2f}"
                            + (f", r={p['pearson']:.4f}" if p.get("pearson") is not None else
                               f" ({p['note']})" if p.get("note") else "")
                            if "time_s" in p else p["error"])
        for p in r["peers"])
    return (f"| {r['model']} | {r['method']} | {r['n']} | {r['evals_per_input']}{' (f+b)' if r['backward'] else ''} "
            f"| {r['time_s'] * 1e3:.1f} | {r['floor_s'] * 1e3:.1f} | {r['ratio_floor']:.2f} | {peers} |")


HEADER = ("| model | method | N | evals/input | ours (ms) | floor (ms) | ours/floor | peers |\n"
          "|---|---|---|---|---|---|---|---|")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    methods = args.methods or [m for m in registry.list_methods() if m in COST]
    n = 64 if args.quick else 256
    print(HEADER)
    name, model, x = mnist_case(n)
    rows = bench_model(name, model, x, methods, repeats, S.GLOBAL["batch_size"])
    info = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "tensorflow": tf.__version__, "devices": [d.name for d in tf.config.list_logical_devices()],
            "command": "python -m bench.run" + (" --quick" if args.quick else ""),
            "repeats": repeats, "batch_size": S.GLOBAL["batch_size"], **DATA_NOTE,
            "model_weights": "untrained, seeded (timing and peer agreement do not need training)"}
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    os.replace(tmp, out)
    md = out.with_suffix(".md")
    md.write_text(f"Command: `{info['command']}`; {info['machine']}, {info['cpus']} CPUs, TF {info['tensorflow']}; "
                  f"inputs: {info['inputs']}\n\n"
                  + HEADER + "\n" + "\n".join(format_row(r) for r in rows) + "\n")
    print(f"wrote {out} and {md}")


if __name__ == "__main__":
    main()
