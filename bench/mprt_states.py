"""MPRT on a keras.applications model against its floor: what the randomisation test costs beyond
its explanations (issue [EVAL]).

Cascading MPRT (``xaitf.metrics.model_parameter_randomisation``) explains the images on the model
and on each of its L randomised states. Its floor here is L + 1 calls of one warmed explainer on
the unchanged model: the explanations alone. The ratio is what the metric adds: copying the model,
randomising layers, each explainer noticing new weights (native LRP reads them into its graph's
variables; before 2026-12-07 it read the graph and traced its function again per state), and the
similarities. Ours and the floor alternate (bench.harness.measure_paired). Random weights
(``weights=None``), images uniform in [0, 1]; no download.

    .venv/bin/python -m bench.mprt_states --model MobileNetV2 --size 96 --n 4 \\
        --methods grad lrp.epsilon lrp.alpha_2_beta_1 --out bench/results-mprt-states

Writes OUT.json and OUT.md and prints the table.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="MobileNetV2", help="a keras.applications class (Keras 3), weights=None")
    ap.add_argument("--size", type=int, default=96, help="input side in pixels")
    ap.add_argument("--n", type=int, default=4, help="images")
    ap.add_argument("--methods", nargs="+", default=["grad", "lrp.epsilon", "lrp.alpha_2_beta_1"])
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds after the warm-up")
    ap.add_argument("--out", default=str(HERE / "results-mprt-states"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    import xaitf
    import keras
    import tensorflow as tf

    from bench.harness import load_average, measure_paired
    from xaitf.metrics.randomisation import model_parameter_randomisation, randomisable_layers

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, args.model)(weights=None, input_shape=(args.size, args.size, 3))
    x = np.random.default_rng(0).uniform(0, 1, (args.n, args.size, args.size, 3)).astype(np.float32)
    t = np.arange(args.n) % int(model.outputs[0].shape[-1])
    states = len(randomisable_layers(model))
    rows = []
    for name in args.methods:
        explain = xaitf.create_explainer(name, model, progress=False)

        def floor():
            t0 = time.perf_counter()
            for _ in range(states + 1):
                explain(x, t)
            return time.perf_counter() - t0

        def ours():
            return model_parameter_randomisation(model, x, t, name, similarities=("spearman",), progress=False)

        _, st = measure_paired(ours, floor, args.repeats)
        rows.append({"method": name, "states": states, "mprt_s": st["time_s"], "floor_s": st["floor_s"],
                     "ratio": st["ratio"], "repeats": st["repeats"]})
        print(f"{name}: MPRT {st['time_s']:.2f}s floor {st['floor_s']:.2f}s ratio {st['ratio']:.2f}", flush=True)
    meta = {"model": args.model, "size": args.size, "n": args.n, "tensorflow": tf.__version__,
            "keras": keras.__version__, "load_average": load_average(), "date": time.strftime("%Y-%m-%d"),
            "rows": rows}
    lines = [f"# MPRT against L + 1 explanations: Keras 3 {args.model} (weights=None), {args.n} images "
             f"at {args.size}x{args.size}, {states} randomised layers", "",
             "| method | MPRT s | floor s | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['mprt_s']:.2f} | {r['floor_s']:.2f} | {r['ratio']:.2f}x |" for r in rows]
    lines += ["", f"Floor: {states + 1} calls of one warmed explainer on the unchanged model. Ratio: median of "
              f"per-round ratios (ours and the floor alternating). {meta['date']}, load average at the end "
              f"{meta['load_average']}."]
    Path(args.out + ".json").write_text(json.dumps(meta, indent=1))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
