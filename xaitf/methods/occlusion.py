"""Occlusion (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks").

A window of ``window`` pixels (all channels) is slid over the image with step ``stride`` and filled
with ``fill``; the relevance of the window is the drop of the explained output::

    R(window) = f_c(x) - f_c(x with the window filled)

and a pixel's relevance is the mean of the relevances of the windows that cover it. ``f_c`` is the
class probability (``output="probabilities"``, study 1: the model's softmax output, or a softmax
of its output if it has none) or the pre-softmax output (``output="logits"``).

Study-1 fix: window positions are ``0, stride, 2*stride, ...`` plus one last window flush with the
bottom/right border, so every pixel is occluded at least once when ``stride <= window`` (study
1's loop never occluded the last pixel). With ``stride > window`` the pixels between windows lie in
no window and get 0.

Segments (``segments=``): with a segmenter name (``"slic"``), a dict of a name and its keywords, a
callable or a user's integer label map (N,H,W) (or (H,W) shared), one segment at a time is filled
instead of a window: ``R(segment) = f_c(x) - f_c(x with the segment's pixels filled)``, painted
onto the segment's pixels (``window`` and ``stride`` are not used).

:class:`FeatureAblation` (Captum's name) is this class with a 1x1 window and stride 1 (or segments),
its removed value called ``baseline`` and the logit explained by default.
"""
import numpy as np

from .. import params as _params
from ..errors import MethodError
from ..explainer import Explainer, as_batch
from .perturb import as_pair, output_engine, paint, window_grid, window_pairs



class Occlusion(Explainer):
    """Occlusion sensitivity, batched over inputs and windows.

    Args:
        model: tf-keras or Keras 3 image classifier.
        window: window height and width in pixels (int or pair); it covers every channel (1).
        stride: step between windows (int or pair), >= 1; the last window is flush with the
            border (1).
        fill: value written into the window: a number, one number per channel (C,), one image
            (H,W,C) (or (H,W) when C == 1: the window gets the image's pixels under it) or one
            image per input (N,H,W,C) (0.0).
        output: ``"probabilities"`` (study 1), ``"logits"`` (pre-softmax output) or a callable
            ``(model outputs, targets) -> (N,)`` (:mod:`xaitf.outputs`) ("probabilities").
        shortcut: use the exact first-layer shortcut when the model allows it
            (``xaitf.methods.perturb``); False always runs the whole model (True).
        segments: None (default: windows), or occlude segments instead: a segmenter name of
            :mod:`xaitf.segmentation` (``"slic"``), a dict with its name and keywords
            (``{"name": "slic", "n_segments": 8}``), a callable image -> labels, or an integer label
            map (N,H,W) (or (H,W) shared). Segments run the whole model (no shortcut).
        **common: batch_size (model evaluations, i.e. occluded images, per chunk), channel_reduce,
            seed, progress (see :class:`xaitf.explainer.Explainer`).

    Returns (N,H,W) maps.

    Example::

        maps = xaitf.create_explainer("occlusion", model, window=3, stride=2)(x)
    """

    key = "occlusion"     # the preset section of xaitf.settings
    default_output = "probabilities"
    fill_name = "fill"    # the fill's name in messages (FeatureAblation: "baseline")

    def __init__(self, model, *, window=1, stride=1, fill=0.0, output="probabilities",
                 shortcut=True, segments=None, **common):
        super().__init__(model, params=dict(window=window, stride=stride, fill=fill, output=output,
                                            shortcut=shortcut, segments=segments), **common)

    def occlusion_params(self):
        """The :class:`Occlusion` parameters this explainer runs with (its own ``params`` here;
        subclasses with other names map theirs)."""
        return self.params

    def setup(self):
        p = self.occlusion_params()
        owner = type(self).__name__
        self.window = as_pair(p["window"], "window", owner)
        self.stride = as_pair(p["stride"], "stride", owner)
        channels = self.shape[-1]
        if channels is None:
            raise MethodError(f"{owner} needs a model with a known number of input channels")
        self.fill = _params.parse_baseline(p["fill"], self.shape, name=self.fill_name, owner=owner)
        self.segments = p.get("segments")
        h, w = self.shape[:2]
        if h is not None and w is not None and self.segments is None:
            window_grid(h, w, self.window, self.stride, owner)   # fails early if too big
        kw = dict(shortcut=bool(p["shortcut"]), batch_size=self.batch_size,
                  show_progress=self.progress, desc=self.name or self.key)
        self.engine = output_engine(self, **kw)

    def __call__(self, x, targets=None):
        x = as_batch(x, self.model)
        self._offset = 0
        owner = type(self).__name__
        _params.parse_baseline(self.fill, x.shape[1:], len(x), name=self.fill_name, owner=owner)
        self._segments = _params.parse_segments(self.segments, x, owner, self.seed)
        return super().__call__(x, targets)

    def chunk_size(self):
        h, w = self.shape[:2]
        if h is None or w is None or self.segments is not None:
            return self.batch_size
        per_input = len(window_grid(h, w, self.window, self.stride, type(self).__name__))
        return max(1, (1 << 20) // per_input)

    def explain_batch(self, x, targets):
        n, h, w, c = x.shape
        start = self._offset
        self._offset = start + n
        fill = _params.parse_baseline(self.fill, (h, w, c), name=self.fill_name, owner=type(self).__name__)
        if len(fill) > 1:
            fill = fill[start:start + n]
        before = self.engine.target_outputs(x, targets)
        if self._segments is not None:
            seg, k = self._segments[0][start:start + n], self._segments[1]
            b, lab = np.tile(np.arange(n), k), np.repeat(np.arange(k), n)   # segment-major pairs
            after = self.engine.segment_scores(x, seg, b, lab, targets[b], fill)
            rel = (before[b] - after).reshape(k, n).T                      # (n, K)
            return np.take_along_axis(rel, seg.reshape(n, -1), axis=1).reshape(n, h, w)
        grid = window_grid(h, w, self.window, self.stride, type(self).__name__)
        b, pos = window_pairs(n, grid)
        if fill.shape[1:3] == (1, 1) and len(fill) == 1:     # one value per channel: one shared patch
            patch = np.broadcast_to(fill[0, 0, 0], self.window + (c,))[None]
            after = self.engine.window_scores(x, b, pos, targets[b], [1.0], shared=patch)
        else:                                                 # an image: the window's own pixels of it
            full = np.broadcast_to(fill, (len(fill), h, w, c))
            kh, kw = self.window

            def patches(lo, hi):
                r = pos[lo:hi, 0, None] + np.arange(kh)
                col = pos[lo:hi, 1, None] + np.arange(kw)
                i = (b[lo:hi] if len(full) > 1 else np.zeros(hi - lo, int))[:, None, None]
                return full[i, r[:, :, None], col[:, None, :]][:, None]

            after = self.engine.window_scores(x, b, pos, targets[b], [1.0], pair_values=patches)
        rel = (before[b] - after).reshape(len(grid), n).T
        return paint(rel, grid, self.window, h, w)



class FeatureAblation(Occlusion):
    """Feature ablation (Captum's ``FeatureAblation``; the perturbation form of Zeiler & Fergus
    2014): each feature in turn is set to the baseline and its attribution is the drop of the
    explained output::

        a(feature) = f_c(x) - f_c(x with the feature's pixels set to the baseline)

    painted onto the feature's pixels. Features are single pixels (all channels together) by
    default, or segments (``segments=``). This is :class:`Occlusion` with a 1x1 window and stride
    1 (or its segment path), run on the same batched perturbation engine
    (:mod:`xaitf.methods.perturb`) with these defaults: the explained output is the logit (Captum
    explains what the model returns, usually logits) and the removed value is called
    ``baseline``. On a model linear in its input, ``a = w * (x - baseline)`` per pixel (summed over
    channels) and, per segment, the sum of that over the segment's pixels. Captum's default
    features are single elements (one channel of one pixel); here a pixel's channels are ablated
    together (``channel_reduce`` has nothing per channel to reduce).

    Args:
        model: tf-keras or Keras 3 image classifier.
        baseline: the value a removed feature takes: a number, one number per channel (C,), one
            image (H,W,C) (or (H,W) when C == 1) or one image per input (N,H,W,C) (0.0).
        segments: None (default: every pixel is a feature), or the features are segments: a
            segmenter name of :mod:`xaitf.segmentation` (``"slic"``), a dict with its name and
            keywords (``{"name": "slic", "n_segments": 50}``), a callable image -> labels, or an
            integer label map (N,H,W) (or (H,W) shared).
        output: ``"logits"`` (pre-softmax output), ``"probabilities"`` or a callable
            ``(model outputs, targets) -> (N,)`` (:mod:`xaitf.outputs`) ("logits").
        shortcut: the exact first-layer / cropped-window shortcut of the engine when the model
            allows it (pixels only); False always runs the whole model (True).
        **common: batch_size (ablated images per chunk), channel_reduce, seed (of a seeded
            segmenter), progress (see :class:`xaitf.explainer.Explainer`).

    Cost: H x W + 1 model evaluations per input (pixels) or K + 1 (K segments).

    Returns (N,H,W) maps.

    Example::

        maps = xaitf.create_explainer("feature_ablation", model, segments={"name": "slic", "n_segments": 50})(x)
    """

    key = "feature_ablation"
    default_output = "logits"
    fill_name = "baseline"

    def __init__(self, model, *, baseline=0.0, segments=None, output="logits", shortcut=True, **common):
        # params are this signature's (an explainer rebuilt from them, e.g. on a randomised copy of
        # the model, gets the same method); occlusion_params() maps them to Occlusion's
        Explainer.__init__(self, model, params=dict(baseline=baseline, segments=segments, output=output,
                                                    shortcut=shortcut), **common)

    def occlusion_params(self):
        p = self.params
        return dict(window=1, stride=1, fill=p["baseline"], output=p["output"], shortcut=p["shortcut"],
                    segments=p["segments"])
