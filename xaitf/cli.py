"""Helpers shared by xaitf's command lines (``heatmap_script.py``, ``create_model.py``, studies).

* :func:`add_common_args` / :func:`apply_sets`: the repeatable ``--set section.key=value`` flag
  (see :mod:`xaitf.settings`), ``--seed``, ``--batch-size``, ``--debug``.
* :func:`fail` and :func:`run`: every user error ends the program with ONE line on stderr
  (``error: ...``) and a non-zero exit code; ``--debug`` shows the traceback instead.
* :func:`atomic_write`: files appear complete or not at all (temp file in the same folder, then a
  rename); with ``overwrite=False`` an existing file is never replaced, a suffix is added instead.
* :func:`format_params` / :func:`print_settings`: the settings a method ran with, on one line.

Nothing here imports TensorFlow, so argument errors are reported in milliseconds.
"""
import argparse
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from .errors import ModelError, XaitfError

EXIT_USER = 1       # bad input, unknown method, missing file, model a method cannot handle
EXIT_INTERNAL = 3   # an unexpected exception (a bug): one line, the traceback with --debug
DEBUG_HINT = "unexpected; rerun with --debug for the traceback"


class CliError(XaitfError):
    """A user error detected by a command line itself (bad flag value, missing file)."""


def quiet_tensorflow():
    """Keep stderr for our own one-line errors: silence TensorFlow's and absl's info and warnings."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def fail(message, code=EXIT_USER):
    """Print ``error: message`` (first line only) on stderr and exit with ``code``."""
    text = " ".join(str(message).split("\n")[0].split()) or "failed"
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def run(main, argv=None):
    """Call ``main(argv)`` and turn errors into one line and an exit code.

    XaitfError (and OSError such as a full disk or a missing folder) -> ``EXIT_USER``; any other
    exception -> ``EXIT_INTERNAL`` with a hint to rerun with ``--debug``; Ctrl-C -> 130.
    With ``--debug`` in ``argv`` the traceback is printed as well, and the last line points to it
    instead of repeating the hint.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    before = warnings.showwarning
    if not debug:                  # warnings as one line each; --debug keeps Python's file:line form
        warnings.showwarning = show_warning
    try:
        code = main(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except (XaitfError, OSError) as e:
        if debug:
            traceback.print_exc()
        fail(one_line(e))
    except Exception as e:  # noqa: BLE001 - a bug, still reported on one line
        if debug:
            traceback.print_exc()
            hint = "unexpected; the traceback is above: please report it"
        else:
            hint = DEBUG_HINT
        fail(f"{type(e).__name__}: {one_line(e)} ({hint})", EXIT_INTERNAL)
    finally:
        warnings.showwarning = before
    raise SystemExit(code or 0)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` of the command lines: ``warning: text`` on one line of stderr (the
    category named unless it is a UserWarning), without Python's file, line and source."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    text = " ".join(str(message).split()) or category.__name__
    print(f"warning{kind}: {text}", file=file or sys.stderr, flush=True)


def image_input_shape(shape, source=""):
    """``(H, W, C)`` of an image classifier's input, else CliError saying what to do (one line)."""
    shape = tuple(shape)
    where = f"{source}: " if source else ""
    if len(shape) != 3:
        raise CliError(f"{where}expected an image classifier with input (H,W,C), got input shape {shape}")
    if None in shape:
        raise CliError(f"{where}expected an image classifier with a fixed input size (H,W,C), got {shape}: the "
                       "model takes any size; give it one (e.g. keras.Input((224, 224, 3)) before the base "
                       "model, as keras.applications' input_shape=) and save it again")
    return shape


def is_user_error(e):
    """Bad input, a missing file, a model a method cannot handle (exit 1), rather than a bug (3)."""
    return isinstance(e, (XaitfError, OSError))


def error_text(e, part=None):
    """An error as one line, as the command lines print it: ``part: message`` (``part`` named once,
    also when the message starts with it); an unexpected exception adds its type and the hint to
    rerun with --debug."""
    text = one_line(e)
    if part and text.startswith(f"{part}:"):
        text = text[len(part) + 1:].lstrip()
    if not is_user_error(e):
        text = f"{type(e).__name__}: {text} ({DEBUG_HINT})"
    return f"{part}: {text}" if part else text


def leave_out(e, method, n_methods, debug=False):
    """True, after one ``error:`` line, when ``method`` failed to build with a ModelError (it
    cannot handle this model) and other methods were asked for (not with --debug): the command
    leaves it out and runs the others. Else False: the caller stops before any work."""
    if isinstance(e, ModelError) and n_methods > 1 and not debug:
        print(f"error: {error_text(e, method)}", file=sys.stderr, flush=True)
        return True
    return False


def failure_code(errors):
    """The exit code after the given errors were reported and the rest of the work was kept."""
    return EXIT_USER if all(is_user_error(e) for e in errors) else EXIT_INTERNAL


def one_line(e):
    text = str(e).strip()
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.strerror}: {e.filename}"
    return text.splitlines()[0] if text else type(e).__name__


# -- arguments ---------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ... (see --help)``), exit code 2."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)", code=2)


def add_common_args(parser):
    """``--set``, ``--seed``, ``--batch-size`` and ``--debug`` on an argparse parser."""
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a value of settings.py, e.g. --set ig.steps=128 --set "
                             "global.seed=1 (repeatable; value read as a Python literal)")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="seed of every stochastic method, 0..2**32-1 (default settings "
                             "GLOBAL['seed'])")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="model evaluations per chunk (default settings GLOBAL['batch_size'])")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    return parser


def add_model_args(parser):
    """``--unsafe-model`` and ``--import MODULE`` (see :func:`import_modules`) on a parser of a
    command that loads a user's model file."""
    parser.add_argument("--unsafe-model", action="store_true",
                        help="allow the model file to run Python code stored in it (Lambda layers) "
                             "while it loads; only for files you trust (default: such files are refused)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this Python module (from the current folder or PYTHONPATH) before "
                             "the model loads: the module that registers your custom layers with "
                             "keras.saving.register_keras_serializable; its classes then load in safe "
                             "mode (repeatable)")
    return parser


def import_modules(names):
    """``--import``: import each module (the current folder searched first), so that the custom
    classes it registers with Keras load; one-line CliError for a module that is missing or fails."""
    import importlib

    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names or ():
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise CliError(f"--import {name}: no module named {e.name!r} (run from the folder holding "
                           f"{name.split('.')[0]}.py or add its folder to PYTHONPATH)") from None
        except Exception as e:  # noqa: BLE001 - the user's module: any failure is one line
            raise CliError(f"--import {name}: importing it failed ({type(e).__name__}: {one_line(e)})") from None


def _flag_type(check):
    """An argparse ``type`` from a validator of :mod:`xaitf.settings` (same check, same words as
    ``--set`` and the Python API)."""

    def convert(text):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = check.__name__
    return convert


def positive_int(text):
    """argparse type: an integer >= 1 (:func:`xaitf.settings.positive_int`)."""
    from . import settings as S

    return _flag_type(S.positive_int)(text)


def seed_int(text):
    """argparse type: a seed 0..2**32-1 (:func:`xaitf.settings.seed_int`)."""
    from . import settings as S

    return _flag_type(S.seed_int)(text)


def budget_seconds(text):
    """argparse type of ``--budget``: ``none`` (None) or a duration (``600``, ``90s``, ``10m``,
    ``1h``) in seconds (:func:`xaitf.budget.parse_budget`)."""
    from .budget import parse_budget

    return _flag_type(parse_budget)(text)


def preprocess_name(text):
    """argparse type of ``--preprocess``: a name of :data:`xaitf.data.preprocess.PREPROCESS_NAMES`."""
    from .data.preprocess import check_name

    try:
        return check_name(text)
    except XaitfError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resize_policy(text):
    """argparse type of ``--resize``: one of :data:`xaitf.data.images.RESIZE_POLICIES`."""
    from .data.images import check_resize

    try:
        return check_resize(text)
    except XaitfError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_image_args(parser, budget="10m"):
    """``--preprocess``, ``--resize`` and ``--budget``: how images become model inputs and how long
    a command may run (shared by the command lines that explain image files).

    Defaults are None for ``--preprocess``/``--resize`` (the command decides from the model);
    ``--budget`` defaults to ``budget`` (``None``: no limit).
    """
    from .data.images import RESIZE_POLICIES
    from .data.preprocess import PREPROCESS_NAMES

    parser.add_argument("--preprocess", type=preprocess_name, default=None, metavar="NAME",
                        help="how 0..255 pixels become model inputs: scale (/ --scale), none, a "
                             "keras.applications family (its preprocess_input), or a mode "
                             f"(caffe, tf, torch); valid: {', '.join(PREPROCESS_NAMES)}. Default: "
                             "none for a model with a Rescaling/Normalization layer at its input "
                             "that takes 0..255 values (by its numbers) or a preprocess_input "
                             "called inside it, else scale")
    parser.add_argument("--resize", type=resize_policy, default=None,
                        metavar="{" + ",".join(RESIZE_POLICIES) + "}",
                        help="how an image is fitted to the model's input size: pil (uint8, "
                             "Pillow's default filter, then channels: study 1's script), bilinear, "
                             "bicubic, nearest (on float values), crop (centre crop to the aspect "
                             "ratio, then bilinear). Default: pil for the center-pixel model, else "
                             "bilinear; images of different sizes need it given")
    parser.add_argument("--budget", type=budget_seconds, default=budget_seconds(budget) if budget else None,
                        metavar="DURATION",
                        help="refuse to start when the estimated time is above this: seconds or "
                             f"90s / 10m / 1h, or none (default {budget or 'none'})")
    return parser


def check_flag(flag, check, value):
    """``check(value)`` (a validator of :mod:`xaitf.settings`); CliError ``flag: expected ...``."""
    try:
        return check(value)
    except ValueError as e:
        raise CliError(f"{flag}: {e}") from None


def apply_sets(sets, seed=None, batch_size=None):
    """Apply ``--set`` overrides (plus ``--seed``/``--batch-size``) to :mod:`xaitf.settings`.

    Returns the applied ``(section, key, value)`` triples. A malformed override (unknown section
    or key, a key of a section without settings, a value of the wrong type or range) raises
    MethodError with one line naming it and what is expected; nothing is applied then. GLOBAL
    values are checked by the same validators as the flags (``--batch-size 0`` and
    ``--set global.batch_size=0`` get the same words).
    """
    from . import settings as S

    texts = list(sets or [])
    if seed is not None:
        texts.append(f"global.seed={check_flag('--seed', S.seed_int, seed)}")
    if batch_size is not None:
        texts.append(f"global.batch_size={check_flag('--batch-size', S.positive_int, batch_size)}")
    return S.apply_overrides(texts)


# -- files -------------------------------------------------------------------------------------
def atomic_write(path, write_fn, overwrite=True):
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Args:
        path: the final file name; its folder is created if missing.
        write_fn: called with the temporary file's path (same extension as ``path``, so
            ``savefig``/``np.savez`` infer the format) and must write the whole file there.
        overwrite: True replaces an existing ``path`` (``os.replace``); False never touches an
            existing file and writes ``<stem>_1<ext>``, ``<stem>_2<ext>``, ... instead (claimed with
            a hard link, so two processes cannot take the same name).

    Returns:
        The path written (a ``Path``). If ``write_fn`` fails, the temporary file is removed and
        nothing appears under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        write_fn(tmp)
        if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
            raise OSError(f"nothing was written for {path}")
        if overwrite:
            os.replace(tmp, path)
            return path
        return _claim(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(path):
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _claim(tmp, path):
    """Give ``tmp`` the first free name among path, path_1, path_2, ... without replacing any."""
    for i in range(10_000):
        target = path if i == 0 else path.with_name(f"{path.stem}_{i}{path.suffix}")
        if target.exists():
            continue
        try:
            os.link(tmp, target)          # fails if target exists: no race between processes
        except FileExistsError:
            continue
        except OSError:                   # file system without hard links
            if target.exists():
                continue
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        return target
    raise OSError(f"no free file name next to {path}")


# -- printing ----------------------------------------------------------------------------------
def _fmt(v):
    if isinstance(v, (tuple, list)) and any(hasattr(x, "shape") for x in v):   # interventional data=
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.6g}"
    if hasattr(v, "shape") and getattr(v, "size", 0) > 4:
        return f"array{tuple(v.shape)}"
    return repr(v) if isinstance(v, str) else str(v)


def format_params(params, **extra):
    """``k=v, k=v`` of a method's settings (and extras such as batch_size), stable order."""
    items = list(dict(params or {}).items()) + list(extra.items())
    return ", ".join(f"{k}={_fmt(v)}" for k, v in items) or "no parameters"


def print_settings(label, params, file=None, **extra):
    """One line: ``label: k=v, ...``."""
    print(f"  {label}: {format_params(params, **extra)}", file=file or sys.stdout, flush=True)
