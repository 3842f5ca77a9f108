"""Safe loading of model files: read a file's stored configuration before any Keras code does.

Keras rebuilds a model from a JSON configuration stored in the file, and a configuration can hold
Python code: a ``Lambda`` layer stores its function as marshalled bytecode (tf-keras:
``"function_type": "lambda"``; Keras 3: ``{"class_name": "__lambda__", ...}``), and loading the
model runs it. Keras 3 and tf-keras refuse such layers in ``.keras`` archives when ``safe_mode`` is
on, but tf-keras has no safe mode for ``.h5`` files and SavedModel folders, and its ``.keras``
loader imports any module a configuration names. So :func:`scan_model_file` reads the
configuration itself, with ``json``/``h5py``/``protobuf`` only, and refuses a file before a Keras
loader sees it:

* ``.h5`` / ``.hdf5``: the ``model_config`` attribute (tf-keras and Keras 3 writers);
* ``.keras`` archives: ``config.json`` (and ``metadata.json`` must be valid JSON);
* SavedModel folders (tf-keras): every object's metadata in ``keras_metadata.pb`` and in
  ``saved_model.pb`` (older files); when the protobuf cannot be parsed, its bytes are searched.

The whole configuration is walked, so layers inside nested models (a Sequential or functional
model used as a layer), wrappers (``TimeDistributed``) and any other sub-configuration are seen.
Refused in safe mode:

* every ``Lambda`` layer, whatever its function is stored as (bytecode, or a function named by
  module and name). This is deliberately conservative: a Lambda that names a function (rather than
  storing bytecode) would still resolve and call it on loading, and telling a harmless one from a
  harmful one is not something a scan can do;
* any ``__lambda__`` object or ``"function_type": "lambda"`` entry, in any layer;
* a class or function named by a Python module outside Keras (``"module": "os"``, say), unless
  ``custom_objects`` or Keras' registry of serializable objects provides that name; and a
  ``builtins`` reference to a Python built-in (``eval``, ``exec``, ``open``, ...);
* tf-keras ``TFOpLambda`` layers (``tf.*`` calls in a functional model) whose TensorFlow function
  reads or writes files or runs Python (``tf.io.*``, ``tf.py_function``, ``tf.raw_ops.*``, ...).

The refusal is one line naming the file, the layer and its class, and the opt-in:
``safe_mode=False`` in Python (:func:`xaitf.load_model`), ``--unsafe-model`` on the
command lines. What safe mode does not cover: a model's TensorFlow graph (a SavedModel's functions,
the ops of a layer) is a program too, run when the model is called; load models from sources you
trust.

Nothing here imports TensorFlow or Keras at module level, so command lines can check paths
(:func:`model_path_problem`) before TensorFlow starts.
"""
import builtins
import json
import os
import sys
import zipfile

from .errors import ModelError

OPT_IN = ("If you trust the file, pass safe_mode=False (Python) or --unsafe-model (command line)")

# top-level packages whose classes a configuration may name in safe mode
KERAS_PACKAGES = frozenset({"keras", "tf_keras", "keras_hub", "keras_cv", "keras_nlp"})
# TensorFlow functions (TFOpLambda ``function`` names, without the ``tf.`` prefix) that reach
# files, the network or Python
TF_OP_DENY = ("io.", "raw_ops.", "compat.", "py_function", "numpy_function", "py_func", "debugging.",
              "print", "summary.", "saved_model.", "data.", "lookup.", "distribute.", "config.",
              "experimental.", "autograph.", "function", "load_op_library", "load_library",
              "keras.", "estimator.", "tpu.", "train.", "sysconfig.", "version")
MAX_CONFIG_BYTES = 256 << 20   # a config.json larger than this is refused (a zip bomb, not a model)
SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class UnsafeModelError(ModelError):
    """A model file whose loading would run code stored in it; refused in safe mode."""


def one_line(text, limit=300):
    """The first line of ``text`` with runs of whitespace collapsed, cut to ``limit`` characters."""
    text = str(text).strip()
    first = " ".join(text.splitlines()[0].split()) if text else ""
    return first if len(first) <= limit else first[:limit - 3].rstrip() + "..."


# -- paths ------------------------------------------------------------------------------------------
def is_savedmodel(path):
    """True for a folder holding ``saved_model.pb`` (or ``.pbtxt``)."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in SAVEDMODEL_FILES)


def model_format(path):
    """``"h5"``, ``"keras"`` or ``"savedmodel"`` for a loadable model path; ModelError otherwise."""
    problem = model_path_problem(path)
    if problem:
        raise ModelError(problem)
    if os.path.isdir(path):
        return "savedmodel"
    return "keras" if str(path).endswith(".keras") else "h5"


def model_path_problem(path):
    """Why ``path`` cannot be a model file (one line), or None; needs no TensorFlow.

    Valid: an existing ``.h5``/``.hdf5``/``.keras`` file or a SavedModel folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if is_savedmodel(path):
            return None
        return (f"model path {path} is a folder, expected a model file (.h5 or .keras) or a "
                f"SavedModel folder (with saved_model.pb)")
    if not os.path.exists(path):
        return f"model file not found: {path}"
    if not os.path.isfile(path):
        return f"model path {path} is not a regular file"
    if not path.endswith((".h5", ".hdf5", ".keras")):
        return f"unsupported model file {path}: expected .h5, .keras or a SavedModel folder"
    return None


# -- reading the stored configuration ---------------------------------------------------------
def _json(path, what, raw):
    try:
        return json.loads(raw)
    except RecursionError:
        raise ModelError(f"model file {path}: {what} is nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"model file {path}: {what} is not valid JSON ({one_line(e, 120)}); "
                         "the file is damaged or not a Keras model") from None


def read_metadata(path):
    """A ``.keras`` archive's ``metadata.json`` as a dict ({} if absent); ModelError if broken."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if "metadata.json" not in zf.namelist():
                return {}
            raw = zf.read("metadata.json")
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"model file {path}: cannot read the .keras archive ({one_line(e, 120)})") from None
    meta = _json(path, "metadata.json", raw)
    if not isinstance(meta, dict):
        raise ModelError(f"model file {path}: metadata.json is not a JSON object; the file is "
                         "damaged or not a Keras model")
    return meta


def stored_configs(path):
    """The JSON configurations Keras would deserialise from ``path``: a list of parsed objects.

    Byte strings in the list are SavedModel metadata that could not be parsed (searched as bytes).
    Raises ModelError for a configuration that is not valid JSON.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _savedmodel_configs(path)
    if zipfile.is_zipfile(path):
        read_metadata(path)
        try:
            with zipfile.ZipFile(path) as zf:
                if "config.json" not in zf.namelist():
                    return []
                if zf.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                    raise ModelError(f"model file {path}: config.json is larger than "
                                     f"{MAX_CONFIG_BYTES >> 20} MiB; refused")
                raw = zf.read("config.json")
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as e:
            if isinstance(e, ModelError):
                raise
            raise ModelError(f"model file {path}: cannot read the .keras archive ({one_line(e, 120)})") from None
        return [_json(path, "config.json", raw)]
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: not an HDF5 (.h5) or .keras archive "
                         f"({one_line(e, 120)})") from None
    if raw is None:
        return []
    if not isinstance(raw, (bytes, str)):
        raw = bytes(raw) if hasattr(raw, "tobytes") else str(raw)
    return [_json(path, "the model_config attribute", raw)]


def _metadata_json(text):
    """One SavedModel object's metadata: parsed JSON, or its bytes when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)


def _savedmodel_configs(path):
    out = []
    meta_pb = os.path.join(path, "keras_metadata.pb")
    if os.path.isfile(meta_pb):
        with open(meta_pb, "rb") as f:
            raw = f.read()
        try:
            from tf_keras.protobuf import saved_metadata_pb2

            proto = saved_metadata_pb2.SavedMetadata()
            proto.ParseFromString(raw)
            out += [_metadata_json(n.metadata) for n in proto.nodes if n.metadata]
        except Exception:  # noqa: BLE001 - no tf_keras or an unparsable file: search its bytes
            out.append(raw)
    for name in SAVEDMODEL_FILES:      # older tf-keras SavedModels keep the metadata here
        sm = os.path.join(path, name)
        if not os.path.isfile(sm):
            continue
        with open(sm, "rb") as f:
            raw = f.read()
        try:
            from tensorflow.core.protobuf import saved_model_pb2

            proto = saved_model_pb2.SavedModel()
            if name.endswith(".pbtxt"):
                from google.protobuf import text_format

                text_format.Parse(raw.decode("utf-8", "replace"), proto)
            else:
                proto.ParseFromString(raw)
            for mg in proto.meta_graphs:
                for node in mg.object_graph_def.nodes:
                    if node.HasField("user_object") and node.user_object.metadata:
                        out.append(_metadata_json(node.user_object.metadata))
        except Exception:  # noqa: BLE001
            out.append(raw)
    return out


# -- the scan ---------------------------------------------------------------------------------
_BYTE_MARKERS = (b'"class_name": "Lambda"', b'"class_name":"Lambda"', b"__lambda__",
                 b'"function_type": "lambda"', b'"function_type":"lambda"')


def _short_class(name):
    return str(name).rsplit(">", 1)[-1]


def _resolvable(name, custom_objects):
    """True when ``custom_objects`` or a Keras registry of serializable objects has ``name``."""
    if not name:
        return False
    names = {name, _short_class(name)}
    if custom_objects and names & set(custom_objects):
        return True
    for mod in ("tf_keras", "keras"):
        km = sys.modules.get(mod)
        get = getattr(getattr(km, "saving", None), "get_registered_object", None)
        if get is None:
            continue
        try:
            if any(get(n) is not None for n in names):
                return True
        except Exception:  # noqa: BLE001
            pass
    return False


def find_unsafe(config, custom_objects=None):
    """Every place in a parsed configuration that would run stored or arbitrary code on loading.

    Returns a list of ``(layer name, layer class, reason)``; the layer is the innermost layer
    (a dict with ``class_name`` and a named ``config``) holding the finding.
    """
    found = []
    stack = [(config, ("?", "?"))]
    while stack:
        obj, layer = stack.pop()
        if isinstance(obj, list):
            stack.extend((v, layer) for v in reversed(obj))
            continue
        if not isinstance(obj, dict):
            continue
        cls = obj.get("class_name")
        cfg = obj.get("config")
        if isinstance(cls, str):
            name = cfg.get("name") if isinstance(cfg, dict) else None
            name = name if isinstance(name, str) else obj.get("name")
            if isinstance(name, str):
                layer = (name, _short_class(cls))
            short = _short_class(cls)
            if short == "Lambda":
                found.append((layer[0], "Lambda", "code"))
            elif cls == "__lambda__":
                found.append((layer[0], layer[1], "code"))
            module = obj.get("module")
            if isinstance(module, str) and module:
                ref = cfg if cls == "function" and isinstance(cfg, str) else cls
                top = module.split(".", 1)[0]
                if top == "builtins":
                    if hasattr(builtins, str(ref)):
                        found.append((layer[0], layer[1], f"builtins.{ref}"))
                elif top not in KERAS_PACKAGES and not (
                        _resolvable(obj.get("registered_name"), custom_objects)
                        or _resolvable(ref, custom_objects)):
                    found.append((layer[0], layer[1], f"{module}.{ref}"))
            if short == "TFOpLambda" and isinstance(cfg, dict):
                fn = str(cfg.get("function", ""))
                fn = fn[3:] if fn.startswith("tf.") else fn
                if fn.startswith(TF_OP_DENY):
                    found.append((layer[0], "TFOpLambda", f"tf.{fn}"))
        if obj.get("function_type") == "lambda" or obj.get("output_shape_type") == "lambda":
            found.append((layer[0], layer[1], "code"))
        stack.extend((v, layer) for v in reversed(list(obj.values())))
    return list(dict.fromkeys(found))


def _refusal(path, found):
    name, cls, why = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    where = f"layer {one_line(name, 60)!r} ({one_line(cls, 40)}){more}"
    if why == "code":
        what = "stores Python code that would run on loading"
    elif why.startswith("tf."):
        what = f"calls {one_line(why, 60)}, which can reach files or run Python"
    else:
        what = f"names {one_line(why, 60)}, which loading would import and call"
        module = one_line(why.rsplit(".", 1)[0], 60)
        if module.split(".")[0] not in sys.stdlib_module_names:   # a user's layer: registering it is safe
            return (f"model file {path}: {where} {what}; refused in safe mode. Your own layer? Import "
                    f"{module} first (command lines: --import {module}); if you trust the file, pass "
                    "safe_mode=False or --unsafe-model")
    return f"model file {path}: {where} {what}; refused in safe mode. {OPT_IN}"


def scan_model_file(path, custom_objects=None):
    """Refuse (:class:`UnsafeModelError`, one line) a model file whose loading would run code.

    Reads the stored configuration without Keras (see the module docstring for what is read and
    what is refused). Returns None for a file that passes; ModelError for a configuration that
    cannot be read.
    """
    path = os.fspath(path)
    found = []
    for config in stored_configs(path):
        if isinstance(config, bytes):
            if any(m in config for m in _BYTE_MARKERS):
                found.append(("?", "Lambda", "code"))
            continue
        found += find_unsafe(config, custom_objects)
    found = list(dict.fromkeys(found))
    if found:
        raise UnsafeModelError(_refusal(path, found))
