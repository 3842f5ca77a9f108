"""Each metric of xaitf.metrics against its floor (issue [EVAL]).

The floor of a metric is the model evaluations it needs, run as compiled batched calls over
inputs made in advance (:class:`bench.harness.Floor`): forward passes for the perturbation metrics
(``N * evaluations per input``), forward + backward passes for the metrics that call an
explainer (``explanations * 64`` IG steps). Everything else a metric does (building the
perturbed inputs, ROAD's imputation solve, the similarity of maps) is what the ratio measures.
Ours and the floor run in alternation (:func:`bench.harness.measure_paired`): the ratio is the
median of per-round ratios, measured in one run. Settings: those of bench/quantus_compare.py
(256 MNIST images, the zoo's mnist_cnn, IG maps).

    XAITF_DATA_DIR=/work/shared/data .venv/bin/python -m bench.metrics_floor --model models/mnist_cnn.h5 \
        --n 256 --out bench/results-metrics-floor

Writes OUT.json and OUT.md and prints the table. ``--metrics a,b --append`` re-runs some rows and
keeps the others; the hand-written sections of an earlier OUT.md (from its first ``## `` heading on)
are kept after the regenerated table either way.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IG_STEPS = 64          # xaitf's ig default (the floor of one explanation: 64 gradient evaluations)


def rows_spec(M, xaitf, model, x, y, maps, n_layers):
    """(name, call, evaluations, backward): ``call()`` runs our metric on all inputs,
    ``evaluations`` is the number of model evaluations its algorithm needs."""
    from bench.quantus_compare import FC_RUNS, FC_SUBSET, MS_SAMPLES, PF_STEP, ROAD_PCT, RP_PATCH, RP_REGIONS

    n, h, w = maps.shape
    common = dict(batch_size=256, output="probabilities", progress=False)
    ig = xaitf.create_explainer("ig", model, progress=False)
    pct = np.array(ROAD_PCT) / 100.0
    return [
        ("pixel_flipping", lambda: M.pixel_flipping(model, x, maps, y, features_in_step=PF_STEP, **common),
         n * (h * w // PF_STEP + 1), False),
        ("region_perturbation", lambda: M.region_perturbation(
            model, x, maps, y, patch_size=RP_PATCH, regions=RP_REGIONS, layout="grid", **common),
         n * (RP_REGIONS + 1), False),
        ("deletion_curve", lambda: M.deletion_curve(model, x, maps, y, steps=20, **common), n * 21, False),
        ("insertion_curve", lambda: M.insertion_curve(model, x, maps, y, steps=20, **common), n * 21, False),
        ("faithfulness_correlation", lambda: M.faithfulness_correlation(
            model, x, maps, y, subset_size=FC_SUBSET, runs=FC_RUNS, **common), n * (FC_RUNS + 1), False),
        ("mufidelity", lambda: M.mufidelity(model, x, maps, y, nb_samples=128, **common), n * 129, False),
        ("infidelity", lambda: M.infidelity(model, x, maps, y, samples=50, **common), n * 51, False),
        ("road", lambda: M.road(model, x, maps, y, percentages=pct, **common), n * len(pct), False),
        ("model_parameter_randomisation", lambda: M.model_parameter_randomisation(
            model, x, y, "ig", similarities=("spearman",), randomisation="permute", progress=False),
         (n_layers + 1) * n * IG_STEPS, True),
        ("random_logit", lambda: M.random_logit(model, x, y, "ig", num_classes=10), 2 * n * IG_STEPS, True),
        ("max_sensitivity", lambda: M.max_sensitivity(ig, x, y, samples=MS_SAMPLES),
         n * (MS_SAMPLES + 1) * IG_STEPS, True),
        ("avg_sensitivity", lambda: M.avg_sensitivity(ig, x, y, samples=MS_SAMPLES),
         n * (MS_SAMPLES + 1) * IG_STEPS, True),
        ("local_lipschitz", lambda: M.local_lipschitz(ig, x, y, samples=MS_SAMPLES),
         n * (MS_SAMPLES + 1) * IG_STEPS, True),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the zoo's mnist_cnn .h5 (create_model.py mnist_cnn)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--metrics", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("XAITF_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--out", default=str(HERE / "results-metrics-floor"),
                    help="writes OUT.json and OUT.md (the hand-written sections of an earlier OUT.md, from "
                         "its first '## ' heading on, are kept)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of an earlier OUT.json for metrics not run now (same n); without "
                         "OUT.json, the table rows of OUT.md (same n)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    import xaitf
    import xaitf.metrics as M
    import tf_keras as k
    import tensorflow as tf

    from bench.harness import Floor, load_average, measure_paired
    from bench.report import kept_notes, merged_rows
    from bench.quantus_compare import load, one_channel
    from xaitf.metrics.randomisation import randomisable_layers

    model = one_channel(k.models.load_model(args.model, compile=False))
    x, y = load(args.n, args.data_dir)
    maps = np.asarray(xaitf.create_explainer("ig", model, progress=False)(x, y), np.float32)
    maps = maps.sum(-1) if maps.ndim == 4 else maps
    n_layers = len(randomisable_layers(model))
    floor = Floor(model, x, y, 256)
    wanted = [m for m in args.metrics.split(",") if m]
    rows = []
    for name, call, evals, backward in rows_spec(M, xaitf, model, x, y, maps, n_layers):
        if wanted and name not in wanted:
            continue
        run, info = floor.runner(evals, backward)
        _, st = measure_paired(call, run, args.repeats, slow=20.0)
        rows.append({"metric": name, "evaluations": int(evals), "backward": backward, "xaitf_s": st["time_s"],
                     "floor_s": st["floor_s"], "ratio": st["ratio"], "repeats": st["repeats"],
                     "floor_extrapolated": info["extrapolated"], "date": time.strftime("%Y-%m-%d")})
        print(f"{name}: ours {st['time_s']:.3f}s floor {st['floor_s']:.3f}s ratio {st['ratio']:.2f}", flush=True)
    if args.append:
        rows = merged_rows(args.out, args.n, rows)
    meta = {"n": args.n, "model": args.model, "tensorflow": tf.__version__, "load_average": load_average(),
            "date": time.strftime("%Y-%m-%d"), "rows": rows}
    notes = kept_notes(args.out + ".md")
    Path(args.out + ".json").write_text(json.dumps(meta, indent=1))
    text = floor_md(meta)
    Path(args.out + ".md").write_text(text + ("\n" + notes + "\n" if notes else ""))
    print(text, end="")


def floor_md(meta):
    """The generated part of OUT.md: the table of ``meta["rows"]`` (rows kept from an earlier OUT.md
    as their line) and how the floor is measured."""
    lines = [f"# xaitf metrics against their floor, {meta['n']} MNIST images (IG maps)", "",
             "| metric | model evaluations | pass | xaitf s | floor s | ratio |", "|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        if "md_row" in r:
            lines.append(r["md_row"])
            continue
        lines.append(f"| {r['metric']} | {r['evaluations']:,} | {'fwd+bwd' if r['backward'] else 'fwd'} | "
                     f"{r['xaitf_s']:.3f} | {r['floor_s']:.3f} | {r['ratio']:.2f}x |")
    dates = sorted({r.get("date", "earlier") for r in meta["rows"] if "md_row" not in r})
    kept = [r["metric"] for r in meta["rows"] if "md_row" in r]
    lines += ["", "Floor: the model evaluations the metric needs, as compiled batched calls of 256 over inputs "
              "made in advance (bench.harness.Floor; long floors timed on 8 chunks and scaled). Ratio: median "
              "of per-round ratios, ours and the floor alternating. Explainer-based rows: 64 IG gradient "
              f"evaluations per explanation. Load average at the end: {meta['load_average']}."]
    if len(dates) > 1 or kept:
        lines += ["", "Rows from several runs (`--append`): measured on " + ", ".join(dates)
                  + (f"; kept from the earlier table: {', '.join(kept)}" if kept else "") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
