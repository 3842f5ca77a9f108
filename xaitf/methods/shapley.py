"""Shapley value sampling by random permutations (Castro, Gomez & Tejada 2009, "Polynomial
calculation of the Shapley value based on sampling").

For each of ``samples`` random permutations ``pi`` of the features, the features are set to the
baseline one at a time in the order of ``pi``; the contribution of feature ``f`` is the drop of the
explained pre-softmax output ``g_c`` when it is removed::

    phi_f = 1/S sum_pi [ g_c(x with pi's features before f removed)
                         - g_c(x with pi's features up to and including f removed) ]

Features are pixels (all channels together, ``features="pixels"``) or single channels
(``features="channels"``). The estimate is unbiased; for a model linear in the features it is
exact whatever the permutations: ``phi = w * (x - baseline)``. Efficiency: the contributions of
one permutation sum to ``g_c(x) - g_c(baseline)``.

Segments (``segments=``, Captum's ``feature_mask``): with a segmenter name (``"slic"``), a dict of
a name and its keywords (``{"name": "slic", "n_segments": 8}``), a callable or a user's integer
label map (N,H,W) (or (H,W) shared by every image), the features are the segments: a permutation
orders the segments, a removed segment's pixels (all channels) take the baseline, and every pixel
of a segment gets the segment's value. ``segments=None`` (default) keeps pixels/channels.

Batching: one permutation's prefixes (``F + 1`` of them) are evaluated as consecutive chunks of
``batch_size`` model evaluations (several whole permutations per chunk when they are short); with
the first-layer shortcut the prefixes of a chunk are a cumulative sum of local updates of the
first layer's pre-activation, re-anchored exactly at each chunk start. The permutations are drawn
from the seed alone (the same for every input), so the same seed gives the same maps whatever
``batch_size`` and whatever the other inputs of the batch.
"""
import numpy as np

from .. import params as _params
from ..errors import MethodError
from ..explainer import Explainer, as_batch
from .perturb import check_int, output_engine

FEATURES = ("pixels", "channels")


class ShapleySampling(Explainer):
    """Shapley value sampling (Castro et al. 2009) of the pre-softmax target output.

    Args:
        model: tf-keras or Keras 3 image classifier.
        samples: number of random permutations S (study 1: 100; its script used 2).
        baseline: value of a removed feature: a number, one number per channel (C,), one image
            (H,W,C) (or (H,W) when C == 1) or one image per input (N,H,W,C) (0.0).
        features: ``"pixels"`` (a feature is a pixel with all its channels) or ``"channels"``
            ("pixels").
        shortcut: the exact first-layer shortcut: True (whenever the model allows it), False, or
            "dense" (default: only after Flatten -> Dense; measured on small CNNs, the Conv2D
            shortcut's cumulative prefix maps cost more than recomputing the first convolution).
        segments: None (default: the features are pixels or channels), or the features are
            segments: a segmenter name of :mod:`xaitf.segmentation` (``"slic"``), a dict with its
            name and keywords (``{"name": "slic", "n_segments": 8}``), a callable image -> labels, or
            an integer label map (N,H,W) (or (H,W) shared). Always the plain path (no shortcut).
        **common: batch_size (model evaluations, i.e. prefixes, per chunk), channel_reduce, seed
            (of the permutations and of a seeded segmenter), progress, output (see
            :class:`xaitf.explainer.Explainer`).
        seed: the permutations, the same for every input (counter-based: independent of batch_size and of the other inputs).

    Returns (N,H,W) maps (``"channels"``: per-channel maps reduced by ``channel_reduce``).
    """

    key = "shapley"       # the preset section of xaitf.settings
    stochastic = True

    def __init__(self, model, *, samples=100, baseline=0.0, features="pixels", shortcut="dense",
                 segments=None, **common):
        super().__init__(model, params=dict(samples=samples, baseline=baseline, features=features,
                                            shortcut=shortcut, segments=segments), **common)

    def setup(self):
        p = self.params
        self.samples = check_int(p["samples"], "samples", "ShapleySampling", 1)
        _params.choice(p["features"], "features", "ShapleySampling", FEATURES)
        self.channel_features = p["features"] == "channels"
        if self.shape[-1] is None:
            raise MethodError("ShapleySampling needs a model with a known number of input channels")
        self.baseline = _params.parse_baseline(p["baseline"], self.shape, owner="ShapleySampling")
        self.segments = p.get("segments")
        if self.segments is not None and self.channel_features:
            raise MethodError("ShapleySampling takes segments with features='pixels' only, "
                                      "got features='channels'")
        self.engine = output_engine(self, shortcut=p["shortcut"], batch_size=self.batch_size,
                                    show_progress=self.progress, desc="shapley")
        self._perms = {}

    def permutations(self, n_features):
        """(samples, n_features) int32 permutations, drawn in order from the seed (cached)."""
        if n_features not in self._perms:
            rng = self.rng()
            self._perms[n_features] = np.stack(
                [rng.permutation(n_features) for _ in range(self.samples)]).astype(np.int32)
        return self._perms[n_features]

    def __call__(self, x, targets=None):
        x = as_batch(x, self.model)
        n = len(x)
        self._offset = 0
        _params.parse_baseline(self.baseline, x.shape[1:], n, owner="ShapleySampling")  # counts
        self._segments = _params.parse_segments(self.segments, x, "ShapleySampling", self.seed)
        return super().__call__(x, targets)

    def chunk_size(self):
        h, w, c = self.shape
        if h is None or w is None:
            return self.batch_size
        if self.segments is not None:
            return self.batch_size
        evals = (h * w * (c if self.channel_features else 1) + 1) * self.samples
        return max(1, (1 << 22) // evals)

    def explain_batch(self, x, targets):
        n, h, w, c = x.shape
        start = self._offset
        self._offset = start + n
        b = _params.parse_baseline(self.baseline, (h, w, c), owner="ShapleySampling")
        if self._segments is not None:
            seg, k = self._segments[0][start:start + n], self._segments[1]
            if len(b) > 1:          # one image per input: one engine call per input
                phi = np.concatenate([self.engine.shapley_segments(
                    x[i:i + 1], targets[i:i + 1], self.permutations(k), b[start + i], seg[i:i + 1])
                    for i in range(n)])
            else:
                phi = self.engine.shapley_segments(x, targets, self.permutations(k), b[0], seg)
            return np.take_along_axis(phi, seg.reshape(n, -1), axis=1).reshape(n, h, w)
        nf = h * w * (c if self.channel_features else 1)
        perms = self.permutations(nf)
        if len(b) > 1:              # one image per input: one engine call per input
            phi = np.concatenate([self.engine.shapley(x[i:i + 1], targets[i:i + 1], perms,
                                                      b[start + i], self.channel_features)
                                  for i in range(n)])
        else:
            base = np.broadcast_to(b[0], (h, w, c)).astype(np.float32)
            phi = self.engine.shapley(x, targets, perms, base, self.channel_features)
        return phi.reshape((n, h, w, c) if self.channel_features else (n, h, w))
