"""Helpers shared by the studies (``python -m xaitf.studies <name>``).

* :func:`study_session`, :func:`run_folder`: write-then-move. A study writes into a hidden work
  folder ``<out>/<study>/.<YYYYmmdd-HHMMSS>[_k].partial/``; only when its ``run(args)`` has returned
  is the folder renamed to ``<YYYYmmdd-HHMMSS>[_k]`` and then, last, ``<out>/<study>/latest`` (a text
  file holding the newest folder's name) rewritten atomically. A failure (an exception, Ctrl-C)
  removes the work folder, so earlier runs and ``latest`` stay exactly as they were (with ``--debug``
  the failed run's files are kept, hidden, as ``.<stamp>.failed/`` and named on stderr). A work
  folder left by a killed process (SIGKILL, power cut) is removed by the next run of that study:
  a live run holds an ``flock`` on its work folder. Paths that a study prints (:func:`log`) or
  writes into ``results.json``/``report.md`` (:func:`write_json`, :func:`write_report`) are the
  final ones (:func:`final_paths`); report links are relative, so they survive the rename.
  :func:`xaitf.studies.run_study` is the one place that opens the session around a study.
* :class:`Table`, :func:`write_report`: ``report.md`` with Markdown tables (our numbers beside the
  original study's reference numbers), a closing "Settings and versions" section, and the same
  content as ``report.html`` beside it (:mod:`xaitf.reports`).
* :func:`write_json`, :func:`save_fig`: atomic writes (temp file + rename, see
  :func:`xaitf.cli.atomic_write`); NumPy values are converted to plain JSON.
* :func:`get_model`: ``<models dir>/<name>.h5`` if present, else the model built (center_pixel) or
  trained through the zoo (:mod:`xaitf.zoo.registry`, :func:`xaitf.training.fit`) with the quick
  or the full schedule; the returned info says which.
* :func:`map_panel`, :func:`rank_correlation`, :class:`Timer`, :func:`log`: small pieces the
  studies' figures and tables share.
"""
import contextlib
import json
import math
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import reports
from ..cli import atomic_write, fsync_dir
from ..errors import DataError, ModelError

DIVERGING = "RdBu_r"       # as xaitf.plotting: blue (negative) / white (0) / red (positive)


# results, figures and JSON: temporary file + rename, usual permissions (:func:`xaitf.cli.atomic_write`)
atomic = atomic_write


def progress_enabled():
    """The run's ``global.progress`` preset (``--set global.progress=false`` silences the bars)."""
    from .. import settings as S

    return bool(S.section("global")["progress"])


def log(message):
    """One progress line on stdout (flushed, so long runs show where they are); a path inside the
    running study's work folder is shown as its final path (:func:`final_paths`)."""
    print(final_paths(str(message)), flush=True)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        return False


# -- output folder: write, then move (see the module docstring) -------------------------------------
PARTIAL = ".partial"       # a running study's hidden work folder: .<name>.partial
FAILED = ".failed"         # a failed run's files, kept only with --debug: .<name>.failed
STALE_AFTER_S = 60         # an unlocked work folder older than this was left by a killed run

_SESSIONS = []             # the open study sessions, innermost last


class StudySession:
    """The output folder of one study run: claimed by :func:`run_folder`, published by
    :meth:`finish`, or removed by :meth:`abort`. Open it with :func:`study_session`."""

    def __init__(self, out, study, keep_failed=False):
        self.study = study
        self.base = Path(out) / study
        self.keep_failed = keep_failed
        self.work = None           # .<name>.partial while the study runs
        self.final = None          # <name>: where the folder goes when the study has finished
        self._fd = None            # flock on the work folder: a live run's folder is never removed
        self._made = []            # folders this session created (removed on failure if empty)

    def claim(self, stamp=None):
        """Create the hidden work folder; ``final`` is the name it will get. A name is free when
        neither ``<name>`` nor ``.<name>.partial`` exists (``mkdir`` claims it, so two runs in the
        same second get ``<stamp>``, ``<stamp>_1``, ...; an earlier run is never touched)."""
        if self.work is not None:
            raise RuntimeError(f"{self.study}: run_folder() was called twice in one run")
        self._made = _make_dirs(self.base)
        _remove_stale(self.base)
        stamp = stamp or datetime.now().strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            name = stamp if i == 0 else f"{stamp}_{i}"
            work = self.base / f".{name}{PARTIAL}"
            if (self.base / name).exists() or (self.base / f".{name}{FAILED}").exists():
                continue
            try:
                work.mkdir()
            except FileExistsError:
                continue
            if (self.base / name).exists():     # another run finished under this name meanwhile
                work.rmdir()
                continue
            break
        else:  # pragma: no cover
            raise OSError(f"no free run folder under {self.base}")
        self._fd = _lock_dir(work)
        self.work, self.final = work, self.base / name
        return work

    def finish(self):
        """Publish the run: rename the work folder to its final name, then rewrite ``latest``.
        Returns the final folder (None when the study claimed none)."""
        if self.work is None:
            return None
        if not (self.work / "report.md").is_file():
            raise RuntimeError(f"{self.study} ended without writing report.md; nothing was published")
        try:
            os.rename(self.work, self.final)
        except OSError as e:
            self.keep_failed = True             # the files are complete: never delete them
            raise OSError(f"could not rename {self.work} to {self.final} ({e.strerror}); the run's "
                          "files are kept (see the note above)") from None
        _fsync_dir(self.base)
        atomic(self.base / "latest", lambda tmp: Path(tmp).write_text(self.final.name + "\n"))
        _fsync_dir(self.base)
        self._unlock()
        return self.final

    def abort(self):
        """After a failure: remove the work folder (with ``keep_failed``: rename it to
        ``.<name>.failed`` and say so on stderr) and the empty folders this session made."""
        try:
            if self.work is not None and self.work.is_dir():
                if self.keep_failed:
                    kept = self.base / f".{self.final.name}{FAILED}"
                    try:
                        os.rename(self.work, kept)
                    except OSError:
                        kept = self.work
                    print(f"note: the failed run's files are kept in {kept}", file=sys.stderr, flush=True)
                else:
                    shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self._unlock()
            for d in reversed(self._made):
                try:
                    d.rmdir()
                except OSError:
                    break

    def _unlock(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def study_session(out, study, keep_failed=False):
    """``with study_session(out, study) as s: module.run(args)``: the study's :func:`run_folder`
    is a hidden work folder; when the block ends normally it is renamed into place and
    ``latest`` moves to it (``s.final``); when it raises, nothing of the run is left behind and
    the exception propagates. ``keep_failed`` (``--debug``) keeps a failed run's files hidden."""
    session = StudySession(out, study, keep_failed)
    _SESSIONS.append(session)
    try:
        try:
            yield session
            session.finish()
        except BaseException:
            session.abort()
            raise
    finally:
        _SESSIONS.remove(session)


def run_folder(out, study, stamp=None):
    """The run folder of the study running now: ``<out>/<study>/.<YYYYmmdd-HHMMSS>[_k].partial/``,
    created empty, renamed to ``<YYYYmmdd-HHMMSS>[_k]`` when the study has finished (see
    :func:`study_session`, which must be open: :func:`xaitf.studies.run_study` opens it)."""
    base = Path(out) / study
    for session in reversed(_SESSIONS):
        if session.base == base:
            return session.claim(stamp)
    raise RuntimeError(f"run_folder({str(out)!r}, {study!r}) outside a study session: run studies "
                       "through xaitf.studies.run_study (python -m xaitf.studies)")


def final_path(path):
    """``path`` with a running study's work folder replaced by its final folder."""
    return Path(final_paths(str(path)))


def final_paths(obj):
    """``obj`` (a string, Path, or JSON-like dict/list of them) with every running study's work
    folder name ``.<name>.partial`` replaced by ``<name>``: what a study records or prints refers
    to the folder as it will be once published."""
    pairs = [(s.work.name, s.final.name) for s in _SESSIONS if s.work is not None]
    if not pairs:
        return obj

    def fix(v):
        if isinstance(v, str):
            for work, final in pairs:
                v = v.replace(work, final)
            return v
        if isinstance(v, Path):
            return Path(fix(str(v)))
        if isinstance(v, dict):
            return {fix(k): fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, tuple):
            items = [fix(x) for x in v]
            return type(v)(*items) if hasattr(v, "_fields") else tuple(items)
        return v

    return fix(obj)


def _make_dirs(folder):
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    made = []
    d = Path(folder)
    while not d.exists():
        made.append(d)
        d = d.parent
    made.reverse()
    for d in made:
        try:
            d.mkdir()
        except FileExistsError:
            pass
    return made


def _lock_dir(folder):
    """An fd of ``folder`` holding an exclusive ``flock`` (None where flock is unavailable)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - no fcntl / no directory fds
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # pragma: no cover - a fresh folder is never locked
        os.close(fd)
        return None
    return fd


def _remove_stale(base):
    """Remove the work folders of killed runs: ``.*.partial`` folders that no live run holds
    locked, older than :data:`STALE_AFTER_S` (the age covers a new run's mkdir -> flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return
    for d in base.glob(f".*{PARTIAL}"):
        try:
            if not d.is_dir() or time.time() - d.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue                                 # a live run: leave it alone
        else:
            shutil.rmtree(d, ignore_errors=True)
            log(f"removed {d}: the work folder of a run that was killed")
        finally:
            os.close(fd)


_fsync_dir = fsync_dir


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
    """Write ``obj`` (made :func:`jsonable`, paths made :func:`final_paths`) to
    ``<folder>/<name>.json`` atomically; returns the path."""
    path = Path(folder) / (name if name.endswith(".json") else f"{name}.json")
    text = json.dumps(final_paths(jsonable(obj)), indent=2, allow_nan=False) + "\n"
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

    Paths in the text are made :func:`final_paths`; image links are relative (:func:`image_link`).
    """
    parts = [f"# {title}"]
    if preamble:
        parts.append(_render(preamble))
    for heading, content in sections:
        parts.append(f"## {heading}")
        body = _render(content)
        if body:
            parts.append(body)
    parts.append("## Settings and versions")
    params = ("[results.json](results.json)" if (Path(folder) / "results.json").is_file()
              else "the study's JSON files")
    parts.append(f"Command: `{command_line()}`. Every parameter the study used is in {params}.")
    parts.append(reports.versions_markdown(reports.versions()))
    text = final_paths("\n\n".join(parts) + "\n")
    path = atomic(Path(folder) / "report.md", lambda tmp: Path(tmp).write_text(text))
    reports.write_html_report(folder, text)      # report.html beside it: same content, browsable
    return path


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
              schedule=None, save_dir=None, progress=False, safe_mode=True):
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
        from ..model_files import load_model

        model = load_model(path, safe_mode=safe_mode)
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
def load_safely(args):
    """Whether model files load in safe mode: False only with ``--unsafe-model``."""
    return not getattr(args, "unsafe_model", False)


def get_model_subset(name, models_dir="models", data_dir=None, seed=0, schedule="quick", epochs=None,
                     train_limit=None, data=None, file_stem=None, progress=False, eval_limit=None,
                     safe_mode=True, validate=False):
    """:func:`get_model` with two extras a study's ``--quick`` and study 5 need.

    Args:
        name: zoo name (builder, recipe, input preparation).
        train_limit: train on the first ``train_limit`` training images only (None: all).
        data: a :class:`xaitf.data.Dataset` to train and evaluate on instead of the zoo entry's
            own dataset (study 5's synthetic house numbers).
        file_stem: the model file looked for, ``<models_dir>/<file_stem>.h5`` (default ``name``);
            a model trained on other data than the zoo's gets its own stem so the two never mix.
        eval_limit: measure the held-out accuracy on the first ``eval_limit`` test images only.
        validate: when training, also evaluate those held-out images after every epoch
            (monitoring only): ``info["history"]`` then has ``val_loss`` / ``val_accuracy``.
        schedule, epochs, seed, progress: as :func:`get_model`.

    Returns ``(model, info)`` as :func:`get_model` (``info["train_limit"]`` added when trained).
    Nothing is saved: ``models_dir`` belongs to ``create_model.py``.
    """
    from ..zoo import registry

    stem = file_stem or name
    if train_limit is None and data is None and stem == name and eval_limit is None:
        return get_model(name, models_dir, data_dir, quick=schedule == "quick", seed=seed, epochs=epochs,
                         safe_mode=safe_mode,
                         schedule=schedule, progress=progress)
    path = Path(models_dir) / f"{stem}.h5"
    if path.is_file():
        if stem == name:
            return get_model(name, models_dir, data_dir, seed=seed, schedule=schedule, safe_mode=safe_mode)
        from ..model_files import load_model

        model = load_model(path, safe_mode=safe_mode)
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
    val = (x_te, np.asarray(ds.y_test[:n_test])) if validate else None
    result = fit(model, x_tr, y_tr, recipe, validation=val, seed=seed, label=name, progress=progress)
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
    study's sizes), ``folder`` (the run's work folder, see :func:`run_folder`), ``final`` (where it
    goes when the study has finished), ``t_start``; ``say(message)`` logs a line with the seconds
    since the start; ``seconds()`` the time so far."""

    def __init__(self, args, study, quick_overrides):
        self.t_start = time.perf_counter()
        self.quick = bool(getattr(args, "quick", False))
        self.seed = int(getattr(args, "seed", 0) or 0)
        self.params = study_params(args, study, quick_overrides)
        self.folder = run_folder(getattr(args, "out", "results"), study)
        self.final = final_path(self.folder)
        self.say(f"{study}: {'quick' if self.quick else 'full'} run -> {self.final}")

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
