"""xaitf's metrics against Quantus on the same MNIST maps (issue [EVAL]).

Runs in the main venv; Quantus runs in its own (``make bench-setup-quantus`` creates
``bench/.venv-quantus``: TensorFlow 2.15, Keras 2, quantus 0.6.0) through
:mod:`bench.quantus_worker`, with files in and out, as bench/xplique_bridge.py does for Xplique.

The model: the zoo's ``mnist_cnn`` (``create_model.py mnist_cnn``, quick schedule) behind a
Concatenate layer that copies the gray digit to its 3 channels, so that x is (N,28,28,1) on both
sides and Quantus' per-feature perturbations (it broadcasts maps over channels and perturbs
features, i.e. channel values) are per pixel as ours. Images: rows 8000.. of the 10k MNIST test
set (held out from the model's training). Maps: ``xaitf.create_explainer("ig", model)``.
Masks for the localisation metrics: the digit's pixels (> 0.5). Scores: probabilities on both
sides (the model ends in softmax; Quantus' ``softmax=True`` default keeps it).

    XAITF_DATA_DIR=/work/shared/data .venv/bin/python bench/quantus_compare.py \
        --model /tmp/qmodels/mnist_cnn.h5 --n 64 --out bench/results-quantus

``--metrics a,b --append`` runs some rows and keeps the others of OUT.json (or, without it, of OUT.md);
every row records its model. ``--md-only`` rewrites OUT.md from OUT.json (after editing NOTES).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = HERE / ".venv-quantus" / "bin" / "python"
DETERMINISTIC = ("pixel_flipping", "region_perturbation", "sparseness", "complexity", "relevance_mass",
                 "relevance_rank", "pointing_game", "effective_complexity", "top_k_intersection",
                 "avg_sensitivity_paired", "local_lipschitz_paired", "infidelity_paired")
STOCHASTIC = ("faithfulness_correlation", "faithfulness_correlation_logits", "road", "road_tiebreak",
              "max_sensitivity", "model_parameter_randomisation", "avg_sensitivity", "local_lipschitz",
              "infidelity", "random_logit", "random_logit_qdefault")
MEANS = ("faithfulness_correlation", "faithfulness_correlation_logits", "max_sensitivity", "avg_sensitivity",
         "local_lipschitz", "infidelity", "random_logit", "random_logit_qdefault")   # compared as means
EXPLAIN = ("max_sensitivity", "avg_sensitivity", "local_lipschitz", "model_parameter_randomisation",   # Quantus
           "random_logit", "random_logit_qdefault", "avg_sensitivity_paired", "local_lipschitz_paired")  # calls IG
MASKS = ("relevance_mass", "relevance_rank", "pointing_game", "top_k_intersection")
MS_SAMPLES = 10
MAP_ONLY = ("Sparseness", "Complexity", "RelevanceMassAccuracy", "RelevanceRankAccuracy", "PointingGame",
            "EffectiveComplexity", "TopKIntersection")
LL_SAMPLES, LL_MEAN, LL_STD = 10, 0.1, 0.1    # xaitf's defaults (study 2's Quantus settings)
INF_SAMPLES, INF_STD = 50, 0.2                # xaitf's defaults
EC_EPS = 1e-5
TKI_K = 100
PER_MAP = {"normalise_axes": [1, 2, 3]}      # Quantus' normalise_by_max per map (N,1,H,W), not per batch
EARLIER_MODEL = "/tmp/qmodels/mnist_cnn.h5 (earlier run)"
PF_STEP = 1
RP_PATCH, RP_REGIONS = 7, 16          # 7 divides 28: Quantus 0.6.0 pads nothing, its blocks = our grid
ROAD_PCT = list(range(1, 100, 2))     # Quantus' default percentages
FC_RUNS, FC_SUBSET = 100, 224


NOTES = """Settings and differences (Quantus 0.6.0, TF 2.15.1 CPU, in bench/.venv-quantus):

* model: the zoo's mnist_cnn behind Concatenate([x, x, x]), so x is (N,28,28,1) on both sides. Quantus
  perturbs *features* (maps are broadcast over channels, then every channel value is one feature):
  on a 3-channel input its PixelFlipping with features_in_step=1 removes one channel value per step.
* scores: probabilities on both sides, with Quantus' `softmax=` passed explicitly. Quantus'
  FaithfulnessCorrelation defaults to `softmax=False` (logits) while PixelFlipping, RegionPerturbation and
  ROAD default to `softmax=True`; xaitf's faithfulness_correlation defaults to probabilities, so to match
  Quantus' default call it with output="logits" (row faithfulness_correlation_logits).
* pixel flipping: features_in_step=1, black (0) fill; Quantus' curve = our scores[:, 1:].
* region perturbation: Quantus 0.6.0 takes non-overlapping patch_size blocks of the image padded
  (centred: zero-padded map, edge-padded image) to a multiple of patch_size, not the greedy sliding
  patches of earlier Quantus. With patch_size 7 (divides 28) that is our layout="grid"; with the default
  8 on 28x28 its blocks are shifted by 2 pixels and match neither of our layouts. 16 regions, fill 0.
* sparseness: Quantus adds 1e-7 to every |a| before the Gini index (and does it in place on a_batch):
  relative differences ~5e-6 here.
* max sensitivity: Quantus 0.6.0 divides by ||a(x)|| (its norm_denominator is applied to the
  explanation), i.e. our denominator="explanation", not "input". 10 samples, U(-0.2, 0.2), Frobenius norm;
  Quantus' explain_func is an IG written in the worker (baseline 0, 64 midpoint steps, logits).
* ROAD: with the same maps the curves differ at large percentages (AUC 0.598 vs 0.634 on 64 images)
  because IG is exactly 0 on black pixels: Quantus orders these ties with np.argsort's unspecified
  order, we take them row-major, and imputing different background pixels changes the images. Row
  road_tiebreak makes the zeros distinct (-1e-30 * (index+1)) so both sort alike: then the curves agree.
* MPRT: Quantus permutes every weight array along its first axis with np.random.seed(seed + 1) (the same
  seed for every layer); ours randomisation="permute" with default_rng([seed, k]): compared as means per
  layer (cascading, top-down, Spearman of |maps| normalised by max). Quantus' extra first row (a_batch vs
  its own explainer) is 1.0 throughout: the worker's IG ranks pixels as ours.
* normalisation: Quantus' default normalise_func normalise_by_max divides by the largest |a| over the
  whole batch passed to the call (its normalise_axes default to every axis, the batch axis included);
  ours divide every map by its own maximum. Where it matters (effective complexity, random logit) the
  Quantus side gets normalise_func_kwargs={"normalise_axes": [1, 2, 3]} (per map).
* avg sensitivity: as max sensitivity (10 samples, U(-0.2, 0.2), Frobenius norm, divided by ||a(x)||),
  the mean over the samples instead of the maximum.
* local Lipschitz: max over 10 samples of ||a(x) - a(x + eps)||_2 / ||eps||_2, eps ~ N(0.1, 0.1^2) per
  value (our defaults; Quantus' perturb_mean=0.1, perturb_std=0.1), no normalisation (Quantus' default
  normalise=True changed to False); Quantus adds 1e-10 to the denominator.
* infidelity: Quantus 0.6.0's Infidelity is not Yeh et al.'s noise-based estimate: per patch size
  (default 4) it sets the image's patches to the baseline ("black" = the image minimum) one after the
  other in raster order, cumulatively (each step keeps the patches set before), and takes the MSE
  between f(x) - f(x') and sum(a * (x - x')) over these 49 steps; nothing is drawn at random, so its
  n_perturb_samples repeats the same value. xaitf offers only the Gaussian perturbation. Matched by
  giving Quantus one patch of 28 (the whole image) and perturb_func=batch_gaussian_noise (perturb_std
  0.2, mean 0): then every sample is x' = x + N(0, 0.2^2) per pixel and the score is
  mean_i (sum(a * (x - x'_i)) - (f(x) - f(x'_i)))^2 over 50 samples, our multiply_by_inputs=False
  (additive noise, I . map = sum(eps * map)) with std 0.2, 50 samples, probabilities. Our default
  multiply_by_inputs=True (Captum's relative noise x - eps * (x - baseline)) has no Quantus counterpart.
* random logit: the other class is drawn uniformly from the 9 others on both sides (Quantus:
  np.random.seed(42) then randint per batch; ours default_rng([seed, i])), compared as means; Quantus'
  num_classes (default 1000) set to 10. Quantus' RandomLogit hands its similarity the maps flattened to
  (N, 784), so its default ssim is a 1-D SSIM with 7-value windows running across row ends, and it
  normalises by the batch maximum (above). Row random_logit gives the Quantus side a 2-D SSIM (Quantus'
  own ssim on the maps reshaped to 28x28, written in the worker) and per-map normalisation: the
  definition of ours (skimage SSIM, 7x7 window, data_range = max - min of both maps, |a| not taken,
  maps divided by max |a|). Row random_logit_qdefault: Quantus with its defaults (1-D SSIM, batch
  maximum) against the same scores of ours, to show the size of that difference: on 64 images with
  Quantus' class draw the mean is 0.399 (2-D, per map), 0.716 (1-D, per map), 0.399 (2-D, batch max),
  0.715 (1-D, batch max: Quantus' default), so the 1-D SSIM makes nearly all of it. With Quantus' draw
  replayed (a check run once, not in this script) our per-image scores equal the random_logit row's
  Quantus scores within 1e-8.
* rows *_paired (avg sensitivity, local Lipschitz, infidelity): Quantus' perturb_func replays our noise
  (the worker's replay_func; the same draws as the unpaired rows): default_rng([0, i]) per image,
  float32, for the sensitivities; infidelity's noise, drawn on the device, as
  xaitf.metrics.infidelity_noise returns it, stored in the worker's data file. The per-image scores
  pair up and are compared as deterministic: what remains is the two IG implementations and float
  rounding.
* effective complexity: #{|a| / max|a| > 1e-5} per map, abs and normalise on both sides (Quantus'
  defaults), Quantus normalising per map (above). With Quantus' default batch maximum 2 of the 64
  images count 1 pixel fewer (means 189.02 vs 189.05).
* top-k intersection: k = 100 of the 784 pixels, masks = digit pixels > 0.5, signed maps, no
  normalisation. Ties: IG is exactly 0 on every black pixel and on a few digit pixels (14 in the masks
  of the 64 images); Quantus sorts with np.argsort (order of ties unspecified), we take ties row-major.
  On 2 of the 64 images the group of zeros straddles the k = 100 cut and holds mask pixels, so the
  score there depends on the tie order; Quantus' order happened to give the same scores (0
  differences). Other data or k may need the road_tiebreak treatment.
"""


def one_channel(model):
    """``model`` behind Concatenate([x, x, x]): input (28,28,1), the same weights (tf-keras)."""
    import tf_keras as k

    inp = k.Input((28, 28, 1), name="gray")
    h = k.layers.Concatenate(axis=-1, name="rgb")([inp, inp, inp])
    fresh = []
    for layer in model.layers[1:]:            # new layers (one graph node each), the same weights
        twin = layer.__class__.from_config(layer.get_config())
        h = twin(h)
        fresh.append((twin, layer))
    for twin, layer in fresh:
        twin.set_weights(layer.get_weights())
    return k.Model(inp, h, name="mnist_cnn_gray")


def load(n, data_dir):
    d = np.load(os.path.join(data_dir, "mnist_test10k.npz"), allow_pickle=False)
    x = (d["x"][8000:8000 + n].astype(np.float32) / 255.0)[..., :1]
    return x, d["y"][8000:8000 + n].astype(np.int64)


def quantus_jobs(names, n):
    plain = {"abs": False, "normalise": False}
    spec = {
        "pixel_flipping": ("PixelFlipping", dict(plain, features_in_step=PF_STEP, perturb_baseline="black")),
        "region_perturbation": ("RegionPerturbation", dict(plain, patch_size=RP_PATCH, regions_evaluation=RP_REGIONS,
                                                           order="morf", perturb_baseline="black")),
        "sparseness": ("Sparseness", {"abs": True, "normalise": False}),
        "complexity": ("Complexity", {"abs": True, "normalise": False}),
        "relevance_mass": ("RelevanceMassAccuracy", plain),
        "relevance_rank": ("RelevanceRankAccuracy", plain),
        "pointing_game": ("PointingGame", plain),
        "faithfulness_correlation": ("FaithfulnessCorrelation", dict(plain, nr_runs=FC_RUNS, subset_size=FC_SUBSET,
                                                                     perturb_baseline="black",
                                                                     return_aggregate=False)),
        "faithfulness_correlation_logits": ("FaithfulnessCorrelation", dict(
            plain, nr_runs=FC_RUNS, subset_size=FC_SUBSET, perturb_baseline="black", return_aggregate=False)),
        "max_sensitivity": ("MaxSensitivity", dict(plain, nr_samples=MS_SAMPLES, lower_bound=0.2)),
        "road": ("ROAD", dict(plain, percentages=ROAD_PCT, noise=0.01)),
        "model_parameter_randomisation": ("MPRT", {"layer_order": "top_down", "abs": True, "normalise": True,
                                                   "seed": 42}),
        "road_tiebreak": ("ROAD", dict(plain, percentages=ROAD_PCT, noise=0.01)),
        "avg_sensitivity": ("AvgSensitivity", dict(plain, nr_samples=MS_SAMPLES, lower_bound=0.2)),
        "local_lipschitz": ("LocalLipschitzEstimate", dict(plain, nr_samples=LL_SAMPLES, perturb_mean=LL_MEAN,
                                                           perturb_std=LL_STD)),
        "infidelity": ("Infidelity", dict(plain, perturb_patch_sizes=[28], n_perturb_samples=INF_SAMPLES,
                                          perturb_func_kwargs={"perturb_mean": 0.0, "perturb_std": INF_STD})),
        "random_logit": ("RandomLogit", {"num_classes": 10, "seed": 42, "abs": False, "normalise": True,
                                         "normalise_func_kwargs": PER_MAP}),
        "random_logit_qdefault": ("RandomLogit", {"num_classes": 10, "seed": 42, "abs": False, "normalise": True}),
        "effective_complexity": ("EffectiveComplexity", {"eps": EC_EPS, "abs": True, "normalise": True,
                                                         "normalise_func_kwargs": PER_MAP}),
        "top_k_intersection": ("TopKIntersection", {"k": TKI_K, "abs": False, "normalise": False}),
    }
    spec["avg_sensitivity_paired"] = spec["avg_sensitivity"]
    spec["local_lipschitz_paired"] = spec["local_lipschitz"]
    spec["infidelity_paired"] = spec["infidelity"]
    funcs = {"infidelity": {"perturb_func": "batch_gaussian_noise"},
             "random_logit": {"similarity_func": "ssim_2d"}}
    # the *_paired rows: Quantus' perturb_func replays our noise (seed 0), so the scores pair up
    replay = {"avg_sensitivity_paired": {"dist": "uniform", "low": -0.2, "high": 0.2, "samples": MS_SAMPLES},
              "local_lipschitz_paired": {"dist": "normal", "mean": LL_MEAN, "std": LL_STD, "samples": LL_SAMPLES},
              "infidelity_paired": {"dist": "stored", "key": "infidelity_noise", "samples": INF_SAMPLES,
                                    "sign": -1}}                    # ours: x - eps, drawn on the device
    return [{"id": k, "cls": spec[k][0], "kwargs": spec[k][1], "n": n,
             "masks": k in MASKS, **({"funcs": funcs[k]} if k in funcs else {}),
             **({"replay": dict(replay[k], seed=0)} if k in replay else {}),
             # softmax explicitly: Quantus' defaults differ per metric (FaithfulnessCorrelation: logits)
             "call": {} if spec[k][0] in MAP_ONLY else {"softmax": not k.endswith("_logits")},
             **({"explain_ig_steps": 64} if k in EXPLAIN else {}),
             **({"maps": "maps_tb"} if k.endswith("_tiebreak") else {})} for k in names]


def run_quantus(model, x, y, maps, masks, names, workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    model.save(str(workdir / "model.h5"), save_format="h5")
    import xaitf.metrics as M

    # infidelity's noise is drawn on the device (a counter-based stream); the worker replays it from here
    inf_noise = M.infidelity_noise(range(len(x)), INF_SAMPLES, maps.shape[1:3], std=INF_STD, seed=0)
    np.savez(workdir / "data.npz", x=x, y=y, maps=maps.astype(np.float32), masks=masks,
             maps_tb=tiebreak(maps), infidelity_noise=inf_noise.reshape(len(x), INF_SAMPLES, -1))
    (workdir / "jobs.json").write_text(json.dumps({"jobs": quantus_jobs(names, len(x))}))
    env = dict(os.environ)
    for k in ("TF_USE_LEGACY_KERAS", "PYTHONPATH"):
        env.pop(k, None)
    proc = subprocess.run([str(PYTHON), str(HERE / "quantus_worker.py"), str(workdir)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (workdir / "results.json").exists():
        raise RuntimeError(f"Quantus worker failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads((workdir / "results.json").read_text())
    sc = np.load(workdir / "scores.npz")
    return res["versions"], res["results"], {k: sc[k] for k in sc.files}


def tiebreak(maps):
    """The maps with their exact zeros (IG on black pixels) made distinct, -1e-30 * (row-major
    index + 1): every sort then gives our row-major tie order (Quantus' np.argsort leaves ties in
    an unspecified order); no other value moves (float32)."""
    m = maps.astype(np.float32).copy()
    idx = np.broadcast_to(np.arange(1, m[0].size + 1, dtype=np.float32).reshape(m.shape[1:]), m.shape)
    m[m == 0] = -1e-30 * idx[m == 0]
    return m


def run_xaitf(model, x, y, maps, masks, names):
    import xaitf
    import xaitf.metrics as M

    common = dict(batch_size=256, output="probabilities", progress=False)
    calls = {
        "pixel_flipping": lambda n: M.pixel_flipping(model, x[:n], maps[:n], y[:n], features_in_step=PF_STEP,
                                                     fill=0.0, **common).scores[:, 1:],
        "region_perturbation": lambda n: (lambda c: c.scores[:, :1] - c.scores[:, 1:])(
            M.region_perturbation(model, x[:n], maps[:n], y[:n], patch_size=RP_PATCH, regions=RP_REGIONS,
                                  order="morf", fill=0.0, layout="grid", **common)),
        "sparseness": lambda n: M.sparseness(maps[:n]),
        "complexity": lambda n: M.complexity(maps[:n]),
        "relevance_mass": lambda n: M.relevance_mass(maps[:n], masks[:n]),
        "relevance_rank": lambda n: M.relevance_rank(maps[:n], masks[:n]),
        "pointing_game": lambda n: M.pointing_game(maps[:n], masks[:n]),
        "faithfulness_correlation": lambda n: M.faithfulness_correlation(
            model, x[:n], maps[:n], y[:n], subset_size=FC_SUBSET, runs=FC_RUNS, fill=0.0, **common),
        "faithfulness_correlation_logits": lambda n: M.faithfulness_correlation(
            model, x[:n], maps[:n], y[:n], subset_size=FC_SUBSET, runs=FC_RUNS, fill=0.0,
            **dict(common, output="logits")),
        "max_sensitivity": lambda n: M.max_sensitivity(
            xaitf.create_explainer("ig", model), x[:n], y[:n], samples=MS_SAMPLES, radius=0.2, norm="fro",
            denominator="explanation"),   # Quantus 0.6.0 divides by ||a||
        "model_parameter_randomisation": lambda n: M.model_parameter_randomisation(
            model, x[:n], y[:n], "ig", order="cascading", similarities=("spearman",), randomisation="permute",
            absolute=True, normalise=True, seed=0, progress=False).scores["spearman"],
        "road_tiebreak": lambda n: M.road(model, x[:n], tiebreak(maps)[:n], y[:n],
                                          percentages=np.array(ROAD_PCT) / 100.0, noise=0.01, score="accuracy",
                                          **common).scores,
        "road": lambda n: M.road(model, x[:n], maps[:n], y[:n], percentages=np.array(ROAD_PCT) / 100.0,
                                 noise=0.01, score="accuracy", **common).scores,
        "avg_sensitivity": lambda n: M.avg_sensitivity(
            xaitf.create_explainer("ig", model), x[:n], y[:n], samples=MS_SAMPLES, radius=0.2, norm="fro",
            denominator="explanation"),
        "local_lipschitz": lambda n: M.local_lipschitz(
            xaitf.create_explainer("ig", model), x[:n], y[:n], samples=LL_SAMPLES, noise_mean=LL_MEAN,
            noise_std=LL_STD),
        "infidelity": lambda n: M.infidelity(model, x[:n], maps[:n], y[:n], std=INF_STD, samples=INF_SAMPLES,
                                             multiply_by_inputs=False, **common),
        "random_logit": lambda n: M.random_logit(model, x[:n], y[:n], "ig", similarity_name="ssim", num_classes=10,
                                                 absolute=False, normalise=True, seed=0),
        "effective_complexity": lambda n: M.effective_complexity(maps[:n], eps=EC_EPS, normalise=True),
        "top_k_intersection": lambda n: M.top_k_intersection(maps[:n], masks[:n], k=TKI_K),
    }
    calls["random_logit_qdefault"] = calls["random_logit"]     # ours against Quantus' default call
    for k in ("avg_sensitivity", "local_lipschitz", "infidelity"):
        calls[k + "_paired"] = calls[k]                           # the same scores, paired with Quantus'
    out, times, done = {}, {}, {}
    for k in names:
        if id(calls[k]) in done:                      # the same call as an earlier row: its scores
            out[k], times[k] = out[done[id(calls[k])]], times[done[id(calls[k])]]
            continue
        calls[k](2)                                   # warm-up: tracing of the model program
        t0 = time.perf_counter()
        out[k] = np.asarray(calls[k](len(x)), np.float64)
        times[k] = time.perf_counter() - t0
        done[id(calls[k])] = k
        print(f"xaitf {k}: {times[k]:.2f}s", flush=True)
    return out, times


def compare(name, ours, theirs):
    """Deterministic: elementwise; stochastic: means and their standard error."""
    if name.startswith("road"):                                # Quantus returns the mean accuracy per percentage
        ours_c = ours.mean(axis=0)
        se = np.sqrt(np.maximum(ours_c * (1 - ours_c), 1.0 / len(ours)) / len(ours) * 2)
        d = np.abs(ours_c - theirs)
        return {"kind": "stochastic", "max_abs": float(d.max()), "max_z": float((d / se).max()),
                "ours_auc": float(np.trapezoid(ours_c, np.array(ROAD_PCT) / 100)),
                "quantus_auc": float(np.trapezoid(theirs, np.array(ROAD_PCT) / 100))}
    if name == "model_parameter_randomisation":       # (layers, N) Spearman, top layer first
        a, b = np.asarray(ours), np.asarray(theirs)
        orig = b[0] if len(b) == len(a) + 1 else None    # Quantus' first row: a_batch vs its own explainer
        b = b[1:] if orig is not None else b
        se = np.sqrt(a.var(axis=1, ddof=1) / a.shape[1] + b.var(axis=1, ddof=1) / b.shape[1])
        d = np.abs(a.mean(axis=1) - b.mean(axis=1))
        return {"kind": "stochastic", "ours_layer_means": a.mean(axis=1).tolist(),
                "quantus_layer_means": b.mean(axis=1).tolist(), "max_abs": float(d.max()),
                "quantus_original_min": None if orig is None else float(orig.min()),
                "max_z": float((d / se).max())}
    if name in MEANS:
        a, b = ours[np.isfinite(ours)], theirs[np.isfinite(theirs)]
        se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
        return {"kind": "stochastic", "ours_mean": float(a.mean()), "quantus_mean": float(b.mean()),
                "max_abs": float(abs(a.mean() - b.mean())), "z": float(abs(a.mean() - b.mean()) / se)}
    ours, theirs = np.asarray(ours, np.float64).reshape(theirs.shape), np.asarray(theirs, np.float64)
    d = np.abs(ours - theirs)
    rel = d / np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), 1e-12)
    return {"kind": "deterministic", "max_abs": float(np.nanmax(d)), "max_rel": float(np.nanmax(rel)),
            "max_rel_scale": float(np.nanmax(d) / max(np.nanmax(np.abs(theirs)), 1e-12)),
            "n_rel_over_1e-4": int(np.sum(rel > 1e-4)), "n_values": int(d.size)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the zoo's mnist_cnn .h5 (create_model.py mnist_cnn); required unless --md-only")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--metrics", default=",".join(DETERMINISTIC + STOCHASTIC))
    ap.add_argument("--data-dir", default=os.environ.get("XAITF_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--workdir", default="/tmp/quantus-work")
    ap.add_argument("--out", default=str(HERE / "results-quantus"), help="writes OUT.json and OUT.md")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of an existing OUT.json for metrics not run now (same n); without "
                         "OUT.json, the table rows of OUT.md (same n)")
    ap.add_argument("--md-only", action="store_true", help="rewrite OUT.md from OUT.json (runs nothing)")
    args = ap.parse_args()
    if args.md_only:
        write_md(json.loads(Path(args.out + ".json").read_text()), args.out)
        return
    if not args.model:
        ap.error("--model is required")
    import xaitf
    import tf_keras as k

    names = [m for m in args.metrics.split(",") if m]
    model = one_channel(k.models.load_model(args.model, compile=False))
    x, y = load(args.n, args.data_dir)
    t0 = time.perf_counter()
    maps = np.asarray(xaitf.create_explainer("ig", model)(x, y), np.float32)
    if maps.ndim == 4:
        maps = maps.sum(-1)
    print(f"IG maps {maps.shape} in {time.perf_counter() - t0:.1f}s; accuracy "
          f"{np.mean(model.predict(x, verbose=0).argmax(1) == y):.3f}", flush=True)
    masks = x[..., 0] > 0.5
    ours, t_ours = run_xaitf(model, x, y, maps, masks, names)
    versions, res, theirs = run_quantus(model, x, y, maps, masks, names, Path(args.workdir))
    rows = []
    for k_ in names:
        r = {"metric": k_, "model": args.model, "xaitf_s": t_ours[k_]}
        if "error" in res[k_]:
            r["error"] = res[k_]["error"]
        else:
            r.update(compare(k_, ours[k_], theirs[k_]))
            r["quantus_s"] = res[k_]["time_s"]
            r["speedup"] = res[k_]["time_s"] / max(t_ours[k_], 1e-9)
        rows.append(r)
    import tensorflow as tf

    if args.append:
        sys.path.insert(0, str(HERE.parent))
        from bench.report import merged_rows

        rows = merged_rows(args.out, args.n, rows)
    meta = {"n": args.n, "versions": {"quantus_side": versions, "xaitf_side": {
        "tensorflow": tf.__version__, "python": sys.version.split()[0]}},
        "settings": {"pixel_flipping_features_in_step": PF_STEP, "region_perturbation": [RP_PATCH, RP_REGIONS],
                     "road_percentages": ROAD_PCT, "faithfulness_correlation": [FC_RUNS, FC_SUBSET],
                     "sensitivity_samples": MS_SAMPLES, "local_lipschitz": [LL_SAMPLES, LL_MEAN, LL_STD],
                     "infidelity": [INF_SAMPLES, INF_STD], "effective_complexity_eps": EC_EPS,
                     "top_k_intersection_k": TKI_K},
        "rows": rows}
    Path(args.out + ".json").write_text(json.dumps(meta, indent=1))
    write_md(meta, args.out)


def write_md(meta, out):
    """OUT.md: the table of ``meta["rows"]``, the models and :data:`NOTES`."""
    rows = meta["rows"]
    lines = [f"# xaitf vs Quantus {meta['versions']['quantus_side'].get('quantus')} on {meta['n']} MNIST images "
             "(IG maps)", "",
             "| metric | kind | max abs diff | max rel diff | xaitf s | Quantus s | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "md_row" in r:                            # kept from an earlier OUT.md
            lines.append(r["md_row"])
            continue
        if "error" in r:
            lines.append(f"| {r['metric']} | error | {r['error'][:80]} | | {r['xaitf_s']:.3f} | | |")
            continue
        rel = f"{r['max_rel']:.2e}" if "max_rel" in r else \
            (f"z={r['z']:.2f}" if "z" in r else f"max z={r['max_z']:.2f}")
        lines.append(f"| {r['metric']} | {r['kind']} | {r['max_abs']:.2e} | {rel} | {r['xaitf_s']:.3f} | "
                     f"{r['quantus_s']:.3f} | {r['speedup']:.1f}x |")
    models = {}
    for r in rows:
        models.setdefault(r.get("model", EARLIER_MODEL), []).append(r["metric"])
    lines += [""] + [f"Model {m}: {', '.join(v)}." for m, v in models.items()]
    lines += ["", "Deterministic rows: max abs / max relative difference per value (curves: every step). "
              "Stochastic rows: difference of the means over the images and z = difference / its standard "
              "error (ROAD, MPRT: the largest over percentages / layers).", "", NOTES]
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
