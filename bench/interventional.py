"""Interventional graph learning (study 2): batched TF program vs a plain per-unit loop, and the floor.

Study 2's LeNet on MNIST (32x32): the causal path graph of one class is learned top-down
(``xaitf.methods.interventional.learn_graph``). Every walked layer costs ``units x samples``
interventions; the batched program caches each weight layer's input and pre-activation once and
runs only the layers after the intervened one, for many (unit, sample) pairs per call.

* **batched (hard / soft)**: ``learn_graph`` (median of ``repeats`` calls after a warm-up);
* **plain loop**: the way the study's code does it: for each parent unit, copy the weights, zero
  the unit's weights into the effect set, ``set_weights``, run the model on the samples
  (one call per unit), restore (hard interventions; the same z-test selects the units);
* **floor**: the same number of (unit, sample) evaluations as full forward passes in compiled
  chunks of 256 (the batched program runs only the tail of the model, so it can be below it).

The graph of the plain loop must equal the batched hard graph (``same_graph``).
"""
import time

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf.keras_bridge import tfk
from xaitf.methods import interventional as I

from .cases import CACHE
from .harness import Floor, measure


def _lenet(quick):
    from xaitf.data import load_dataset
    from xaitf.zoo import build_lenet

    tf.keras.utils.set_random_seed(0)
    model = build_lenet()
    try:
        ds = load_dataset("mnist", download=False)
    except Exception as e:  # noqa: BLE001 - graph learning needs real digits of the class
        raise RuntimeError(f"needs MNIST in the data directory ({e})") from e
    resize = lambda a: tf.image.resize(a.astype(np.float32) / 255.0, (32, 32)).numpy()  # noqa: E731
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "lenet_2epochs.weights.h5"
    if path.exists():
        model.load_weights(str(path))
        note = f"trained 2 epochs on MNIST rows 0-7999 (cached {path.name})"
    else:
        model.compile(tfk.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(resize(ds.x_train), ds.y_train, batch_size=64, epochs=2, verbose=0)
        model.save_weights(str(path))
        note = "trained 2 epochs on MNIST rows 0-7999"
    return model, resize(ds.x_test), ds.y_test, note


def plain_graph(model, xs, target, links_template, z=1.65, fallback=-0.001):
    """Hard-intervention graph by editing weights unit by unit (one model call per unit).

    ``links_template``: the (layer, parent) pairs to walk, top-down (from the batched graph).
    Returns [(layer, selected parents)] and the number of model calls.
    """
    chain = I.Chain(model)
    logits = tfk.Model(model.inputs, model.get_layer(chain.entries[-1].name).output)
    y_obs = np.asarray(logits(xs, training=False))[:, target].astype(np.float64)
    effects, out, calls = [target], [], 0
    for layer, _parent in links_template:
        if not effects:
            out.append((layer, []))
            continue
        k = chain.index(layer)
        lay = logits.get_layer(layer)
        w0, b0 = lay.get_weights()
        rows = chain.parent_rows(k) if w0.ndim == 2 else None
        ys = []
        for j in range(chain.n_parent_units(k)):
            w = w0.copy()
            if w.ndim == 4:
                w[:, :, j, effects] = 0
            else:
                w[np.ix_(rows[j], effects)] = 0
            lay.set_weights([w, b0])
            ys.append(np.asarray(logits(xs, training=False))[:, target])
            calls += 1
        lay.set_weights([w0, b0])
        sel = I.select_units(np.array(ys, np.float64), y_obs, z=z, fallback=fallback)["selected"]
        out.append((layer, list(sel)))
        effects = list(sel)
    return out, calls


def run(quick=False, repeats=5, target=3):
    model, x, y, weights = _lenet(quick)
    n_samples = 30 if quick else 100
    chain = I.Chain(model)
    xs = I.class_samples(chain, x, y, target, n_samples)
    learn = lambda soft: I.learn_graph(chain, x, y, target, n_samples=n_samples, soft=soft)  # noqa: E731
    g_hard, st_hard = measure(lambda: learn(False), repeats)
    g_soft, st_soft = measure(lambda: learn(True), repeats)
    template = [(lk.layer, lk.parent) for lk in g_hard.links]
    units = 0
    for lk in g_hard.links:       # interventions actually made: units of walked layers x samples
        if lk.effects:
            units += chain.n_parent_units(chain.index(lk.layer))
    evals = units * len(xs)
    t0 = time.perf_counter()
    plain, calls = plain_graph(model, xs, target, template)
    plain_s = time.perf_counter() - t0
    same = [(lk.layer, list(lk.parents)) for lk in g_hard.links] == plain
    floor = Floor(model, xs, np.full(len(xs), target), 256).time(evals, False, max(3, min(repeats, 5)))
    return {
        "model": "lenet", "target": target, "samples": int(len(xs)), "units": int(units),
        "evals": int(evals), "weights": weights, "floor_s": floor["time_s"],
        "floor_extrapolated": floor["extrapolated"], "plain_calls": calls,
        "variants": [
            {"name": "batched hard", "time_s": st_hard["time_s"], "times": st_hard["times"],
             "mem_mb": st_hard["mem_mb"], "warmup_s": st_hard["warmup_s"], "plain_s": plain_s,
             "same_graph": bool(same)},
            {"name": "batched soft", "time_s": st_soft["time_s"], "times": st_soft["times"],
             "mem_mb": st_soft["mem_mb"], "warmup_s": st_soft["warmup_s"]},
        ],
        "graph_hard": [(lk.layer, lk.parent, list(map(int, lk.parents))) for lk in g_hard.links],
        "graph_soft": [(lk.layer, lk.parent, list(map(int, lk.parents))) for lk in g_soft.links],
    }
