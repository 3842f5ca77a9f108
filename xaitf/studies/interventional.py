"""Study 2 (interventional explanations): LeNet's causal graph of class 3, node maps, stability, Lipschitz.

``python -m xaitf.studies interventional [--quick]`` reproduces arXiv 2305.08950
(nbereux/Interventional-Explanations-of-Neural-Networks; seeds.md section 2) with
:mod:`xaitf.methods.interventional`, the settings of ``xaitf.settings.INTERVENTIONAL`` (its
config.yaml: class 3, 100 samples, soft interventions, attributions at conv2, stability at fc3):

1. **Model**: LeNet from ``<models dir>/lenet.h5`` (``python create_model.py lenet``), else
   trained now through the zoo (quick: 3 epochs; full: the zoo's full recipe, 20 epochs) on the
   MNIST data found (``--data-dir``); the report says which and its held-out accuracy.
2. **Graph**: learned top-down (fc3 <- fc2 <- fc1 <- conv2 <- conv1) from the first ``n_samples``
   correctly classified test images of the class; saved as ``graph_class3.json`` and drawn in
   ``graph.png``.
3. **Node maps** (``node_maps.png``): one map per kept conv2 channel (parents' full convolutions
   through a spatial softmax, averaged, resized to 32x32) and their sum, for a few test images;
   ``maps.png`` sets the causal map beside the baselines.
4. **Stability** (``stability_curve.png``, ``stability_hist.png``): fc3's link re-learned
   ``repeats`` times per ``beta`` in 0..0.5 (step 0.01) with ``u ~ U(0, beta)``; the mean node
   appearance rate against the study's values.
5. **Robustness and faithfulness**: mean local Lipschitz estimate (10 samples, noise mean 0.1,
   std 0.1; :func:`xaitf.metrics.local_lipschitz`) and IROF (:func:`xaitf.metrics.irof`) of the
   causal maps and of Integrated Gradients, Saliency (gradient), Gradient SHAP (``shap.gradient``)
   and Input x Gradient, beside the study's numbers (IG 1.668, Saliency 3.362, GradientShap 1.949,
   InputXGradient 1.965, Causal 0.287).

``--quick`` trains 3 epochs when no model file exists, re-learns the stability link on a coarse
beta grid (0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5) with 2 repeats, and scores the metrics on 10
images (full: every graph sample); graph learning itself is the same (it takes well under a second).
Outputs: ``report.md``, ``results.json``, ``graph_class3.json`` and the PNGs.
"""
import time

import numpy as np

from .. import registry
from .. import settings as S
from ..errors import XaitfError
from . import common as C

# the study's numbers (seeds.md section 2; MNIST, class 3)
REF_LIPSCHITZ = {"Causal": 0.287, "IG": 1.668, "Saliency": 3.362, "GradientShap": 1.949,
                 "InputXGradient": 1.965}
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


def config(quick):
    """The run's settings: ``settings.INTERVENTIONAL`` (after ``--set``) plus the quick sizes."""
    c = S.section("interventional")
    for key, supported in (("dataset_name", "MNIST"), ("model_name", "LeNet")):
        if str(c[key]).lower() != supported.lower():
            raise XaitfError(f"interventional.{key}={c[key]!r}: this reproduction runs study 2 on "
                             f"{supported} only (the zoo's LeNet on MNIST); drop the --set")
    step, top = float(c["beta_step"]), float(c["beta_max"])
    betas = np.round(np.arange(0.0, top + step / 2, step), 10)
    if quick:
        betas = np.asarray([b for b in QUICK["betas"] if b <= top + 1e-12])
    c["betas"] = [float(b) for b in betas]
    c["repeats_used"] = QUICK["repeats"] if quick else int(c["repeats"])
    return c


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

    # -- stability ------------------------------------------------------------------------------
    with C.Timer() as t:
        stab = I.graph_stability(chain, x_test, y_test, graph, layer_name_soft=cfg["layer_name_soft"],
                                 betas=cfg["betas"], repeats=cfg["repeats_used"],
                                 n_samples=int(cfg["n_samples"]), seed=seed,
                                 batch_size=int(cfg["intervention_batch"]), show=progress)
        curve_fig = C.save_fig(P.stability_curve_figure(stab, reference=P.STUDY2_STABILITY), folder,
                               "stability_curve")
        hist_fig = C.save_fig(P.stability_hist_figure(stab), folder, "stability_hist")
    timings["stability"] = t.seconds
    stab_rows = []
    for b, ref in sorted(P.STUDY2_STABILITY.items()):
        hit = np.flatnonzero(np.isclose(stab["betas"], b))
        stab_rows.append({"beta": b, "ours": float(stab["mean_rate"][hit[0]]) if hit.size else None,
                          "study": ref if refs else None})

    # -- metrics --------------------------------------------------------------------------------
    n_metric = QUICK["metric_images"] if quick else len(samples)
    xm = samples[:n_metric]
    tm = np.full(len(xm), target)
    with C.Timer() as t:
        scores, example_maps = score_methods(model, graph, xm, tm, cfg, seed, progress)
        if not refs:
            for row in scores:
                row["study_lipschitz"] = None
        maps_fig = C.save_fig(maps_figure(xm[:NODE_MAP_IMAGES], example_maps, target), folder, "maps")
    timings["metrics"] = t.seconds

    result = {
        "study": "interventional", "quick": quick, "seed": seed, "folder": str(folder),
        "command": C.command_line(getattr(args, "argv", None)), "model": minfo,
        "data": {"source": ds.source, "split": ds.split, "graph_samples_from": "test split"},
        "config": {k: v for k, v in cfg.items() if k != "betas"}, "betas": cfg["betas"],
        "target": target, "graph_samples": int(graph.n_samples), "graph": links,
        "graph_file": str(graph_path),
        "stability": {"betas": stab["betas"], "mean_rate": stab["mean_rate"], "nodes": stab["nodes"],
                      "repeats": stab["repeats"], "layer": stab["layer"], "rates": stab["rates"],
                      "reference": stab_rows},
        "metrics": scores, "metric_images": int(len(xm)),
        "lipschitz_settings": LIPSCHITZ,
        "figures": {"graph": graph_fig, "node_maps": node_fig, "stability_curve": curve_fig,
                    "stability_hist": hist_fig, "maps": maps_fig},
        "seconds": round(time.perf_counter() - t_start, 1),
        "part_seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    C.write_json(folder, "results", result)
    report(folder, result)
    summary = ", ".join(f"{m['name']} {m['lipschitz_negative']:.3f}" for m in scores)
    C.log(f"interventional: done in {result['seconds']:.0f} s; mean local Lipschitz (normalised): {summary}")
    return result


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
    """Mean local Lipschitz estimate (raw and Quantus-normalised maps) and IROF per method."""
    from .. import metrics as M

    methods = [("Causal", "interventional", causal_explainer(model, graph, cfg, seed, progress))]
    for name, key, kw in BASELINES:
        methods.append((name, key, registry.create_from_presets(key, model, seed=seed, progress=progress,
                                                                **kw)))
    rows, examples = [], {}
    for name, key, ex in methods:
        C.log(f"  metrics: {name} ({key})")
        t0 = time.perf_counter()
        maps = np.asarray(ex(x, targets), np.float64)
        t_maps = time.perf_counter() - t0
        memo = Memo(ex)       # the noisy batches are the same for both normalisations: explain once
        lip_raw = M.local_lipschitz(memo, x, targets, seed=seed, **LIPSCHITZ)
        lip_neg = M.local_lipschitz(memo, x, targets, seed=seed, normalise="negative", **LIPSCHITZ)
        irof = M.irof(model, x, maps, targets, progress=C.progress_enabled())
        rows.append({"name": name, "method": key, "title": ex.title,
                     "lipschitz_raw": float(np.nanmean(lip_raw)),
                     "lipschitz_raw_std": float(np.nanstd(lip_raw)),
                     "lipschitz_negative": float(np.nanmean(lip_neg)),
                     "lipschitz_negative_std": float(np.nanstd(lip_neg)),
                     "irof": float(np.nanmean(irof)), "irof_std": float(np.nanstd(irof)),
                     "study_lipschitz": REF_LIPSCHITZ.get(name),
                     "map_seconds_per_image": t_maps / len(x),
                     "seconds": time.perf_counter() - t0,
                     "params": {k: v for k, v in ex.params.items() if k not in ("data", "graph")}})
        examples[name] = maps[:NODE_MAP_IMAGES]
    return rows, examples


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
    cfg = r["config"]
    pre = [f"Command: `{r['command']}` ({'quick' if quick else 'full'} run, seed {r['seed']}, "
           f"{r['seconds']:.0f} s).",
           f"Model: {m['note']}." + (f" Held-out accuracy here: {acc:.4f}."
                                     if m.get("test_accuracy_here") is not None else ""),
           f"Data: {r['data']['source']}; {r['data']['split']}. Graph samples: the first "
           f"{r['graph_samples']} correctly classified test images of class {r['target']}.",
           "Config (settings.INTERVENTIONAL): " + ", ".join(
               f"{k}={cfg[k]}" for k in ("target_idx", "n_samples", "soft_interventions", "beta",
                                         "soft_width", "z", "fallback", "layer_name",
                                         "layer_name_soft", "repeats_used"))]
    if quick:
        pre.append(f"**--quick**: LeNet trained {QUICK['epochs']} epochs when no model file exists, "
                   f"stability on betas {', '.join(f'{b:g}' for b in r['betas'])} with "
                   f"{QUICK['repeats']} repeats (full: 0..0.5 step 0.01, 10 repeats), metrics on "
                   f"{r['metric_images']} images (full: every graph sample).")
    g = C.Table(["link", "kept", "of", "rule", "kept units (xaitf)", "study's kept units (its weights)"],
                note="Which units are kept depends on the trained weights, so only the sizes are "
                     "comparable; every layer keeping units is the acceptance criterion.")
    for l in r["graph"]:
        ref = l["study"]
        g.add(f"{l['layer']} <- {l['parent']}", l["n_kept"], l["n_parent_units"], l["rule"],
              ", ".join(map(str, l["kept"])) or "none",
              (f"{len(ref)}: " + ", ".join(map(str, ref))) if ref else "-")
    st = C.Table(["beta", "mean node appearance (%)", "study (%)"])
    for row in r["stability"]["reference"]:
        st.add(f"{row['beta']:g}", row["ours"], row["study"])
    lip = C.Table(["method", "xaitf key", "mean local Lipschitz (normalised)", "study",
                   "mean local Lipschitz (raw maps)", "IROF (lower = better)", "seconds"],
                  note=f"Local Lipschitz estimate: max over {LIPSCHITZ['samples']} draws of "
                       "||e(x) - e(x + eps)|| / ||eps||, eps ~ N(0.1, 0.1^2) per pixel, averaged over "
                       f"{r['metric_images']} class-{r['target']} images (lower = more robust). "
                       "'normalised': every map first divided by its max (positive part) and |min| "
                       "(negative part), as Quantus' default normalise_by_negative, which makes methods "
                       "on different scales comparable; 'raw': the maps as they are. IROF: SLIC "
                       "segments (100) replaced by the image mean in order of mean relevance; area "
                       "under P_y(perturbed)/P_y(x).")
    for s in r["metrics"]:
        lip.add(s["name"], s["method"], f"{s['lipschitz_negative']:.4g} +- {s['lipschitz_negative_std']:.2g}",
                s["study_lipschitz"], f"{s['lipschitz_raw']:.4g} +- {s['lipschitz_raw_std']:.2g}",
                f"{s['irof']:.4g} +- {s['irof_std']:.2g}", s["seconds"])
    figs = r["figures"]
    causal = next(s for s in r["metrics"] if s["name"] == "Causal")
    others = [s for s in r["metrics"] if s["name"] != "Causal"]
    ranked = causal["lipschitz_negative"] < min(s["lipschitz_negative"] for s in others)
    ours_order = [s["name"] for s in sorted(r["metrics"], key=lambda s: s["lipschitz_negative"])]
    study_order = sorted(REF_LIPSCHITZ, key=REF_LIPSCHITZ.get)
    irof_best = min(r["metrics"], key=lambda s: s["irof"])
    notes = [
        f"- The causal maps are {'the most' if ranked else 'not the most'} robust by the normalised "
        "estimate (the study: Causal 0.287, lowest). They are sums of spatial softmaxes of conv2's "
        "parents, smooth and positive, so small input noise moves them little.",
        f"- Order by the normalised estimate, most robust first: ours {' < '.join(ours_order)}; "
        f"the study's {' < '.join(study_order)}"
        + (" (the same order)." if ours_order == study_order else ".")
        + " The baselines' absolute values are smaller than the study's: its exact Quantus settings "
        "(normalisation, input scaling) are not published beside the numbers.",
        f"- IROF (faithfulness, lower = better) ranks differently: best {irof_best['name']} "
        f"({irof_best['irof']:.3f}), causal {causal['irof']:.3f}. The smooth causal map ranks "
        "superpixels almost uniformly, so removing them in its order drops the class score slowly: "
        "its robustness comes with less pixel-level faithfulness. The study reports no IROF numbers.",
        "- The study ran Quantus on PyTorch/Captum: Captum's Saliency returns |gradient| (ours is the "
        "signed gradient) and its GradientShap draws baselines from a distribution (ours: shap's "
        "GradientExplainer from a zero background, 200 samples). Its LeNet weights are not published: "
        "ours are trained here, so kept units and absolute numbers differ.",
        "- Stability at beta 0 re-learns with u = 0 (hard interventions), the graph itself was "
        "learned with soft u ~ U(0, 0.01); a node missing at beta 0 is one that only the soft draws "
        "selected.",
    ]
    sections = [
        ("Causal graph", [C.image_link(figs["graph"], folder, "graph"),
                          f"JSON: `{r['graph_file'].split('/')[-1]}`.", g]),
        ("Node maps at " + cfg["layer_name"], [C.image_link(figs["node_maps"], folder, "node maps"),
                                               C.image_link(figs["maps"], folder, "maps")]),
        ("Graph stability", [C.image_link(figs["stability_curve"], folder, "stability curve"),
                             C.image_link(figs["stability_hist"], folder, "stability histograms"), st]),
        ("Local Lipschitz estimate and IROF", lip),
        ("Differences from the study", "\n".join(notes)),
    ]
    C.write_report(folder, f"Study 2: interventional explanations, LeNet class {r['target']}"
                   + (" (quick)" if quick else ""), sections, preamble=pre)
