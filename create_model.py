#!/usr/bin/env python
"""Build and train xaitf's model zoo: ``models/<name>.h5`` plus ``models/<name>.json``.

    python create_model.py                      # everything the data present allows
    python create_model.py mnist_cnn lenet      # just these
    python create_model.py --list               # the zoo: study, input shape, dataset, parameters
    python create_model.py cifar_vgg --full     # the published schedule (full data and a GPU)

With no names: ``center_pixel`` always (hand-built), the MNIST models when MNIST is found, the
CIFAR-10 models when CIFAR-10 is found; ``svhn_resnet18`` only when named (and its data present).
What is skipped, and why, is printed. Data come from ``--data-dir``, else ``$XAITF_DATA_DIR``, else
the loaders' defaults (see :mod:`xaitf.data`).

Defaults are quick CPU schedules (seconds to minutes); ``--full`` uses the studies' own schedules.
The .json records the architecture, study, parameter count, data source and split sizes, schedule,
seed, measured held-out accuracy (and the Bayesian MLP's refusal rates), training time and versions.
Both files are written atomically. Errors (unknown model, missing data, bad flag): one line on
stderr, exit code 2.
"""
import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import xaitf  # noqa: F401  (sets TF_USE_LEGACY_KERAS; imports no TensorFlow)
from xaitf.cli import positive_int
from xaitf.errors import XaitfError
from xaitf.zoo import registry

EXIT_USAGE = 2
HERE = Path(__file__).resolve().parent


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        _fail(f"{message} (see python create_model.py --help)")


def _fail(message):
    text = " ".join(str(message).split("\n")[0].split()) or "failed"
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def parse_args(argv):
    p = _Parser(prog="create_model.py", description="Build and train xaitf's model zoo.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="models: " + ", ".join(registry.names()))
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo models to build (default: all that the data allow)")
    p.add_argument("--list", action="store_true", help="print the zoo and exit")
    p.add_argument("--epochs", type=positive_int, help="override the schedule's epochs")
    p.add_argument("--batch-size", type=positive_int, help="override the schedule's batch size")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling, augmentation (default 0)")
    p.add_argument("--data-dir", help="offline data folder (default $XAITF_DATA_DIR)")
    p.add_argument("--out", default=str(HERE / "models"), help="output folder (default models/)")
    p.add_argument("--offline", action="store_true",
                   help="never try the keras.datasets download when files are missing")
    p.add_argument("--track", choices=["mlflow"], help="log training curves and metrics to MLflow")
    p.add_argument("--track-uri", help="MLflow store (default: mlruns/ beside the models folder)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip named models whose data is missing (with a message) instead of failing")
    p.add_argument("--full", action="store_true", help="published schedules instead of the quick CPU ones")
    p.add_argument("--limit", type=positive_int,
                   help="use at most N training and N test images (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress output while training")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in registry.ZOO]
    if unknown:
        _fail(f"unknown model {unknown[0]!r}; valid: {', '.join(registry.names())}")
    return args


def print_list(out=sys.stdout):
    rows = [("name", "study", "input", "dataset", "params", "output", "description")]
    for e in registry.ZOO.values():
        rows.append((e.name, str(e.study), "x".join(map(str, e.input_shape)), e.dataset or "-",
                     f"{e.params:,}", e.output, e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6], file=out)


# -- data ---------------------------------------------------------------------------------------
def load_data(dataset, data_dir, offline=False, seed=0):
    """The dataset for a zoo model; raises XaitfError (DataError) saying where it looked."""
    from xaitf import data as D

    if dataset == "svhn":
        return load_svhn(data_dir, seed=seed)
    return D.load_dataset(dataset, data_dir=data_dir, download=False if offline else None)


def load_svhn(data_dir, size=64, target_digit=1, seed=0):
    """SVHN format 1 for ``svhn_resnet18``: ``<data dir>/svhn/train`` (and ``/svhn/test``) folders.

    Each folder is an extracted ``train.tar.gz``/``test.tar.gz`` (``digitStruct.mat`` + PNGs). Label
    1 = the target digit (default 1) is present, classes balanced by undersampling, crops of the
    digits' union box (+10 px) resized to 64x64. Without a test folder, a seeded 20% of the training
    crops is held out. Returns a :class:`xaitf.data.Dataset`.
    """
    import numpy as np

    from xaitf.data import Dataset, data_dir as resolve
    from xaitf.data.svhn import load_svhn_format1
    from xaitf.errors import DataError

    folder = resolve(data_dir)
    if folder is None:
        raise DataError("cannot load svhn: no data directory (pass --data-dir DIR or set XAITF_DATA_DIR) "
                        "holding svhn/train/digitStruct.mat (SVHN format 1, extracted train.tar.gz)")
    train_dir, test_dir = folder / "svhn" / "train", folder / "svhn" / "test"
    if not (train_dir / "digitStruct.mat").is_file():
        raise DataError(f"cannot load svhn: {train_dir / 'digitStruct.mat'} not found (expected SVHN "
                        "format 1 extracted under <data dir>/svhn/train, optional svhn/test; "
                        "get it from http://ufldl.stanford.edu/housenumbers/)")
    tr = load_svhn_format1(train_dir, size=size, target_digit=target_digit, seed=seed)
    if (test_dir / "digitStruct.mat").is_file():
        te = load_svhn_format1(test_dir, size=size, target_digit=target_digit, seed=seed)
        return Dataset("svhn", tr.images, tr.labels, te.images, te.labels,
                       f"{tr.source}; test: {te.source}",
                       f"train {len(tr.labels)} / test {len(te.labels)} (SVHN format 1 train / test folders)")
    order = np.random.RandomState(seed).permutation(len(tr.labels))
    n_test = max(1, len(order) // 5)
    te_idx, tr_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Dataset("svhn", tr.images[tr_idx], tr.labels[tr_idx], tr.images[te_idx], tr.labels[te_idx],
                   tr.source, f"train {len(tr_idx)} / test {len(te_idx)} (seeded 80/20 split of "
                   f"{train_dir}; no svhn/test folder)")


def _versions():
    import numpy
    import tensorflow as tf

    v = {"python": platform.python_version(), "xaitf": xaitf.__version__, "tensorflow": tf.__version__,
         "numpy": numpy.__version__}
    try:
        import tf_keras

        v["tf_keras"] = tf_keras.__version__
    except ImportError:  # pragma: no cover
        pass
    if "tensorflow_probability" in sys.modules:   # the Bayesian MLP
        v["tensorflow_probability"] = sys.modules["tensorflow_probability"].__version__
    return v


def _device():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else f"CPU ({os.cpu_count()} logical cores)"


def write_json(path, record):
    from xaitf.cli import atomic_write

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        registry.readable(tmp)

    return atomic_write(path, write)


def make_center_pixel(args):
    from xaitf import settings as S

    g = S.GLOBAL
    kwargs = {"image_size": int(g["image_size"]), "num_classes": int(g["num_classes"]),
              "alpha": float(g["alpha"]), "relu": bool(g["relu_flag"]), "seed": 0}
    t0 = time.perf_counter()
    model = registry.build("center_pixel", **kwargs)
    metrics = registry.center_pixel_selftest(model, per_class=10, seed=args.seed)
    return model, kwargs, metrics, {"dataset": None, "source": "hand-built (study 1 formula)",
                                    "split": "self-test: 10 random images per class"}, None, \
        {"history": {}, "train_seconds": 0.0, "build_seconds": time.perf_counter() - t0}


def make_trained(name, args, data):
    from xaitf.training import fit, set_seed

    entry = registry.get(name)
    recipe = (entry.full if args.full else entry.quick).with_overrides(args.epochs, args.batch_size)
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    if args.limit:
        x_tr, y_tr, x_te, y_te = x_tr[:args.limit], y_tr[:args.limit], x_te[:args.limit], y_te[:args.limit]
    x_tr = registry.prepare_inputs(name, x_tr)
    x_te = registry.prepare_inputs(name, x_te)
    set_seed(args.seed, deterministic=True)
    kwargs = {**registry.training_kwargs(name, x_tr, seed=args.seed), **recipe.builder_kwargs}
    model = registry.build(name, **kwargs)
    print(f"{name}: training on {len(x_tr):,} {data.name} images, testing on {len(x_te):,} "
          f"({'full' if args.full else 'quick'} schedule: {recipe.epochs} epochs, batch {recipe.batch_size}, "
          f"{recipe.optimizer} lr {recipe.lr:g})", flush=True)
    from xaitf import tracking

    cbs = [] if getattr(args, "tracker", None) is None else [
        tracking.keras_callback(args.tracker, kind="tf-keras", prefix=f"{name}.", params=recipe.as_dict())]
    result = fit(model, x_tr, y_tr, recipe, validation=(x_te, y_te), seed=args.seed, label=name,
                 progress=not args.no_progress, callbacks=cbs)
    metrics = registry.evaluate(name, model, x_te, y_te, seed=args.seed)
    info = {"dataset": data.name, "source": str(getattr(data, "source", "")),
            "split": str(getattr(data, "split", "")), "train_images": int(len(x_tr)),
            "test_images": int(len(x_te)), "limit": args.limit}
    return model, kwargs, metrics, info, recipe, result


def build_one(name, args, data):
    t0 = time.perf_counter()
    if name == "center_pixel":
        model, kwargs, metrics, info, recipe, result = make_center_pixel(args)
    else:
        model, kwargs, metrics, info, recipe, result = make_trained(name, args, data)
    entry = registry.get(name)
    out = Path(args.out)
    h5 = registry.save(model, name, out / f"{name}.h5", kwargs)
    trainable = int(sum(int(w.shape.num_elements()) for w in model.trainable_weights))
    record = {
        "name": name,
        "architecture": name,
        "study": entry.study,
        "description": entry.description,
        "builder": f"xaitf.zoo.{entry.builder.replace(':', '.')}",
        "builder_kwargs": kwargs,
        "file": h5.name,
        "save_format": entry.save_format,
        "input_shape": list(entry.input_shape),
        "input_range": "[0, 1] float32 (normalisation, if any, is inside the model)",
        "output": entry.output,
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "data": info,
        "schedule": None if recipe is None else ("full" if args.full else "quick"),
        "recipe": None if recipe is None else recipe.as_dict(),
        "epochs": 0 if recipe is None else recipe.epochs,
        "batch_size": None if recipe is None else recipe.batch_size,
        "seed": args.seed,
        "test_accuracy": metrics.get("test_accuracy"),
        "metrics": metrics,
        "history": result["history"],
        "history_note": ("val_* = the held-out test split, evaluated after every epoch for monitoring "
                         "only (no early stopping or model selection)") if recipe is not None else "",
        "train_seconds": round(result["train_seconds"], 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "device": _device(),
        "versions": _versions(),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python create_model.py " + " ".join(sys.argv[1:]),
    }
    write_json(out / f"{name}.json", record)
    if getattr(args, "tracker", None) is not None:
        args.tracker.log_metrics({f"{name}.{k}": v for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
        args.tracker.log_artifact(out / f"{name}.json")
    extra = ""
    if "refused_noise_fraction" in metrics:
        extra = (f", refused {metrics['refused_test_fraction']:.1%} of test digits and "
                 f"{metrics['refused_noise_fraction']:.0%} of noise")
    what = "self-test accuracy" if recipe is None else "held-out accuracy"
    print(f"{name}: {what} {metrics['test_accuracy']:.4f}{extra}; "
          f"wrote {out / (name + '.h5')} and .json ({record['total_seconds']:.1f} s)", flush=True)
    return record


def plan(args):
    """[(name, data)] to build and [(name, reason)] skipped; fails (exit 2) for named models without data."""
    names = args.names or [n for n in registry.names() if n != "svhn_resnet18"]
    cache, todo, skipped = {}, [], []
    for name in dict.fromkeys(names):
        ds = registry.get(name).dataset
        if ds is None:
            todo.append((name, None))
            continue
        if ds not in cache:
            try:
                cache[ds] = load_data(ds, args.data_dir, args.offline, args.seed)
            except XaitfError as e:  # DataError: says where it looked
                cache[ds] = e
            except ImportError as e:
                cache[ds] = XaitfError(f"cannot load {ds}: {e}")
        if isinstance(cache[ds], Exception):
            if args.names and not args.skip_missing:
                _fail(f"{name}: {cache[ds]}")
            skipped.append((name, str(cache[ds]).splitlines()[0]))
        else:
            todo.append((name, cache[ds]))
    if not args.names:
        skipped.append(("svhn_resnet18", "only built when named (python create_model.py svhn_resnet18)"))
    return todo, skipped


def out_problem(out):
    """Why ``--out`` cannot receive the models (one line), or None."""
    d = out
    while not d.exists() and d.parent != d:
        d = d.parent
    if d == out and not out.is_dir():
        return (f"--out {out} exists and is a file, expected a folder for the models: pass another "
                "--out, or remove that file")
    if not d.is_dir():
        return f"--out {out}: {d} is a file, not a folder; pass another --out"
    if not os.access(d, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write in {d} (permission denied); pass another --out"
    return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print_list()
        return 0
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        _fail(f"--data-dir {args.data_dir}: no such folder")
    problem = out_problem(Path(args.out))   # before any training: a bad --out fails now, not after
    if problem:
        _fail(problem)
    todo, skipped = plan(args)
    for name, why in skipped:
        print(f"skipped {name}: {why}", flush=True)
    records = []
    args.tracker = None
    if args.track:
        from xaitf import tracking

        args.tracker = tracking.start_run(args.track, args.track_uri or str(Path(args.out).parent / "mlruns"),
                                          "create_model", run_name="+".join(n for n, _ in todo))
    try:
        for name, data in todo:
            records.append(build_one(name, args, data))
    finally:
        if args.tracker is not None:
            args.tracker.end("FINISHED" if len(records) == len(todo) else "FAILED")
    if records:
        print("done: " + ", ".join(f"{r['name']} {r['test_accuracy']:.4f}" for r in records), flush=True)
    return 0


def _run():
    debug = "--debug" in sys.argv[1:]
    try:
        code = main()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted; files already written are complete, the current one was not written",
              file=sys.stderr)
        raise SystemExit(130) from None
    except (XaitfError, OSError) as e:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(str(e))
    raise SystemExit(code)


if __name__ == "__main__":
    _run()
