"""Loading a model file: the one entry point (``xaitf.load_model``, every command line).

Two kinds of file, each loaded by the module that owns its format:

* a zoo weights file (``.h5`` with the ``xaitf_zoo_builder`` attribute, written by
  :func:`xaitf.zoo.registry.save` for models whose layers Keras cannot rebuild from a
  configuration, e.g. TensorFlow Probability's): rebuilt by the zoo from its registered builder
  (:func:`xaitf.zoo.registry.load_weights_file`, which checks the stored name and arguments);
* any other Keras file (.h5, .keras, SavedModel folder, tf-keras or Keras 3): read by
  :func:`xaitf.keras_bridge.load_keras_file`, safe mode first (:mod:`xaitf.safe_loading`).

This module sits above both: the zoo's builders need :mod:`xaitf.keras_bridge`, so the bridge
cannot ask the zoo about files itself.
"""
from .keras_bridge import load_keras_file
from .safe_loading import model_format
from .zoo.registry import load_weights_file


def load_model(path, *, custom_objects=None, safe_mode=True, kind=None):
    """Load a model file uncompiled: a zoo weights file through the zoo, else a Keras file.

    Arguments as :func:`xaitf.keras_bridge.load_keras_file` (``safe_mode=True``, the default,
    never runs code stored in the file; ``kind`` forces "tf-keras" or "keras3"). A zoo weights
    file carries no code to scan: it names a zoo builder and its arguments, both checked before
    anything is built. Every error is a ModelError with a one-line message naming the file.
    """
    if model_format(path) == "h5":      # ModelError: not found, a plain folder, wrong extension
        rebuilt = load_weights_file(path)
        if rebuilt is not None:
            return rebuilt
    return load_keras_file(path, custom_objects=custom_objects, safe_mode=safe_mode, kind=kind)
