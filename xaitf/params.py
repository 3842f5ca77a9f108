"""The parameter checks every method shares: baselines/fills and numeric/choice validators.

No TensorFlow import here (command lines import the settings, and through them these checks, before
TensorFlow). One wording everywhere::

    <Owner> needs <name> to be an integer >= 1, got 0
    <Owner> needs <name> to be a number in (0, 1], got 2
    <Owner> needs <name> to be one of a, b, got 'c'
    <Owner> needs <name> to be a scalar, one value per channel (3), an image (8,8,3) or one image
        per input (N,8,8,3), got shape (2,)

Method parameters raise :class:`~xaitf.errors.MethodError`; :func:`parse_baseline` raises
:class:`~xaitf.errors.InputError` when a per-input baseline does not match the number of inputs.

Baseline / fill forms (:func:`parse_baseline`), accepted alike by every method with a baseline or a
fill (integrated gradients, DeepLIFT, occlusion, Shapley sampling, LIME, Kernel SHAP, SHAP Gradient/
Deep, the metrics' fills):

* a scalar: every pixel and channel;
* one value per channel: a sequence or array of length C;
* one image: (H,W,C), or (H,W) when C == 1;
* one image per input: (N,H,W,C).

Named forms (the metrics' ``"mean"``/``"blur"``/``"salt_pepper"``, LIME's ``hide_color=None``) are
handled by the methods that accept them before the array forms are parsed.
"""
import math
import numbers

import numpy as np

from .errors import InputError, MethodError

BASELINE_FORMS = "a scalar, one value per channel{c}, an image {img} or one image per input {batch}"


# ------------------------------------------------------------------------------------------------
# numbers
# ------------------------------------------------------------------------------------------------
def _integral(value):
    """An int from an int, an integral float, or the text of one; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    try:
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
    except (TypeError, ValueError):  # pragma: no cover
        pass
    return None


def _real(value):
    """A float from a number (not a bool) or the text of one; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return float(value) if isinstance(value, numbers.Real) else None


class Expected(ValueError):
    """A refused value, ``"expected <what>, got <shown>"`` (the flags' wording);
    :func:`needs_error` words it as a parameter's ``"<owner> needs <name> to be <what>, got <shown>"``."""

    def __init__(self, what, shown):
        super().__init__(f"expected {what}, got {shown}")
        self.what, self.shown = what, shown


def needs_error(owner, name, err):
    """The MethodError of parameter ``name`` of ``owner`` for a validator's :class:`Expected`."""
    who = f"{owner} needs" if owner else "needs"
    if isinstance(err, Expected):
        return MethodError(f"{who} {name} to be {err.what}, got {err.shown}")
    return MethodError(f"{owner} {name}: {err}")


def _needs(owner, name, what, value):
    who = f"{owner} needs" if owner else "needs"
    return MethodError(f"{who} {name} to be {what}, got {value!r}")


def _range(low, high, low_open=False, high_open=False):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def integer(value, name, owner="", low=None, high=None):
    """``value`` as an int in ``[low, high]`` (an int or an integral float; not a bool or a string).

    MethodError otherwise: ``"<owner> needs <name> to be an integer >= <low>, got <value>"``.
    """
    v = None if isinstance(value, str) else _integral(value)
    if v is None or (low is not None and v < low) or (high is not None and v > high):
        raise _needs(owner, name, "an integer" + _range(low, high), value)
    return v


def number(value, name, owner="", low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float in the range (``*_open``: the bound itself is excluded)."""
    v = None if isinstance(value, str) else _real(value)
    ok = v is not None and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise _needs(owner, name, "a number" + _range(low, high, low_open, high_open), value)
    return v


def fraction(value, name, owner=""):
    """A number in (0, 1]."""
    return number(value, name, owner, 0, 1, low_open=True)


def choice(value, name, owner, options):
    """``value`` if it is one of ``options`` (compared with ==, strings exactly)."""
    try:
        ok = any(value == o and type(value) is type(o) or value is o for o in options)
    except Exception:  # noqa: BLE001 - arrays and the like compare elementwise
        ok = False
    if not ok:
        raise _needs(owner, name, "one of " + ", ".join(map(str, options)), value)
    return value


# ------------------------------------------------------------------------------------------------
# baselines and fills
# ------------------------------------------------------------------------------------------------
def _dims(shape):
    return ",".join("?" if s is None else str(s) for s in shape)


def forms(shape):
    """The accepted baseline forms for images of ``shape`` (H,W,C), as words."""
    c = shape[-1]
    return BASELINE_FORMS.format(c="" if c is None else f" ({c})", img=f"({_dims(shape)})",
                                 batch=f"(N,{_dims(shape)})")


def parse_baseline(value, shape, n=None, name="baseline", owner=""):
    """A baseline/fill as float32 broadcastable to (N,H,W,C): (1,1,1,1) for a scalar, (1,1,1,C) for
    one value per channel, (1,H,W,C) for one image, (N,H,W,C) for one image per input.

    ``shape`` is the images' (H,W,C) (entries may be None: not checked); ``n``, when given, the
    number of inputs a per-input baseline must match (InputError otherwise). A value of none of the
    forms (or with NaN or infinite values) raises MethodError naming ``owner``, ``name`` and the
    accepted forms.
    """
    shape = tuple(shape)
    c = shape[-1]

    def bad(got):
        who = f"{owner} needs" if owner else "needs"
        return MethodError(f"{who} {name} to be {forms(shape)}, got {got}")

    try:
        b = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad(repr(value)) from None
    if b.ndim == 0:
        b = b.reshape(1, 1, 1, 1)
    elif b.ndim == 1:
        if c is not None and len(b) != c:
            raise bad(f"shape {b.shape}")
        b = b.reshape(1, 1, 1, -1)
    else:
        if b.ndim == 2 and c == 1:
            b = b[..., None]
        if b.ndim == 3:
            b = b[None]
        # 4-D: also the broadcastable (N|1, 1, 1, C|1) this function returns (parsing is idempotent)
        ok = b.ndim == 4 and b.shape[0] >= 1 and (
            b.shape[1:3] == (1, 1) or all(s is None or s == g for s, g in zip(shape[:2], b.shape[1:3])))
        if not ok or (b.shape[3] != 1 and c is not None and b.shape[3] != c):
            raise bad(f"shape {np.shape(value)}")
    if not np.all(np.isfinite(b)):
        raise MethodError(f"{owner + ' needs ' if owner else 'needs '}{name} to be finite, "
                          "got NaN or infinite values")
    if n is not None and len(b) not in (1, n):
        raise InputError(f"{owner + ': ' if owner else ''}{len(b)} {name}s given for {n} inputs; "
                         f"give one {name} or one per input")
    return np.ascontiguousarray(b)


def full_baseline(value, shape, n=None, name="baseline", owner=""):
    """:func:`parse_baseline` broadcast to full images: (1,H,W,C) or (N,H,W,C) float32."""
    b = parse_baseline(value, shape, n, name, owner)
    return np.ascontiguousarray(np.broadcast_to(b, (len(b),) + tuple(shape)), dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# segments (features = superpixels)
# ------------------------------------------------------------------------------------------------
SEGMENT_FORMS = ("None, a segmenter name (quickshift, slic, grid), a dict {'name': ..., keywords}, "
                 "a callable or an integer label map (N,H,W) or (H,W) of labels >= 0")


def parse_segments(value, x, owner="", seed=0):
    """Features as segments: ``(labels, K)`` with ``labels`` (N,H,W) int32 renumbered ``0..K_i-1``
    per image (K = the largest K_i), or ``None`` for ``value=None``.

    ``value``: a segmenter name of :mod:`xaitf.segmentation` (``"slic"``), a dict with the name and
    the segmenter's keywords (``{"name": "slic", "n_segments": 8}``), a callable image -> labels,
    or a user's integer label map (N,H,W) (or (H,W): the same segments for every image).
    """
    if value is None:
        return None
    from . import segmentation

    x = np.asarray(x)
    n, h, w = x.shape[:3]
    who = f"{owner} needs" if owner else "needs"
    if isinstance(value, str) or callable(value):
        seg = segmentation.segment(x, value, seed=seed)
    elif isinstance(value, dict):
        kw = dict(value)
        name = kw.pop("name", kw.pop("method", None))
        if name is None:
            raise MethodError(f"{who} segments to be {SEGMENT_FORMS}; the dict has no 'name': {value!r}")
        kw.setdefault("seed", seed)
        seg = segmentation.segment(x, name, **kw)
    else:
        try:
            seg = np.asarray(value)
        except Exception:  # noqa: BLE001 - ragged lists
            seg = np.asarray(None, dtype=object)
        if seg.dtype == bool or not np.issubdtype(seg.dtype, np.number) or seg.ndim not in (2, 3):
            raise MethodError(f"{who} segments to be {SEGMENT_FORMS}, got "
                              f"{'shape ' + str(seg.shape) if seg.dtype != object else repr(value)}")
        if not np.all(np.isfinite(seg)) or np.any(seg != np.round(seg)):
            raise MethodError(f"{who} segments to be {SEGMENT_FORMS}, got non-integer labels")
        if np.any(seg < 0):
            raise MethodError(f"{who} segments to be {SEGMENT_FORMS}, got negative labels "
                              f"(min {seg.min()})")
        if seg.ndim == 2:
            seg = seg[None]
        if seg.shape[1:] != (h, w) or seg.shape[0] not in (1, n):
            raise InputError(f"{who} segments shaped (N,H,W) = ({n},{h},{w}) or (H,W) = ({h},{w}) "
                             f"for these images, got {np.shape(value)}")
        seg = np.broadcast_to(seg, (n, h, w))
    seg = np.stack([segmentation.relabel(s) for s in np.asarray(seg)]).astype(np.int32)
    return seg, int(seg.reshape(n, -1).max(axis=1).max()) + 1
