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
"""
import numpy as np

from ..errors import MethodError
from ..explainer import Explainer
from .perturb import (Engine, as_pair, paint, pixel_values, probability_engine, window_grid,
                      window_pairs)

OUTPUTS = ("probabilities", "logits")


class Occlusion(Explainer):
    """Occlusion sensitivity, batched over inputs and windows.

    Parameters (``xaitf.settings.OCCLUSION``):
        window: window height and width in pixels (int or pair); it covers every channel.
        stride: step between windows (int or pair), >= 1.
        fill: value written into the window: a number or one number per channel.
        output: ``"probabilities"`` (study 1) or ``"logits"`` (pre-softmax output).
        shortcut: use the exact first-layer shortcut when the model allows it
            (``xaitf.methods.perturb``); False always runs the whole model.
        batch_size: model evaluations (occluded images) per chunk.

    Returns (N,H,W) maps.

    Example::

        maps = xaitf.create_explainer("occlusion", model, window=3, stride=2)(x)
    """

    key = "occlusion"

    def setup(self):
        p = self.params
        self.window = as_pair(p["window"], "window", "Occlusion")
        self.stride = as_pair(p["stride"], "stride", "Occlusion")
        if p["output"] not in OUTPUTS:
            raise MethodError(f"Occlusion output must be one of {', '.join(OUTPUTS)}, got {p['output']!r}")
        channels = self.shape[-1]
        if channels is None:
            raise MethodError("Occlusion needs a model with a known number of input channels")
        self.fill = pixel_values(p["fill"], channels, "Occlusion", "fill")
        h, w = self.shape[:2]
        if h is not None and w is not None:
            window_grid(h, w, self.window, self.stride, "Occlusion")   # fails early if too big
        kw = dict(shortcut=bool(p["shortcut"]), batch_size=self.batch_size,
                  show_progress=self.progress, desc="occlusion")
        if p["output"] == "probabilities":
            self.engine = probability_engine(self.model, **kw)
        else:
            self.engine = Engine(self.forward, **kw)

    def chunk_size(self):
        h, w = self.shape[:2]
        if h is None or w is None:
            return self.batch_size
        per_input = len(window_grid(h, w, self.window, self.stride, "Occlusion"))
        return max(1, (1 << 20) // per_input)

    def explain_batch(self, x, targets):
        n, h, w = x.shape[:3]
        grid = window_grid(h, w, self.window, self.stride, "Occlusion")
        b, pos = window_pairs(n, grid)
        before = self.engine.target_outputs(x, targets)
        patch = np.broadcast_to(self.fill, self.window + (len(self.fill),))[None]
        after = self.engine.window_scores(x, b, pos, targets[b], [1.0], shared=patch)
        rel = (before[b] - after).reshape(len(grid), n).T
        return paint(rel, grid, self.window, h, w)

