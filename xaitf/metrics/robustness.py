"""Robustness of explanations: the local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018).

Study 2 scored its maps with Quantus' ``LocalLipschitzEstimate`` (10 samples, Gaussian noise of
mean 0.1 and std 0.1) and reported means IG 1.668, Saliency 3.362, GradientShap 1.949,
InputXGradient 1.965, causal 0.287 (lower = more robust).
"""
import numpy as np

from ..errors import InputError, MethodError
from ..explainer import as_batch, as_targets, chunks
from ._common import check_int

NORMALISE = (None, "max", "negative")


def noise(x_shape, index, samples, mean, std, seed):
    """The noise of input ``index``: ``default_rng([seed, index]).normal(mean, std, (samples, H,W,C))``.

    One stream per input, so the noise does not depend on how the inputs are chunked.
    """
    return np.random.default_rng([int(seed), int(index)]).normal(
        float(mean), float(std), size=(int(samples),) + tuple(x_shape)).astype(np.float32)


def _normalise(a, how):
    """Quantus' normalisations, per map: ``"max"`` divides by max |a|; ``"negative"`` divides the
    positive values by the maximum and the negative ones by |minimum|."""
    if how is None:
        return a
    axes = tuple(range(1, a.ndim))
    if how == "max":
        top = np.abs(a).max(axis=axes, keepdims=True)
        return a / np.where(top > 0, top, 1.0)
    hi = a.max(axis=axes, keepdims=True)
    lo = a.min(axis=axes, keepdims=True)
    return np.where(a > 0, a / np.where(hi > 0, hi, 1.0), a / np.where(lo < 0, -lo, 1.0))


def local_lipschitz(explainer, x, targets, samples=10, noise_mean=0.1, noise_std=0.1, seed=0,
                    batch_size=256, normalise=None):
    """Local Lipschitz estimate of an explanation method, per input.

    ``L(x) = max_i ||e(x) - e(x + eps_i)||_2 / ||eps_i||_2`` over ``samples`` draws
    ``eps_i ~ N(noise_mean, noise_std^2)`` per input value (Alvarez-Melis & Jaakkola 2018; the
    settings of study 2's Quantus run: 10 samples, mean 0.1, std 0.1). Lower is more robust.

    Args:
        explainer: any callable ``(x, targets) -> maps``, e.g. an :class:`xaitf.Explainer`.
        x: images (N,H,W,C).
        targets: classes explained (ints, one-hot); the same class is explained for the noisy
            copies. None: the predicted class on x when the explainer has ``predict`` (an
            Explainer), else passed on as None.
        samples: noise draws per input.
        noise_mean, noise_std: mean and standard deviation of the Gaussian noise.
        seed: noise of input i comes from ``numpy.random.default_rng([seed, i])`` (:func:`noise`).
        batch_size: images per explainer call; a chunk of ``max(1, batch_size // (samples + 1))``
            inputs is explained together with all its noisy copies in one call.
        normalise: None (the formula above), or ``"max"`` / ``"negative"`` to normalise every
            map first as Quantus does by default (``normalise=True``; its default function is
            ``normalise_by_negative`` in recent releases).

    Returns:
        (N,) float64.
    """
    if not callable(explainer):
        raise MethodError("explainer must be a callable (x, targets) -> maps, "
                          f"got {type(explainer).__name__}")
    samples = check_int(samples, "samples")
    bs = check_int(batch_size, "batch_size")
    if normalise not in NORMALISE:
        raise MethodError(f"unknown normalise {normalise!r}; valid: None, 'max', 'negative'")
    if not float(noise_std) >= 0:
        raise MethodError(f"noise_std must be >= 0, got {noise_std!r}")
    x = as_batch(x, getattr(explainer, "model", None))
    n = len(x)
    if targets is None and hasattr(explainer, "predict"):
        targets = np.asarray(explainer.predict(x, probabilities=True)).argmax(-1)
    if targets is not None:
        t = np.asarray(targets)
        k = getattr(explainer, "num_classes", None) or (t.shape[1] if t.ndim == 2 else int(t.max()) + 1)
        t = as_targets(t, n, int(k))
    out = np.empty(n)
    per = max(1, bs // (samples + 1))
    for s in chunks(n, per):
        xs = x[s]
        c = len(xs)
        eps = np.stack([noise(x.shape[1:], i, samples, noise_mean, noise_std, seed)
                        for i in range(s.start, s.stop)])             # (c, samples, H, W, C)
        noisy = (xs[:, None] + eps).reshape((c * samples,) + x.shape[1:])
        batch = np.concatenate([xs, noisy])
        tb = None if targets is None else np.concatenate([t[s], np.repeat(t[s], samples)])
        maps = np.asarray(explainer(batch, tb), dtype=np.float64)
        if maps.shape[0] != c * (samples + 1):
            raise InputError(f"explainer returned {maps.shape[0]} maps for {c * (samples + 1)} images")
        maps = _normalise(maps, normalise)
        a0 = maps[:c].reshape(c, 1, -1)
        a1 = maps[c:].reshape(c, samples, -1)
        num = np.linalg.norm(a1 - a0, axis=2)
        step = noisy.reshape(c, samples, -1).astype(np.float64) - xs.reshape(c, 1, -1)
        den = np.linalg.norm(step, axis=2)  # ||x' - x|| as the explainer saw it (float32 sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s] = (num / den).max(axis=1)
    return out
