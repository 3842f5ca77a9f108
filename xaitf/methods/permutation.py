"""Feature permutation (permutation importance: Breiman 2001; Fisher, Rudin & Dominici 2019, "All
models are wrong, but many are useful", JMLR 20(177); Captum's ``FeaturePermutation``).

For every feature ``f`` (a pixel with all its channels, or a segment) one permutation ``pi_f`` of
the N inputs being explained is drawn from the seed, and the feature's values of input ``i`` are
replaced by those of input ``pi_f(i)``; the attribution is the drop of the explained output::

    a_i(f) = f_c(x_i) - f_c(x_i with feature f taken from x_{pi_f(i)})

painted onto the feature's pixels. The permutation of a feature is never the identity (as in
Captum, it is redrawn until it moves at least one input); an input that ``pi_f`` leaves in place
gets 0 for that feature (its copy is the input itself and is not evaluated). A feature's values
are only exchanged between the inputs of one call, so one input cannot be explained alone (an
InputError says so). On a model linear in its input ``a_i(f) = sum_{p in f} w_p (x_i - x_{pi_f(i)})_p``.

Batching: every (feature, input) pair whose input moves is one perturbed image; the pairs are
evaluated ``batch_size`` at a time on the perturbation engine (:mod:`xaitf.methods.perturb`):
pixels as 1x1 windows whose patch is the partner's pixel (the window path, with its first-layer
and cropped-window shortcuts where the model allows them), segments by the segment path with the
partner image as a per-pair fill. Cost: up to (H x W) x N (or K x N) evaluations plus N.
"""
import numpy as np

from .. import params as _params
from ..errors import InputError, MethodError
from ..explainer import Explainer, as_batch
from .perturb import output_engine


class FeaturePermutation(Explainer):
    """Feature permutation (Fisher et al. 2019; Captum's ``FeaturePermutation``): the drop of the
    explained output when one feature's values are taken from another input of the batch.

    ``a_i(f) = f_c(x_i) - f_c(x_i with feature f from x_{pi_f(i)})``, ``pi_f`` a seeded permutation of
    the batch drawn per feature, never the identity (see the module docstring).

    Args:
        model: tf-keras or Keras 3 image classifier.
        segments: None (default: every pixel, all channels together, is a feature), or the
            features are segments: a segmenter name of :mod:`xaitf.segmentation` (``"slic"``), a
            dict with its name and keywords (``{"name": "slic", "n_segments": 50}``), a callable
            image -> labels, or an integer label map (N,H,W) (or (H,W) shared). With per-image
            segments, input ``i``'s segment ``k`` (its own pixels) takes the partner's pixels there.
        output: ``"logits"`` (pre-softmax output), ``"probabilities"`` or a callable
            ``(model outputs, targets) -> (N,)`` (:mod:`xaitf.outputs`) ("logits").
        shortcut: the exact first-layer / cropped-window shortcut of the engine when the model
            allows it (pixels only); False always runs the whole model (True).
        **common: batch_size (permuted images per chunk), channel_reduce, seed (the permutations
            and a seeded segmenter), progress (see :class:`xaitf.explainer.Explainer`).

    The whole call is one batch (the permutations mix its inputs): the same seed and the same
    inputs give the same maps, whatever ``batch_size``; one input alone raises InputError.

    Returns (N,H,W) maps.

    Example::

        maps = xaitf.create_explainer("feature_permutation", model, seed=0)(x_batch, targets)
    """

    key = "feature_permutation"     # the preset section of xaitf.settings
    default_output = "logits"
    stochastic = True

    def __init__(self, model, *, segments=None, output="logits", shortcut=True, **common):
        super().__init__(model, params=dict(segments=segments, output=output, shortcut=shortcut), **common)

    def setup(self):
        p = self.params
        if self.shape[-1] is None:
            raise MethodError("FeaturePermutation needs a model with a known number of input channels")
        if p["shortcut"] not in (True, False):
            raise MethodError(f"FeaturePermutation needs shortcut to be True or False, got {p['shortcut']!r}")
        self.segments = p.get("segments")
        self.engine = output_engine(self, shortcut=bool(p["shortcut"]), batch_size=self.batch_size,
                                    show_progress=self.progress, desc=self.name or self.key)

    def permutations(self, n_features, n_inputs):
        """(n_features, n_inputs) int64: row f is ``pi_f``, a permutation of the inputs that is not
        the identity, drawn in order from the seed (every call starts from the same state)."""
        if n_inputs < 2:
            raise InputError(f"FeaturePermutation needs at least 2 inputs to permute a feature across, "
                             f"got {n_inputs}; explain a batch of images in one call (or use feature_ablation)")
        rng = self.rng()
        perms = np.argsort(rng.random((n_features, n_inputs)), axis=1)
        ident = np.arange(n_inputs)
        same = np.flatnonzero((perms == ident).all(axis=1))
        while len(same):
            perms[same] = np.argsort(rng.random((len(same), n_inputs)), axis=1)
            same = same[(perms[same] == ident).all(axis=1)]
        return perms

    def __call__(self, x, targets=None):
        x = as_batch(x, self.model)
        if len(x) < 2:
            self.permutations(1, len(x))        # the one-line InputError
        self._segments = _params.parse_segments(self.segments, x, "FeaturePermutation", self.seed)
        return super().__call__(x, targets)

    def chunk_size(self):
        return 1 << 62      # one chunk: the permutations mix the inputs of the whole call

    def explain_batch(self, x, targets):
        n, h, w, c = x.shape
        before = self.engine.target_outputs(x, targets)
        if self._segments is None:
            k = h * w
        else:
            seg, k = self._segments
        perms = self.permutations(k, n)
        lab = np.repeat(np.arange(k), n)                # feature-major pairs (feature, input)
        b = np.tile(np.arange(n), k)
        src = perms.reshape(-1)
        keep = src != b                                 # an input left in place: a(f) = 0
        if self._segments is not None:                  # a label an image does not have: 0
            present = np.zeros((n, k), bool)
            present[np.repeat(np.arange(n), h * w), seg.reshape(-1)] = True
            keep &= present[b, lab]
        rel = np.zeros(k * n)
        bk, lk, sk = b[keep], lab[keep], src[keep]
        if len(bk):
            if self._segments is None:
                pos = np.stack([lk // w, lk % w], axis=1).astype(np.int32)

                def patches(lo, hi):                    # the partner's pixel, all channels
                    return x[sk[lo:hi], pos[lo:hi, 0], pos[lo:hi, 1]].reshape(hi - lo, 1, 1, 1, c)

                after = self.engine.window_scores(x, bk, pos, targets[bk], [1.0], pair_values=patches)
            else:
                after = self.engine.segment_scores(x, seg, bk, lk, targets[bk], x, sources=sk)
            rel[keep] = before[bk] - after
        rel = rel.reshape(k, n).T                       # (n, K)
        if self._segments is None:
            return rel.reshape(n, h, w)
        return np.take_along_axis(rel, seg.reshape(n, -1), axis=1).reshape(n, h, w)
