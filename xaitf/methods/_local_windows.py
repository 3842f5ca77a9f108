"""Window perturbations evaluated only where they reach (receptive-field cropping).

Replacing a window of pixels changes a convolution or pooling layer's output only at the positions
whose receptive field meets the window; elementwise layers (activations, batch norm in inference,
dropout) keep the changed region where it is. So a window can be pushed through the leading
spatial layers of a chain on a small crop: at each layer, the crop is the clean activation of the
input around the changed region, with the changed values written in, and the layer runs on that
crop alone (a VALID convolution or pooling of the padded crop). After the last cropped layer the
crop is pasted into the clean activation and the rest of the model runs as usual::

    a_0 = x with the window replaced (only the window's crop)
    a_l = layer_l(clean a_{l-1} around the changed region <- a_{l-1})     l = 1..m (crops)
    f(x') = rest(clean a_m <- a_m)                                        (one full tail)

The outputs equal the model's up to float rounding (the same sums in another order). For a
4x4 window on the study-4 MNIST CNN, the first convolution computes 6x6 of its 26x26 outputs
and the second 6x6 of its 11x11. The cut ``m`` is the last layer whose crop is under half of its map (beyond
that, cropping saves little and costs gathers). Clean activations are computed once per call.

Supported leading layers: ``Conv2D`` (channels last, any stride, "valid" or "same", no dilation or
groups), ``MaxPooling2D`` ("valid" or "same") and ``AveragePooling2D`` ("valid"), and the
elementwise layers in ``POINTWISE``. The first other layer ends the cropped part.
"""
import numpy as np

import tensorflow as tf

from ..keras_bridge import input_shape, layer_type
from ._patches import grid_index, place

POINTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "BatchNormalization", "Dropout",
             "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Rescaling",
             "ActivityRegularization")
# a crop no larger than this share of its layer's map is worth cropping
MAX_FRACTION = 0.5


def _pads(size, k, s, padding):
    """(output size, pad before, pad after) of a window op along one axis (Keras conventions)."""
    if padding == "valid":
        return (size - k) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


class _Stage:
    """One layer of the cropped part: a window op (conv, pooling) or an elementwise layer."""

    def __init__(self, layer, hw):
        self.layer = layer
        self.kind = layer_type(layer)
        self.spatial = self.kind not in POINTWISE
        self.in_hw = hw
        self.k, self.s, self.pads, self.out_hw, self.fill = (1, 1), (1, 1), (0, 0, 0, 0), hw, 0.0
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"{layer.name} is channels_first")
        dtype = getattr(layer, "compute_dtype", None) or layer.dtype
        if tf.as_dtype(dtype) != tf.float32:
            raise ValueError(f"{layer.name} computes in {dtype}")
        if self.kind == "BatchNormalization":
            axis = layer.axis if np.ndim(layer.axis) == 0 else (list(layer.axis) + [None])[0]
            if axis not in (-1, 3) or np.ndim(layer.axis) > 0 and len(layer.axis) != 1:
                raise ValueError(f"{layer.name} normalises axis {layer.axis}, not the channels")
        if not self.spatial:
            return
        padding = str(layer.padding).lower()
        if self.kind == "Conv2D":
            if tuple(layer.dilation_rate) != (1, 1) or int(getattr(layer, "groups", 1)) != 1:
                raise ValueError(f"{layer.name} is dilated or grouped")
            self.k = tuple(int(v) for v in layer.kernel_size)
        elif self.kind in ("MaxPooling2D", "AveragePooling2D"):
            if self.kind == "AveragePooling2D" and padding != "valid":
                raise ValueError(f"{layer.name}: 'same' average pooling counts only real pixels")
            self.k = tuple(int(v) for v in layer.pool_size)
            self.fill = -np.inf if self.kind == "MaxPooling2D" else 0.0
        else:
            raise ValueError(f"{layer.name} ({self.kind}) is not a window op")
        self.s = tuple(int(v) for v in layer.strides)
        (oh, pt, pb), (ow, pl, pr) = (_pads(hw[i], self.k[i], self.s[i], padding) for i in (0, 1))
        self.pads, self.out_hw = (pt, pb, pl, pr), (oh, ow)

    def pad(self, a):
        """The clean input activation, padded as the layer pads it (zeros, or -inf for max pooling)."""
        t, b, l, r = self.pads
        if not any(self.pads):
            return a
        return tf.pad(a, [[0, 0], [t, b], [l, r], [0, 0]], constant_values=self.fill)

    def apply(self, crop):
        """The layer on a crop (VALID: the crop carries its own padding)."""
        if not self.spatial:
            return self.layer(crop, training=False)
        strides = [1, self.s[0], self.s[1], 1]
        if self.kind == "MaxPooling2D":
            return tf.nn.max_pool2d(crop, self.k, strides, "VALID")
        if self.kind == "AveragePooling2D":
            return tf.nn.avg_pool2d(crop, self.k, strides, "VALID")
        layer = self.layer
        z = tf.nn.conv2d(crop, tf.convert_to_tensor(layer.kernel), strides, "VALID")
        if layer.use_bias:
            z = z + tf.convert_to_tensor(layer.bias)
        return layer.activation(z) if layer.activation is not None else z

    def touched(self, lo, hi, axis, mx, mn):
        """Output positions ``[olo, ohi]`` whose receptive field meets input positions ``[lo, hi)``
        (numpy or TF integers: ``mx``/``mn`` are the elementwise max/min)."""
        k, s, pad, out = self.k[axis], self.s[axis], self.pads[2 * axis], self.out_hw[axis]
        olo = mx(-((k - 1 - lo - pad) // s), 0)          # ceil((lo + pad - k + 1) / s), >= 0
        ohi = mn((hi - 1 + pad) // s, out - 1)
        return olo, ohi


class LocalStack:
    """The leading spatial layers of a chain, cropped per window, and the rest of the model."""

    def __init__(self, layers, shape, post):
        self.layers, self.post = layers, post
        self.stages, hw = [], tuple(shape[:2])
        for layer in layers:
            try:
                stage = _Stage(layer, hw)
            except (ValueError, AttributeError, TypeError):
                break
            self.stages.append(stage)
            hw = stage.out_hw
        if not any(s.spatial for s in self.stages):
            raise ValueError("the model does not start with a convolution or pooling layer")

    def plan(self, positions, window):
        """``(cut, crops)`` for windows of size ``window`` at ``positions`` (P, 2), or None.

        ``cut``: number of leading layers run on crops; ``crops``: per cropped window op, the
        fixed crop size (rows, cols) of its output.
        """
        lo = [positions[:, a].astype(np.int64) for a in (0, 1)]
        hi = [lo[a] + window[a] for a in (0, 1)]
        crops, cut = [], 0
        for i, st in enumerate(self.stages):
            if st.spatial:
                span = [st.touched(lo[a], hi[a], a, np.maximum, np.minimum) for a in (0, 1)]
                size = tuple(int((oh - ol).max()) + 1 for ol, oh in span)
                if size[0] * size[1] > MAX_FRACTION * st.out_hw[0] * st.out_hw[1]:
                    break
                crops.append(size)
                lo = [ol for ol, _ in span]
                hi = [oh + 1 for _, oh in span]
            cut = i + 1
        while cut and not self.stages[cut - 1].spatial:   # trailing elementwise layers run in full
            cut -= 1
        return (cut, tuple(crops)) if crops else None

    def clean(self, x, cut):
        """Clean activations: the padded input of every cropped window op, and the cut's output."""
        acts, h = [], x
        for st in self.stages[:cut]:
            if st.spatial:
                acts.append(st.pad(h))
            h = st.layer(h, training=False)
        return tuple(acts) + (h,)

    def outputs(self, acts, cut, crops, b, r, c, patches):
        """Model outputs for images ``b`` with ``patches`` (B,kh,kw,C) written at ``(r, c)``."""
        kh, kw = patches.shape[1], patches.shape[2]
        lo, hi, at = [r, c], [r + kh, c + kw], [r, c]
        crop, j = patches, 0
        for st in self.stages[:cut]:
            if not st.spatial:
                crop = st.apply(crop)
                continue
            span = [st.touched(lo[a], hi[a], a, tf.maximum, tf.minimum) for a in (0, 1)]
            start = [tf.clip_by_value(span[a][0], 0, st.out_hw[a] - crops[j][a]) for a in (0, 1)]
            need = [(crops[j][a] - 1) * st.s[a] + st.k[a] for a in (0, 1)]     # input crop size
            rows = (start[0] * st.s[0])[:, None] + tf.range(need[0])          # padded coordinates
            cols = (start[1] * st.s[1])[:, None] + tf.range(need[1])
            region = tf.gather_nd(acts[j], grid_index(b, rows, cols))
            inside, new = place(crop, at[0] + st.pads[0], at[1] + st.pads[2], rows, cols)
            crop = st.apply(tf.where(inside, new, region))
            lo, hi, at = [span[0][0], span[1][0]], [span[0][1] + 1, span[1][1] + 1], start
            j += 1
        full = acts[-1]
        n = tf.shape(b)[0]
        rows = tf.broadcast_to(tf.range(full.shape[1])[None], tf.stack([n, full.shape[1]]))
        cols = tf.broadcast_to(tf.range(full.shape[2])[None], tf.stack([n, full.shape[2]]))
        inside, new = place(crop, at[0], at[1], rows, cols)
        h = tf.where(inside, new, tf.gather(full, b))
        for layer in self.layers[cut:]:
            h = layer(h, training=False)
        return self.post(h) if self.post is not None else h


def local_stack(layers, model, post):
    """``(LocalStack, "")`` for a chain of ``layers`` that starts with window ops, else ``(None, why)``."""
    shape = input_shape(model)
    try:
        return LocalStack(layers, shape, post), ""
    except ValueError as e:
        return None, str(e)
