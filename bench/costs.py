"""Model evaluations per explained input, per method, computed from the explainer's parameters.

``cost(name, explainer)`` returns ``(evals_per_input, backward, note)``: ``evals_per_input`` model
evaluations (whole images through the model) per input, ``backward`` whether each also needs a
backward pass, and a short note saying where the number comes from. The floor of a method on N
inputs is ``N * evals_per_input`` such evaluations (see :class:`bench.harness.Floor`), in chunks of
the case's batch size, or of N for methods whose steps depend on each other (``SEQUENTIAL``: MP).

The table lives in the benchmark, not in the methods: it is the benchmark's reading of each
method's published algorithm and settings (what a straightforward implementation would evaluate).
Methods with the exact first-layer shortcut (occlusion, PDA, Shapley sampling on simple chains)
evaluate only part of the model per perturbation and can run below this floor.
"""
import math

from xaitf.methods.perturb import window_grid


def _windows(ex):
    h, w = ex.shape[:2]
    return len(window_grid(h, w, ex.window, ex.stride, "bench"))


def _pixels(ex):
    h, w, c = ex.shape
    return h * w * (c if ex.params.get("features") == "channels" else 1)


def _const(n, backward, note):
    return lambda ex: (n, backward, note)


def _param(name, backward, note, extra=0):
    return lambda ex: (int(ex.params[name]) + extra, backward, note.format(**ex.params))


COSTS = {
    # one gradient (or one modified backward pass) per input
    "grad": _const(1, True, "1 gradient"),
    "inpgrad": _const(1, True, "1 gradient"),
    "gb": _const(1, True, "1 modified backward"),
    "deconvnet": _const(1, True, "1 modified backward"),
    "gradcam": _const(1, True, "1 gradient at the conv layer"),
    "gradcampp": _const(1, True, "1 gradient at the conv layer"),
    "deeplift": _const(1, True, "1 modified backward (+ 1 baseline row per chunk)"),
    "ig": _param("steps", True, "steps={steps} gradients"),
    "sg": _param("samples", True, "samples={samples} gradients"),
    "vargrad": _param("samples", True, "samples={samples} gradients"),
    "squaregrad": _param("samples", True, "samples={samples} gradients"),
    # iNNvestigate backend: one analyzer pass = one forward + one (modified) backward
    **{k: _const(1, True, "1 forward + 1 relevance backward") for k in (
        "lrp.z", "lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "deep_taylor",
        "deep_taylor.bounded", "inn.gradient", "inn.input_t_gradient", "inn.guided_backprop",
        "inn.deconvnet")},
    "inn.integrated_gradients": _param("steps", True, "steps={steps} gradients"),
    "inn.smoothgrad": _param("samples", True, "samples={samples} gradients"),
    # tf-explain
    "tfx.gradcam": _const(1, True, "1 gradient at the conv layer"),
    "tfx.ig": _param("steps", True, "steps={steps} gradients"),
    "tfx.smoothgrad": _param("samples", True, "samples={samples} gradients"),
    "tfx.occlusion": lambda ex: (math.ceil(ex.shape[0] / int(ex.params["patch_size"]))
                                 * math.ceil(ex.shape[1] / int(ex.params["patch_size"])), False,
                                 f"(H/p) x (W/p) patches, p={ex.params['patch_size']}"),
    # perturbation
    "occlusion": lambda ex: (_windows(ex) + 1, False, f"{_windows(ex)} windows + 1"),
    "pda": lambda ex: (_windows(ex) * ex.n_samples + 1, False,
                       f"{_windows(ex)} windows x {ex.n_samples} values + 1"),
    "shapley": lambda ex: (ex.samples * (_pixels(ex) + 1), False,
                           f"{ex.samples} permutations x ({_pixels(ex)} features + 1)"),
    "rise": _param("masks", False, "masks={masks} + 1 unmasked", extra=1),
    "mp": _param("max_iterations", True, "max_iterations={max_iterations} sequential (f+b) steps of the N inputs"),
    # surrogates
    "lime": _param("num_samples", False, "num_samples={num_samples}"),
    "lime.lib": _param("num_samples", False, "num_samples={num_samples}"),
    "kernelshap": lambda ex: (_shap_n(ex), False, f"nsamples={ex.params['nsamples']} (+ f(x), f(bg))"),
    "shap.lib": lambda ex: (_shap_n(ex), False, f"nsamples={ex.params['nsamples']} (+ f(x), f(bg))"),
    "shap.gradient": _param("nsamples", True, "nsamples={nsamples} gradients"),
    "shap.deep": _const(1, True, "1 DeepLIFT backward per background image (1)"),
    "shap.partition": _param("max_evals", False, "max_evals={max_evals}"),
    # interventional: attribution from a learned graph = one forward to the conv layer
    "interventional": _const(1, False, "1 forward (graph given; learning timed separately)"),
}


def _shap_n(ex):
    ns = ex.params["nsamples"]
    if ns == "auto":
        ns = 2 * int(ex.params.get("n_segments", 50)) + 2048
    return int(ns) + 2


# Methods whose evaluations are sequential steps (each depends on the last): an optimisation of N
# inputs evaluates the model on N inputs per step, so its floor is max_iterations passes of N
# inputs, not the same count packed into batch_size chunks (which no implementation can do).
SEQUENTIAL = {"mp"}


def floor_chunk(name, n):
    """Evaluations per floor step for ``n`` inputs of method ``name``: ``n`` for sequential methods,
    else None (the case's batch size)."""
    return n if name in SEQUENTIAL else None


def cost(name, explainer):
    """``(evals_per_input, backward, note)`` of a registry method; KeyError if not in the table."""
    return COSTS[name](explainer)
