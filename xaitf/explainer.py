"""The Explainer base class: settings, inputs, targets, chunking, channel reduction, seeding.

A method subclasses :class:`Explainer`, names its settings section (``key``) and implements
``explain_batch(x, targets)`` for one chunk. Everything users touch is here::

    explainer = xaitf.create_explainer("ig", model, steps=64, batch_size=256)
    maps = explainer(x, targets)   # x (N,H,W,C) float32; targets ints (N,), one-hot (N,K) or None
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from . import settings as S
from .compat import caller_frame
from .errors import InputError, MethodError
from .params import needs_error
from .keras_bridge import (activation_bytes, check_classifier, input_shape, logit_activation, model_kind,
                           weights_fingerprint)
from .outputs import KINDS, Output, class_probabilities  # noqa: F401  (re-exported)

REDUCTIONS = S.CHANNEL_REDUCE    # ("sum", "mean", "abs_sum", "max_abs", "none")


def chunks(n, size):
    """Slices covering ``range(n)`` in pieces of at most ``size``."""
    size = max(1, int(size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def progress(iterable, enabled=True, **kw):
    """Progress over the pieces of long work, when enabled and there is more than one piece.

    On a terminal (stderr a tty): a tqdm bar (``kw`` passed to tqdm). Otherwise (logs, pipes,
    batch jobs): lines on stderr, ``<desc>: 3/10 (30%), 12 s elapsed, ETA 28 s``, at every 10% of
    the pieces or after 30 s without a line, whichever comes first, and a last ``done`` line; work
    that ends within ``log_after`` seconds (keyword, default 2) prints nothing. Disabled or one
    piece: the items themselves.
    """
    import sys
    import time

    log_after = float(kw.pop("log_after", 2.0))
    items = list(iterable)
    if not enabled or len(items) < 2:
        return items
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(items, leave=False, **{"delay": log_after, **kw})
    desc, n = kw.get("desc") or "progress", len(items)

    def words(s):
        return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")

    def logged():
        start = last = time.monotonic()
        shown_any, next_tenth = False, 1
        for i, item in enumerate(items):
            yield item
            done, now = i + 1, time.monotonic()
            tenth = done * 10 // n
            due = tenth >= next_tenth or now - last >= 30.0
            if tenth >= next_tenth:
                next_tenth = tenth + 1
            elapsed = now - start
            if done == n:
                if shown_any:
                    print(f"{desc}: {n}/{n} done in {words(elapsed)}", file=sys.stderr, flush=True)
            elif due and elapsed >= log_after:
                eta = elapsed / done * (n - done)
                print(f"{desc}: {done}/{n} ({100 * done // n}%), {words(elapsed)} elapsed, "
                      f"ETA {words(eta)}", file=sys.stderr, flush=True)
                shown_any, last = True, now

    return logged()


def _caller_stacklevel():
    """``warnings.warn`` stacklevel of the first frame outside the xaitf package (the user's call)."""
    import os

    pkg = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 1, caller_frame(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        level += 1
        frame = frame.f_back
    return level


def as_batch(x, model=None):
    """Validate and convert images to a float32 (N,H,W,C) array matching the model's input.

    uint8 images (0..255) given with a model are explained with the values they have, as float32
    0..255, and ONE ``UserWarning`` says so: most models expect floats in [0, 1] (divide by 255
    first), but a model trained on 0..255 is explained correctly as it is. Booleans, strings and
    objects are refused (InputError), as are NaN/inf values.
    """
    x = np.asarray(x)
    if x.dtype == object or x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"expected numeric images, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise InputError(f"expected real-valued images, got dtype {x.dtype}")
    if model is not None and x.dtype == np.uint8 and x.size and int(x.max()) > 1:
        import warnings

        warnings.warn("xaitf: the images are uint8 (0..255) and are explained with these values; most "
                      "models expect floats in [0, 1]: pass x / 255.0 if yours does",
                      UserWarning, stacklevel=_caller_stacklevel())
    x = x.astype(np.float32, copy=False)
    shape = input_shape(model) if model is not None else None
    if shape is not None and len(shape) == 3:
        if x.ndim == 2 and shape[-1] == 1:
            x = x[None, ..., None]
        elif x.ndim == 3 and tuple(x.shape) == tuple(d or s for d, s in zip(shape, x.shape)):
            x = x[None]
        elif x.ndim == 3 and shape[-1] == 1 and x.shape[1:] == tuple(shape[:2]):
            x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"expected images shaped (N,H,W,C), got {x.shape}")
    if shape is not None:
        want = tuple(shape)
        if len(want) != 3 or any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
            raise InputError(f"model expects images shaped {want}, got {tuple(x.shape[1:])}; "
                             "resize with xaitf.data.images.fit_to_model")
    if x.shape[0] == 0:
        raise InputError("got an empty batch (N=0)")
    if not np.all(np.isfinite(x)):
        raise InputError("images contain NaN or infinite values")
    return x


def as_targets(targets, n, num_classes, predict=None):
    """Integer class indices (N,) from ints, a scalar, one-hot (N,K) or None (= argmax of predict)."""
    if targets is None:
        if predict is None:
            raise InputError("targets=None needs a model to predict the class")
        return predict().astype(np.int64)
    t = np.asarray(targets)
    if t.dtype == object or t.dtype == bool or not np.issubdtype(t.dtype, np.number) \
            or np.iscomplexobj(t):
        raise InputError(f"targets must be integer class indices (an int, N ints or one-hot (N,K)) "
                         f"or None, got {_short(targets)}")
    if t.ndim == 0:
        if not (np.isfinite(t) and float(t) == int(t)):
            raise InputError(f"targets must be integer class indices, got {_short(targets)}")
        t = np.full(n, int(t))
    elif t.ndim == 2:
        if t.shape != (n, num_classes):
            raise InputError(f"one-hot targets must be ({n},{num_classes}), got {t.shape}")
        t = t.argmax(axis=1)
    if t.shape != (n,):
        raise InputError(f"expected {n} targets (ints or one-hot), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.isfinite(t) & (np.mod(t, 1) == 0)):
            bad = t[~(np.isfinite(t) & (np.mod(t, 1) == 0))][0]
            raise InputError(f"targets must be integer class indices, got {float(bad)!r}")
        t = t.astype(np.int64)
    if t.min() < 0 or t.max() >= num_classes:
        raise InputError(f"targets must lie in [0, {num_classes - 1}], got {t.min()}..{t.max()}")
    return t.astype(np.int64)


def _short(value):
    """A short repr for one-line messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _setting(owner, name, check, value):
    """``check(value)`` (a validator of :mod:`xaitf.settings`); MethodError ``"<owner> needs <name>
    to be ..., got ..."`` (the wording of every method parameter, :mod:`xaitf.params`)."""
    try:
        return check(value)
    except ValueError as e:
        raise needs_error(owner, name, e) from None


def _channel_fold(maps, op, f=None):
    """Fold the channel axis with the binary ufunc ``op`` (after ``f``), one channel at a time.

    ``maps.sum(-1)`` over a short, innermost axis is numpy's slow path (a strided inner loop of
    length C per pixel: 3 ms for 256 MNIST-sized 3-channel maps); adding whole channel planes is
    about 8x faster and gives the same numbers (the same left-to-right order for C < 8).
    """
    f = f or (lambda a: a)
    out = np.array(f(maps[..., 0]), dtype=maps.dtype, copy=True)
    for c in range(1, maps.shape[-1]):
        op(out, f(maps[..., c]), out=out)
    return out


def reduce_channels(maps, how):
    """(N,H,W,C) per-channel attributions -> (N,H,W) by ``how`` (``"none"`` keeps the channels)."""
    if maps.ndim == 3 or how == "none":
        return maps
    if how == "sum":
        return _channel_fold(maps, np.add)
    if how == "mean":
        return _channel_fold(maps, np.add) / np.float32(maps.shape[-1])
    if how == "abs_sum":
        return _channel_fold(maps, np.add, np.abs)
    if how == "max_abs":
        return _channel_fold(maps, np.maximum, np.abs)
    raise MethodError(f"unknown channel_reduce {how!r}; valid: {', '.join(REDUCTIONS)}")


# the arguments every method takes (the ``**common`` of a method's signature), with their defaults
# (``output``'s default is the method's own: ``default_output``)
COMMON = {"batch_size": 256, "channel_reduce": "sum", "seed": 0, "progress": True, "output": None,
          "memory_budget_mb": 4096}


def _check_keywords(init):
    """Wrap a method's ``__init__``: an unknown keyword gets one MethodError line listing the valid
    ones (from the signature) instead of Python's TypeError. ``functools.wraps`` keeps the real
    signature for ``inspect.signature`` and ``help()``."""
    import functools

    @functools.wraps(init)
    def checked(self, model, *args, **kwargs):
        if type(self).__init__ is checked:            # the outermost call only
            valid = type(self).parameters()
            unknown = sorted(set(kwargs) - set(valid))
            if unknown:
                own = ", ".join(k for k in valid if k not in COMMON) or "none"
                raise MethodError(f"{type(self).__name__} got unknown parameter(s) {', '.join(unknown)}; "
                                  f"valid: {own} (plus {', '.join(COMMON)})")
        init(self, model, *args, **kwargs)

    checked._keywords_checked = True
    return checked


class Explainer:
    """Base class of every method.

    A method declares its parameters, with their defaults, in its own ``__init__`` signature and
    docstring (``inspect.signature`` / ``help()`` show them) and passes them on as ``params``; the
    common arguments below come through its ``**common``. Nothing is read from
    :mod:`xaitf.settings` here: the command lines and studies turn its presets into keyword
    arguments (:func:`xaitf.registry.preset_kwargs`).

    Args:
        model: a tf-keras or Keras 3 image classifier (N,H,W,C) -> (N,K).
        params: the method's own parameters (name -> value), as its ``__init__`` received them.
        batch_size: model evaluations per chunk, an integer >= 1 (256).
        channel_reduce: how per-channel maps become one map per pixel (see ``REDUCTIONS``; "sum").
        seed: seed of stochastic methods, an integer 0..2**32-1 (0); the same seed gives the same
            maps.
        progress: show tqdm bars on long work (True).
        output: what is explained (:mod:`xaitf.outputs`): ``"logits"`` (the pre-softmax output
            f_c), ``"probabilities"`` (softmax, or sigmoid for a sigmoid head) or a callable
            ``(model outputs (N,K), int targets (N,)) -> (N,)`` scores; None = the method's
            ``default_output`` ("logits" for the gradient family, "probabilities" for occlusion,
            PDA, RISE, meaningful perturbation, LIME and Kernel SHAP). ``outputs`` lists what a
            method accepts; ``output_note`` says in words what was explained (figure headers).

    The four common arguments are checked by the validators of :mod:`xaitf.settings` that the
    command lines use: a wrong one (``batch_size=0``, ``seed="abc"``) raises MethodError with one
    line, in the words of the flags (``--batch-size 0``).

    Calling the explainer: ``explainer(x, targets=None)``. ``x`` is (N,H,W,C), (H,W,C) or (H,W) for
    a one-channel model, numeric and finite; uint8 images are explained with their 0..255 values
    as they are, with one UserWarning (most models expect floats in [0, 1]: pass ``x / 255.0``).
    ``targets`` is None (the predicted class), an int, N ints or one-hot (N,K); fractional,
    boolean or string targets raise InputError.
    """

    key = None            # the preset section of xaitf.settings (command lines and studies)
    name = None           # registry name, set by the registry
    title = None          # figure title
    default_output = "logits"   # what ``output=None`` explains
    outputs = KINDS             # the output kinds the method can explain (xaitf.outputs)
    stochastic = False
    #: whether ``setup()`` keeps anything made from the weights (a clone, a twin, a graph, copied
    #: kernels): each call then compares the weights' fingerprint with setup's and runs setup()
    #: again when they changed. False for methods that only call the model, whose variables
    #: they read live: they skip the check (on a ResNet50 it took 100 ms of a 237 ms gradient call)
    copies_weights = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_keywords_checked", False):
            cls.__init__ = _check_keywords(init)

    def __init__(self, model, *, params=None, batch_size=256, channel_reduce="sum", seed=0,
                 progress=True, output=None, memory_budget_mb=4096):
        self.params = dict(params or {})
        self.model = model
        self.kind = model_kind(model)
        owner = type(self).__name__
        self.memory_budget_mb = _setting(owner, "memory_budget_mb", S.positive_int, memory_budget_mb)
        self.batch_note = None
        self.batch_size = _setting(owner, "batch_size", S.positive_int, batch_size)
        self.channel_reduce = _setting(owner, "channel_reduce", S.channel_reduce, channel_reduce)
        self.seed = _setting(owner, "seed", S.seed_int, seed)
        self.progress = _setting(owner, "progress", S.boolean, progress)
        check_classifier(model)   # one image input, one (N,K) output: one line otherwise
        self.shape = input_shape(model)
        self.batch_size = self.capped_batch(self.batch_size)
        self.num_classes = int(model.outputs[0].shape[-1])
        # what turns self.forward's logits into probabilities: softmax, or sigmoid for binary and
        # multi-label (sigmoid) heads (:func:`xaitf.keras_bridge.logit_activation`)
        self.logit_activation = logit_activation(model)
        # one output contract: a method that declares ``output`` itself keeps it in its params
        if "output" in self.params:
            output = self.params["output"]
        self.output = self.default_output if output is None else output
        self.output_spec = Output(model, self.output, owner, self.outputs)
        # the model whose outputs ``self.select`` reads, and what is explained in words
        self.forward, self.output_note = self.output_spec.forward, self.output_spec.note
        # read before setup(), which may cache copies of these weights (native LRP passes it on)
        self._weights_crc = weights_fingerprint(model) if self.copies_weights else None
        self.setup()

    def fixed_shape(self):
        """The model's input ``(H, W, C)``; ModelError (one line) for a model that takes any size
        (``keras.Input((None, None, C))``), which a method with masks, windows or a superpixel
        layout of one size cannot explain."""
        if len(self.shape) != 3 or any(d is None for d in self.shape):
            from .errors import ModelError

            raise ModelError(f"{type(self).__name__} needs a model with a fixed input size (H, W, C), this one "
                             f"takes {tuple(self.shape)}: build it on keras.Input((H, W, C)) (the gradient, "
                             "DeepLIFT, LRP, Grad-CAM and occlusion methods take any size)")
        return tuple(int(d) for d in self.shape)

    @property
    def runner(self):
        """``forward``'s function, to call (:attr:`xaitf.outputs.Output.runner`)."""
        return self.output_spec.runner

    @classmethod
    def parameters(cls):
        """``{name: default}`` of the keyword arguments the method accepts, in signature order:
        its own parameters, then the common ones (:data:`COMMON`)."""
        import inspect

        out = {}
        sig = inspect.signature(cls.__init__)            # follows _check_keywords' wrapper
        for name, p in list(sig.parameters.items())[2:]:  # self, model
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name == "params":
                continue
            out[name] = p.default
        out.update({k: v for k, v in COMMON.items() if k not in out})
        if out["output"] is None:
            out["output"] = cls.default_output
        return out

    def capped_batch(self, n):
        """``n``, or fewer: the inputs whose activations (every layer output, float32,
        :func:`xaitf.keras_bridge.activation_bytes`) fit in ``memory_budget_mb``. A ResNet50 at
        224x224 has ~142 MB per input: 256 perturbed images at once peaked at 13.7 GB. Chunking
        does not change results (every random draw is counter-based); ``batch_note`` says why."""
        per = activation_bytes(self.model)
        cap = max(1, int(self.memory_budget_mb) * 2 ** 20 // per)
        if cap >= n:
            return n
        mb = per / 2 ** 20
        size = f"{mb:.0f}" if mb >= 10 else f"{mb:.2g}"
        self.batch_note = (f"batch_size {n} -> {cap}: ~{size} MB of activations per input "
                           f"(memory_budget_mb={self.memory_budget_mb}; raise it to use bigger chunks)")
        return cap

    # -- hooks for subclasses ------------------------------------------------------------------
    def setup(self):
        """Validate parameters and build anything reusable (tf.functions) once per model."""

    def select(self, outputs, targets):
        """The explained score (N,) of ``self.forward``'s outputs for int targets (N,)
        (:meth:`xaitf.outputs.Output.select`): logit, probability or the user's function."""
        return self.output_spec.select(outputs, targets)

    def probabilities_of(self, logits):
        """Class probabilities (float32) of ``self.forward``'s output: softmax, or sigmoid for a
        sigmoid head, computed in the logits' own precision."""
        return class_probabilities(logits, self.logit_activation)

    def explain_batch(self, x, targets):
        """Maps for one chunk: (n,H,W,C) per-channel or (n,H,W)."""
        raise NotImplementedError

    def chunk_size(self):
        """Inputs per ``explain_batch`` call (methods with steps/samples divide batch_size)."""
        return self.batch_size

    # -- public --------------------------------------------------------------------------------
    def predict(self, x, probabilities=False):
        """The explained output (logits or model output) for x, in chunks."""
        f = self.model if probabilities else self.runner
        outs = [np.asarray(f(tf.constant(x[s]), training=False)) for s in chunks(len(x), self.batch_size)]
        return np.concatenate(outs)

    def __call__(self, x, targets=None):
        from .keras_bridge import sync_logits

        sync_logits(self.model)          # the linear copy of a softmax layer follows new weights
        now = weights_fingerprint(self.model) if self.copies_weights else None
        if now != self._weights_crc:      # new weights (set_weights, training): copies, references
            self._weights_crc = now      # and graphs made from the old ones are made again
            self.setup()
        x = as_batch(x, self.model)
        t = as_targets(targets, len(x), self.num_classes,
                       predict=lambda: self.predict(x, probabilities=True).argmax(-1))
        pieces = chunks(len(x), self.chunk_size())
        out = [np.asarray(self.explain_batch(x[s], t[s]), dtype=np.float32)
               for s in progress(pieces, self.progress and len(x) > 1, desc=self.name or self.key)]
        maps = reduce_channels(out[0] if len(out) == 1 else np.concatenate(out), self.channel_reduce)
        if not maps.flags.writeable:      # a read-only view of a tensor's buffer: the caller's own copy
            return np.array(maps, dtype=np.float32)
        return maps.astype(np.float32, copy=False)

    def rng(self):
        """A fresh numpy Generator from the seed: every call starts from the same state."""
        return np.random.default_rng(self.seed)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


Explainer.__init__ = _check_keywords(Explainer.__init__)   # methods without parameters of their own
