"""Keras 3 grouped convolutions: the model as Keras runs it (XLA for every grouped Conv2D) against
xaitf's runner of the same function (:mod:`xaitf.grouped_conv`), in alternation in one run.

Rows: one compiled forward pass and one input gradient of a batch, through the model and through
the runner; a keras.applications ConvNeXtTiny (``weights=None``) at 224x224 and a stack of six
ConvNeXt-size depthwise 7x7 layers (56x56x96) written as grouped Conv2D. The ratio is the median
of per-round ratios model / runner.

    .venv/bin/python -m bench.grouped_conv --out bench/results-grouped-conv

Writes OUT.json and OUT.md and prints the table.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _models(keras):
    inp = keras.Input((56, 56, 96))
    h = inp
    for i in range(6):
        h = keras.layers.Conv2D(96, 7, padding="same", groups=96, name=f"dw{i}")(h)
    stack = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h)))
    convnext = keras.applications.ConvNeXtTiny(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    return [("six grouped 7x7 layers, 56x56x96", stack), ("ConvNeXtTiny 224x224", convnext)]


def _compiled(tf, f, backward):
    @tf.function
    def run(x):
        if not backward:
            return f(x, training=False)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(f(x, training=False)[:, 0])
        return tape.gradient(y, x)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results-grouped-conv"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    import xaitf  # noqa: F401
    import tensorflow as tf
    from bench.harness import measure_paired
    from xaitf.grouped_conv import runner
    from xaitf.keras_bridge import input_shape, keras3

    rows = []
    for name, model in _models(keras3()):
        fast = runner(model)
        assert fast is not model, name
        x = tf.constant(np.random.default_rng(0).random((args.n, *input_shape(model)), dtype=np.float32))
        for what, backward in (("forward", False), ("gradient", True)):
            keras_fn, ours_fn = _compiled(tf, model, backward), _compiled(tf, fast, backward)

            def floor_run(fn=ours_fn):
                t0 = time.perf_counter()
                fn(x).numpy()
                return time.perf_counter() - t0

            ref, stats = measure_paired(lambda fn=keras_fn: fn(x).numpy(), floor_run, args.repeats)
            diff = float(np.abs(ours_fn(x).numpy() - ref).max() / max(np.abs(ref).max(), 1e-30))
            rows.append({"model": name, "pass": what, "images": args.n, "keras_s": round(stats["time_s"], 4),
                         "runner_s": round(stats["floor_s"], 4), "keras_over_runner": round(stats["ratio"], 2),
                         "max_rel_diff": diff})
            print(rows[-1], flush=True)
    table = ["| model | pass | Keras (s) | runner (s) | Keras / runner | max rel. difference |", "|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['pass']} | {r['keras_s']:.3f} | {r['runner_s']:.3f} | {r['keras_over_runner']:.1f}x "
              f"| {r['max_rel_diff']:.1e} |" for r in rows]
    text = "\n".join(table)
    print(text)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "n": args.n, "repeats": args.repeats}, indent=1))
    out.with_suffix(".md").write_text(f"# Keras 3 grouped convolutions: Keras vs xaitf's runner\n\n{args.n} images, "
                                      f"median of {args.repeats} rounds in alternation (`python -m bench.grouped_conv`)."
                                      f"\n\n{text}\n")


if __name__ == "__main__":
    main()
