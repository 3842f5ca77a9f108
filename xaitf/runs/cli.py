"""``python -m xaitf run``: dataset-scale explanations, resumable, crash-safe, optionally on Ray.

``python -m xaitf run --model models/mnist_cnn.h5 --data mnist --methods ig occlusion lrp
--limit 1000 --out results/runs/mnist_ig`` explains the first 1,000 test images with every method
and writes the maps, chunk by chunk, to ``<out>/store.h5``. Run the same command again after an
interruption and it continues where it stopped; nothing finished is computed twice.

This module holds the command line (argparse, :func:`main`) and the summary. The store's layout
and crash safety: :mod:`xaitf.runs.store`; the engines: :mod:`xaitf.runs.local`,
:mod:`xaitf.runs.ray_engine`; ``--metrics``: :mod:`xaitf.runs.metrics`; ``--track``:
:mod:`xaitf.runs.track`.
"""
import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import cli
from ..errors import XaitfError
from ..extras import MLFLOW, RAY, require_extra
from .local import (Bars, Session, StopFlag, Writer, build_explainers, explainer_settings,
                    preset_arguments,
                    plan_chunks, run_local)
from .metrics import compute_metrics, find_metric
from .ray_engine import run_ray
from .store import (FORMAT, STORE_NAME, Store, array_sha256, atomic_write, check_identity,
                    check_method_settings, file_sha256, jsonable, out_lock, versions)
from ..reports import update_index
from .report import index_entry, write_run_report
from .track import flat_params, track_session
from ..data.sources import RESIZE_CHOICES

DEFAULT_CHUNK = 32


@contextlib.contextmanager
def settings_overrides(sets, seed=None, batch_size=None):
    """Apply ``--set``/``--seed``/``--batch-size`` to xaitf.settings and undo them on exit."""
    from .. import settings as S

    saved = {name: copy.deepcopy(d) for name, d in S.SECTIONS.items()}
    try:
        yield cli.apply_sets(sets, seed=seed, batch_size=batch_size)
    finally:
        for name, d in S.SECTIONS.items():
            d.clear()
            d.update(saved[name])


# -- command line --------------------------------------------------------------------------------
def add_parser(subparsers):
    """Add the ``run`` subcommand to ``python -m xaitf``."""
    p = subparsers.add_parser(
        "run", help="explain a dataset with several methods into a resumable HDF5 store",
        description="Explain the images of a dataset with several methods and write the maps to "
                    "<out>/store.h5, chunk by chunk. Rerun the same command after an interruption "
                    "to resume; a store made for another model, data or settings is refused.")
    p.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    p.add_argument("--data", required=True,
                   help="images: mnist, cifar10, a folder of images (class sub-folders give labels, "
                        "sorted by name; a flat folder has none), a .npz (x/images [+ y/labels], or "
                        "x_test/y_test) or .npy file, or an HDF5 dataset file.h5:/group/dataset")
    p.add_argument("--data-dir", default=None,
                   help="folder with the offline .npz files (default $XAITF_DATA_DIR)")
    p.add_argument("--split", choices=("test", "train"), default=None,
                   help="split of mnist/cifar10 or of an .npz with x_train/x_test (default test)")
    p.add_argument("--resize", choices=RESIZE_CHOICES, default="auto",
                   help="fit image sizes to the model: auto (default: the model's size as is, a zoo "
                        "model's own rule such as LeNet's 28->32, else refused), none, pad (zero-pad/"
                        "crop centred) or a filter (bilinear, bicubic, nearest, lanczos, box)")
    p.add_argument("--limit", type=cli.positive_int, default=None,
                   help="the first N images of the split (default all)")
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                   help="methods (registry keys, aliases or groups such as lrp)")
    p.add_argument("--out", default=None,
                   help="run folder (default results/runs/<model stem>-<data>)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted",
                   help="class explained: the model's prediction (default) or the true label")
    p.add_argument("--scale", type=float, default=None,
                   help="pixel values are divided by this (default 255 for integer pixels and image "
                        "files, 1 for float arrays)")
    p.add_argument("--preprocess", default=None, metavar="NAME",
                   help="the model's own input preprocessing (xaitf.data.preprocess: scale, none, "
                        "caffe, tf, torch, resnet50, vgg16, mobilenet_v2, ...), applied to the "
                        "0..255 values after the fit instead of dividing by --scale (float arrays in "
                        "[0, 1] are taken as 0..255 / 255). Default: none for a model with a "
                        "Rescaling/Normalization layer at its input that takes 0..255 values (without "
                        "--scale), else scale")
    p.add_argument("--chunk-size", type=cli.positive_int, default=None,
                   help=f"images per stored chunk (default {DEFAULT_CHUNK}, or the store's)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray (pip install 'xaitf[ray]')")
    p.add_argument("--workers", type=cli.positive_int, default=None,
                   help="Ray workers (default: the CPUs of the local Ray or of the cluster)")
    p.add_argument("--worker-gpus", type=float, default=0.0,
                   help="GPUs per Ray worker (e.g. 0.5 puts two workers on one GPU; default 0: "
                        "Ray hides GPUs from the workers)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. ray://host:10001 or auto); implies --engine ray")
    p.add_argument("--force", action="store_true",
                   help="discard an existing store in --out and start over")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="compute these xaitf.metrics (e.g. deletion_curve degradation) from the "
                        "store once every map is done")
    p.add_argument("--track", choices=("mlflow",), default=None,
                   help="log parameters, metrics and figures (pip install 'xaitf[track]')")
    p.add_argument("--track-uri", default=None,
                   help="MLflow tracking URI or folder (default <out>/mlruns, a file store)")
    p.add_argument("--experiment", default="xaitf-runs", help="MLflow experiment name")
    p.add_argument("--index-root", default=os.environ.get("XAITF_INDEX_ROOT", "results"),
                   help="results folder whose index.html lists this run (default $XAITF_INDEX_ROOT "
                        "or results/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--chunk-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests
    cli.add_model_args(p)
    cli.add_common_args(p)
    p.set_defaults(func=main)
    return p


def _write_json(path, obj):
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def main(args):
    """``python -m xaitf run``: ``args`` is the argparse namespace of :func:`add_parser`."""
    # ---- checks that need no TensorFlow ---------------------------------------------------------
    from .. import registry

    keys = registry.expand(args.methods)
    model_path = Path(args.model)
    if not model_path.is_file():
        raise cli.CliError(f"model file not found: {model_path} (build one with create_model.py)")
    from ..settings import positive_finite

    if args.scale is not None:
        args.scale = cli.check_flag("--scale", positive_finite, args.scale)   # inf: the model sees zeros
    if args.preprocess is not None:
        from ..data.preprocess import check_name

        args.preprocess = check_name(args.preprocess)
    if args.chunk_delay < 0 or args.worker_gpus < 0:
        raise cli.CliError("--chunk-delay and --worker-gpus must be >= 0")
    engine = "ray" if args.address else args.engine
    if engine == "ray":
        require_extra(*RAY)
    if args.track:
        require_extra(*MLFLOW)
    if args.metrics:
        for name in args.metrics:
            find_metric(name)
    from ..data.sources import is_builtin

    data_name = args.data if is_builtin(args.data) else Path(args.data.split(":")[0]).stem
    out = Path(args.out) if args.out else Path("results") / "runs" / f"{model_path.stem}-{data_name}"
    if out.exists() and not out.is_dir():
        raise cli.CliError(f"--out {out} exists and is not a folder")
    with settings_overrides(args.sets, seed=args.seed, batch_size=args.batch_size) as applied, out_lock(out):
        return _run(args, keys, model_path, out, engine, {(sec, key) for sec, key, _ in applied})


def _run(args, keys, model_path, out, engine, set_keys=frozenset()):
    from .. import settings as S
    from ..data.sources import load_source, source_info

    # ---- data (no TensorFlow yet): one line and nothing written when it is refused ---------------
    src = load_source(args.data, data_dir=args.data_dir, split=args.split, limit=args.limit)
    if args.limit is not None and args.limit > len(src):
        print(f"note: --limit {args.limit} > {len(src)} images in {src.name}; using {len(src)}",
              file=sys.stderr)
    n = len(src)
    if src.labels is None and args.target == "label":
        raise cli.CliError(f"--target label: {src.description} has no labels; use --target predicted")
    if src.labels is None and args.metrics:
        from .metrics import needs_labels

        wanting = [m for m in args.metrics if needs_labels(m)]
        if wanting:
            raise cli.CliError(f"--metrics {' '.join(wanting)} need true labels; {src.description} has none")
    labels = src.labels if src.labels is not None else np.full(n, -1, np.int64)
    scale = float(args.scale if args.scale is not None else src.default_scale)
    store_path = out / STORE_NAME
    model_sha = file_sha256(model_path)
    data_sha = (array_sha256(src.images, labels) if not isinstance(src.images, list)
                else array_sha256(*src.images, labels))
    meta = {
        "format": FORMAT, "model_path": str(model_path), "model_sha256": model_sha,
        "data": src.name, "split": src.split, "data_source": src.description,
        "data_split": "; ".join(src.notes) if src.kind == "builtin" else None,
        "data_kind": src.kind, "data_sha256": data_sha, "source_sha256": src.content_sha256,
        "n": n, "scale": scale, "target": args.target, "chunk": args.chunk_size or DEFAULT_CHUNK,
        "versions": versions(engine), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    # ---- an existing store: check it before any heavy work --------------------------------------
    store = None
    if store_path.exists() and not args.force:
        store = Store.open(store_path)
        if args.chunk_size is None:
            meta["chunk"] = store.chunk
        check_identity(store, meta)
    try:
        # ---- model and explainers ------------------------------------------------------------
        cli.quiet_tensorflow()
        from ..keras_bridge import input_shape
        from ..model_files import load_model

        cli.import_modules(getattr(args, "imports", ()))
        model = load_model(model_path, safe_mode=not getattr(args, "unsafe_model", False))
        shape = cli.image_input_shape(input_shape(model), model_path)
        x, policy = fit_source(args, src, shape, model_path, model)
        meta["resize"] = policy["rule"]
        meta["preprocess"] = policy.get("preprocess_name")
        meta["adapt"] = policy
        if store is not None:
            check_identity(store, meta)
        # the presets (with --set/--seed/--batch-size) become keyword arguments once, here: the
        # explainers, and the Ray workers', are built from them (no worker replays --set)
        method_kwargs = preset_arguments(keys)
        if "interventional" in method_kwargs:
            data, learned = interventional_data(lambda s: fit_source(args, s, shape, model_path, model)[0],
                                                    own=(x, src.labels), data_dir=args.data_dir)
            method_kwargs["interventional"].update(data)
            if learned:
                print(learned, file=sys.stderr)
        for k, extra in input_range_kwargs(policy.get("preprocess_name"), shape, scale, keys, set_keys).items():
            method_kwargs[k].update(extra)
        from .. import budget

        if not budget.is_center_pixel(model):   # study 1's window-1 presets: its model only
            scaled = {k: budget.unset_scaled_defaults(k, shape, set_keys) for k in keys}
            scaled = {k: v for k, v in scaled.items() if v}
            for k, v in scaled.items():
                method_kwargs[k].update(v)
            if scaled:
                print(f"window defaults scaled to the {shape[0]}x{shape[1]} input (window = stride = max(1, "
                      f"round(min(H,W)/{budget.WINDOWS_PER_SIDE})); --set wins): "
                      + "; ".join(f"{k} " + " ".join(f"{p}={x}" for p, x in v.items()) for k, v in scaled.items()),
                      file=sys.stderr)
        explainers = build_explainers(keys, model, method_kwargs)
        settings = {k: explainer_settings(e) for k, e in explainers.items()}
        if store is not None:
            for k in keys:
                check_method_settings(store, k, settings[k])
        else:
            if args.target == "label":
                targets = labels.astype(np.int64)
            else:
                bs = int(S.GLOBAL["batch_size"])
                targets = np.concatenate([np.asarray(model(x[a:b], training=False)).argmax(-1)
                                          for a, b in plan_chunks(n, bs)])
            if args.force:
                for name in ("run.json", "summary.json", "metrics.json", "overview.png", "report.md",
                             "report.html"):
                    (out / name).unlink(missing_ok=True)
            store = Store.create(store_path, meta, x, labels, targets, np.arange(n))
        x = store.array("inputs")
        t = store.array("targets")

        # ---- run.json: identity, versions and every session's command line -------------------
        run_info = _read_json(out / "run.json")
        sessions = list(run_info.get("sessions", []))
        sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "engine": engine,
                         "argv": sys.argv[1:], "methods": keys, "versions": versions(engine)})
        run_info = {**store.meta, "store": str(store_path), "sessions": sessions, "settings": settings,
                    "source": source_info(src), "adapt": policy}
        if src.files is not None:
            run_info["files"] = src.files
        _write_json(out / "run.json", run_info)

        chunks = plan_chunks(store.n, store.chunk)
        todo = [(m, a, b) for m in keys for a, b in store.pending(m, chunks)]
        done_before = {k: store.done_count(k) for k in keys}
        print(f"run: {store_path} | {src.name}{' ' + src.split if src.split else ''} {store.n} images "
              f"| model {model_path} (sha256 {model_sha[:12]}) | chunks of {store.chunk} | engine "
              f"{engine}", flush=True)
        print(f"data: {src.description}")
        print(fit_line(shape, policy, scale))
        for note in src.notes if src.kind != "builtin" else []:
            print(f"note: {note}")
        for k, e in explainers.items():
            cli.print_settings(f"{k} ({done_before[k]}/{store.n} done)", e.params,
                               batch_size=e.batch_size, seed=e.seed)
        if not todo:
            print("nothing to do: every map is done")

        tracker = None
        if args.track:
            from .. import tracking

            uri = args.track_uri or str(out / "mlruns")
            tracker = tracking.start_run(args.track, uri, args.experiment,
                                         run_name=out.name, run_id=run_info.get("mlflow_run_id"),
                                         tags={"store": str(store_path.resolve()), "engine": engine})
            if tracker.run_id != run_info.get("mlflow_run_id"):
                _write_json(out / "run.json", {**_read_json(out / "run.json"),
                                               "mlflow_run_id": tracker.run_id,
                                               "mlflow_uri": tracker.uri})
            tracker.log_params(flat_params(store.meta, settings, args))

        # ---- explain ----------------------------------------------------------------------------
        session = Session(keys)
        bars = Bars(store, enabled=bool(todo) and not args.no_progress
                    and bool(S.GLOBAL.get("progress", True)))
        write = Writer(store, settings, session, bars, delay=args.chunk_delay)
        try:
            with StopFlag() as stop:
                if todo and engine == "ray":
                    ctx = {"address": args.address, "workers": args.workers,
                           "model_bytes": model_path.read_bytes(), "model_suffix": model_path.suffix,
                           "model_sha256": model_sha, "method_kwargs": method_kwargs,
                           "keys": keys, "gpus": args.worker_gpus,
                           "safe_mode": not getattr(args, "unsafe_model", False),
                           "imports": list(getattr(args, "imports", ())), "import_path": os.getcwd()}
                    run_ray(ctx, todo, x, t, write, stop, session)
                elif todo:
                    run_local(store, explainers, todo, x, t, write, stop, session)
        except KeyboardInterrupt:
            bars.close()
            print(f"error: aborted; the store keeps every finished chunk "
                  f"({_progress_line(store, keys)}); rerun the same command to resume",
                  file=sys.stderr, flush=True)
            if tracker:
                tracker.end("KILLED")
            raise SystemExit(130) from None
        bars.close()

        # ---- summary, metrics, figure, tracking ----------------------------------------------------
        summary = _summary(store, keys, session, engine, out)
        finished = [k for k in keys if store.done_count(k) == store.n]
        complete = len(finished) == len(keys)
        metric_values = {}
        if args.metrics and finished and not session.interrupted:
            # the methods with every map (a failed method does not cost the others their scores)
            left = [k for k in keys if k not in finished]
            print("metrics" + (f" ({', '.join(left)} left out: not every map is done)" if left else "") + ":")
            metric_values = compute_metrics(store, model, finished, args.metrics,
                                            int(S.GLOBAL["batch_size"]))
            for m, vals in metric_values.items():
                print(f"  {m}: " + ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))
            _write_json(out / "metrics.json", metric_values)
        elif args.metrics:
            print("metrics: skipped (" + ("interrupted" if session.interrupted else "no method has every map done yet") + ")")
        if tracker:
            track_session(tracker, store, keys, summary, metric_values, complete, out)
        # ---- report.md / report.html, then the results index ---------------------------------
        html_path = write_run_report(out, store, keys, summary, metric_values, run_info,
                                     source_info(src), policy, getattr(args, "argv", None) or sys.argv[1:], complete)
        index = update_index(args.index_root,
                             index_entry(out, store, keys, summary, metric_values, complete))
        print(f"report: {html_path}\nindex: {index}")
    finally:
        if store is not None:
            store.close()

    if session.interrupted:
        print(f"interrupted: stopped after the current chunk ({_progress_line(store, keys)}); rerun "
              "the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if session.failures:
        raise XaitfError(f"{len(session.failures)} method(s) failed (details in {out / 'summary.json'}): "
                         + "; ".join(f"{k}: {v}" for k, v in session.failures.items()))
    return 0


def interventional_data(fit, own=None, data_dir=None):
    """Where a command line's ``interventional`` method learns its graphs: ``(kwargs, line)``, the
    keyword arguments to add (``{}`` or ``{"data": (images, labels)}``) and a line for the log (or
    None). ``--set interventional.data=SOURCE`` names a labelled image source
    (:func:`xaitf.data.sources.load_source`: mnist, an .npz with x/y, class sub-folders...), read and
    fitted by ``fit(source) -> images`` exactly as the command's own images; with neither data nor
    ``interventional.graph`` set, ``own`` = the command's ``(images, labels)`` where it has them
    (run, evaluate: study 2 learns its graphs from the split it explains)."""
    from .. import settings as S

    spec = S.INTERVENTIONAL["data"]
    if isinstance(spec, (str, os.PathLike)):
        from ..data.sources import load_source

        src = load_source(spec, data_dir=data_dir)
        if src.labels is None:
            raise cli.CliError(f"interventional.data={spec}: {src.description} has no labels; its graphs "
                           "are learned from labelled images (class sub-folders, an .npz with y)")
        count = "" if f"{len(src)} images" in src.description else f" ({len(src)} images)"
        return {"data": (fit(src), src.labels)}, f"interventional: graphs learned from {src.description}{count}"
    if spec is None and S.INTERVENTIONAL["graph"] is None and own is not None:
        if own[1] is None:
            raise cli.CliError("interventional learns a graph per class from labelled images and --data has "
                           "no labels: add --set interventional.data=SOURCE (labelled) or "
                           "interventional.graph=GRAPH.json")
        return {"data": own}, (f"interventional: graphs learned from the {len(own[1])} --data images and their "
                               "labels (as study 2 learns from the split it explains; --set "
                               "interventional.data= names others)")
    return {}, None


def fit_source(args, src, shape, model_path, model=None):
    """A source's images as model inputs under the command's flags: fitted to ``shape`` (``--resize``,
    a zoo model's own rule) and divided by ``--scale`` (default: the source's) or ``--preprocess``ed.
    Without either flag, a ``model`` with its own input preprocessing (a Rescaling or Normalization
    layer at its input: keras.applications' EfficientNet, MobileNetV3, ConvNeXt;
    :func:`xaitf.data.preprocess.model_preprocessing`) gets the 0..255 values as they are (float
    data in [0, 1] times 255), as ``heatmap_script.py`` gives it. Returns ``(x, policy)``."""
    from ..data.preprocess import model_preprocessing
    from ..data.sources import adapt, zoo_name

    scale = float(args.scale if args.scale is not None else src.default_scale)
    own = model_preprocessing(model) if model is not None and args.preprocess is None and args.scale is None \
        else None
    x, policy = adapt(src.images, shape, 1.0 if args.preprocess or own else scale, resize=args.resize,
                      zoo=zoo_name(model_path))
    if not own:
        return apply_preprocess(args, x, policy, scale)
    unit = _unit_data(x, scale)
    return (x * np.float32(255.0) if unit else x), {
        **policy, "scale": 1.0, "preprocess_name": "none",
        "preprocess": f"none: the 0..255 values as they are{' ([0, 1] data x 255)' if unit else ''}, as the "
                      f"model has its own preprocessing ({own}; --preprocess or --scale say otherwise)"}


def _unit_data(x, scale):
    """Float data in [0, 1] (a source whose values are not divided: scale 1): 0..255 / 255."""
    return bool(scale == 1.0 and x.size and x.min() >= 0 and x.max() <= 1)


def fit_line(shape, policy, scale):
    """What :func:`fit_source` did, on one line."""
    return (f"fit to the model {'x'.join(map(str, shape))}: resize {policy['resize']}; channels "
            f"{policy['channels']}; "
            + (f"preprocess {policy['preprocess']}" if policy.get("preprocess") else f"divided by {scale:g}"))


def apply_preprocess(args, x, policy, scale):
    """``--preprocess NAME``: :func:`xaitf.data.preprocess.preprocess` on the fitted images' 0..255
    values (the source's values as they are), instead of dividing by ``--scale`` (which stays the
    divisor of the name ``scale``); recorded in the policy. Returns ``(x, policy)``."""
    name = args.preprocess
    if not name:
        return x, policy
    from ..data.preprocess import check_name, describe, preprocess

    if policy["rule"].startswith("zoo:"):
        raise cli.CliError(f"--preprocess {name}: {policy['rule'][4:]} is a zoo model, which takes "
                           "[0, 1] inputs through its own rule; drop --preprocess (or pass --resize)")
    x = np.asarray(x, np.float32)
    # float data in [0, 1] (a source whose values are not divided: scale 1) are 0..255 / 255: the
    # preprocessing families take 0..255, and x / 127.5 - 1 of [0, 1] data would be ~ -1 everywhere
    unit = check_name(name) not in ("none", "scale") and _unit_data(x, scale)
    where = "the [0, 1] data x 255" if unit else "the 0..255 values"
    x = np.asarray(preprocess(x * np.float32(255.0) if unit else x, name, scale=scale), np.float32)
    return x, {**policy, "scale": 1.0, "preprocess_name": name,
               "preprocess": f"{describe(name, scale)} (xaitf.data.preprocess.preprocess on {where}, after "
                             "the fit)"}


def input_range_kwargs(name, shape, scale, keys, set_keys):
    """``{method: kwargs}`` under ``--preprocess name`` (none: {}): the preprocessed values of a black
    and a white pixel as PDA's intensities and as the z^B bounds of LRP composites
    (:func:`xaitf.registry.input_range_arguments`)."""
    if not name:
        return {}
    from .. import registry
    from ..data.preprocess import intensity_range

    rng = intensity_range(name, shape[-1], scale=scale)
    out = {k: registry.input_range_arguments(k, rng, set_keys) for k in keys}
    return {k: v for k, v in out.items() if v}


def _progress_line(store, keys):
    return ", ".join(f"{k} {store.done_count(k)}/{store.n}" for k in keys)


def _summary(store, keys, session, engine, out):
    """Print the table (images/s per method, failures) and write summary.json."""
    wall = time.perf_counter() - session.t0
    rows = {}
    for k in keys:
        done = store.done_count(k)
        total_s = float(store.seconds(k)[store.done[k]].sum()) if k in store.done else 0.0
        now_img, now_s = session.images[k], session.seconds[k]
        rows[k] = {"done": done, "n": store.n, "computed_now": now_img, "seconds_now": now_s,
                   "images_per_s_now": now_img / now_s if now_s > 0 else None,
                   "seconds_total": total_s,
                   "images_per_s_total": done / total_s if total_s > 0 else None,
                   "recomputed": int((store.computed[k] > 1).sum()) if k in store.computed else 0,
                   "failure": session.failures.get(k)}
    print(f"summary ({store.path}, {wall:.1f} s wall, engine {engine}):")
    width = max(len(k) for k in keys + ["method"])
    print(f"  {'method':<{width}}  {'done':>13}  {'this run':>8}  {'compute s':>9}  {'images/s':>9}")
    for k, r in rows.items():
        ips = r["images_per_s_now"] or r["images_per_s_total"]
        done = f"{r['done']}/{r['n']}"
        print(f"  {k:<{width}}  {done:>13}  {r['computed_now']:>8}  {r['seconds_now']:>9.2f}  "
              f"{'-' if ips is None else f'{ips:.1f}':>9}")
    for k, why in session.failures.items():
        print(f"  FAILED {k}: {why}")
    for k, count in session.nonfinite.items():
        if count:
            print(f"  warning: {k}: {count} map(s) with NaN or infinite values (stored as they are)")
    old = _read_json(out / "summary.json")
    history = list(old.get("sessions", []))
    history.append({"engine": engine, "wall_seconds": wall, "interrupted": session.interrupted,
                    "images": session.images, "seconds": session.seconds,
                    "nonfinite_maps": session.nonfinite,
                    "failures": session.failures, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
    summary = {"store": str(store.path), "n": store.n, "methods": rows, "sessions": history}
    _write_json(out / "summary.json", summary)
    return summary
