"""Apply ``TF_CPP_MIN_LOG_LEVEL`` to the lines TensorFlow's C++ runtime prints while it is imported.

Importing TensorFlow 2.21 on x86-64 prints, before its logging is set up and therefore whatever
``TF_CPP_MIN_LOG_LEVEL`` says, twice (one per shared library)::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly ...

Setting ``TF_ENABLE_ONEDNN_OPTS=1`` does not remove them (measured with 2.21: the info line is
printed whenever oneDNN is on); ``TF_ENABLE_ONEDNN_OPTS=0`` does, but it turns oneDNN off and
changes speed and round-off. So ``import xaitf`` installs :class:`QuietImport`, a
``sys.meta_path`` finder that wraps the first ``import tensorflow`` only: file descriptor 2 goes to
a temporary file during that import, and afterwards everything in it is written back to stderr
except absl's lines below the level ``TF_CPP_MIN_LOG_LEVEL`` asks for (``I`` lines at >= 1, ``W``
lines at >= 2, ``E`` lines at >= 3) and, at >= 1, absl's "before absl::InitializeLog()" header.
Python warnings and anything else printed during the import come back unchanged, in order.

``TF_CPP_MIN_LOG_LEVEL=0`` keeps every line; ``XAITF_TF_IMPORT_FILTER=0`` switches the finder off
(use it if TensorFlow's import kills the process, e.g. a CPU without the instructions the wheel
needs: what it printed just before dying is in the temporary file, not on stderr). A Python
exception during the import is no problem: the lines are written back, then it propagates.
Nothing happens when TensorFlow was imported before xaitf.
"""
import os
import re
import sys

_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \S+\s+\d+ \S+:\d+\] ")
_ABSL_HEADER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_log_level():
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


# oneDNN's one-time notice (an "E" line) that it leaves a transpose of integers or booleans to Eigen
# on CPUs without AVX-512: the same result, nothing for the user to do
ONEDNN_FALLBACK = re.compile(r"oneDNN supports DT_\w+ only on platforms with AVX-512")


def filter_lines(text, level, drop=None):
    """``text`` without absl's pre-initialisation lines that ``level`` hides (see the module doc)
    and, at ``level`` >= 1, without the lines matching the regex ``drop``."""
    if level <= 0:
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if bare == _ABSL_HEADER or (drop is not None and drop.search(bare)):
            continue
        m = _ABSL_LINE.match(bare)
        if m and _LEVELS[m.group(1)] < level and m.group(1) != "F":
            continue
        kept.append(line)
    return "".join(kept)


class _FilteredStderr:
    """Redirect file descriptor 2 to a temporary file; on exit write back the filtered text
    (:func:`filter_lines` with ``drop``)."""

    def __init__(self, drop=None):
        self.drop = drop

    def __enter__(self):
        import tempfile

        self.saved = None
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            self.tmp = tempfile.TemporaryFile(mode="w+b")
            self.saved = os.dup(2)
            os.dup2(self.tmp.fileno(), 2)
        except OSError:             # no fd 2 (pythonw, closed): import as it is
            if self.saved is not None:
                os.close(self.saved)
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(self.saved, 2)
        os.close(self.saved)
        try:
            self.tmp.seek(0)
            text = self.tmp.read().decode("utf-8", "replace")
        finally:
            self.tmp.close()
        out = filter_lines(text, min_log_level(), self.drop)
        if out:
            data = out.encode("utf-8", "replace")
            while data:
                try:
                    data = data[os.write(2, data):]
                except OSError:
                    break
        return False


def first_call_quiet(fn):
    """``fn`` whose first call runs with file descriptor 2 captured and written back without
    :data:`ONEDNN_FALLBACK`'s notice, which TensorFlow prints the first time a program transposes
    integers on such a CPU (native LIME's and Kernel SHAP's uint8 masks: the fastest layout)."""
    import functools

    called = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if called:
            return fn(*args, **kwargs)
        called.append(True)
        with _FilteredStderr(ONEDNN_FALLBACK):
            return fn(*args, **kwargs)

    return wrapper


class _Loader:
    """The real loader of ``tensorflow``, its ``exec_module`` run under :class:`_FilteredStderr`."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            with _FilteredStderr():
                self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader

    def __getattr__(self, name):        # anything else (resource readers, ...) from the real loader
        return getattr(self.loader, name)


class QuietImport:
    """``sys.meta_path`` finder for the top-level ``tensorflow`` package; removes itself on use."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install():
    """Put :class:`QuietImport` first on ``sys.meta_path`` unless TensorFlow is already imported,
    ``XAITF_TF_IMPORT_FILTER=0`` or it is there already."""
    if "tensorflow" in sys.modules or os.environ.get("XAITF_TF_IMPORT_FILTER", "1") == "0":
        return
    if not any(isinstance(f, QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietImport())


def uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietImport)]
