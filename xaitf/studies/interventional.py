"""Study 2 (interventional explanations): LeNet's causal graph of class 3, node maps, stability, Lipschitz.

``python -m xaitf.studies interventional [--quick]`` reproduces arXiv 2305.08950
(nbereux/Interventional-Explanations-of-Neural-Networks; seeds.md section 2) with
:mod:`xaitf.methods.interventional`, the settings of ``xaitf.settings.INTERVENTIONAL`` (its
config.yaml: class 3, 100 samples, soft interventions, attributions at conv2, stability at fc3;
every key is checked before any work, a value the study cannot take is refused in one line):

1. **Model**: LeNet from ``<models dir>/lenet.h5`` (``python create_model.py lenet``), else
   trained now through the zoo (quick: 3 epochs; full: the zoo's full recipe, 20 epochs) on the
   MNIST data found (``--data-dir``); the report says which and its held-out accuracy.
2. **Graph**: learned top-down (fc3 <- fc2 <- fc1 <- conv2 <- conv1) from the first ``n_samples``
   correctly classified test images of the class; saved as ``graph_class3.json`` and drawn in
   ``graph.png``.
3. **Node maps** (``node_maps.png``): one map per kept conv2 channel (parents' full convolutions
   through a spatial softmax, averaged, resized to 32x32) and their sum, for a few test images;
   ``maps.png`` sets the causal map beside the baselines.
4. **Stability** (``stability_curve.png``, ``stability_hist.png``; ``graph_stab``): fc3's link
   re-learned ``repeats`` times per ``beta`` in 0..0.5 (step 0.01) with interventions of size
   ``U(0, beta)``. ``stability_protocol="original"`` (default, what study 2's code does): every
   repeat draws a fresh random subset of the eligible test images (correctly classified class-3
   images; the original's random sampler) and one scalar ``u`` for the layer; ``"fixed"``: the
   graph's own images every repeat and one ``u`` per weight (100% at beta 0 by construction). Both
   are computed (they cost seconds); the setting picks the headline curve, the other is drawn
   dashed beside it and the study's published curve.
5. **Robustness and faithfulness** (``eval_attr``): mean local Lipschitz estimate (10 samples, noise
   mean 0.1, std 0.1; :func:`xaitf.metrics.local_lipschitz`) and IROF of the causal maps and of
   Integrated Gradients, Saliency (gradient), Gradient SHAP (``shap.gradient``) and Input x
   Gradient, each with two settings side by side: **ours** (every map normalised the same way;
   :func:`xaitf.metrics.irof`, an area in [0, 1]) and **the original's** (its
   ``evaluation_metrics.py`` with Quantus 0.1.3: baselines on raw maps, causal maps with abs and
   normalisation and a running maximum over the images of each metric batch; IROF's un-normalised
   area, :func:`irof_original`), beside the study's numbers (Lipschitz IG 1.668, Saliency 3.362,
   GradientShap 1.949, InputXGradient 1.965, Causal 0.287; IROF Causal 37.9 from its
   ``IORF_metric.csv``).

``--quick`` trains 3 epochs when no model file exists, re-learns the stability link on a coarse
beta grid (0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5) with 2 repeats, and scores the metrics on 10
images (full: every graph sample); graph learning itself is the same (it takes well under a second).
Outputs: ``report.md``, ``results.json``, ``graph_class3.json`` and the PNGs.
"""
import math
import time

import numpy as np

from .. import registry
from .. import settings as S
from ..errors import XaitfError
from . import common as C

# the study's numbers (seeds.md section 2; MNIST, class 3)
REF_LIPSCHITZ = {"Causal": 0.287, "IG": 1.668, "Saliency": 3.362, "GradientShap": 1.949,
                 "InputXGradient": 1.965}
# IROF shipped by the study: output/evaluation_metrics/LeNet/IORF_metric.csv holds 17 rows, all
# "Causal" (no baseline was scored with IROF): the mean IROF of each metric batch (16 batches of 6
# images and one of 4, 100 images). Mean of the rows 37.94, std 3.80, range 29.43..46.30.
REF_IROF = {"Causal": 37.94}
REF_IROF_FILE = {"rows": 17, "images": 100, "mean": 37.94, "std": 3.80, "min": 29.43, "max": 46.30}
REF_GRAPH = {"fc3": [9, 27, 28, 31, 32, 34, 47, 68, 70, 71, 76, 80, 81],     # fc3 <- fc2
             "fc2": [0, 8, 34, 52, 69, 70, 81, 83],                          # fc2 <- fc1
             "fc1": [0, 4, 6, 7, 8, 10, 13, 14],                             # fc1 <- conv2
             "conv2": [0, 2, 4]}                                             # conv2 <- conv1
# (name in the study's table, xaitf method, keyword arguments)
BASELINES = (("IG", "ig", {}), ("Saliency", "grad", {}), ("GradientShap", "shap.gradient", {}),
             ("InputXGradient", "inpgrad", {}))
QUICK = {"epochs": 3, "betas": (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5), "repeats": 2,
         "metric_images": 10}
LIPSCHITZ = {"samples": 10, "noise_mean": 0.1, "noise_std": 0.1}
NODE_MAP_IMAGES = 4
PROTOCOLS = ("original", "fixed")
# LeNet's layers this reproduction can take: node maps need a Conv2D fed by a Conv2D; the stability
# re-learns a link, so the layer needs a parent weight layer (conv1 has none)
MAP_LAYERS = ("conv2",)
SOFT_LAYERS = ("fc3", "fc2", "fc1", "conv2")
# config.yaml switches whose other value this reproduction does not run (see settings.INTERVENTIONAL)
FIXED_SWITCHES = {"learn_explainer": (True, "the graph is always learned in the run (the study's "
                                            "saved graph belongs to its own, unpublished weights)"),
                  "gen_attr": (True, "the node maps are always made"),
                  "vis_attr": (True, "the figures are always drawn"),
                  "baseline_attr": (True, "the baseline methods are always scored beside the causal maps"),
                  "save_attr": (False, "the maps are not pickled (node_maps.png and maps.png show them)")}
# what each setting does here (the report's settings table)
SETTING_NOTES = {
    "target_idx": "class explained (0..9)",
    "n_samples": "images per graph and per stability repeat",
    "soft_interventions": "graph learning: soft u ~ U(beta, beta + soft_width) per weight; False: u = 0",
    "graph_stab": "run the stability part",
    "layer_name": "layer of the node maps",
    "layer_name_soft": "layer re-learned for the stability",
    "beta": "graph learning: lower end of the soft draws",
    "z": "one-sided z-test threshold (1.65: p = 0.05)",
    "dataset_name": "the only dataset this reproduction runs",
    "model_name": "the only model this reproduction runs",
    "learn_explainer": "the graph is learned in the run",
    "gen_attr": "node maps made", "save_attr": "maps not pickled", "vis_attr": "figures drawn",
    "eval_attr": "run the Lipschitz and IROF part",
    "baseline_attr": "baselines scored beside the causal maps",
    "soft_width": "graph learning: width of the soft draws",
    "fallback": "keep units with mean relative effect below this when none passes the z-test",
    "repeats": "stability repeats per beta (quick: 2)",
    "beta_max": "stability: largest beta", "beta_step": "stability: beta step (quick: a coarse grid)",
    "stability_protocol": "original: fresh random images + one scalar u per repeat; fixed: the "
                          "graph's images + u per weight",
    "intervention_batch": "(unit, sample) pairs per forward chunk",
    "data": "the command lines' interventional method only (the study learns from LeNet's MNIST test split)",
    "graph": "the command lines' interventional method only (the study learns its graph)",
}


def _refuse(key, value, what):
    raise XaitfError(f"interventional.{key}={value!r}: {what}; drop or fix the --set")


def check_config(c):
    """Refuse, in one line (XaitfError), any value of the study's settings it cannot run with.

    Called before any work. Checks every key of ``settings.INTERVENTIONAL``: the supported
    dataset/model, integer and number ranges, True/False switches, layer and protocol names, and
    the config.yaml switches that must keep their value here (:data:`FIXED_SWITCHES`).
    """
    for key, supported in (("dataset_name", "MNIST"), ("model_name", "LeNet")):
        if str(c[key]).lower() != supported.lower():
            _refuse(key, c[key], f"this reproduction runs study 2 on {supported} only (the zoo's "
                                 "LeNet on MNIST)")

    def integer(key, low, high=None):
        v = c[key]
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low and \
            (high is None or v <= high)
        if not ok:
            span = f"in [{low}, {high}]" if high is not None else f">= {low}"
            _refuse(key, v, f"expected an integer {span}")

    def number(key, low=None, high=None, low_open=False, what=None):
        v = c[key]
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
            and math.isfinite(float(v))
        if ok and low is not None:
            ok = float(v) > low if low_open else float(v) >= low
        if ok and high is not None:
            ok = float(v) <= high
        if not ok:
            _refuse(key, v, what or "expected a finite number")

    def boolean(key):
        if not isinstance(c[key], (bool, np.bool_)):
            _refuse(key, c[key], "expected True or False")

    def one_of(key, options, why):
        if c[key] not in options:
            _refuse(key, c[key], f"expected one of {', '.join(options)} ({why})")

    integer("target_idx", 0, 9)
    integer("n_samples", 1)
    integer("repeats", 1)
    integer("intervention_batch", 1)
    for key in ("soft_interventions", "graph_stab", "eval_attr"):
        boolean(key)
    number("beta", 0, 1, what="expected a number in [0, 1] (lower end of the soft draws)")
    number("soft_width", 0, 1, what="expected a number in [0, 1] (width of the soft draws)")
    number("z", 0, what="expected a finite number >= 0 (the z-test threshold)")
    number("fallback", None, 0, what="expected a finite number <= 0 (a mean relative drop)")
    number("beta_max", 0, 1, what="expected a number in [0, 1] (the largest stability beta)")
    number("beta_step", 0, 1, low_open=True, what="expected a number in (0, 1] (the beta step)")
    if c["layer_name"] is not None:      # None: the last Conv2D fed by a Conv2D, LeNet's conv2
        one_of("layer_name", MAP_LAYERS, "node maps need a Conv2D fed by a Conv2D: LeNet's conv2")
    for key in ("data", "graph"):
        if c[key] is not None:
            _refuse(key, c[key], "the study learns its graph from LeNet's MNIST test split (data and "
                                 "graph are for the command lines' interventional method)")
    one_of("layer_name_soft", SOFT_LAYERS, "a LeNet layer with a parent weight layer")
    one_of("stability_protocol", PROTOCOLS, "see settings.INTERVENTIONAL")
    for key, (value, why) in FIXED_SWITCHES.items():
        boolean(key)
        if bool(c[key]) is not value:
            _refuse(key, c[key], f"this reproduction needs {value}: {why}")


def config(quick):
    """The run's settings: ``settings.INTERVENTIONAL`` (after ``--set``, checked by
    :func:`check_config`) plus the quick sizes."""
    c = S.section("interventional")
    check_config(c)
    step, top = float(c["beta_step"]), float(c["beta_max"])
    betas = np.round(np.arange(0.0, top + step / 2, step), 10)
    if quick:
        betas = np.asarray([b for b in QUICK["betas"] if b <= top + 1e-12])
    c["betas"] = [float(b) for b in betas]
    c["repeats_used"] = QUICK["repeats"] if quick else int(c["repeats"])
    c["layer_name"] = c["layer_name"] or MAP_LAYERS[0]
    return c


def original_batches(n):
    """The metric batches of the original's ``EvaluationMetrics``: it splits its N images with
    ``torch.split(inputs, N // 16)`` when N > 16, i.e. consecutive batches of ``N // 16`` images
    (100 images: 16 batches of 6 and one of 4); with N <= 16 it does not split and its loop takes
    the images one at a time, so every image is its own batch. Returns a list of index arrays."""
    n = int(n)
    size = n // 16 if n > 16 else 1
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def running_max(values, batches):
    """The original's causal Lipschitz scores: ``similarity_max`` starts at 0 once per metric call
    (one batch) and is never reset between its images, so image i scores the maximum over every
    (image, noise draw) of its batch up to and including i."""
    v = np.asarray(values, np.float64)
    out = np.empty_like(v)
    for idx in batches:
        out[idx] = np.maximum.accumulate(np.maximum(np.nan_to_num(v[idx], nan=0.0), 0.0))
    return out


_trapz = getattr(np, "trapezoid", None) or np.trapz     # numpy 2 renamed trapz


def irof_original(model, x, maps, targets, batch_size=256, segments=None):
    """IROF as study 2's ``CausalIROF`` (on Quantus 0.1.3) computes it, per image.

    Superpixels: ``skimage.segmentation.slic(image (H,W,C), start_label=0)`` with scikit-image's
    defaults on the raw image (one channel: no RGB/Lab conversion). Only the labels
    ``0 .. max-1`` are ranked and removed (the loop runs to ``segments.max()``, so the last label
    never is), by mean map value, highest first. Removal is cumulative; a removed segment takes the
    mean of the whole current (already perturbed) image. ``r_k = P_y(x_k) / P_y(x)`` on the softmax
    probabilities for ``k = 1 .. max`` (no point k = 0) and the score is ``np.trapz(r, dx=1)``: an
    area in "segments", not normalised (about 60-90 segments on a 32x32 digit). Lower = the
    removal order hurts the class faster.

    Returns ``(scores (N,), segments removed per image (N,))``.
    """
    import tensorflow as tf
    from skimage.segmentation import slic

    from ..metrics._common import output_transform

    x = np.asarray(x, np.float32)
    maps = np.asarray(maps, np.float64)
    targets = np.asarray(targets).astype(np.int64)
    fwd, transform, _ = output_transform(model, "probabilities")
    images, owner, removed = [], [], []
    for i in range(len(x)):
        seg = segments[i] if segments is not None else slic(x[i].astype(np.float64), start_label=0)
        top = int(seg.max())
        with np.errstate(invalid="ignore"):
            means = np.array([maps[i][seg == s].mean() if np.any(seg == s) else np.nan
                              for s in range(top)])
        order = np.argsort(-means, kind="stable")
        cur = x[i].copy()
        for s in order:
            fill = float(cur.mean(dtype=np.float64))
            cur = cur.copy()
            cur[seg == s] = fill
            images.append(cur)
            owner.append(i)
        removed.append(top)
    batch = np.concatenate([x, np.stack(images)]) if images else x
    probs = []
    for s in range(0, len(batch), batch_size):
        out = transform(fwd(tf.constant(batch[s:s + batch_size]), training=False))
        probs.append(np.asarray(out, np.float64))
    probs = np.concatenate(probs)
    p0 = probs[np.arange(len(x)), targets]
    owner = np.asarray(owner, np.int64)
    pert = probs[len(x):][np.arange(len(owner)), targets[owner]] if len(owner) else np.zeros(0)
    scores = np.empty(len(x))
    for i in range(len(x)):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = pert[owner == i] / p0[i]
        scores[i] = float(_trapz(r, dx=1.0)) if r.size else np.nan
    return scores, np.asarray(removed)


def run(args):
    """Run study 2; returns a dict with the run folder and the numbers written to results.json."""
    from ..methods import interventional as I
    from .. import interventional_plots as P

    t_start = time.perf_counter()
    quick = bool(getattr(args, "quick", False))
    seed = int(getattr(args, "seed", 0) or 0)
    progress = bool(getattr(args, "progress", False))
    cfg = config(quick)
    target = int(cfg["target_idx"])
    folder = C.run_folder(getattr(args, "out", "results"), "interventional")
    C.log(f"interventional: {'quick' if quick else 'full'} run -> {folder}")
    timings = {}

    # -- model and data -------------------------------------------------------------------------
    with C.Timer() as t:
        model, minfo = C.get_model("lenet", getattr(args, "models_dir", "models"),
                                   getattr(args, "data_dir", None), quick=quick, seed=seed,
                                   epochs=QUICK["epochs"] if quick else None,
                                   save_dir=folder / "model", progress=progress,
                                   safe_mode=C.load_safely(args))
    timings["model"] = t.seconds
    C.log(f"model: {minfo['note']}")
    x_test, y_test, ds = C.load_split("lenet", getattr(args, "data_dir", None))
    chain = I.Chain(model)
    if minfo.get("test_accuracy") is None:
        minfo["test_accuracy_here"] = float(np.mean(chain.forward(x_test).argmax(1) == y_test))
    for layer in (cfg["layer_name"], cfg["layer_name_soft"]):
        chain.index(layer)          # ModelError naming the layers if the config does not fit

    # -- graph ----------------------------------------------------------------------------------
    with C.Timer() as t:
        graph = I.learn_graph(chain, x_test, y_test, target, n_samples=int(cfg["n_samples"]),
                              soft=bool(cfg["soft_interventions"]), beta=float(cfg["beta"]),
                              z=float(cfg["z"]), fallback=float(cfg["fallback"]),
                              soft_width=float(cfg["soft_width"]), seed=seed,
                              batch_size=int(cfg["intervention_batch"]), show=progress)
    timings["graph"] = t.seconds
    graph_path = I.save_graph(graph, folder / f"graph_class{target}.json")
    graph_fig = C.save_fig(P.graph_figure(graph, chain, title=f"LeNet causal graph of class {target} "
                                          f"({graph.n_samples} samples, "
                                          f"{'soft' if cfg['soft_interventions'] else 'hard'} "
                                          "interventions)"), folder, "graph")
    refs = target == 3                 # the study's numbers are for class 3
    links = [{"layer": lk.layer, "parent": lk.parent, "kept": [int(v) for v in lk.parents],
              "n_kept": len(lk.parents), "n_parent_units": chain.n_parent_units(chain.index(lk.layer)),
              "effects": [int(v) for v in lk.effects], "rule": lk.rule,
              "study": REF_GRAPH.get(lk.layer) if refs else None} for lk in graph.links]
    C.log("graph: " + "; ".join(f"{l['layer']} <- {l['parent']}: {l['n_kept']} kept ({l['rule']})"
                                for l in links))
    samples = I.class_samples(chain, x_test, y_test, target, int(cfg["n_samples"]))

    # -- node maps ------------------------------------------------------------------------------
    with C.Timer() as t:
        shown = samples[:NODE_MAP_IMAGES]
        node_maps, channels = I.node_attributions(chain, graph, shown, cfg["layer_name"])
        node_fig = C.save_fig(node_maps_figure(shown, node_maps, channels, cfg["layer_name"], target),
                              folder, "node_maps")
    timings["node_maps"] = t.seconds
    figures = {"graph": graph_fig, "node_maps": node_fig}

    # -- stability ------------------------------------------------------------------------------
    stability = None
    if cfg["graph_stab"]:
        with C.Timer() as t:
            stability, curves = run_stability(I, P, chain, x_test, y_test, graph, cfg, seed, progress,
                                              figures, folder, refs)
        timings["stability"] = t.seconds
        C.log("stability (" + cfg["stability_protocol"] + " protocol): " + ", ".join(
            f"beta {b:g} {m:.1f}%" for b, m in zip(curves["betas"], curves["mean_rate"])))

    # -- metrics --------------------------------------------------------------------------------
    scores, n_metric = None, 0
    if cfg["eval_attr"]:
        n_metric = QUICK["metric_images"] if quick else len(samples)
        xm = samples[:n_metric]
        tm = np.full(len(xm), target)
        with C.Timer() as t:
            scores, example_maps = score_methods(model, graph, xm, tm, cfg, seed, progress)
            if not refs:
                for row in scores:
                    row["study_lipschitz"] = row["study_irof"] = None
            figures["maps"] = C.save_fig(maps_figure(xm[:NODE_MAP_IMAGES], example_maps, target),
                                         folder, "maps")
        timings["metrics"] = t.seconds

    settings_used = {k: v for k, v in cfg.items() if k != "betas"}
    result = {
        "study": "interventional", "quick": quick, "seed": seed, "folder": str(folder),
        "command": C.command_line(getattr(args, "argv", None)), "model": minfo,
        "data": {"source": ds.source, "split": ds.split, "graph_samples_from": "test split"},
        "config": settings_used, "settings": settings_used, "betas": cfg["betas"],
        "target": target, "graph_samples": int(graph.n_samples), "graph": links,
        "graph_file": str(graph_path),
        "stability": stability,
        "metrics": scores, "metric_images": int(n_metric),
        "lipschitz_settings": LIPSCHITZ,
        "metric_settings": METRIC_SETTINGS,
        "study_irof_file": REF_IROF_FILE,
        "figures": figures,
        "seconds": round(time.perf_counter() - t_start, 1),
        "part_seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    C.write_json(folder, "results", result)
    report(folder, result)
    if scores:
        summary = ", ".join(f"{m['name']} {m['lipschitz_negative']:.3f}/{m['lipschitz_original']:.3f}"
                            for m in scores)
        C.log(f"interventional: done in {result['seconds']:.0f} s; mean local Lipschitz "
              f"(ours/original settings): {summary}")
    else:
        C.log(f"interventional: done in {result['seconds']:.0f} s (metrics off: eval_attr=False)")
    return result


def run_stability(I, P, chain, x_test, y_test, graph, cfg, seed, progress, figures, folder, refs):
    """Both stability protocols (the setting's is the headline); figures into ``figures``."""
    main = cfg["stability_protocol"]
    other = "fixed" if main == "original" else "original"
    refs = refs and cfg["layer_name_soft"] == "fc3"     # the study's curve is fc3's, class 3
    res = {}
    for proto in (main, other):
        res[proto] = I.graph_stability(chain, x_test, y_test, graph,
                                       layer_name_soft=cfg["layer_name_soft"], betas=cfg["betas"],
                                       repeats=cfg["repeats_used"], n_samples=int(cfg["n_samples"]),
                                       seed=seed, batch_size=int(cfg["intervention_batch"]),
                                       show=progress, protocol=proto)
    stab = res[main]
    figures["stability_curve"] = C.save_fig(
        P.stability_curve_figure(stab, reference=P.STUDY2_STABILITY if refs else None,
                                 compare=res[other]), folder, "stability_curve")
    figures["stability_hist"] = C.save_fig(P.stability_hist_figure(stab), folder, "stability_hist")
    rows = []
    for b, ref in sorted(P.STUDY2_STABILITY.items()):
        hit = np.flatnonzero(np.isclose(stab["betas"], b))
        rows.append({"beta": b,
                     "ours": float(stab["mean_rate"][hit[0]]) if hit.size else None,
                     main: float(stab["mean_rate"][hit[0]]) if hit.size else None,
                     other: float(res[other]["mean_rate"][hit[0]]) if hit.size else None,
                     "study": ref if refs else None})
    orig = res["original"]
    subsets = np.asarray(orig["subsets"])
    overlap = []
    for b in range(subsets.shape[0]):            # mean share of images two repeats have in common
        pairs = [len(np.intersect1d(subsets[b, i], subsets[b, j])) / max(1, subsets.shape[2])
                 for i in range(subsets.shape[1]) for j in range(i + 1, subsets.shape[1])]
        overlap.append(float(np.mean(pairs)) if pairs else None)
    out = {"protocol": main, "betas": stab["betas"], "mean_rate": stab["mean_rate"],
           "nodes": stab["nodes"], "repeats": stab["repeats"], "layer": stab["layer"],
           "rates": stab["rates"], "reference": rows,
           "n_eligible": orig["n_eligible"], "n_used": orig["n_used"],
           "protocols": {p: {"mean_rate": r["mean_rate"], "rates": r["rates"]} for p, r in res.items()},
           "original_u": orig["u"], "original_subset_overlap": overlap,
           "original_subsets": "xaitf.methods.interventional.stability_draw(seed, beta, repeat, "
                               "n_eligible, n_samples) gives every repeat's subset and u"}
    return out, stab


# how the two metric settings score the maps (results.json "metric_settings")
METRIC_SETTINGS = {
    "ours": {
        "lipschitz": "every method's maps normalised alike (positive part / max, negative part / |min|, "
                     "Quantus' normalise_by_negative), max over 10 noise draws per image",
        "lipschitz_raw": "the maps as they are, max over 10 noise draws per image",
        "irof": "xaitf.metrics.irof: SLIC (100 segments, compactness 10, gray replicated to RGB), "
                "every segment removed, fill = the image's own mean, area over k/S in [0, 1]",
    },
    "original": {
        "lipschitz": "evaluation_metrics.py with Quantus 0.1.3: baselines on raw maps (normalise=False, "
                     "abs=False), max over 10 draws per image; causal maps abs + divided by their max "
                     "(normalise=True, abs=True) and a running maximum that is not reset between the "
                     "images of a metric batch (N // 16 images when N > 16; one image when N <= 16)",
        "irof": "CausalIROF: slic(image, start_label=0) on the raw 1-channel image, labels 0..max-1 "
                "removed cumulatively by mean map value, fill = mean of the current image, "
                "trapz(P_y(x_k)/P_y(x), dx=1) for k = 1..max; the reported number is the mean of the "
                "batch means; causal maps abs + normalised, baselines raw (the original scored only "
                "the causal maps with IROF)",
    },
}


def causal_explainer(model, graph, cfg, seed, progress):
    return registry.create_from_presets("interventional", model, graph={int(graph.target): graph},
                                        layer_name=cfg["layer_name"], seed=seed, progress=progress)


class Memo:
    """An explainer that remembers its maps per (inputs, targets), so that two metrics over the
    same seeded perturbations explain them once."""

    def __init__(self, explainer):
        self.explainer = explainer
        self.model = explainer.model
        self.num_classes = explainer.num_classes
        self._maps = {}

    def __call__(self, x, targets=None):
        x = np.ascontiguousarray(x, np.float32)
        t = None if targets is None else np.asarray(targets)
        key = (x.shape, hash(x.tobytes()), None if t is None else hash(t.tobytes()))
        if key not in self._maps:
            self._maps[key] = np.asarray(self.explainer(x, t))
        return self._maps[key]


def score_methods(model, graph, x, targets, cfg, seed, progress):
    """Mean local Lipschitz estimate and IROF per method, with our settings and the original's.

    Ours: Lipschitz on normalised maps (``lipschitz_negative``) and on raw maps
    (``lipschitz_raw``), IROF by :func:`xaitf.metrics.irof` (``irof``, in [0, 1]). The original's
    (``*_original``): baselines' Lipschitz on raw maps, the causal maps' with abs + normalisation
    and a running maximum within each metric batch (:func:`original_batches`,
    :func:`running_max`); IROF by :func:`irof_original` (causal maps abs + normalised, baselines
    raw), reported as the mean of the batch means like the shipped ``IORF_metric.csv``.
    """
    from .. import metrics as M

    methods = [("Causal", "interventional", causal_explainer(model, graph, cfg, seed, progress))]
    for name, key, kw in BASELINES:
        methods.append((name, key, registry.create_from_presets(key, model, seed=seed, progress=progress,
                                                                **kw)))
    batches = original_batches(len(x))
    rows, examples = [], {}
    for name, key, ex in methods:
        C.log(f"  metrics: {name} ({key})")
        t0 = time.perf_counter()
        maps = np.asarray(ex(x, targets), np.float64)
        t_maps = time.perf_counter() - t0
        memo = Memo(ex)       # the noisy batches are the same for every setting: explain once
        lip_raw = M.local_lipschitz(memo, x, targets, seed=seed, **LIPSCHITZ)
        lip_neg = M.local_lipschitz(memo, x, targets, seed=seed, normalise="negative", **LIPSCHITZ)
        irof = M.irof(model, x, maps, targets, progress=C.progress_enabled())
        if name == "Causal":   # abs, then normalise_fun (a / max for the |map|), running max
            per_image = M.local_lipschitz(AbsMemo(memo), x, targets, seed=seed,
                                          normalise="negative", **LIPSCHITZ)
            lip_orig = running_max(per_image, batches)
            irof_maps = _quantus_normalise(np.abs(maps))
        else:                  # Quantus 0.1.3 LocalLipschitzEstimate(normalise=False), abs off
            lip_orig = lip_raw
            irof_maps = maps
        irof_orig, n_removed = irof_original(model, x, irof_maps, targets)
        batch_means = [float(np.nanmean(irof_orig[idx])) for idx in batches]
        rows.append({"name": name, "method": key, "title": ex.title,
                     "lipschitz_raw": float(np.nanmean(lip_raw)),
                     "lipschitz_raw_std": float(np.nanstd(lip_raw)),
                     "lipschitz_negative": float(np.nanmean(lip_neg)),
                     "lipschitz_negative_std": float(np.nanstd(lip_neg)),
                     "lipschitz_original": float(np.nanmean(lip_orig)),
                     "lipschitz_original_std": float(np.nanstd(lip_orig)),
                     "lipschitz_original_per_image": [float(v) for v in lip_orig],
                     "irof": float(np.nanmean(irof)), "irof_std": float(np.nanstd(irof)),
                     "irof_original": float(np.nanmean(batch_means)),
                     "irof_original_std": float(np.nanstd(batch_means)),
                     "irof_original_image_mean": float(np.nanmean(irof_orig)),
                     "irof_original_segments": float(np.mean(n_removed)),
                     "original_batches": len(batches),
                     "study_lipschitz": REF_LIPSCHITZ.get(name),
                     "study_irof": REF_IROF.get(name),
                     "map_seconds_per_image": t_maps / len(x),
                     "seconds": time.perf_counter() - t0,
                     "params": {k: v for k, v in ex.params.items() if k not in ("data", "graph")}})
        examples[name] = maps[:NODE_MAP_IMAGES]
    return rows, examples


def _quantus_normalise(a):
    """The original's ``normalise_fun`` per map: positive part / max, negative part / |min|."""
    out = np.empty_like(a, dtype=np.float64)
    for i, m in enumerate(a):
        hi, lo = float(np.max(m)), float(np.min(m))
        if hi <= 0.0:
            out[i] = -m / lo if lo < 0 else m
        elif lo >= 0.0:
            out[i] = m / hi
        else:
            out[i] = (m > 0) * m / hi - (m < 0) * m / lo
    return out


class AbsMemo:
    """|maps| of a :class:`Memo` (the original's ``abs=True`` for the causal maps)."""

    def __init__(self, memo):
        self.memo = memo
        self.model = memo.model
        self.num_classes = memo.num_classes

    def __call__(self, x, targets=None):
        return np.abs(self.memo(x, targets))


# ----------------------------------------------------------------------------------------------
def node_maps_figure(x, maps, channels, layer, target):
    """Rows: images; columns: input, one map per kept channel of ``layer``, their sum."""
    from matplotlib.figure import Figure

    n, k = len(x), len(channels)
    cols = k + 2
    w, h = 1.75 * cols + 0.6, 1.75 * n + 1.0
    fig = Figure(figsize=(w, h), dpi=100)
    gs = fig.add_gridspec(n, cols, left=0.03, right=0.97, top=1 - 0.75 / h, bottom=0.02,
                          wspace=0.45, hspace=0.3)
    for i in range(n):
        ax = fig.add_subplot(gs[i, 0])
        C.map_panel(fig, ax, x[i, ..., 0], "input" if i == 0 else None, kind="input", colorbar=False)
        total = maps[i].sum(-1)
        for j in range(k):
            ax = fig.add_subplot(gs[i, j + 1])
            m = maps[i, ..., j]
            C.map_panel(fig, ax, m, f"{layer} ch {channels[j]}" if i == 0 else None,
                        limits=_span(m), cmap="Reds")
        ax = fig.add_subplot(gs[i, cols - 1])
        C.map_panel(fig, ax, total, "sum (causal map)" if i == 0 else None, limits=_span(total),
                    cmap="Reds")
    fig.suptitle(f"Causal node maps at {layer}, class {target}: per kept channel, the parents' full "
                 "convolutions through a spatial softmax, averaged,\nresized to 32x32 (all values "
                 "positive; each panel coloured from its min to its max)", fontsize=9.5)
    return fig


def _span(m):
    lo, hi = float(np.min(m)), float(np.max(m))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def maps_figure(x, examples, target):
    """Rows: images; columns: input, the causal map and the baselines (signed maps: blue/red)."""
    from matplotlib.figure import Figure

    names = list(examples)
    n, cols = len(x), len(names) + 1
    w, h = 1.9 * cols + 0.4, 1.75 * n + 0.8
    fig = Figure(figsize=(w, h), dpi=100)
    gs = fig.add_gridspec(n, cols, left=0.03, right=0.97, top=1 - 0.6 / h, bottom=0.02,
                          wspace=0.45, hspace=0.3)
    for i in range(n):
        ax = fig.add_subplot(gs[i, 0])
        C.map_panel(fig, ax, x[i, ..., 0], "input" if i == 0 else None, kind="input", colorbar=False)
        for j, name in enumerate(names):
            ax = fig.add_subplot(gs[i, j + 1])
            m = examples[name][i]
            if name == "Causal":
                C.map_panel(fig, ax, m, name if i == 0 else None, limits=_span(m), cmap="Reds")
            else:
                C.map_panel(fig, ax, m, name if i == 0 else None)
    fig.suptitle(f"Maps of class {target} scored below: raw values; signed maps blue/red with "
                 "symmetric limits, the causal map (positive) from its min to its max", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
def report(folder, r):
    quick = r["quick"]
    m = r["model"]
    acc = m.get("test_accuracy") if m.get("test_accuracy") is not None else m.get("test_accuracy_here")
    cfg = r["settings"]
    pre = [f"Command: `{r['command']}` ({'quick' if quick else 'full'} run, seed {r['seed']}, "
           f"{r['seconds']:.0f} s).",
           f"Model: {m['note']}." + (f" Held-out accuracy here: {acc:.4f}."
                                     if m.get("test_accuracy_here") is not None else ""),
           f"Data: {r['data']['source']}; {r['data']['split']}. Graph samples: the first "
           f"{r['graph_samples']} correctly classified test images of class {r['target']}."]
    if quick:
        pre.append(f"**--quick**: LeNet trained {QUICK['epochs']} epochs when no model file exists, "
                   f"stability on betas {', '.join(f'{b:g}' for b in r['betas'])} with "
                   f"{QUICK['repeats']} repeats (full: 0..0.5 step 0.01, 10 repeats), metrics on "
                   f"{r['metric_images']} images (full: every graph sample).")
    sets = C.Table(["setting", "value", "what it does here"],
                   note="settings.INTERVENTIONAL after --set (every key checked before the run; a "
                        "value the study cannot take is refused in one line); repeats_used: the "
                        "repeats this run made.")
    for k, v in cfg.items():
        sets.add(k, repr(v) if isinstance(v, str) else str(v), SETTING_NOTES.get(k, "-"))
    g = C.Table(["link", "kept", "of", "rule", "kept units (xaitf)", "study's kept units (its weights)"],
                note="Which units are kept depends on the trained weights, so only the sizes are "
                     "comparable; every layer keeping units is the acceptance criterion.")
    for l in r["graph"]:
        ref = l["study"]
        g.add(f"{l['layer']} <- {l['parent']}", l["n_kept"], l["n_parent_units"], l["rule"],
              ", ".join(map(str, l["kept"])) or "none",
              (f"{len(ref)}: " + ", ".join(map(str, ref))) if ref else "-")
    figs = r["figures"]
    sections = [("Settings", sets),
                ("Causal graph", [C.image_link(figs["graph"], folder, "graph"),
                                  f"JSON: `{r['graph_file'].split('/')[-1]}`.", g])]
    node = [C.image_link(figs["node_maps"], folder, "node maps")]
    if "maps" in figs:
        node.append(C.image_link(figs["maps"], folder, "maps"))
    sections.append(("Node maps at " + cfg["layer_name"], node))
    sections.append(("Graph stability", _stability_section(folder, r, figs)))
    if r["metrics"]:
        sections += _metric_sections(r)
    else:
        sections.append(("Local Lipschitz estimate and IROF",
                         "Not run: `interventional.eval_attr=False`."))
    sections.append(("Differences from the study", "\n".join(_notes(r))))
    C.write_report(folder, f"Study 2: interventional explanations, LeNet class {r['target']}"
                   + (" (quick)" if quick else ""), sections, preamble=pre)


def _stability_section(folder, r, figs):
    s = r["stability"]
    if s is None:
        return "Not run: `interventional.graph_stab=False`."
    main = s["protocol"]
    other = "fixed" if main == "original" else "original"
    st = C.Table(["beta", f"xaitf, {main} protocol (%)", f"xaitf, {other} protocol (%)",
                  "study 2 as published (%)"],
                 note=f"Mean node appearance rate of the graph's {s['layer']} parents over the repeats. "
                      f"**{main}** is this run's setting (interventional.stability_protocol). "
                      "original: every repeat draws a fresh random subset of "
                      f"{s['n_used']} of the {s['n_eligible']} eligible test images (correctly "
                      "classified, class " f"{r['target']}) and one scalar u ~ U(0, beta) that every "
                      "intervened weight takes, as study 2's graph_stability (a random sampler "
                      "and np.random.uniform(0, beta) per re-learned layer); fixed: the graph's own "
                      "first images every repeat and one u ~ U(0, beta) per weight, unit and sample, "
                      "so at beta 0 the hard-learned link is found again: 100% by construction.")
    for row in s["reference"]:
        st.add(f"{row['beta']:g}", row.get(main), row.get(other), row["study"])
    overlap = [v for v in s.get("original_subset_overlap") or [] if v is not None]
    text = (f"Original protocol's draws: two repeats share on average "
            f"{100 * float(np.mean(overlap)):.0f}% of their images" if overlap else
            "Original protocol's draws: one repeat per beta, so no overlap to report")
    text += (f"; u at the largest beta ranges {np.min(s['original_u'][-1]):.3g}.."
             f"{np.max(s['original_u'][-1]):.3g}." if len(s["original_u"]) else ".")
    return [C.image_link(figs["stability_curve"], folder, "stability curve"),
            C.image_link(figs["stability_hist"], folder, "stability histograms"), st, text]


def _metric_sections(r):
    n = r["metric_images"]
    batches = r["metrics"][0]["original_batches"]
    lip = C.Table(["method", "xaitf key", "ours: normalised maps", "ours: raw maps",
                   "original's settings", "study (published)", "seconds"],
                  note=f"Mean local Lipschitz estimate over {n} class-{r['target']} images (lower = "
                       f"more robust): max over {LIPSCHITZ['samples']} draws of ||e(x) - e(x + eps)|| "
                       "/ ||eps||, eps ~ N(0.1, 0.1^2) per pixel. **ours, normalised**: every map "
                       "divided by its max (positive part) and |min| (negative part), Quantus' "
                       "normalise_by_negative, the same for every method. **ours, raw**: the maps as "
                       "they are. **original's settings** (its evaluation_metrics.py, Quantus 0.1.3): "
                       "the baselines on raw maps (normalise=False, abs off: the raw column again), the "
                       "causal maps with abs and normalisation AND a running maximum that is never "
                       "reset between the images of a metric call, so each causal score is the "
                       "largest ratio seen so far in its batch (the original splits 100 images into "
                       f"batches of 100 // 16 = 6; this run's {n} images: {batches} batch(es)"
                       + (", one image each, so the running maximum changes nothing" if batches == n
                          else "") + ").")
    for s in r["metrics"]:
        lip.add(s["name"], s["method"],
                f"{s['lipschitz_negative']:.4g} +- {s['lipschitz_negative_std']:.2g}",
                f"{s['lipschitz_raw']:.4g} +- {s['lipschitz_raw_std']:.2g}",
                f"{s['lipschitz_original']:.4g} +- {s['lipschitz_original_std']:.2g}",
                s["study_lipschitz"], s["seconds"])
    f = r["study_irof_file"]
    irof = C.Table(["method", "ours: xaitf.metrics.irof (area in [0, 1])",
                    "original's procedure (area in segments)", "segments removed (mean)",
                    "study (IORF_metric.csv)"],
                   note="IROF, lower = removing the most relevant superpixels first hurts the class "
                        "faster. **ours**: SLIC (100 segments, compactness 10, the gray image "
                        "replicated to RGB), every segment removed in order of mean relevance, filled "
                        "with the image's own mean, area of P_y(x_k)/P_y(x) over k/S from 0 to 1. "
                        "**original's procedure** (its CausalIROF on Quantus 0.1.3): slic(image, "
                        "start_label=0) on the raw one-channel image, segments 0..max-1 removed "
                        "cumulatively (the last label never), each filled with the mean of the current "
                        "image, np.trapz(P_y(x_k)/P_y(x), dx=1) for k = 1..max: an area counted in "
                        "segments, not normalised; the number is the mean of the metric batches' "
                        "means, as the shipped file's rows; causal maps abs + normalised, baselines "
                        "raw. **study**: the repository ships output/evaluation_metrics/LeNet/"
                        f"IORF_metric.csv with {f['rows']} rows, all causal (one per batch of its "
                        f"{f['images']} images): mean {f['mean']}, std {f['std']}, range "
                        f"{f['min']}..{f['max']}. It scored no baseline with IROF, so the baselines "
                        "have no published IROF.")
    for s in r["metrics"]:
        irof.add(s["name"], f"{s['irof']:.4g} +- {s['irof_std']:.2g}",
                 f"{s['irof_original']:.4g} +- {s['irof_original_std']:.2g}",
                 f"{s['irof_original_segments']:.1f}", s["study_irof"])
    return [("Local Lipschitz estimate: ours and the original's settings", lip),
            ("IROF: ours and the original's procedure", irof)]


def _notes(r):
    notes = []
    if r["metrics"]:
        causal = next(s for s in r["metrics"] if s["name"] == "Causal")
        others = [s for s in r["metrics"] if s["name"] != "Causal"]
        ranked = causal["lipschitz_negative"] < min(s["lipschitz_negative"] for s in others)
        ranked_o = causal["lipschitz_original"] < min(s["lipschitz_original"] for s in others)
        ours_order = [s["name"] for s in sorted(r["metrics"], key=lambda s: s["lipschitz_negative"])]
        orig_order = [s["name"] for s in sorted(r["metrics"], key=lambda s: s["lipschitz_original"])]
        study_order = sorted(REF_LIPSCHITZ, key=REF_LIPSCHITZ.get)
        irof_best = min(r["metrics"], key=lambda s: s["irof"])
        notes += [
            f"- The causal maps are {'the most' if ranked else 'not the most'} robust by our "
            f"normalised estimate and {'the most' if ranked_o else 'not the most'} robust with the "
            "original's settings (the study: Causal 0.287, lowest). They are sums of spatial "
            "softmaxes of conv2's parents, smooth and positive, so small input noise moves them little.",
            f"- Order, most robust first: ours (normalised) {' < '.join(ours_order)}; original's "
            f"settings {' < '.join(orig_order)}; the study's {' < '.join(study_order)}. The "
            "original's settings compare unlike things: the causal maps are scaled to [0, 1] "
            "before the estimate while the baselines keep their raw scale, and the causal number is "
            "a running maximum over a batch (never below, usually above, the per-image estimate). "
            "Our normalised column puts every method on the same footing.",
            f"- IROF: with our metric the best is {irof_best['name']} ({irof_best['irof']:.3f}), "
            f"causal {causal['irof']:.3f}; with the original's procedure causal scores "
            f"{causal['irof_original']:.1f} over about {causal['irof_original_segments']:.0f} "
            f"removed segments (the study's file: {REF_IROF['Causal']}). The original's area is "
            "counted in segments, so it grows with the number of superpixels and cannot be read as a "
            "fraction; divide by the segments removed to compare it with ours. The study published "
            "IROF for the causal maps only (IORF_metric.csv).",
        ]
    notes += [
        "- The study ran Quantus 0.1.3 on PyTorch/Captum: Captum's Saliency returns |gradient| "
        "(ours is the signed gradient) and its baselines come from quantus.explain (ours: xaitf's "
        "own methods; GradientShap is shap's GradientExplainer from a zero background, 200 "
        "samples). Its repository ships no LeNet weights: ours are trained here, so kept units and "
        "absolute numbers differ.",
        "- Stability, original protocol, not reproduced exactly: the original's reference mean and "
        "std of the target logit take one image more than the interventions (it appends the "
        "(n+1)-th eligible image before it stops), and it re-learns layer_name_soft against the "
        "effect set {target} whatever the layer (the graph's effect set here; the same for fc3). "
        "Its u draws are unseeded; ours are counter-based on (seed, beta, repeat).",
        "- Graph learning (not the stability) draws soft u ~ U(beta, beta + soft_width) per weight, "
        "unit and sample; the original draws one scalar per layer. With the fixed stability "
        "protocol, beta 0 re-learns with u = 0 (hard), so a node missing there is one that only the "
        "soft draws of the learning selected.",
    ]
    return notes
