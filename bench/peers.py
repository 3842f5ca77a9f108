"""The peers of each method, with the same hyperparameters, and the plain Python loops.

A peer is one of:

* another registered method (``kind="registry"``): iNNvestigate (``inn.*``), tf-explain
  (``tfx.*``), the lime / shap library paths (``lime.lib``, ``shap.*``);
* Xplique 2.0.2 (``kind="xplique"``), run in its own virtualenv by :mod:`bench.xplique_bridge`;
* a plain Python loop (``kind="loop"``): one perturbed image per model call, the way the methods
  are usually written; timed on a subset of its calls and extrapolated to the full count.

Each peer's maps are compared with ours (mean Pearson r per map). Where a peer computes a different
quantity (documented deviations, /work/shared/reference/stack.md), ``note`` says so and no r is
reported; where ours only needs the same reduction to become the peer's quantity, ``ours`` names
that transform (applied to our per-channel maps) and the note says so.
"""
import time
from dataclasses import dataclass, field

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf.keras_bridge import logits_model, probability_head


@dataclass
class Peer:
    name: str                       # label in the table
    kind: str                       # registry | xplique | loop
    target: str                     # registry name / Xplique class / loop name
    params: object = None           # callable(explainer) -> kwargs, or None
    note: str = ""                  # what differs (shown in the table)
    compare: bool = True            # report Pearson r
    ours: str = None                # transform of our per-channel maps before r: "absmax"
    model: str = "logits"           # xplique: logits | probs
    extra: dict = field(default_factory=dict)


def _same(*names):
    """Pass our parameters ``names`` through under the same names."""
    return lambda ex: {k: ex.params[k] for k in names}


def _renamed(**mapping):
    """Pass our parameter ``ours`` as the peer's ``theirs`` (mapping theirs=ours)."""
    return lambda ex: {theirs: ex.params[ours] for theirs, ours in mapping.items()}


def _given(*names):
    """Pass our parameters ``names`` through, those that are set (None: the peer's own default)."""
    return lambda ex: {k: float(ex.params[k]) for k in names if ex.params.get(k) is not None}


STOCH = "stochastic: an independent Monte-Carlo estimate, r < 1 expected"

PEERS = {
    "grad": [Peer("inn.gradient", "registry", "inn.gradient"),
             Peer("xplique.Saliency", "xplique", "Saliency", ours="absmax",
                  note="Xplique Saliency = |grad| max over channels; r against ours reduced the same way")],
    "inpgrad": [Peer("inn.input_t_gradient", "registry", "inn.input_t_gradient"),
                Peer("xplique.GradientInput", "xplique", "GradientInput")],
    "ig": [Peer("inn.integrated_gradients", "registry", "inn.integrated_gradients",
                params=lambda ex: {"steps": ex.params["steps"], "baseline": ex.params["baseline"]},
                note="left Riemann sum (ours: midpoint)"),
           Peer("tfx.ig", "registry", "tfx.ig", params=_same("steps"), compare=False,
                note="tf-explain IG omits the (x - baseline) factor: a different quantity"),
           Peer("shap.gradient", "registry", "shap.gradient", params=_renamed(nsamples="steps"),
                note="expected gradients: random path points, " + STOCH),
           Peer("xplique.IntegratedGradients", "xplique", "IntegratedGradients",
                params=lambda ex: {"steps": ex.params["steps"], "baseline_value": float(ex.params["baseline"])},
                note="trapezoid rule (ours: midpoint)")],
    "sg": [Peer("tfx.smoothgrad", "registry", "tfx.smoothgrad", params=_same("samples"), compare=False,
                note="tf-explain differentiates a cross-entropy with noise std 1.0: a different quantity"),
           Peer("inn.smoothgrad", "registry", "inn.smoothgrad", params=_same("samples"), compare=False,
                note="iNNvestigate ignores noise_scale (always std 1.0): a different quantity"),
           Peer("xplique.SquareGrad", "xplique", "SquareGrad", extra={"stat": "square"}, note=STOCH)],
    "squaregrad": [Peer("xplique.SquareGrad", "xplique", "SquareGrad", note=STOCH)],
    "vargrad": [Peer("xplique.VarGrad", "xplique", "VarGrad", note=STOCH)],
    "gb": [Peer("inn.guided_backprop", "registry", "inn.guided_backprop",
                note="iNNvestigate starts from f_c, not 1 (same map up to scale where f_c > 0)"),
           Peer("xplique.GuidedBackprop", "xplique", "GuidedBackprop")],
    "deconvnet": [Peer("inn.deconvnet", "registry", "inn.deconvnet",
                       note="iNNvestigate starts from f_c, not 1 (same map up to scale where f_c > 0)"),
                  Peer("xplique.DeconvNet", "xplique", "DeconvNet")],
    "deeplift": [Peer("shap.deep", "registry", "shap.deep",
                      params=lambda ex: {"background": ex.params["baseline"]})],
    "gradcam": [Peer("tfx.gradcam", "registry", "tfx.gradcam", compare=False,
                     note="tf-explain: guided gradients, no ReLU: a different quantity"),
                Peer("xplique.GradCAM", "xplique", "GradCAM", note="bicubic upsampling (ours: bilinear)")],
    "gradcampp": [Peer("xplique.GradCAMPP", "xplique", "GradCAMPP", note="bicubic upsampling (ours: bilinear)")],
    "occlusion": [Peer("tfx.occlusion", "registry", "tfx.occlusion",
                       params=lambda ex: {"patch_size": int(ex.window[0])}, compare=False,
                       note="tf-explain: stride = patch, fill 127.5, 1 - p: a different quantity"),
                  Peer("xplique.Occlusion", "xplique", "Occlusion", model="probs",
                       note="no border-flush last window (same grid when the windows tile the image)"),
                  Peer("plain loop", "loop", "occlusion")],
    "pda": [Peer("plain loop", "loop", "pda")],
    "shapley": [Peer("plain loop", "loop", "shapley")],
    "rise": [Peer("xplique.Rise", "xplique", "Rise", model="probs",
                  note="divides by the per-pixel mask sum (ours: N p); " + STOCH)],
    "lime": [Peer("lime.lib", "registry", "lime.lib", note=STOCH),
             Peer("xplique.Lime", "xplique", "Lime", model="probs",
                  note="lime's kernel, Ridge(alpha=1) and our segments; " + STOCH)],
    # native LRP / Deep Taylor against iNNvestigate 2.1.2 on the same weights (same maps on models
    # without BatchNormalization: r ~ 1); iNNvestigate refusing a model is recorded as the peer's error
    **{name: [Peer(f"inn.{name}", "registry", f"inn.{name}", params=_given(*names))]
       for name, names in (("lrp.z", ()), ("lrp.epsilon", ("epsilon",)), ("lrp.alpha_1_beta_0", ()),
                           ("lrp.alpha_2_beta_1", ()), ("deep_taylor", ()),
                           ("deep_taylor.bounded", ("low", "high")))},
    "kernelshap": [Peer("shap.lib", "registry", "shap.lib", note=STOCH),
                   Peer("xplique.KernelShap", "xplique", "KernelShap", model="probs",
                        note="no efficiency constraint; our segments; " + STOCH)],
}

# peers that take the settings of ours from the same settings section: pass ours through
SHARED_SECTION = {"lime.lib": "lime", "shap.lib": "kernelshap"}


PEER_MEMORY_LIMIT = 2 << 30    # bytes a peer may allocate at once before it is skipped


def check_peer_memory(peer, ex, overrides):
    """Raise when a peer would hold more than PEER_MEMORY_LIMIT at once (it would be OOM-killed):
    tf-explain's occlusion builds every patched image of an input in one array."""
    if peer.target == "tfx.occlusion":
        h, w, c = ex.shape
        p = int(peer_params(peer, ex, overrides)["patch_size"])
        need = -(-h // p) * -(-w // p) * h * w * c * 4
        if need > PEER_MEMORY_LIMIT:
            raise MemoryError(f"skipped: tf-explain would build {need / 2**30:.1f} GiB of patched "
                              f"images at once (patch {p} on {h}x{w})")


def peer_params(peer, ex, overrides):
    """Keyword arguments of a registry peer: the translated hyperparameters of ours."""
    kw = dict(peer.params(ex)) if peer.params else {}
    if peer.target in SHARED_SECTION:
        kw.update(overrides)
    return kw


def ours_transform(maps_per_channel, how):
    if how == "absmax":
        return np.abs(maps_per_channel).max(-1)
    raise ValueError(how)


# ------------------------------------------------------------------------------------------------
# plain Python loops: one perturbed image per model call
# ------------------------------------------------------------------------------------------------
def _single_call(model, probabilities, shape):
    """A compiled one-image forward pass (the loop is not charged for eager overhead)."""
    if probabilities:
        fwd = model
        soft = probability_head(model)[0] == "softmax"
    else:
        fwd, soft = logits_model(model)[0], False

    @tf.function(input_signature=[tf.TensorSpec((1,) + tuple(shape), tf.float32)], autograph=False)
    def f(x):
        y = fwd(x, training=False)
        return tf.nn.softmax(y) if soft else y

    return lambda img: np.asarray(f(tf.constant(img[None])))[0].astype(np.float64)


def _tiles(ex, h, w):
    """True when windows do not overlap (each pixel's painted value is its window's value)."""
    (kh, kw), (sh, sw) = ex.window, ex.stride
    return kh == kw == 1 and sh == sw == 1 or (sh >= kh and sw >= kw and (h - kh) % sh == 0
                                                and (w - kw) % sw == 0)


def run_loop(kind, ex, x, targets, ours_maps, max_calls):
    """Time a plain loop on a subset of its calls, extrapolate to the row's full count.

    Returns dict(time_s, calls_timed, calls_total, per_call_s, pearson, max_abs_diff, note).
    """
    from xaitf.methods.perturb import window_grid

    n, (h, w, c) = len(x), x.shape[1:]
    img, t = x[0], int(targets[0])
    if kind in ("occlusion", "pda"):
        grid = window_grid(h, w, ex.window, ex.stride, "bench")
        f = _single_call(ex.model, True, (h, w, c))
        kh, kw = ex.window
        if kind == "occlusion":
            per_window = 1
            fills = [np.broadcast_to(ex.fill, (kh, kw, c))]
        else:
            per_window = ex.n_samples
            vals = np.arange(per_window) / (per_window - 1)
            fills = [np.full((kh, kw, c), v, np.float32) for v in vals]
            if ex.data is not None:
                return {"error": "plain loop implemented for the value-grid PDA only"}
        n_win = max(1, min(len(grid), (max_calls - 1) // per_window))
        total_calls = n * (len(grid) * per_window + 1)
        f(img)  # trace
        t0 = time.perf_counter()
        p0 = f(img)[t]
        got = []
        for r, cc in grid[:n_win]:
            ps = []
            for fill in fills:
                xp = img.copy()
                xp[r:r + kh, cc:cc + kw, :] = fill
                ps.append(f(xp)[t])
            got.append(p0 - ps[0] if kind == "occlusion" else _we(ex, p0, np.mean(ps)))
        elapsed = time.perf_counter() - t0
        calls = 1 + n_win * per_window
        ref = [ours_maps[0, r, cc] for r, cc in grid[:n_win]] if _tiles(ex, h, w) else None
        note = "" if ref is not None else "overlapping windows: no per-window comparison"
    elif kind == "shapley":
        nf = h * w * (c if ex.channel_features else 1)
        if ex.channel_features:
            return {"error": "plain loop implemented for pixel features only"}
        perm = ex.permutations(nf)[0]
        f = _single_call(ex.model, False, (h, w, c))
        base = np.broadcast_to(ex.baseline if ex.baseline.ndim != 1 else ex.baseline[None, None],
                               (h, w, c)).astype(np.float32)
        k = max(2, min(nf + 1, max_calls))
        total_calls = n * ex.samples * (nf + 1)
        f(img)
        t0 = time.perf_counter()
        cur = img.copy()
        outs = [f(cur)[t]]
        for j in perm[:k - 1]:
            r, cc = divmod(int(j), w)
            cur[r, cc] = base[r, cc]
            outs.append(f(cur)[t])
        elapsed = time.perf_counter() - t0
        calls = k
        got = list(np.asarray(outs[:-1]) - np.asarray(outs[1:]))
        # ours with one permutation (the same first permutation of the same seed), image 0
        from xaitf import registry

        one = registry.create_explainer("shapley", ex.model, batch_size=ex.batch_size, progress=False,
                                        **{**ex.params, "samples": 1})
        m1 = one(x[:1], targets[:1])[0].reshape(-1)
        ref = [m1[int(j)] for j in perm[:k - 1]]
        note = "compared with ours on the same first permutation"
    else:
        raise ValueError(kind)
    per_call = elapsed / calls
    out = {"time_s": per_call * total_calls, "calls_timed": int(calls), "calls_total": int(total_calls),
           "per_call_s": per_call, "extrapolated": f"{calls} of {total_calls} calls timed", "note": note}
    if ref is not None:
        got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        out["max_abs_diff"] = float(np.max(np.abs(got - ref)))
        out["scale"] = float(np.max(np.abs(ref)) + 1e-300)
        if len(got) >= 3 and got.std() > 0 and ref.std() > 0:
            out["pearson"] = float(np.corrcoef(got, ref)[0, 1])
    return out


def _we(ex, p_x, p_without):
    from xaitf.methods.pda import laplace, log2_odds

    nn, kk = ex.train_samples, ex.k
    return float(log2_odds(laplace(p_x, nn, kk)) - log2_odds(laplace(p_without, nn, kk)))
