"""``python -m xaitf evaluate``: score methods with metrics on a dataset (:func:`xaitf.evaluate`).

Writes into ``--out`` (a new folder is filled beside it and renamed into place, so a failed run
leaves nothing): ``metrics.csv`` (the tidy table), ``summary.json`` (mean, std, n per method and
metric), ``report.md`` / ``report.html`` (the summary table, the settings and versions) and, when
``mprt`` is asked for, ``randomisation.png`` (methods x randomised layers, the first image).
"""
import ast
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import cli
from .data.sources import RESIZE_CHOICES
from .errors import ModelError

#: the metrics that explain randomised copies of the model (a new model: its programs are traced)
RANDOMISED = ("mprt", "mprt_independent")


def add_parser(subparsers):
    from .evaluation import METRICS

    p = subparsers.add_parser(
        "evaluate", help="score explanation methods with faithfulness, robustness, randomisation, "
                         "complexity and localisation metrics",
        description="Explain images with each method and score the maps with each metric "
                    f"(xaitf.evaluate). Metrics: {', '.join(METRICS)}.")
    p.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    p.add_argument("--data", required=True,
                   help="images: mnist, cifar10, an image folder, a .npz/.npy file or file.h5:/dataset "
                        "(as python -m xaitf run)")
    p.add_argument("--data-dir", default=None, help="folder with the offline .npz files (default $XAITF_DATA_DIR)")
    p.add_argument("--split", choices=("test", "train"), default=None, help="split (default test)")
    p.add_argument("--limit", type=cli.positive_int, default=64, help="the first N images (default 64)")
    p.add_argument("--resize", choices=RESIZE_CHOICES, default="auto", help="fit image sizes to the model")
    p.add_argument("--scale", type=float, default=None, help="pixel values are divided by this")
    p.add_argument("--preprocess", default=None, metavar="NAME",
                   help="the model's own input preprocessing, as run's (default: none for a model with a "
                        "Rescaling/Normalization layer at its input that takes 0..255 values, else divide by "
                        "--scale)")
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD", help="methods (registry keys)")
    p.add_argument("--metrics", nargs="+", required=True, metavar="METRIC", help="metrics of xaitf.evaluate")
    p.add_argument("--metric-set", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's keyword, e.g. pixel_flipping.features_in_step=28 (repeatable)")
    p.add_argument("--masks", default=None,
                   help="ground-truth masks for the localisation metrics: .npy (N,H,W) or .npz with 'masks'")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted",
                   help="class explained and scored (default: the prediction)")
    p.add_argument("--out", default=None, help="output folder (default results/evaluate/<model>-<data>)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    cli.add_model_args(p)
    p.add_argument("--budget", type=cli.budget_seconds, default=None, metavar="DURATION",
                   help="refuse to start when the estimated time is above this: seconds or 90s / 10m / 1h "
                        "(default none: the estimate is printed, the run starts)")
    cli.add_common_args(p)
    p.set_defaults(func=main)
    return p


def parse_metric_sets(texts, metrics):
    """``["metric.key=value", ...]`` -> ``{metric: {key: value}}``; values as Python literals
    (numbers, tuples, True/None) or else strings."""
    out = {}
    for text in texts:
        head, sep, value = text.partition("=")
        metric, dot, key = head.partition(".")
        if not sep or not dot or not key:
            raise cli.CliError(f"--metric-set {text!r}: expected METRIC.KEY=VALUE")
        if metric not in metrics:
            raise cli.CliError(f"--metric-set {text!r}: {metric!r} is not among --metrics ({', '.join(metrics)})")
        try:
            v = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            v = value
        out.setdefault(metric, {})[key] = v
    return out


def _masks(path, n, shape):
    """--masks: (n, H, W) bool from a .npy array or a .npz's ``masks`` (or only) array."""
    from .errors import InputError

    p = Path(path)
    if not p.is_file():
        raise cli.CliError(f"--masks file not found: {p}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"--masks {p}: not a .npy or .npz file of masks ({cli.one_line(e)})") from None
    if hasattr(loaded, "files"):                     # .npz: its 'masks', or its only array
        with loaded:
            if "masks" not in loaded.files and len(loaded.files) != 1:
                raise InputError(f"--masks {p}: expected an array named 'masks' (or a single array), "
                                 f"found {', '.join(loaded.files) or 'none'}")
            m = np.asarray(loaded["masks" if "masks" in loaded.files else loaded.files[0]])
    else:
        m = np.asarray(loaded)
    if m.ndim != 3 or m.shape[0] < n or tuple(m.shape[1:]) != tuple(shape):
        raise InputError(f"--masks {p}: expected (N>={n}, {shape[0]}, {shape[1]}) masks, got {m.shape}")
    return m[:n].astype(bool)


def main(args):
    from . import registry
    from .evaluation import METRICS, metric_function

    for name in args.metrics:
        metric_function(name)
    keys = registry.expand(args.methods)
    metric_kwargs = parse_metric_sets(args.metric_set, args.metrics)
    model_path = Path(args.model)
    if not model_path.is_file():
        raise cli.CliError(f"model file not found: {model_path}")
    data_name = args.data if args.data.lower() in ("mnist", "cifar10") else Path(args.data.split(":")[0]).stem
    out = Path(args.out) if args.out else Path("results") / "evaluate" / f"{model_path.stem}-{data_name}"
    if out.exists() and not out.is_dir():
        raise cli.CliError(f"--out {out} exists and is not a folder")
    if args.masks is None and any(METRICS[m].form == "masks" for m in args.metrics):
        raise cli.CliError(f"{', '.join(m for m in args.metrics if METRICS[m].form == 'masks')} need --masks")
    set_keys = {(section, key) for section, key, _ in cli.apply_sets(args.sets, seed=args.seed,
                                                                      batch_size=args.batch_size)}
    cli.quiet_tensorflow()

    from . import settings as S
    from .data.sources import load_source
    from .evaluation import evaluate
    from .keras_bridge import input_shape
    from .model_files import load_model
    from .runs.cli import fit_line, fit_source, input_range_kwargs, interventional_data
    from .runs.local import explainer_settings

    src = load_source(args.data, data_dir=args.data_dir, split=args.split, limit=args.limit)
    cli.import_modules(args.imports)
    model = load_model(model_path, safe_mode=not args.unsafe_model)
    shape = cli.image_input_shape(input_shape(model), model_path)
    scale = float(args.scale if args.scale is not None else src.default_scale)
    x, policy = fit_source(args, src, shape, model_path, model)
    print(fit_line(shape, policy, scale), flush=True)
    if args.target == "label":
        if src.labels is None:
            raise cli.CliError(f"--target label: {src.description} has no labels")
        targets = np.asarray(src.labels, np.int64)
    else:
        targets = None
    masks = _masks(args.masks, len(x), shape[:2]) if args.masks else None
    batch_size, seed = int(S.GLOBAL["batch_size"]), int(S.GLOBAL["seed"])
    scaled, metric_kwargs = scaled_settings(model, shape, keys, set_keys, args.metrics, metric_kwargs)
    ranges = input_range_kwargs(policy.get("preprocess_name"), shape, scale, keys, set_keys)
    if "interventional" in keys:
        data, learned = interventional_data(lambda s: fit_source(args, s, shape, model_path, model)[0],
                                                own=(x, src.labels), data_dir=args.data_dir)
        ranges.setdefault("interventional", {}).update(data)
        if learned:
            print(learned, flush=True)
    # a method that cannot handle this model (ModelError) is left out, in one line, when others were
    # asked for (--debug stops); a bad setting stops before any work
    explainers, unbuilt = {}, {}
    for k in keys:
        try:
            explainers[k] = registry.create_from_presets(k, model, progress=False, **scaled.get(k, {}),
                                                         **ranges.get(k, {}))
        except ModelError as e:
            if not cli.leave_out(e, k, len(keys), args.debug):
                raise
            unbuilt[k] = e
    if not explainers:
        cli.fail(f"nothing to write: every method failed ({', '.join(unbuilt)}; errors above)",
                 cli.failure_code(unbuilt.values()))
    total, lines, costliest = estimate(model, explainers, args.metrics, metric_kwargs, shape, len(x), x[0])
    for line in lines:
        print(line, flush=True)
    if args.budget is not None and total is not None and total > args.budget:
        from .budget import duration

        raise cli.CliError(f"the estimate {duration(total)} is above --budget {duration(args.budget)[1:]}; "
                           f"the costliest part: {costliest}: lower its settings (--metric-set, --set) or "
                           "drop it (--budget none runs it anyway)")
    t0 = time.perf_counter()
    run_kwargs = {k: dict(v) for k, v in metric_kwargs.items()}
    if "mprt" in args.metrics:       # the figure's maps (first image) come from the same run
        run_kwargs.setdefault("mprt", {}).setdefault("return_maps", 1)
    table = evaluate(model, x, targets, explainers, args.metrics, masks=masks, batch_size=batch_size,
                     seed=seed, metric_kwargs=run_kwargs, progress=not args.no_progress, keep_on_interrupt=True,
                     keep_going=not args.debug)
    wall = time.perf_counter() - t0
    failed = {("{} x {}".format(*p) if p[1] else p[0]): e for p, e in table.failed.items()}
    for part, e in failed.items():      # one line each; the other pairs are written below
        print(f"error: {cli.error_text(e, part)}", file=sys.stderr, flush=True)
    failed = {**unbuilt, **failed}
    if table.interrupted and not table.rows:
        raise KeyboardInterrupt
    if not table.rows:
        cli.fail(f"nothing to write: every method or pair failed ({', '.join(failed)}; errors above)",
                 cli.failure_code(failed.values()))
    summary = table.summary()
    pairs = [(k, m) for k in keys for m in args.metrics]
    done = [p for p in pairs if p in table.results]
    interrupted = None
    if table.interrupted:
        interrupted = {"at": "{} x {}".format(*table.interrupted),
                       "not_run": ["{} x {}".format(*p) for p in pairs if p not in table.results]}
        print(f"interrupted (Ctrl-C) at {interrupted['at']}: writing the {len(done)} finished pairs of "
              f"{len(pairs)}", file=sys.stderr, flush=True)

    print(f"{len(x)} images of {src.description}; {len(keys)} methods x {len(args.metrics)} metrics "
          f"in {wall:.1f} s")
    for (method, metric, detail), (mean, std, n) in summary.items():
        print(f"  {method:<24} {metric + (' ' + detail if detail else ''):<36} {mean:.4g} +- {std:.3g} (n={n})")

    # ---- write into a fresh folder, then move it into place ------------------------------------
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        table.to_csv(tmp / "metrics.csv")
        info = {"model": str(model_path), "data": src.description, "n": len(x), "methods": keys,
                "metrics": args.metrics, "metric_kwargs": metric_kwargs, "batch_size": batch_size,
                "seed": seed, "target": args.target, "adapt": policy, "seconds": wall,
                "method_defaults_scaled": scaled, "method_settings": {k: explainer_settings(e) for k, e in
                                                                      explainers.items()},
                "estimate_seconds": total, "interrupted": interrupted,
                "failed": {part: f"{type(e).__name__}: {cli.one_line(e)}" for part, e in failed.items()},
                "summary": [{"method": m, "metric": k, "detail": d, "mean": a, "std": s, "n": n}
                            for (m, k, d), (a, s, n) in summary.items()]}
        (tmp / "summary.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        figure = None
        mprt = {label: table.results[(label, "mprt")] for label in explainers if (label, "mprt") in table.results}
        if mprt:
            figure = randomisation_figure(mprt, tmp / "randomisation.png", len(x))
        write_report(tmp, info, summary, figure, argv=sys.argv)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out / 'metrics.csv'}, {out / 'report.html'}")
    if interrupted:
        print(f"error: interrupted; {len(done)} of {len(pairs)} pairs written; not run: "
              f"{', '.join(interrupted['not_run'])}", file=sys.stderr)
        return 130
    if failed:
        cli.fail(f"{len(failed)} failed ({', '.join(failed)}; errors above); {len(done)} of {len(pairs)} pairs "
                 "written", cli.failure_code(failed.values()))
    return 0


def scaled_settings(model, shape, keys, set_keys, metrics, metric_kwargs):
    """The input-scaled defaults of the window methods (as ``python -m xaitf run``; not for study
    1's center-pixel model) and of the metrics (:func:`xaitf.evaluation.metric_scaled_defaults`), less
    what ``--set`` / ``--metric-set`` gave; prints what was scaled. Returns ``(method kwargs,
    metric kwargs with the scaled defaults added)``."""
    from . import budget
    from .evaluation import metric_scaled_defaults

    scaled = {}
    if not budget.is_center_pixel(model):
        scaled = {k: budget.unset_scaled_defaults(k, shape, set_keys) for k in keys}
        scaled = {k: v for k, v in scaled.items() if v}
    metric_kwargs = {m: dict(v) for m, v in metric_kwargs.items()}
    metric_scaled = {}
    for m in metrics:
        d = {k: v for k, v in metric_scaled_defaults(m, shape).items() if k not in metric_kwargs.get(m, {})}
        if d:
            metric_scaled[m] = d
            metric_kwargs.setdefault(m, {}).update(d)
    notes = [f"{k} " + " ".join(f"{p}={v}" for p, v in d.items()) for k, d in {**scaled, **metric_scaled}.items()]
    if notes:
        print(f"defaults scaled to the {shape[0]}x{shape[1]} input (--set / --metric-set win): " + "; ".join(notes),
              file=sys.stderr)
    return scaled, metric_kwargs


def estimate(model, explainers, metrics, metric_kwargs, shape, n, image):
    """``(seconds or None, lines, the costliest part in words)``: the run's estimate for ``n``
    images from one timed batch of the model (:func:`xaitf.budget.measure`; superpixel methods'
    segmenter timed on ``image``): per method its maps and each metric, the model evaluations per
    image (:func:`xaitf.evaluation.metric_cost`) and the time (x :data:`xaitf.budget.MARGIN`). None
    when a method has no cost model."""
    from . import budget
    from .evaluation import metric_cost
    from .metrics.randomisation import randomisable_layers

    costs = {}
    for k, ex in explainers.items():
        try:
            costs[k] = budget.cost(k, ex)
        except KeyError:
            costs[k] = None
    timing = budget.measure(model, backward=any(c and c[1] for c in costs.values()), batch=64,
                            batch_backward=16, warm=True)
    budget.measure_segmentation(explainers.values(), np.asarray(image), timing)
    host = {m: budget.metric_host_seconds(m, metric_kwargs.get(m, {}), image, n) for m in metrics}
    state = {m: budget.randomisation_state_seconds(model, image, n, metric_kwargs.get(m, {}).get("similarities"))
             for m in metrics if m in RANDOMISED}
    layers = len(randomisable_layers(model))
    parts_s = []
    ms = f"{timing['forward'] * 1e3:.3g} ms per image forward" + (
        f", {timing['backward'] * 1e3:.3g} ms forward+backward" if "backward" in timing else "")
    lines, total = [f"estimate for {n} images ({ms}, measured; x{budget.MARGIN} margin):"], 0.0
    for k, ex in explainers.items():
        maps = budget.seconds(k, ex, n, timing)[0] if costs[k] else None
        parts = [f"maps {budget.duration(maps) if maps is not None else '(no estimate)'}"]
        parts_s.append((maps or 0.0, f"{k}'s maps {budget.duration(maps)}"))
        for m in metrics:
            fwd, expl = metric_cost(m, metric_kwargs.get(m, {}), shape, layers)
            s = n * fwd * timing["forward"] * budget.MARGIN
            if expl:       # the maps traced the model's programs; a randomised copy traces them once
                s = s + budget.seconds(k, ex, n, timing, calls=expl, traced=m not in RANDOMISED)[0] \
                    if costs[k] else None
            what = [f"{fwd:,} evaluations"] if fwd else []
            what += [f"{expl} explanation{'' if expl == 1 else 's'}"] if expl else []
            if m in state:
                per = budget.state_seconds(state[m], ex)
                s = s + expl * per * budget.MARGIN if s is not None else None
                what[-1] += (f" with {per / n * 1e3:.3g} ms of similarities"
                             + (" and weight checks" if per > state[m][0] else "") + " each")
            if host[m][1] is not None:                 # work besides the model (ROAD, IROF)
                s = s + n * host[m][0] * budget.MARGIN if s is not None else None
                what += [host[m][1]]
            if not what:
                parts.append(f"{m} (no model evaluations)")
            else:
                parts.append(f"{m} {budget.duration(s) if s is not None else '(no estimate)'} "
                             f"({', '.join(what)} per image)")
                parts_s.append((s or 0.0, f"{k} x {m} {budget.duration(s)} ({', '.join(what)} per image)"))
            total = None if total is None or s is None else total + s
        total = None if total is None or maps is None else total + maps
        lines.append(f"  {k}: " + "; ".join(parts))
    lines.append(f"total {budget.duration(total) if total is not None else '(no estimate: a method has no cost model)'}")
    return total, lines, max(parts_s)[1]


def randomisation_figure(results, path, n):
    """:func:`xaitf.plotting.randomisation_figure` of the first image, every method in one figure,
    from the ``mprt`` results of the evaluation itself (no second randomisation run)."""
    from .plotting import randomisation_figure as figure, save_figure

    fig = figure(results, title="Cascading model parameter randomisation (top layer first), first image: "
                                f"|map| / max; under each map: mean similarity to the original over {n} images")
    save_figure(fig, path, overwrite=True)
    return Path(path).name


def write_report(folder, info, summary, figure, argv):
    from .reports import versions, versions_markdown, write_html_report

    lines = [f"# Evaluation: {Path(info['model']).name} on {info['data']}", "",
             f"{info['n']} images; target: {info['target']}; batch_size {info['batch_size']}; seed "
             f"{info['seed']}; {info['seconds']:.1f} s.", ""]
    if info.get("interrupted"):
        lines += [f"**INTERRUPTED** (Ctrl-C) at {info['interrupted']['at']}: the table holds the pairs "
                  f"finished before it; not run: {', '.join(info['interrupted']['not_run'])}.", ""]
    if info.get("failed"):
        lines += ["**FAILED** (not in the table):", ""] + [f"- {part}: {why}" for part, why in info["failed"].items()]
        lines += [""]
    lines += ["| method | metric | detail | mean | std | n |", "|---|---|---|---|---|---|"]
    for (method, metric, detail), (mean, std, n) in summary.items():
        lines.append(f"| {method} | {metric} | {detail} | {mean:.4g} | {std:.3g} | {n} |")
    lines += ["", "Per-image values: [metrics.csv](metrics.csv). Whether higher or lower is better, and "
              "each metric's formula, is in its docstring (`help(xaitf.metrics.<name>)`).", ""]
    if figure:
        lines += ["## Randomisation", "", f"![randomisation]({figure})", ""]
    if info.get("method_settings"):
        lines += ["## Method settings", ""]
        lines += [f"- {k}: `{cli.format_params(v['params'], batch_size=v['batch_size'], seed=v['seed'])}`"
                  for k, v in info["method_settings"].items()]
        lines += [""]
    if info["metric_kwargs"]:
        lines += ["## Metric settings", "", "```", json.dumps(info["metric_kwargs"], indent=1), "```", ""]
    lines += ["## Command", "", "```", " ".join(argv), "```", "", versions_markdown(versions())]
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    write_html_report(folder, text)
