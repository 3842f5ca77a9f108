"""Helpers shared by the studies (``python -m xaitf.studies <name>``).

* :func:`run_folder`: ``<out>/<study>/<YYYYmmdd-HHMMSS>/`` (a suffix ``_1``, ``_2`` ... if that
  second is taken: a previous run is never overwritten) and ``<out>/<study>/latest``, a text file
  holding the newest folder's name.
* :class:`Table`, :func:`write_report`: ``report.md`` with Markdown tables (our numbers beside the
  original study's reference numbers).
* :func:`write_json`, :func:`save_fig`: atomic writes (temp file + rename, see
  :func:`xaitf.cli.atomic_write`); NumPy values are converted to plain JSON.
* :func:`get_model`: ``<models dir>/<name>.h5`` if present, else the model built (center_pixel) or
  trained through the zoo (:mod:`xaitf.zoo.registry`, :func:`xaitf.training.fit`) with the quick
  or the full schedule; the returned info says which.
* :func:`map_panel`, :func:`rank_correlation`, :class:`Timer`, :func:`log`: small pieces the
  studies' figures and tables share.
"""
import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..cli import atomic_write
from ..errors import DataError, ModelError

DIVERGING = "RdBu_r"       # as xaitf.plotting: blue (negative) / white (0) / red (positive)


# results, figures and JSON: temporary file + rename, usual permissions (:func:`xaitf.cli.atomic_write`)
atomic = atomic_write


def log(message):
    """One progress line on stdout (flushed, so long runs show where they are)."""
    print(message, flush=True)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        return False


# -- output folder -----------------------------------------------------------------------------
def run_folder(out, study, stamp=None):
    """Create and return ``<out>/<study>/<YYYYmmdd-HHMMSS>[_k]/``; update ``<out>/<study>/latest``.

    The folder is claimed with ``mkdir`` (fails if it exists), so two runs in the same second get
    ``..._1``, ``..._2``; nothing of an earlier run is touched. ``latest`` is a one-line text file
    (the folder's name), written atomically.
    """
    base = Path(out) / study
    base.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        folder = base / (stamp if i == 0 else f"{stamp}_{i}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover
        raise OSError(f"no free run folder under {base}")
    atomic(base / "latest", lambda tmp: Path(tmp).write_text(folder.name + "\n"))
    return folder


def latest_folder(out, study):
    """The newest run folder of ``study`` under ``out`` (from its ``latest`` file), or None."""
    f = Path(out) / study / "latest"
    if not f.is_file():
        return None
    folder = f.parent / f.read_text().strip()
    return folder if folder.is_dir() else None


# -- JSON --------------------------------------------------------------------------------------
def jsonable(obj):
    """``obj`` with NumPy scalars/arrays, Paths, tuples and non-finite floats made JSON-safe
    (NaN and infinities become None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(folder, name, obj):
    """Write ``obj`` (made :func:`jsonable`) to ``<folder>/<name>.json`` atomically; returns the path."""
    path = Path(folder) / (name if name.endswith(".json") else f"{name}.json")
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_fig(fig, folder, name, dpi=None):
    """Save a matplotlib figure as ``<folder>/<name>.png`` atomically (never replacing a file)."""
    from ..plotting import save_figure

    if dpi is not None:
        fig.set_dpi(dpi)
    path = Path(folder) / (name if name.endswith(".png") else f"{name}.png")
    return save_figure(fig, path, overwrite=False)


# -- report ------------------------------------------------------------------------------------
def fmt(v, digits=4):
    """A table cell: numbers with ``digits`` significant digits, None as '-', others as str."""
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


class Table:
    """A Markdown table: ``Table(["method", "ours", "study"], rows, note="...")``.

    Cells go through :func:`fmt` unless they are already strings.
    """

    def __init__(self, columns, rows=(), note=None, digits=4):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.note = note
        self.digits = digits

    def add(self, *cells):
        self.rows.append(list(cells))

    def markdown(self):
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") if isinstance(c, str)
                                  else fmt(c, self.digits) for c in r) + " |"
                for r in self.rows]
        text = "\n".join([head, rule] + body)
        if self.note:
            text += f"\n\n{self.note}"
        return text

    def records(self):
        """The rows as a list of dicts (for the JSON twin of a table)."""
        return [dict(zip(self.columns, r)) for r in self.rows]


def _render(item):
    if item is None:
        return ""
    if isinstance(item, Table):
        return item.markdown()
    if isinstance(item, (list, tuple)):
        return "\n\n".join(_render(i) for i in item if i is not None)
    return str(item).strip()


def image_link(path, folder, alt=None):
    """Markdown image link to ``path`` relative to ``folder``."""
    rel = os.path.relpath(path, folder)
    return f"![{alt or Path(path).stem}]({rel})"


def write_report(folder, title, sections, preamble=None):
    """Write ``<folder>/report.md``; returns its path.

    Args:
        title: the ``#`` heading.
        sections: ``[(heading, content), ...]``; content is a string (Markdown), a :class:`Table`,
            or a list of those.
        preamble: optional text under the title (command, settings, timing).
    """
    parts = [f"# {title}"]
    if preamble:
        parts.append(_render(preamble))
    for heading, content in sections:
        parts.append(f"## {heading}")
        body = _render(content)
        if body:
            parts.append(body)
    text = "\n\n".join(parts) + "\n"
    return atomic(Path(folder) / "report.md", lambda tmp: Path(tmp).write_text(text))


def command_line(argv=None):
    """The command that ran, for reports."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python -m xaitf.studies " + " ".join(args)


# -- models ------------------------------------------------------------------------------------
def _file_info(path):
    """``info`` of a model loaded from ``path``, with what its ``.json`` model card (written by
    ``create_model.py``) says of its schedule, epochs, accuracy and data, when there is one."""
    info = {"source": "file", "path": str(path), "schedule": None, "epochs": None,
            "test_accuracy": None, "data": None}
    card = Path(path).with_suffix(".json")
    if card.is_file():
        try:
            rec = json.loads(card.read_text())
            info.update(schedule=rec.get("schedule"), epochs=rec.get("epochs"),
                        test_accuracy=rec.get("test_accuracy"), data=rec.get("data"))
        except (OSError, ValueError):
            pass
    return info


def get_model(name, models_dir="models", data_dir=None, quick=False, seed=0, epochs=None,
              schedule=None, save_dir=None, progress=False):
    """A zoo model for a study: loaded from ``<models_dir>/<name>.h5`` if present, else made now.

    Args:
        name: zoo name (``python create_model.py --list``).
        models_dir: where ``create_model.py`` writes models.
        data_dir: offline data folder (``--data-dir``; else ``$XAITF_DATA_DIR``).
        quick: train with the zoo's quick recipe (else ``schedule`` or the full one).
        seed: seed of initialisation and shuffling.
        epochs: override the recipe's epochs (a study's --quick uses fewer).
        schedule: "quick" or "full" to force a recipe (default: "quick" if ``quick`` else "full").
        save_dir: if given, a model trained here is saved as ``<save_dir>/<name>.h5`` (never into
            ``models_dir``: that folder belongs to ``create_model.py``).
        progress: show the training progress bar.

    Returns:
        ``(model, info)``; ``info`` has ``source`` ("file", "built" or "trained"), ``path``,
        ``schedule``, ``epochs``, ``test_accuracy`` (when known), ``data`` and ``note`` (one
        sentence for the report).
    """
    from ..zoo import registry

    entry = registry.get(name)
    path = Path(models_dir) / f"{name}.h5"
    if path.is_file():
        from ..keras_bridge import load_model

        model = load_model(path)
        info = _file_info(path)
        acc = info["test_accuracy"]
        info["note"] = (f"loaded {path}" + (f" ({info['schedule']} schedule, {info['epochs']} epochs, "
                                             f"held-out accuracy {acc:.4f} per its .json)"
                                             if acc is not None else " (no .json model card)"))
        return model, info
    if entry.dataset is None:
        from .. import settings as S

        g = S.GLOBAL
        kwargs = {"image_size": int(g["image_size"]), "num_classes": int(g["num_classes"]),
                  "alpha": float(g["alpha"]), "relu": bool(g["relu_flag"])}
        model = registry.build(name, **kwargs)
        return model, {"source": "built", "path": None, "schedule": None, "epochs": 0,
                       "test_accuracy": None, "data": None, "builder_kwargs": kwargs,
                       "note": f"built in memory (hand-built, never trained; {kwargs}); no {path}"}
    if entry.dataset == "svhn":
        raise DataError(f"no {path}: train it first with `python create_model.py {name} --data-dir DIR` "
                        "(SVHN format 1 under DIR/svhn/train)")
    from .. import data as D
    from ..training import fit, set_seed

    schedule = schedule or ("quick" if quick else "full")
    recipe = (entry.quick if schedule == "quick" else entry.full).with_overrides(epochs=epochs)
    ds = D.load_dataset(entry.dataset, data_dir=data_dir)
    x_tr = registry.prepare_inputs(name, ds.x_train)
    x_te = registry.prepare_inputs(name, ds.x_test)
    set_seed(seed)
    kwargs = {**registry.training_kwargs(name, x_tr, seed=seed), **recipe.builder_kwargs}
    model = registry.build(name, **kwargs)
    log(f"{name}: no {path}; training it now on {len(x_tr):,} {ds.name} images ({schedule} schedule, "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g})")
    result = fit(model, x_tr, ds.y_train, recipe, seed=seed, label=name, progress=progress)
    metrics = registry.evaluate(name, model, x_te, ds.y_test, seed=seed)
    saved = None
    if save_dir is not None:
        saved = str(registry.save(model, name, Path(save_dir) / f"{name}.h5", kwargs))
    acc = metrics.get("test_accuracy")
    info = {"source": "trained", "path": saved, "schedule": schedule, "epochs": recipe.epochs,
            "recipe": recipe.as_dict(), "test_accuracy": acc, "metrics": metrics,
            "train_seconds": round(result["train_seconds"], 2),
            "data": {"dataset": ds.name, "source": ds.source, "split": ds.split,
                     "train_images": int(len(x_tr)), "test_images": int(len(x_te))},
            "note": (f"no {path}: trained now ({schedule} schedule, {recipe.epochs} epochs, "
                     f"{result['train_seconds']:.0f} s) on {ds.split}; held-out accuracy {acc:.4f}"
                     + (f"; saved as {saved}" if saved else ""))}
    return model, info


def load_split(name, data_dir=None):
    """The zoo model ``name``'s dataset as model inputs: ``(x_test, y_test, dataset)``."""
    from .. import data as D
    from ..zoo import registry

    entry = registry.get(name)
    if entry.dataset is None:
        raise ModelError(f"zoo model {name!r} has no dataset")
    ds = D.load_dataset(entry.dataset, data_dir=data_dir)
    return registry.prepare_inputs(name, ds.x_test), np.asarray(ds.y_test), ds


# -- numbers -----------------------------------------------------------------------------------
def rank_correlation(a, b, rel_floor=1e-9):
    """Spearman rank correlation of two maps (flattened); 1.0 for two identical constant maps,
    NaN when exactly one of them is constant.

    Values smaller than ``rel_floor`` times the map's max |value| are set to 0 first: they are
    floating-point rounding noise (far below float32's 1e-7), and ranking them would make two maps
    that agree everywhere that matters look unrelated (e.g. an occlusion map that is exactly zero
    but for the centre pixel, up to 1e-16 differences of probabilities).
    """
    from scipy.stats import spearmanr

    def clean(m):
        m = np.asarray(m, np.float64).ravel()
        top = np.abs(m).max() if m.size else 0.0
        return np.where(np.abs(m) < rel_floor * top, 0.0, m)

    a, b = clean(a), clean(b)
    ca, cb = np.ptp(a) == 0, np.ptp(b) == 0
    if ca and cb:
        return 1.0 if np.array_equal(a, b) else float("nan")
    if ca or cb:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# -- figures -----------------------------------------------------------------------------------
def map_panel(fig, ax, a, title=None, kind="map", limits=None, fontsize=8, colorbar=True,
              cmap=None):
    """Draw one panel in the style of :mod:`xaitf.plotting`.

    ``kind="map"``: diverging blue/white/red, symmetric limits ``+-max|a|`` (or ``limits``), a
    colour bar with ticks [-M, 0, M]. ``kind="input"``: gray, 0..1. Returns the image artist.
    """
    from ..plotting import symmetric_limits, _fmt

    a = np.asarray(a, np.float64)
    if kind == "input":
        im = ax.imshow(a, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ticks = [0.0, 1.0]
        labels = ["0", "1"]
    else:
        lo, hi = limits if limits is not None else symmetric_limits(a)
        im = ax.imshow(a, cmap=cmap or DIVERGING, vmin=lo, vmax=hi, interpolation="nearest")
        ticks = [lo, 0.0, hi] if lo < 0 < hi else [lo, hi]
        labels = [_fmt(t, 3) for t in ticks]
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, pad=3)
    if colorbar:
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=ticks)
        cb.ax.set_yticklabels(labels)
        cb.ax.tick_params(labelsize=6.5)
    return im


# -- helpers added for studies 3-5 (xainn, mnist_cifar, svhn_iou) ------------------------------
def get_model_subset(name, models_dir="models", data_dir=None, seed=0, schedule="quick", epochs=None,
                     train_limit=None, data=None, file_stem=None, progress=False, eval_limit=None):
    """:func:`get_model` with two extras a study's ``--quick`` and study 5 need.

    Args:
        name: zoo name (builder, recipe, input preparation).
        train_limit: train on the first ``train_limit`` training images only (None: all).
        data: a :class:`xaitf.data.Dataset` to train and evaluate on instead of the zoo entry's
            own dataset (study 5's synthetic house numbers).
        file_stem: the model file looked for, ``<models_dir>/<file_stem>.h5`` (default ``name``);
            a model trained on other data than the zoo's gets its own stem so the two never mix.
        eval_limit: measure the held-out accuracy on the first ``eval_limit`` test images only.
        schedule, epochs, seed, progress: as :func:`get_model`.

    Returns ``(model, info)`` as :func:`get_model` (``info["train_limit"]`` added when trained).
    Nothing is saved: ``models_dir`` belongs to ``create_model.py``.
    """
    from ..zoo import registry

    stem = file_stem or name
    if train_limit is None and data is None and stem == name and eval_limit is None:
        return get_model(name, models_dir, data_dir, quick=schedule == "quick", seed=seed, epochs=epochs,
                         schedule=schedule, progress=progress)
    path = Path(models_dir) / f"{stem}.h5"
    if path.is_file():
        if stem == name:
            return get_model(name, models_dir, data_dir, seed=seed, schedule=schedule)
        from ..keras_bridge import load_model

        model = load_model(path)
        return model, dict(_file_info(path), note=f"loaded {path}")
    from .. import data as D
    from ..training import fit, set_seed

    entry = registry.get(name)
    recipe = (entry.quick if schedule == "quick" else entry.full).with_overrides(epochs=epochs)
    ds = data if data is not None else D.load_dataset(entry.dataset, data_dir=data_dir)
    n_train = len(ds.x_train) if train_limit is None else min(int(train_limit), len(ds.x_train))
    x_tr = registry.prepare_inputs(name, ds.x_train[:n_train])
    y_tr = np.asarray(ds.y_train[:n_train])
    n_test = len(ds.x_test) if eval_limit is None else min(int(eval_limit), len(ds.x_test))
    x_te = registry.prepare_inputs(name, ds.x_test[:n_test])
    set_seed(seed)
    kwargs = {**registry.training_kwargs(name, x_tr, seed=seed), **recipe.builder_kwargs}
    model = registry.build(name, **kwargs)
    log(f"{name}: no {path}; training it now on {n_train:,} {ds.name} images ({schedule} schedule, "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g})")
    result = fit(model, x_tr, y_tr, recipe, seed=seed, label=name, progress=progress)
    metrics = registry.evaluate(name, model, x_te, ds.y_test[:n_test], seed=seed)
    acc = metrics.get("test_accuracy")
    subset = "" if train_limit is None else f"the first {n_train:,} training images of "
    info = {"source": "trained", "path": None, "schedule": schedule, "epochs": recipe.epochs,
            "recipe": recipe.as_dict(), "test_accuracy": acc, "metrics": metrics,
            "train_seconds": round(result["train_seconds"], 2), "train_limit": train_limit,
            "history": result["history"],
            "data": {"dataset": ds.name, "source": ds.source, "split": ds.split,
                     "train_images": int(n_train), "test_images": int(len(x_te))},
            "note": (f"no {path}: trained now ({schedule} schedule, {recipe.epochs} epochs, "
                     f"{result['train_seconds']:.0f} s) on {subset}{ds.split}; held-out accuracy "
                     f"{acc:.4f} on {len(x_te):,} test images")}
    return model, info


def class_names(dataset):
    """Class names of a dataset (MNIST digits, CIFAR-10 words) for figure labels."""
    if dataset == "cifar10":
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return [str(i) for i in range(10)]


def first_per_class(labels, per_class=1, classes=10, start=0):
    """Indices of the first ``per_class`` items of every class (in data order, from ``start``)."""
    labels = np.asarray(labels)
    out = []
    for c in range(classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[idx >= start][:per_class]
        out.extend(int(i) for i in idx)
    return np.asarray(out, np.int64)


def show_rgb(ax, image, title=None, fontsize=8):
    """An input image (H,W,3) or (H,W[,1]) in [0, 1] on ``ax`` without ticks."""
    a = np.asarray(image, np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(a, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, pad=3)


class RunStart:
    """The common start of a study run (:func:`begin_run`): ``quick``, ``seed``, ``params`` (the
    study's sizes), ``folder`` (the new run folder), ``t_start``; ``say(message)`` logs a line with
    the seconds since the start; ``seconds()`` the time so far."""

    def __init__(self, args, study, quick_overrides):
        self.t_start = time.perf_counter()
        self.quick = bool(getattr(args, "quick", False))
        self.seed = int(getattr(args, "seed", 0) or 0)
        self.params = study_params(args, study, quick_overrides)
        self.folder = run_folder(getattr(args, "out", "results"), study)
        self.say(f"{study}: {'quick' if self.quick else 'full'} run -> {self.folder}")

    def seconds(self):
        return time.perf_counter() - self.t_start

    def say(self, message):
        log(f"[{self.seconds():4.0f} s] {message}")


def begin_run(args, study, quick_overrides):
    """Start a study run: see :class:`RunStart`."""
    return RunStart(args, study, quick_overrides)


def study_params(args, study, quick_overrides):
    """A study's sizes: its settings section (``settings.SECTIONS[study]``, the full run), the
    ``quick_overrides`` when ``args.quick``, then every ``--set <study>.key=value`` of the command
    line again (an explicit override wins over --quick)."""
    from .. import settings as S

    p = S.section(study)
    if getattr(args, "quick", False):
        p.update(quick_overrides)
    for sec, key, value in getattr(args, "applied", None) or ():
        if sec == study:
            p[key] = value
    return p
