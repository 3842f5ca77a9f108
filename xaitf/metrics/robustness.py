"""Robustness of explanations: the local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018), max- and
avg-sensitivity (Yeh et al. 2019).

Study 2 scored its maps with Quantus' ``LocalLipschitzEstimate`` (10 samples, Gaussian noise of
mean 0.1 and std 0.1) and reported means IG 1.668, Saliency 3.362, GradientShap 1.949,
InputXGradient 1.965, causal 0.287 (lower = more robust).
"""
import numpy as np

from .. import params
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


def uniform_noise(x_shape, index, samples, radius, seed):
    """The perturbations of input ``index`` for the sensitivities: uniform in ``[-radius, radius]``
    per value, ``default_rng([seed, index]).uniform(-radius, radius, (samples, H,W,C))`` float32.

    One stream per input, so the noise does not depend on how the inputs are chunked.
    """
    return np.random.default_rng([int(seed), int(index)]).uniform(
        -float(radius), float(radius), size=(int(samples),) + tuple(x_shape)).astype(np.float32)


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


def _perturbation_scores(explainer, x, targets, samples, batch_size, normalise, draw, score):
    """Explain every input with ``samples`` perturbed copies of it and score each input.

    Inputs go in chunks of ``max(1, batch_size // (samples + 1))``: one explainer call gets the
    chunk's inputs followed by all their perturbed copies (input-major). ``draw(shape, index,
    samples)`` gives the perturbations (samples, H,W,C) float32 of input ``index`` (its own random
    stream, so chunking changes nothing); ``score(x0, x1, a0, a1)`` gets the flattened inputs
    (c,1,D) float32, perturbed inputs (c,samples,D) float32, their maps (c,1,P) and (c,samples,P)
    float64 (normalised by ``normalise``) and returns the chunk's (c,) scores.
    """
    if not callable(explainer):
        raise MethodError("explainer must be a callable (x, targets) -> maps, "
                          f"got {type(explainer).__name__}")
    samples = check_int(samples, "samples")
    bs = check_int(batch_size, "batch_size")
    if normalise not in NORMALISE:
        raise MethodError(f"unknown normalise {normalise!r}; valid: None, 'max', 'negative'")
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
        eps = np.stack([draw(x.shape[1:], i, samples) for i in range(s.start, s.stop)])
        noisy = (xs[:, None] + eps).reshape((c * samples,) + x.shape[1:])
        batch = np.concatenate([xs, noisy])
        tb = None if targets is None else np.concatenate([t[s], np.repeat(t[s], samples)])
        maps = np.asarray(explainer(batch, tb), dtype=np.float64)
        if maps.shape[0] != c * (samples + 1):
            raise InputError(f"explainer returned {maps.shape[0]} maps for {c * (samples + 1)} images")
        maps = _normalise(maps, normalise)
        out[s] = score(xs.reshape(c, 1, -1), noisy.reshape(c, samples, -1),
                       maps[:c].reshape(c, 1, -1), maps[c:].reshape(c, samples, -1))
    return out


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
            map first (Quantus normalises by default, ``normalise=True``; its default function in
            0.6.0 is ``normalise_by_max`` over the whole batch passed, not per map).

    Returns:
        (N,) float64.
    """
    if not float(noise_std) >= 0:
        raise MethodError(f"noise_std must be >= 0, got {noise_std!r}")

    def draw(shape, index, count):
        return noise(shape, index, count, noise_mean, noise_std, seed)

    def score(x0, x1, a0, a1):
        num = np.linalg.norm(a1 - a0, axis=2)
        den = np.linalg.norm(x1.astype(np.float64) - x0, axis=2)  # ||x' - x|| as the explainer saw it
        with np.errstate(invalid="ignore", divide="ignore"):
            return (num / den).max(axis=1)

    return _perturbation_scores(explainer, x, targets, samples, batch_size, normalise, draw, score)


NORMS = {"fro": 2, "l1": 1, "inf": np.inf}
DENOMINATORS = ("explanation", "input")


def _sensitivities(owner, explainer, x, targets, samples, radius, norm, seed, batch_size, normalise,
                   denominator, reduce):
    radius = params.number(radius, "radius", owner, low=0, low_open=True)
    params.choice(norm, "norm", owner, tuple(NORMS))
    params.choice(denominator, "denominator", owner, DENOMINATORS)
    seed = params.integer(seed, "seed", owner, low=0)
    order = NORMS[norm]

    def draw(shape, index, count):
        return uniform_noise(shape, index, count, radius, seed)

    def score(x0, x1, a0, a1):
        num = np.linalg.norm(a1 - a0, ord=order, axis=2)                      # (c, samples)
        ref = a0 if denominator == "explanation" else x0.astype(np.float64)
        den = np.linalg.norm(ref, ord=order, axis=2)                          # (c, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(num == 0, 0.0, np.where(den > 0, num / den, np.nan))
        return reduce(ratio, axis=1)

    return _perturbation_scores(explainer, x, targets, samples, batch_size, normalise, draw, score)


def max_sensitivity(explainer, x, targets, samples=10, radius=0.2, norm="fro", seed=0,
                    batch_size=256, normalise=None, denominator="explanation"):
    """Max-sensitivity of an explanation method, per input (Yeh et al. 2019, "On the (in)fidelity
    and sensitivity of explanations", NeurIPS).

    ``SENS_max(x) = max_i ||e(x) - e(x + d_i)|| / ||e(x)||`` over ``samples`` perturbations
    ``d_i`` drawn uniformly from the L_inf ball of ``radius``: every value of the image
    (every channel) independently from ``U(-radius, radius)``, as Quantus' ``MaxSensitivity``
    does with its default ``uniform_noise(lower_bound=0.2, upper_bound=None)`` (no clipping to the
    image range). Yeh et al. take the maximum over the ball of the unnormalised difference; this
    is its Monte-Carlo estimate, made relative to ``||e(x)||`` so that maps of different scales
    compare; Quantus 0.6.0 divides by ``||e(x)||`` too (bench/results-quantus.md), earlier
    releases by ``||x||`` (``denominator="input"``). Lower is more robust.

    Args:
        explainer: any callable ``(x, targets) -> maps``, e.g. an :class:`xaitf.Explainer`.
        x: images (N,H,W,C).
        targets: classes explained (ints, one-hot); the same class is explained for the noisy
            copies. None: the predicted class on x when the explainer has ``predict`` (an
            Explainer), else passed on as None.
        samples: perturbations per input (Quantus: ``nr_samples=200``). Default 10.
        radius: half-width of the uniform noise, > 0 (Quantus: ``lower_bound=0.2``). Default 0.2.
        norm: ``"fro"`` (the L2 norm of the flattened map, Quantus' ``fro_norm``), ``"l1"`` or
            ``"inf"``; the same norm above and below the fraction. Default "fro".
        seed: an int >= 0; the noise of input i comes from ``numpy.random.default_rng([seed, i])``
            (:func:`uniform_noise`). Default 0.
        batch_size: images per explainer call; a chunk of ``max(1, batch_size // (samples + 1))``
            inputs is explained together with all its perturbed copies in one call. Default 256.
        normalise: None, or ``"max"`` / ``"negative"`` to normalise every map first (Quantus'
            sensitivities default to ``normalise=False``). Default None.
        denominator: ``"explanation"``: ``||e(x)||`` (the relative change of the explanation);
            ``"input"``: ``||x||`` over the flattened image, as Quantus before 0.6 divides. Default
            "explanation".

    Returns:
        (N,) float64 >= 0; a sample whose map did not change counts 0; a sample whose map changed
        while the denominator is 0 (e.g. a zero map e(x)) is NaN, and so is the input's score.
    """
    return _sensitivities("max_sensitivity", explainer, x, targets, samples, radius, norm, seed,
                          batch_size, normalise, denominator, np.max)


def avg_sensitivity(explainer, x, targets, samples=10, radius=0.2, norm="fro", seed=0,
                    batch_size=256, normalise=None, denominator="explanation"):
    """Avg-sensitivity of an explanation method, per input (Yeh et al. 2019, "On the (in)fidelity
    and sensitivity of explanations", NeurIPS).

    ``SENS_avg(x) = mean_i ||e(x) - e(x + d_i)|| / ||e(x)||`` over ``samples`` perturbations
    ``d_i ~ U(-radius, radius)`` per value, the same draws as :func:`max_sensitivity` (same seed:
    same noise), as Quantus' ``AvgSensitivity`` with its default ``uniform_noise(lower_bound=0.2)``.
    Quantus 0.6.0 divides by ``||e(x)||`` too; earlier releases by ``||x||`` (``denominator="input"``).
    Lower is more robust.

    Args:
        explainer: any callable ``(x, targets) -> maps``, e.g. an :class:`xaitf.Explainer`.
        x: images (N,H,W,C).
        targets: classes explained (ints, one-hot); the same class is explained for the noisy
            copies. None: the predicted class on x when the explainer has ``predict`` (an
            Explainer), else passed on as None.
        samples: perturbations per input (Quantus: ``nr_samples=200``). Default 10.
        radius: half-width of the uniform noise, > 0 (Quantus: ``lower_bound=0.2``). Default 0.2.
        norm: ``"fro"`` (the L2 norm of the flattened map, Quantus' ``fro_norm``), ``"l1"`` or
            ``"inf"``; the same norm above and below the fraction. Default "fro".
        seed: an int >= 0; the noise of input i comes from ``numpy.random.default_rng([seed, i])``
            (:func:`uniform_noise`). Default 0.
        batch_size: images per explainer call; a chunk of ``max(1, batch_size // (samples + 1))``
            inputs is explained together with all its perturbed copies in one call. Default 256.
        normalise: None, or ``"max"`` / ``"negative"`` to normalise every map first (Quantus'
            sensitivities default to ``normalise=False``). Default None.
        denominator: ``"explanation"``: ``||e(x)||`` (the relative change of the explanation);
            ``"input"``: ``||x||`` over the flattened image, as Quantus before 0.6 divides. Default
            "explanation".

    Returns:
        (N,) float64 >= 0; a sample whose map did not change counts 0; a sample whose map changed
        while the denominator is 0 (e.g. a zero map e(x)) is NaN, and so is the input's score.
    """
    return _sensitivities("avg_sensitivity", explainer, x, targets, samples, radius, norm, seed,
                          batch_size, normalise, denominator, np.mean)

