"""The shared engine of the perturbation methods: occlusion, PDA and Shapley sampling.

Every method here asks one question many times: what does the model output for ``x`` when a few
pixels of ``x`` are replaced? :class:`Engine` answers it as a tensor program:

* :meth:`Engine.window_scores`: for many (input, window position) pairs, each with ``S``
  replacement patches, the target output of ``x`` with the window replaced, averaged over the ``S``
  patches with given weights (occlusion: ``S = 1``; PDA: ``S`` samples of the window's values);
* :meth:`Engine.shapley`: for permutations of the features, the target output of every prefix
  (the first ``t`` features of the permutation set to a baseline, ``t = 0..n``) and the
  differences of consecutive prefixes, scattered back to the features (Castro et al. 2009).

The work is cut into chunks of ``batch_size`` model evaluations. One ``tf.function`` walks many
chunks per call with a ``tf.while_loop`` (``parallel_iterations=1``), so Python overhead does not
grow with the number of perturbations and only one chunk of perturbed inputs exists at a time.

Structural shortcut (exact). When the model is a simple chain whose first linear layer is a
``Dense`` after ``Flatten`` or a ``Conv2D`` (its activation, if any, applied after the linear
part), a perturbation of a few pixels changes the pre-activation by a local update::

    z(x') = z(x) + W_local . (x' - x)_local

Dense after Flatten: only the rows of ``W`` of the changed pixels. Conv2D: only the output
positions whose receptive field touches the changed pixels (a small valid convolution of the
changed region, added into ``z(x)``). ``z(x)`` is computed once per input; each perturbation then
costs the local update plus the rest of the network (activation and following layers). Models
that are not simple chains (or whose first layer is something else) use the plain path: build
the perturbed images of the chunk on the device and run the whole model. Which path ran is in
``Engine.path``.

Windows go further on chains that start with convolutions and pooling: each window is pushed
through the leading window ops on a crop around the pixels it changes (receptive-field cropping,
:mod:`xaitf.methods._local_windows`), so a small window costs a small fraction of the
convolutions. ``Engine.window_path`` says which path the last window call took.
"""
import math

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from .. import params as _params
from ..compat import quiet_retracing
from ..errors import MethodError
from ..explainer import progress as _progress
from ..grouped_conv import runner
from ..keras_bridge import chain_layers, input_shape, layer_type, probability_head
from ._local_windows import local_stack
from ._patches import grid_index as _grid_index
from ._patches import place as _place
from ._xla import fused

# elements a gathered intermediate may hold before a slower but leaner route is used
_MEMORY_BUDGET = 1 << 23


# ------------------------------------------------------------------------------------------------
# windows: parsing, positions, painting back to pixels
# ------------------------------------------------------------------------------------------------
def as_pair(value, name, owner, minimum=1):
    """``(h, w)`` from an int or a pair of ints >= ``minimum``; MethodError otherwise."""
    try:
        h, w = (value, value) if np.ndim(value) == 0 else tuple(value)
        ok = not isinstance(h, bool) and not isinstance(w, bool) and int(h) == h and int(w) == w
    except (TypeError, ValueError):
        ok = False
    if not ok or int(h) < minimum or int(w) < minimum:
        raise MethodError(f"{owner} needs {name} to be an integer >= {minimum} or a pair of them, "
                          f"got {value!r}")
    return int(h), int(w)


def check_int(value, name, owner, minimum):
    """``value`` as an int >= ``minimum``; MethodError otherwise (:func:`xaitf.params.integer`)."""
    return _params.integer(value, name, owner, low=minimum)


def window_starts(size, window, stride):
    """Start offsets ``0, s, 2s, ...`` plus ``size - window`` so the last pixels are covered too."""
    starts = np.arange(0, size - window + 1, stride)
    if starts[-1] != size - window:
        starts = np.append(starts, size - window)
    return starts


def window_grid(height, width, window, stride, owner):
    """(P, 2) int32 top-left corners of every window; the last row/column of windows is flush
    with the border, so every pixel lies in a window whenever stride <= window."""
    kh, kw = window
    if kh > height or kw > width:
        raise MethodError(f"{owner} window {kh}x{kw} is larger than the image {height}x{width}; "
                          "use a window no larger than the image")
    rows = window_starts(height, kh, stride[0])
    cols = window_starts(width, kw, stride[1])
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    return grid.astype(np.int32)


def window_pairs(n, grid):
    """Position-major (input, window) pairs: pair k is window ``k // n`` of input ``k % n``.

    Returns the input index (P*n,) and the window corner (P*n, 2) of every pair.
    """
    return np.tile(np.arange(n), len(grid)), np.repeat(grid, n, axis=0)


def paint(values, grid, window, height, width):
    """Average per-window values over the pixels of each window: (N, P) -> (N, H, W) float64.

    Pixels covered by several (overlapping) windows get the mean of their windows' values; pixels
    in no window (only when stride > window) get 0.
    """
    values = np.asarray(values, dtype=np.float64)
    kh, kw = window
    total = np.zeros((values.shape[0], height * width))
    count = np.zeros(height * width)
    base = grid[:, 0].astype(np.int64) * width + grid[:, 1]
    for a in range(kh):          # loop over the window's offsets, vectorised over windows
        for e in range(kw):
            flat = base + a * width + e   # distinct for distinct windows at a fixed offset
            total[:, flat] += values
            count[flat] += 1
    return (total / np.maximum(count, 1)).reshape(-1, height, width)


def pixel_values(value, channels, owner, name):
    """A fill/baseline given as a scalar or one value per channel -> float32 (C,)."""
    v = _params.parse_baseline(value, (None, None, channels), name=name, owner=owner)
    if v.shape[:3] != (1, 1, 1):
        raise MethodError(f"{owner} needs {name} to be a number or {channels} numbers (one per "
                          f"channel) here, got shape {np.shape(value)}")
    return np.broadcast_to(v[0, 0, 0], (channels,)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the first linear layer and the rest of the model
# ------------------------------------------------------------------------------------------------
def _compute_dtype(layer):
    return tf.as_dtype(getattr(layer, "compute_dtype", None) or layer.dtype)


def _identity(z):
    return z


class _DenseFirst:
    """``Flatten -> Dense``: z = flatten(x) W + b; a window changes z by its rows of W."""

    name = "Dense after Flatten"

    def __init__(self, layer, shape):
        self.layer = layer
        self.height, self.width, self.channels = shape
        self.n = self.height * self.width * self.channels
        self.units = int(layer.units)
        self.dtype = _compute_dtype(layer)
        self.activation = layer.activation or _identity
        if int(layer.kernel.shape[0]) != self.n:
            raise ValueError(f"Dense has {layer.kernel.shape[0]} inputs, the image {self.n}")

    def kernel(self):
        return tf.cast(tf.convert_to_tensor(self.layer.kernel), self.dtype)

    def prepare(self, x):
        return x

    def z(self, x):
        z = tf.matmul(tf.reshape(tf.cast(x, self.dtype), [-1, self.n]), self.kernel())
        if self.layer.use_bias:
            z = z + tf.cast(tf.convert_to_tensor(self.layer.bias), self.dtype)
        return z

    def delta(self, src, b, r, c, values):
        """Change of z, (B,S,units), when images ``src[b]`` get patches ``values`` (B,S,kh,kw,C) at (r, c)."""
        S, kh, kw, ch = values.shape[1], values.shape[2], values.shape[3], self.channels
        rows = r[:, None] + tf.range(kh)
        cols = c[:, None] + tf.range(kw)
        old = tf.gather_nd(src, _grid_index(b, rows, cols))                   # (B,kh,kw,C)
        d = tf.cast(values, self.dtype) - tf.cast(old, self.dtype)[:, None]    # (B,S,kh,kw,C)
        m = kh * kw * ch
        flat = (rows[:, :, None] * self.width + cols[:, None, :]) * ch       # (B,kh,kw)
        flat = tf.reshape(flat[..., None] + tf.range(ch), [-1, m])
        d = tf.reshape(d, [-1, S, m])
        if m * self.units <= 4 * self.n:      # gather the few rows of W that matter, once per window
            return tf.einsum("bsm,bmu->bsu", d, tf.gather(self.kernel(), flat))
        # big windows: a dense delta image costs less memory than B x m x units gathered rows
        nb = tf.shape(d)[0]
        flat = tf.repeat(flat, S, axis=0)
        d = tf.reshape(d, [-1, m])
        bidx = tf.broadcast_to(tf.range(nb * S)[:, None], tf.shape(flat))
        dense = tf.scatter_nd(tf.stack([bidx, flat], -1), d, tf.stack([nb * S, self.n]))
        return tf.reshape(tf.matmul(dense, self.kernel()), [nb, S, self.units])


class _ConvFirst:
    """``Conv2D`` first: a window changes z only at the output positions that see it."""

    name = "Conv2D"

    def __init__(self, layer, shape):
        self.layer = layer
        self.height, self.width, self.channels = shape
        self.dtype = _compute_dtype(layer)
        self.activation = layer.activation or _identity
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError("Conv2D is channels_first")
        if tuple(layer.dilation_rate) != (1, 1) or int(getattr(layer, "groups", 1)) != 1:
            raise ValueError("Conv2D is dilated or grouped")
        self.kh, self.kw = (int(k) for k in layer.kernel_size)
        self.sh, self.sw = (int(s) for s in layer.strides)
        self.filters = int(layer.filters)
        padding = str(layer.padding).lower()
        if padding == "valid":
            self.out_h = (self.height - self.kh) // self.sh + 1
            self.out_w = (self.width - self.kw) // self.sw + 1
            self.pads = (0, 0, 0, 0)
        elif padding == "same":
            self.out_h = -(-self.height // self.sh)
            self.out_w = -(-self.width // self.sw)
            ph = max((self.out_h - 1) * self.sh + self.kh - self.height, 0)
            pw = max((self.out_w - 1) * self.sw + self.kw - self.width, 0)
            self.pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        else:
            raise ValueError(f"Conv2D padding {padding!r}")

    def kernel(self):
        return tf.cast(tf.convert_to_tensor(self.layer.kernel), self.dtype)

    def prepare(self, x):
        t, b, l, r = self.pads
        return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])

    def _conv(self, xp):
        return tf.nn.conv2d(tf.cast(xp, self.dtype), self.kernel(), [1, self.sh, self.sw, 1], "VALID")

    def z(self, x):
        z = self._conv(self.prepare(x))
        if self.layer.use_bias:
            z = z + tf.cast(tf.convert_to_tensor(self.layer.bias), self.dtype)
        return z

    def delta(self, src, b, r, c, values):
        """Change of z, (B,S,H',W',F), for patches ``values`` (B,S,kh,kw,C) at (r, c) of padded ``src[b]``."""
        S, wh, ww = values.shape[1], values.shape[2], values.shape[3]
        ph = min(self.out_h, (wh + self.kh - 2) // self.sh + 1)   # output rows a window can touch
        pw = min(self.out_w, (ww + self.kw - 2) // self.sw + 1)
        rp, cp = r + self.pads[0], c + self.pads[2]                # window in padded coordinates
        # first touched output row, shifted so the ph-row block stays inside the output
        p0 = tf.clip_by_value(-((self.kh - 1 - rp) // self.sh), 0, self.out_h - ph)
        q0 = tf.clip_by_value(-((self.kw - 1 - cp) // self.sw), 0, self.out_w - pw)
        rows = (p0 * self.sh)[:, None] + tf.range((ph - 1) * self.sh + self.kh)
        cols = (q0 * self.sw)[:, None] + tf.range((pw - 1) * self.sw + self.kw)
        region = tf.cast(tf.gather_nd(src, _grid_index(b, rows, cols)), self.dtype)[:, None]
        nb = tf.shape(b)[0]
        flat = tf.reshape(values, tf.concat([[-1], tf.shape(values)[2:]], 0))
        rep = (lambda a: tf.repeat(a, S, axis=0)) if S > 1 else (lambda a: a)
        inside, new = _place(flat, rep(rp), rep(cp), rep(rows), rep(cols))
        shape = tf.concat([[nb, S], tf.shape(new)[1:]], 0)
        inside, new = tf.reshape(inside, tf.concat([shape[:-1], [1]], 0)), tf.reshape(new, shape)
        d = tf.where(inside, tf.cast(new, self.dtype), region) - region      # (B,S,R,Q,C)
        local = self._conv(tf.reshape(d, tf.concat([[-1], shape[2:]], 0)))  # (B*S, ph, pw, F)
        idx = _grid_index(tf.range(nb * S), rep(p0)[:, None] + tf.range(ph), rep(q0)[:, None] + tf.range(pw))
        dz = tf.scatter_nd(idx, local, tf.stack([nb * S, self.out_h, self.out_w, self.filters]))
        return tf.reshape(dz, [nb, S, self.out_h, self.out_w, self.filters])


SHORTCUTS = (True, False, "dense")


class _Chain:
    """A model cut after its first linear layer: ``head(first.z(x)) == model(x)``."""

    def __init__(self, first, rest, post):
        self.first, self.rest, self.post = first, rest, post

    def head(self, z):
        h = self.first.activation(z)
        for layer in self.rest:
            h = layer(h, training=False)
        return self.post(h) if self.post is not None else h


def split_chain(model, post=None):
    """``(_Chain, "")`` when the shortcut applies, else ``(None, reason)``.

    Applies to simple chains (:func:`chain_layers`) that start with ``Flatten -> Dense`` or
    ``Conv2D`` (channels last, no dilation/groups), tf-keras or Keras 3, functional or
    Sequential. A numerical probe checks ``head(z(x)) == model(x)`` before use.
    """
    shape = input_shape(model)
    if len(shape) != 3 or None in shape:
        return None, f"input shape {shape} is not a fixed (H,W,C)"
    layers, reason = chain_layers(model)
    if layers is None:
        return None, reason
    kind = layer_type(layers[0])
    try:
        if kind == "Flatten" and len(layers) > 1 and layer_type(layers[1]) == "Dense":
            first_layer, rest = layers[1], layers[2:]
            first = _DenseFirst(first_layer, shape)
        elif kind == "Conv2D":
            first_layer, rest = layers[0], layers[1:]
            first = _ConvFirst(first_layer, shape)
        else:
            return None, f"first layer {kind} is not Conv2D or Flatten->Dense"
        if getattr(first_layer, "quantization_mode", None) or getattr(first_layer, "lora_enabled", False):
            return None, "first layer is quantized or has LoRA weights"
    except (ValueError, AttributeError, TypeError) as e:
        return None, f"unsupported first layer ({e})"
    chain = _Chain(first, rest, post)
    try:  # probe: the cut model must compute the model's own output
        x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2,) + tuple(shape)), tf.float32)
        ref = model(x, training=False)
        if post is not None:
            ref = post(ref)
        got = chain.head(chain.first.z(x))
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        scale = np.abs(ref).max() + 1e-12
        if ref.shape != got.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale):
            return None, "the layer walk does not reproduce the model output"
    except Exception as e:  # noqa: BLE001 - any failure means: use the plain path
        return None, f"the layer walk failed ({type(e).__name__})"
    return chain, ""


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------
class Engine:
    """Batched perturbation evaluations of one model output.

    Args:
        model: the Keras model whose output is explained (the full model for probabilities, the
            logits sub-model for pre-softmax outputs).
        post: None, ``"softmax"`` or ``"sigmoid"``: applied to the model's output (a probability
            was asked for and the model has no final softmax/sigmoid; see
            :func:`xaitf.keras_bridge.probability_head`).
        shortcut: use the structural shortcut when the model allows it (True), never (False), or
            only when the first linear layer is a Dense layer ("dense": where the shortcut saves
            most; after a Conv2D the saved work can cost less than the shortcut's bookkeeping).
        batch_size: model evaluations per chunk.
        show_progress: tqdm bar over the calls of long runs.
        desc: label of the progress bar.
        score: None (the target's output, after ``post``) or a callable ``(outputs, targets) ->
            (N,)`` giving the explained score of each row (a user's ``output=`` function,
            :mod:`xaitf.outputs`; ``model`` is then the full model and ``post`` None).
    """

    def __init__(self, model, *, post=None, shortcut=True, batch_size=256, show_progress=True,
                 desc=None, score=None):
        self.model = model
        self.run = runner(model)       # the model's function, to call (faster for grouped convolutions)
        self.score = score
        self.post = {None: None, "softmax": lambda h: tf.nn.softmax(h, axis=-1),
                     "sigmoid": tf.nn.sigmoid}[post]
        self.batch_size = max(1, int(batch_size))
        self.show_progress = show_progress
        self.desc = desc
        if shortcut not in SHORTCUTS:
            raise MethodError(f"shortcut must be True, False or 'dense', got {shortcut!r}")
        if shortcut:
            self.chain, reason = split_chain(model, self.post)
            if self.chain is not None and shortcut == "dense" and not isinstance(self.chain.first, _DenseFirst):
                self.chain, reason = None, "shortcut='dense': the first linear layer is a Conv2D"
        else:
            self.chain, reason = None, "shortcut=False"
        self.path = (f"shortcut ({self.chain.first.name})" if self.chain is not None
                     else f"plain ({reason})")
        self._fns = {}
        self.local = None
        if shortcut is True:
            self.local, why = self._local_stack()
            if self.local is not None:
                self.path += "; windows: cropped through the leading spatial layers"
        self.window_path = None      # the path the last window_scores call took

    def _local_stack(self):
        """The receptive-field cropping of window perturbations, probed against the model."""
        shape = input_shape(self.model)
        if len(shape) != 3 or None in shape:
            return None, f"input shape {shape} is not a fixed (H,W,C)"
        layers, reason = chain_layers(self.model)
        if layers is None:
            return None, reason
        stack, reason = local_stack(layers, self.model, self.post)
        if stack is None:
            return None, reason
        try:   # probe: 3x3 windows at the corners and the middle must give the model's outputs
            h, w, ch = shape
            k = (min(3, h), min(3, w))
            pos = np.array([[0, 0], [h - k[0], w - k[1]], [(h - k[0]) // 2, (w - k[1]) // 2]], np.int32)
            plan = stack.plan(pos, k)
            if plan is None:
                return None, "cropping saves nothing on this model"
            rng = np.random.default_rng(0)
            x = tf.constant(rng.uniform(0, 1, (2,) + tuple(shape)), tf.float32)
            patch = tf.constant(rng.uniform(0, 1, (6,) + k + (ch,)), tf.float32)
            b = tf.constant(np.repeat([0, 1], 3), tf.int32)
            r, c = (tf.constant(np.tile(pos[:, a], 2)) for a in (0, 1))
            got = stack.outputs(stack.clean(x, plan[0]), *plan, b, r, c, patch)
            inside, new = _place(patch, r, c, tf.constant(np.broadcast_to(np.arange(h, dtype=np.int32), (6, h))),
                                 tf.constant(np.broadcast_to(np.arange(w, dtype=np.int32), (6, w))))
            ref = self._outputs(tf.where(inside, new, tf.gather(x, b)))
            ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
            scale = np.abs(ref).max() + 1e-12
            if ref.shape != got.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale):
                return None, "the cropped layers do not reproduce the model output"
        except Exception as e:  # noqa: BLE001 - any failure means: do not crop
            return None, f"cropping failed ({type(e).__name__})"
        return stack, ""

    # -- plain outputs ------------------------------------------------------------------------
    def _outputs(self, x):
        out = self.run(x, training=False)
        return self.post(out) if self.post is not None else out

    def target_outputs(self, x, targets):
        """(N,) float64: the explained output of the unperturbed inputs at their targets."""
        spec = [_spec(x.shape[1:], tf.float32), _spec((), tf.int32)]
        fn = self._fn(("outputs",) + tuple(x.shape[1:]), lambda: lambda x, t: self._outputs_fn(x, t), spec)
        res = []
        for s in range(0, len(x), self.batch_size):
            res.append(fn(tf.constant(x[s:s + self.batch_size]),
                          tf.constant(targets[s:s + self.batch_size], tf.int32)).numpy())
        return np.concatenate(res)

    def _select(self, outputs, targets):
        """(N,) float64 explained scores of model outputs (after ``post``) at int targets."""
        s = tf.gather(outputs, targets, batch_dims=1) if self.score is None else self.score(outputs, targets)
        return tf.cast(s, tf.float64)

    def _outputs_fn(self, x, t):
        return self._select(self._outputs(x), t)

    def _fn(self, key, make, signature=None):
        """A tf.function cached per key; ``signature`` leaves the batch axes free (no retracing)."""
        if key not in self._fns:
            fn = tf.function(make(), input_signature=signature, autograph=False)
            # each Engine traces its own closures once; TF would count those traces across
            # engines (same code object) and warn about "frequent retracing"
            quiet_retracing(fn)
            self._fns[key] = fn
        return self._fns[key]

    def _calls(self, n_chunks, per_chunk_elems):
        """Chunks per tf.function call: ~50 calls for progress, memory-bounded, at most 256."""
        per_call = max(1, min(256, math.ceil(n_chunks / 50)))
        return max(1, min(per_call, _MEMORY_BUDGET // max(1, per_chunk_elems)))

    # -- windows ------------------------------------------------------------------------------
    def window_scores(self, x, b, grid_pos, targets, weights, shared=None, pair_values=None):
        """Weighted target output of ``x[b]`` with a window replaced, for every pair.

        Args:
            x: (N,H,W,C) float32 inputs.
            b: (P,) input index of each pair; grid_pos: (P,2) window top-left corners;
            targets: (P,) class of each pair.
            weights: (S,) weights of the S replacement patches (the scores are summed with them).
            shared: (S,kh,kw,C) patches used by every pair, or
            pair_values: ``f(lo, hi) -> (hi-lo, S, kh, kw, C)`` patches of pairs ``lo:hi``.
        Returns:
            (P,) float64: ``sum_s weights[s] * f_target(x[b] with window <- patch s)``.
        """
        weights = np.asarray(weights, np.float64)
        S = len(weights)
        if S > self.batch_size:       # more samples than one chunk holds: sum over sample blocks
            total = np.zeros(len(b))
            for s0 in range(0, S, self.batch_size):
                blk = slice(s0, s0 + self.batch_size)
                sub = (lambda lo, hi, blk=blk: np.asarray(pair_values(lo, hi))[:, blk]) \
                    if shared is None else None
                total += self.window_scores(x, b, grid_pos, targets, weights[blk],
                                            None if shared is None else shared[blk], sub)
            return total
        probe = shared if shared is not None else np.asarray(pair_values(0, 1))[0]
        kh, kw = int(probe.shape[1]), int(probe.shape[2])
        n_pairs = len(b)
        bw = max(1, self.batch_size // S)                 # windows per chunk
        n_chunks = math.ceil(n_pairs / bw)
        elems = bw * S * kh * kw * x.shape[-1] * (1 if shared is not None else 2)
        per_call = self._calls(n_chunks, elems)
        is_shared = shared is not None
        X = tf.constant(x)
        plan = self.local.plan(np.unique(grid_pos, axis=0), (kh, kw)) if self.local is not None else None
        if plan is not None:
            state = self._clean(X, plan[0])
            chunk = lambda st, *a: self._local_chunk(plan, st, *a)      # noqa: E731
            self.window_path = f"shortcut (cropped through {plan[0]} layers)"
        else:
            src = self.chain.first.prepare(X) if self.chain is not None else X
            state = (X, src, self._z(X) if self.chain is not None else X)
            chunk = self._window_chunk
            self.window_path = self.path.split(";")[0]
        w = tf.constant(weights)
        sv = tf.constant(np.asarray(shared, np.float32)[None]) if shared is not None else None
        vshape = (1 if is_shared else None, S, kh, kw, x.shape[-1])
        spec = [tuple(_spec(a.shape[1:], a.dtype) for a in state)] + [_spec((), tf.int32)] * 4 + \
               [tf.TensorSpec(vshape, tf.float32), tf.TensorSpec((S,), tf.float64)]
        key = ("window", plan, bw, is_shared, tuple(a.shape for a in spec[0]), tuple(a.shape for a in spec[1:]))
        fn = self._fn(key, lambda: self._window_loop(bw, is_shared, chunk), spec)
        out = np.empty(n_pairs)
        starts = list(range(0, n_pairs, per_call * bw))
        show = self.show_progress
        for lo in _progress(starts, show, desc=self.desc):
            hi = min(lo + per_call * bw, n_pairs)
            pad = (-(hi - lo)) % bw
            idx = np.concatenate([np.arange(lo, hi), np.full(pad, hi - 1)])
            if shared is not None:
                v = sv
            else:
                v = np.asarray(pair_values(lo, hi), np.float32)
                v = tf.constant(np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v)
            res = fn(state, tf.constant(b[idx], tf.int32), tf.constant(grid_pos[idx, 0], tf.int32),
                     tf.constant(grid_pos[idx, 1], tf.int32), tf.constant(targets[idx], tf.int32), v, w)
            out[lo:hi] = res.numpy()[:hi - lo]
        return out

    def _per_chunk(self, key, f, X):
        """``f`` (a tuple of tensors per input row) over X in chunks of ``batch_size``, concatenated."""
        fn = self._fn(key + tuple(X.shape[1:]), lambda: f, [_spec(X.shape[1:], tf.float32)])
        parts = [fn(X[s:s + self.batch_size]) for s in range(0, int(X.shape[0]), self.batch_size)]
        return tuple(tf.concat(p, 0) for p in zip(*parts))

    def _z(self, X):
        return self._per_chunk(("z",), lambda x: (self.chain.first.z(x),), X)[0]

    def _clean(self, X, cut):
        return self._per_chunk(("clean", cut), lambda x: self.local.clean(x, cut), X)

    def _local_chunk(self, plan, acts, b, r, c, t, v, w):
        """One chunk on the cropped path (see :mod:`xaitf.methods._local_windows`)."""
        S, kh, kw, ch = v.shape[1], v.shape[2], v.shape[3], v.shape[4]
        n = tf.shape(b)[0]
        v = tf.reshape(tf.broadcast_to(v, tf.stack([n, S, kh, kw, ch])), [-1, kh, kw, ch])
        bb, rr, cc = (tf.repeat(a, S) for a in (b, r, c))
        out = self.local.outputs(acts, *plan, bb, rr, cc, v)
        s = self._select(out, tf.repeat(t, S))
        return tf.linalg.matvec(tf.reshape(s, [n, S]), w)

    def _window_chunk(self, state, b, r, c, t, v, w):
        """One chunk: ``b, r, c, t`` (bw,), patches v (bw or 1, S, kh, kw, C) -> (bw,) scores."""
        X, src, Z = state
        S, kh, kw, ch = v.shape[1], v.shape[2], v.shape[3], v.shape[4]
        n = tf.shape(b)[0]
        tt = tf.repeat(t, S)
        v = tf.broadcast_to(v, tf.stack([n, S, kh, kw, ch]))
        if self.chain is not None:
            z = tf.expand_dims(tf.gather(Z, b), 1) + self.chain.first.delta(src, b, r, c, v)
            out = self.chain.head(tf.reshape(z, tf.concat([[-1], tf.shape(z)[2:]], 0)))
        else:
            bb, rr, cc = (tf.repeat(a, S) for a in (b, r, c))
            v = tf.reshape(v, [-1, kh, kw, ch])
            xb = tf.gather(X, bb)
            m = tf.shape(bb)[0]
            rows = tf.broadcast_to(tf.range(tf.shape(X)[1])[None], tf.stack([m, tf.shape(X)[1]]))
            cols = tf.broadcast_to(tf.range(tf.shape(X)[2])[None], tf.stack([m, tf.shape(X)[2]]))
            inside, new = _place(v, rr, cc, rows, cols)
            out = self._outputs(tf.where(inside, new, xb))
        s = self._select(out, tt)
        return tf.linalg.matvec(tf.reshape(s, [n, S]), w)

    def _window_loop(self, bw, shared, chunk):
        def loop(state, b, r, c, t, v, w):
            n = tf.shape(b)[0] // bw

            def body(i, out):
                k = i * bw + tf.range(bw)            # static-size slice (XLA friendly)
                vi = v if shared else tf.gather(v, k)
                res = chunk(state, tf.gather(b, k), tf.gather(r, k), tf.gather(c, k), tf.gather(t, k), vi, w)
                return i + 1, tf.tensor_scatter_nd_update(out, [[i]], res[None])

            out = tf.zeros(tf.stack([n, bw]), tf.float64)
            _, out = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), out), parallel_iterations=1)
            return tf.reshape(out, [-1])

        return loop

    # -- Shapley permutation sampling -----------------------------------------------------------
    def shapley(self, x, targets, perms, baseline, channel_features):
        """Mean over permutations of the drop of the target output as features go to the baseline.

        Args:
            x: (N,H,W,C) inputs; targets: (N,) classes.
            perms: (S, F) permutations of the F features (pixels, or pixels x channels).
            baseline: (H,W,C) value each feature takes when it is removed.
            channel_features: features are single channels (F = H*W*C) instead of pixels (H*W).
        Returns:
            (N, F) float64: ``phi[f] = mean_s [out(prefix before f) - out(prefix with f)]``.
        """
        n, (S, F) = len(x), perms.shape
        L = F + 1                                     # prefixes t = 0..F
        if L <= self.batch_size:                      # several whole permutations per chunk
            T, q_par = L, max(1, self.batch_size // L)
        else:                                         # one permutation cut into equal chunks of T
            T, q_par = -(-L // -(-L // self.batch_size)), 1   # (not batch_size: less padding)
        ranks = np.argsort(perms, axis=1).astype(np.int32)
        Q = n * S
        q_par = min(q_par, Q)
        fn = self._fn(("shapley", T, q_par, bool(channel_features)),
                      lambda: self._shapley_group(T, L, bool(channel_features)))
        X = tf.constant(x)
        base = tf.constant(baseline, tf.float32)
        phi = np.zeros((n, F))
        starts = list(range(0, Q, q_par))
        show = self.show_progress
        for lo in _progress(starts, show, desc=self.desc):
            q = np.arange(lo, lo + q_par)
            q = np.minimum(q, Q - 1)                  # pad the last group with repeats
            i, s = q // S, q % S
            res = fn(tf.gather(X, i), tf.constant(perms[s], tf.int32), tf.constant(ranks[s]),
                     tf.constant(targets[i], tf.int32), base).numpy()
            valid = min(q_par, Q - lo)
            np.add.at(phi, i[:valid], res[:valid])
        return phi / S

    def _shapley_group(self, T, L, channel_features):
        F = L - 1

        def group(X, perm, rank, t, base):
            q = tf.shape(X)[0]
            H, W, C = X.shape[1], X.shape[2], X.shape[3]
            n_chunks = -(-L // T)
            tt = tf.repeat(t, T)

            def removed(limit):               # (q, k) prefix lengths -> images with those removed
                return prefix_images(X, rank, limit, base, channel_features)

            def body(i, ta):
                a = i * T
                steps = tf.minimum(a + tf.range(T), F)
                if self.chain is None:
                    xs = tf.reshape(removed(tf.broadcast_to(steps[None], tf.stack([q, T]))), [-1, H, W, C])
                    out = self._outputs(xs)
                else:
                    first = self.chain.first
                    za = first.z(removed(tf.fill(tf.stack([q, 1]), tf.minimum(a, F)))[:, 0])
                    z = za[:, None]
                    if T > 1:                 # add the next T-1 features one by one (cumsum)
                        f = tf.gather(perm, tf.minimum(a + tf.range(T - 1), F - 1), axis=1)  # (q, T-1)
                        f = tf.reshape(f, [-1])
                        bq = tf.repeat(tf.range(q), T - 1)
                        pix = f // C if channel_features else f
                        r, c = pix // W, pix % W
                        new = tf.gather_nd(base, tf.stack([r, c], -1))             # (m, C)
                        if channel_features:
                            old = tf.gather_nd(X, tf.stack([bq, r, c], -1))
                            new = tf.where(tf.one_hot(f % C, C) > 0, new, old)
                        dz = first.delta(first.prepare(X), bq, r, c, new[:, None, None, None, :])
                        dz = tf.reshape(dz, tf.concat([[q, T - 1], tf.shape(dz)[2:]], 0))
                        z = tf.concat([z, za[:, None] + tf.cumsum(dz, axis=1)], 1)
                    out = self.chain.head(tf.reshape(z, tf.concat([[-1], tf.shape(z)[2:]], 0)))
                s = self._select(out, tt)
                return i + 1, ta.write(i, tf.reshape(s, tf.stack([q, T])))

            ta = tf.TensorArray(tf.float64, size=n_chunks)
            _, ta = tf.while_loop(lambda i, _: i < n_chunks, body, (tf.constant(0), ta),
                                  parallel_iterations=1)
            scores = tf.transpose(ta.stack(), [1, 0, 2])
            scores = tf.reshape(scores, [q, n_chunks * T])[:, :L]         # (q, L)
            return tf.gather(scores, rank, batch_dims=1) - tf.gather(scores, rank + 1, batch_dims=1)

        return group

    # -- features = segments (superpixels) -----------------------------------------------------
    def shapley_segments(self, x, targets, perms, baseline, segments):
        """:meth:`shapley` with segments as the features: a removed segment's pixels (all
        channels) take the baseline.

        Args:
            x: (N,H,W,C) inputs; targets: (N,) classes.
            perms: (S, K) permutations of the K segments (an image with fewer segments has empty
                ones: null players, which change nothing and get 0).
            baseline: (H,W,C) or broadcastable (1,1,C) values of removed pixels.
            segments: (N,H,W) int labels 0..K-1.
        Returns:
            (N, K) float64 segment values. Always the plain path (the whole model per prefix).
        """
        n, (S, K) = len(x), perms.shape
        L = K + 1
        if L <= self.batch_size:
            T, q_par = L, max(1, self.batch_size // L)
        else:
            T, q_par = -(-L // -(-L // self.batch_size)), 1
        ranks = np.argsort(perms, axis=1).astype(np.int32)              # (S, K) rank of a segment
        Q = n * S
        q_par = min(q_par, Q)
        fn = self._fn(("shapley_segments", T, q_par), lambda: self._segment_group(T, L))
        X = tf.constant(x)
        base = tf.constant(baseline, tf.float32)
        seg = np.asarray(segments, np.int32).reshape(n, -1)
        phi = np.zeros((n, K))
        starts = list(range(0, Q, q_par))
        show = self.show_progress
        for lo in _progress(starts, show, desc=self.desc):
            q = np.minimum(np.arange(lo, lo + q_par), Q - 1)
            i, s = q // S, q % S
            pixel_rank = np.take_along_axis(ranks[s], seg[i], axis=1)     # (q, H*W)
            res = fn(tf.gather(X, i), tf.constant(pixel_rank), tf.constant(ranks[s]),
                     tf.constant(targets[i], tf.int32), base).numpy()
            valid = min(q_par, Q - lo)
            np.add.at(phi, i[:valid], res[:valid])
        return phi / S

    def _segment_group(self, T, L):
        K = L - 1

        def group(X, pixel_rank, rank, t, base):
            q = tf.shape(X)[0]
            H, W, C = X.shape[1], X.shape[2], X.shape[3]
            n_chunks = -(-L // T)
            tt = tf.repeat(t, T)

            def body(i, ta):
                steps = tf.minimum(i * T + tf.range(T), K)
                limit = tf.broadcast_to(steps[None], tf.stack([q, T]))
                xs = tf.reshape(prefix_images(X, pixel_rank, limit, base, False), [-1, H, W, C])
                s = self._select(self._outputs(xs), tt)
                return i + 1, ta.write(i, tf.reshape(s, tf.stack([q, T])))

            ta = tf.TensorArray(tf.float64, size=n_chunks)
            _, ta = tf.while_loop(lambda i, _: i < n_chunks, body, (tf.constant(0), ta),
                                  parallel_iterations=1)
            scores = tf.reshape(tf.transpose(ta.stack(), [1, 0, 2]), [q, n_chunks * T])[:, :L]
            return tf.gather(scores, rank, batch_dims=1) - tf.gather(scores, rank + 1, batch_dims=1)

        return group

    def segment_scores(self, x, segments, b, labels, targets, baseline, sources=None):
        """(P,) float64 target output of ``x[b]`` with the pixels of segment ``labels[p]`` set to
        the baseline, ``batch_size`` pairs per chunk (plain path).

        ``segments`` (N,H,W) int labels; ``baseline`` (1 or N, H|1, W|1, C) float32 (per-input
        rows are taken at ``b``, or at ``sources`` (P,) when given: feature permutation fills a
        segment of ``x[b]`` from another input's row).
        """
        per_input = len(baseline) > 1
        fn = self._fn(("segment_scores", per_input), lambda: self._segment_scores_fn(per_input))
        X, SEG = tf.constant(x), tf.constant(np.asarray(segments, np.int32))
        base = tf.constant(np.asarray(baseline, np.float32))
        src = b if sources is None else np.asarray(sources)
        out = np.empty(len(b))
        starts = list(range(0, len(b), self.batch_size))
        show = self.show_progress
        for lo in _progress(starts, show, desc=self.desc):
            k = slice(lo, lo + self.batch_size)
            out[k] = fn(X, SEG, base, tf.constant(b[k], tf.int32), tf.constant(labels[k], tf.int32),
                        tf.constant(targets[k], tf.int32), tf.constant(src[k], tf.int32)).numpy()
        return out

    def _segment_scores_fn(self, per_input):
        def fn(X, SEG, base, b, s, t, src):
            mask = tf.equal(tf.gather(SEG, b), s[:, None, None])[..., None]
            fill = tf.gather(base, src) if per_input else base
            xs = tf.where(mask, fill, tf.gather(X, b))
            return self._select(self._outputs(xs), t)

        return fn


def _prefix_images(X, rank, limit, base, channel_features):
    """(q, k, H, W, C): input ``X[i]`` with its features of rank below ``limit[i, j]`` set to ``base``
    (features: pixels, or single channels)."""
    hwc = tf.shape(X)[1:]
    mask = rank[:, None, :] < limit[:, :, None]                               # (q, k, F)
    mask = tf.reshape(mask, tf.concat([tf.shape(mask)[:2], hwc if channel_features else
                                       tf.concat([hwc[:2], [1]], 0)], 0))
    return tf.where(mask, base, X[:, None])


# one XLA loop where XLA is available: TF's broadcasting select over five axes was 18% of Shapley
# sampling's time on the MNIST CNN (1.7 vs 0.75 ms per chunk of 197 prefixes)
prefix_images = fused(_prefix_images)


def _spec(shape, dtype):
    """A TensorSpec with a free leading (batch) axis."""
    return tf.TensorSpec((None,) + tuple(shape), dtype)


def output_engine(explainer, **kw):
    """The Engine of an explainer's ``output`` (:mod:`xaitf.outputs`): over the logit model for
    ``"logits"``, over class probabilities (:func:`probability_engine`) for ``"probabilities"``,
    over the model's own outputs scored by the user's function for a callable."""
    spec = explainer.output_spec
    if spec.kind == "probabilities":
        return probability_engine(explainer.model, **kw)
    if spec.kind == "callable":
        return Engine(explainer.model, score=spec.call_user, **kw)
    return Engine(spec.forward, **kw)


def probability_engine(model, **kw):
    """An Engine over class probabilities: the model output if it ends in a softmax or sigmoid,
    else its softmax (sigmoid for one unit): :func:`xaitf.keras_bridge.probability_head`."""
    return Engine(model, post=probability_head(model)[0], **kw)
