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

Batching: one permutation's prefixes (``F + 1`` of them) are evaluated as consecutive chunks of
``batch_size`` model evaluations (several whole permutations per chunk when they are short); with
the first-layer shortcut the prefixes of a chunk are a cumulative sum of local updates of the
first layer's pre-activation, re-anchored exactly at each chunk start. The permutations are drawn
from the seed alone (the same for every input), so the same seed gives the same maps whatever
``batch_size`` and whatever the other inputs of the batch.
"""
import numpy as np

from ..errors import MethodError
from ..explainer import Explainer
from .perturb import Engine, check_int

FEATURES = ("pixels", "channels")


class ShapleySampling(Explainer):
    """Shapley value sampling (Castro et al. 2009) of the pre-softmax target output.

    Parameters (``xaitf.settings.SHAPLEY``):
        samples: number of random permutations S (study 1: 100; its script used 2).
        baseline: value of a removed feature: a number, one number per channel, or an (H,W,C) image.
        features: ``"pixels"`` (a feature is a pixel with all its channels) or ``"channels"``.
        shortcut: the exact first-layer shortcut: True (whenever the model allows it), False, or
            "dense" (default: only after Flatten -> Dense; measured on small CNNs, the Conv2D
            shortcut's cumulative prefix maps cost more than recomputing the first convolution).
        batch_size: model evaluations (prefixes) per chunk.
        seed: seed of the permutations.

    Returns (N,H,W) maps (``"channels"``: per-channel maps reduced by ``channel_reduce``).
    """

    key = "shapley"
    stochastic = True

    def setup(self):
        p = self.params
        self.samples = check_int(p["samples"], "samples", "ShapleySampling", 1)
        if p["features"] not in FEATURES:
            raise MethodError(f"ShapleySampling features must be one of {', '.join(FEATURES)}, "
                              f"got {p['features']!r}")
        self.channel_features = p["features"] == "channels"
        if self.shape[-1] is None:
            raise MethodError("ShapleySampling needs a model with a known number of input channels")
        self.baseline = np.asarray(p["baseline"], dtype=np.float32)
        self._check_baseline(self.shape)
        self.engine = Engine(self.forward, shortcut=p["shortcut"], batch_size=self.batch_size,
                             show_progress=self.progress, desc="shapley")
        self._perms = {}

    def _check_baseline(self, shape):
        b, c = self.baseline, shape[-1]
        ok = b.ndim == 0 or b.shape == (c,) or (b.ndim == 3 and all(
            s is None or s == g for s, g in zip(shape, b.shape)))
        if not ok or not np.all(np.isfinite(b)):
            raise MethodError(f"ShapleySampling baseline must be a finite number, {c} numbers (one "
                              f"per channel) or an image shaped {tuple(shape)}, got shape {b.shape}")

    def permutations(self, n_features):
        """(samples, n_features) int32 permutations, drawn in order from the seed (cached)."""
        if n_features not in self._perms:
            rng = self.rng()
            self._perms[n_features] = np.stack(
                [rng.permutation(n_features) for _ in range(self.samples)]).astype(np.int32)
        return self._perms[n_features]

    def chunk_size(self):
        h, w, c = self.shape
        if h is None or w is None:
            return self.batch_size
        evals = (h * w * (c if self.channel_features else 1) + 1) * self.samples
        return max(1, (1 << 22) // evals)

    def explain_batch(self, x, targets):
        n, h, w, c = x.shape
        self._check_baseline((h, w, c))
        base = np.broadcast_to(self.baseline if self.baseline.ndim != 1 else self.baseline[None, None],
                               (h, w, c)).astype(np.float32)
        nf = h * w * (c if self.channel_features else 1)
        phi = self.engine.shapley(x, targets, self.permutations(nf), base, self.channel_features)
        return phi.reshape((n, h, w, c) if self.channel_features else (n, h, w))
