"""Sanity checks (Adebayo et al. 2018): which methods keep their maps when the model's weights are randomised.

``python -m xaitf.studies sanity [--quick]`` runs the cascading model parameter randomisation test
(:func:`xaitf.metrics.randomisation.model_parameter_randomisation`) for every registered method
that runs natively (the ``inn.*``, ``tfx.*`` and library backends are the same methods computed by
other code; ``interventional`` needs its causal graph learned per model) on the zoo's MNIST CNN and
the study-4 CIFAR-10 VGG. The kernels (Dense and convolutions) are re-initialised from the top
layer down, N(0, std of the original kernel), BatchNormalization statistics kept; after each step
every method explains the same images (the class predicted by the trained model) and its maps are
compared with the trained model's by Spearman rank correlation of |map| (plus SSIM and HOG
similarity in the full run).

A method **keeps its map** when the mean Spearman similarity after the last step (every kernel
random) is at least ``keep_threshold`` (0.5), over the images whose trained map is not all 0 (an
all-0 map, e.g. LRP-epsilon's relevance absorbed on a barely trained model, stays all 0 and would
count as kept; with no other image the verdict is "n/a"). The paper finds that Guided Backprop and DeconvNet do
(their maps look like edge detectors of the input whatever the weights), and that gradients,
SmoothGrad and Integrated Gradients do not; methods multiplied by the input (Input x Gradient, IG,
DeepLIFT, LRP) keep part of the input's structure, so their absolute maps stay correlated where
the input is zero (the paper's "input dominates" caveat).

Models come from ``models/<name>.h5`` when present, otherwise they are trained in the run (the
zoo's quick CPU schedule); the report gives each model's held-out accuracy, because the test is
about learned weights: a model that has learned little has little to lose.

Outputs: ``report.md``/``report.html``, ``results.json``, ``sanity_<model>.png`` (methods x
randomised layers, one image) and ``sanity_curves.png`` (mean Spearman per step and method).

The full default (every native method; the perturbation methods on the VGG's 15 layers) takes
hours on a laptop CPU. Ctrl-C stops the method running: the methods finished so far are written
as a complete run (report marked INTERRUPTED, the others listed as not run); a second Ctrl-C aborts.
"""
import time

import numpy as np

from . import common as C

STUDY = "sanity"
MODELS = (("mnist_cnn", "MNIST CNN"), ("cifar_vgg", "CIFAR-10 VGG (study 4)"))
#: backends that compute a registered method with other code, and methods that need more than a
#: model (interventional: a causal graph learned per model)
OTHER_BACKENDS = ("inn.", "tfx.", "shap.", "lime.lib")
NEEDS_MORE = ("interventional",)
QUICK_METHODS = ("grad", "gb", "deconvnet", "inpgrad", "gradcam", "lrp.epsilon")   # not IG: 3 of 4.5 min
QUICK = {"images": 2, "train_limit": 64, "epochs": 1, "similarities": ("spearman",),
         "eval_limit": 300, "methods": QUICK_METHODS}


def methods_to_run(p):
    """The study's methods: ``p["methods"]`` or every registered native method."""
    from .. import registry

    if p.get("methods"):
        return list(p["methods"])
    return [k for k in registry.list_methods() if not k.startswith(OTHER_BACKENDS) and k not in NEEDS_MORE
            and k != "lrp.composite"]


def _explainer(name, model, shape):
    """The method with its presets and, for window methods, the input-scaled defaults."""
    from .. import budget
    from ..registry import create_from_presets

    return create_from_presets(name, model, progress=False, **budget.unset_scaled_defaults(name, shape))


def estimate_line(model, shape, methods, x, similarities=None):
    """One line: the estimated time of the cascading randomisation of every method on ``model``
    (its maps on the trained model and after each of the L randomised layers: L + 1 runs of each
    method, :func:`xaitf.budget.seconds`, traced on the model and on its randomised copy; L times
    the ``similarities`` (None: all) and weight checks,
    :func:`xaitf.budget.randomisation_state_seconds`), the total and the costliest methods."""
    from .. import budget
    from ..metrics.randomisation import randomisable_layers

    timing = budget.measure(model, backward=True, batch=64, batch_backward=16, warm=True)
    layers = len(randomisable_layers(model))
    state = budget.randomisation_state_seconds(model, x[0], len(x), similarities)
    runs = layers + 1
    est, unknown = {}, []
    for name in methods:
        try:
            ex = _explainer(name, model, shape)
            budget.measure_segmentation([ex], np.asarray(x[0]), timing)
            est[name] = (budget.seconds(name, ex, len(x), timing, calls=runs)[0]
                         + layers * budget.state_seconds(state, ex) * budget.MARGIN
                         + budget.seconds(name, ex, len(x), timing, calls=0)[0])       # the copy's trace
        except Exception:  # noqa: BLE001 - no cost model, or the method cannot handle the model
            unknown.append(name)
    top = sorted(est.items(), key=lambda kv: -kv[1])[:4]
    return (f"  estimate: {budget.duration(sum(est.values()))} for {len(est)} methods x {runs} models x "
            f"{len(x)} images (costliest: " + ", ".join(f"{k} {budget.duration(v)}" for k, v in top) + ")"
            + (f"; no estimate for {', '.join(unknown)}" if unknown else ""))


def run(args):
    """Run the sanity-check study; returns the result dict written to results.json."""
    from ..keras_bridge import input_shape
    from ..metrics.randomisation import model_parameter_randomisation
    from ..plotting import randomisation_figure
    from ..training import predict

    start = C.begin_run(args, STUDY, QUICK)
    quick, seed, p, folder, say = start.quick, start.seed, start.params, start.folder, start.say
    result = {"study": STUDY, "quick": quick, "seed": seed, "command": C.command_line(getattr(args, "argv", None)),
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
              "models": {}, "scores": {}, "keeps": {}, "skipped": {}, "figures": {}, "seconds": {}}
    methods = methods_to_run(p)
    sims = tuple(p["similarities"])
    interrupted = None        # Ctrl-C: "<model>/<method>"; the finished methods are kept and reported
    for key, label in MODELS:
        if interrupted:
            result["skipped"][key] = {"all": f"not run: the study was interrupted at {interrupted}"}
            continue
        limit = p["train_limit"] if quick else None
        model, info = C.get_model_subset(key, getattr(args, "models_dir", "models"), getattr(args, "data_dir", None),
                                         seed=seed, schedule="quick", epochs=p["epochs"] if quick else None,
                                         train_limit=limit, eval_limit=p.get("eval_limit"),
                                         progress=bool(getattr(args, "progress", False)),
                                         safe_mode=C.load_safely(args))
        say(f"{key}: {info['note']}")
        x_all, y_all, _ = C.load_split(key, getattr(args, "data_dir", None))
        x = x_all[:int(p["images"])]
        targets = predict(model, x).argmax(-1)
        shape = tuple(input_shape(model))
        say(estimate_line(model, shape, methods, x, sims))
        results, scores, seconds, skipped, keeps, empty = {}, {}, {}, {}, {}, {}
        for name in methods:
            if interrupted:
                skipped[name] = f"not run: the study was interrupted at {interrupted}"
                continue
            t0 = time.perf_counter()
            try:
                ex = _explainer(name, model, shape)
                res = model_parameter_randomisation(model, x, targets, ex, similarities=sims,
                                                    randomisation=p["randomisation"], seed=seed,
                                                    return_maps=True, progress=False)
            except KeyboardInterrupt:
                interrupted = f"{key}/{name}"
                skipped[name] = "interrupted (Ctrl-C) while running"
                say(f"  {name}: interrupted; writing the results of the finished methods "
                    "(Ctrl-C again aborts)")
                continue
            except Exception as e:  # noqa: BLE001 - a method that cannot handle the model is reported
                from ..cli import one_line

                skipped[name] = one_line(e)
                say(f"  {name}: skipped ({skipped[name]})")
                continue
            seconds[name] = time.perf_counter() - t0
            results[name] = res
            scores[name] = {s: [float(v) for v in res.scores[s].mean(axis=1)] for s in sims}
            keeps[name], empty[name] = keep_verdict(res, float(p["keep_threshold"]))
            say(f"  {name}: Spearman after each step {np.round(scores[name]['spearman'], 2).tolist()} "
                f"({seconds[name]:.1f} s)" + (f"; {empty[name]} of {len(x)} trained maps are all 0" if empty[name] else ""))
        layers = next(iter(results.values())).layers if results else []
        result["models"][key] = {**{k: v for k, v in info.items() if isinstance(v, (int, float, str, type(None)))},
                                 "label": label, "layers": layers, "images": int(len(x))}
        result["scores"][key], result["keeps"][key] = scores, keeps
        result.setdefault("empty_maps", {})[key] = empty
        result["skipped"][key], result["seconds"][key] = skipped, seconds
        if results:
            fig = randomisation_figure(results, title=f"{label}: cascading randomisation of the kernels (top layer "
                                                      f"first), image 0, |map| / max; ρ: mean Spearman over "
                                                      f"{len(x)} images")
            result["figures"][key] = str(C.save_fig(fig, folder, f"sanity_{key}.png"))
    result["interrupted"] = interrupted
    result["figures"]["curves"] = str(C.save_fig(curves_figure(result), folder, "sanity_curves.png"))
    result["seconds_total"] = start.seconds()
    C.write_json(folder, "results.json", result)
    write_report(folder, result, p)
    return result


def keep_verdict(res, threshold):
    """``(keeps, empty)``: whether the method keeps its map (mean Spearman with every kernel random
    >= ``threshold``) over the images whose trained map is not all 0, and how many are all 0. An
    all-0 map stays all 0 on every randomised model (similarity 1) and says nothing: with no other
    image the verdict is None ("n/a")."""
    live = np.abs(res.original).reshape(len(res.original), -1).max(axis=1) > 0
    if not live.any():
        return None, int(len(live))
    return bool(res.scores["spearman"][-1][live].mean() >= threshold), int((~live).sum())


def curves_figure(result):
    """Mean Spearman similarity per randomisation step, one line per method, one panel per model."""
    from matplotlib.figure import Figure

    keys = [k for k in result["scores"] if result["scores"][k]]
    fig = Figure(figsize=(6.2 * max(1, len(keys)), 4.6), dpi=100)
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        layers = result["models"][key]["layers"]
        for name, s in result["scores"][key].items():
            kept = result["keeps"][key][name]
            ax.plot(range(len(layers) + 1), [1.0] + s["spearman"], marker="o", ms=3,
                    lw=2.0 if kept else 1.0, ls="-" if kept else "--", label=name)
        ax.set_xticks(range(len(layers) + 1))
        ax.set_xticklabels(["trained"] + [f"+{l}" for l in layers], rotation=60, fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_ylabel("mean Spearman ρ of |map| to the trained model's")
        ax.set_xlabel("kernels randomised, top layer first (cumulative)")
        ax.set_title(result["models"][key]["label"], fontsize=10)
        ax.legend(fontsize=6, ncol=2, loc="lower left", title="solid: keeps its map", title_fontsize=6)
    fig.suptitle("Sanity check (Adebayo et al. 2018): similarity of the maps as the weights are randomised",
                 fontsize=11)
    fig.tight_layout()
    return fig


def write_report(folder, r, p):
    sections = []
    for key, info in r["models"].items():
        t = C.Table(["method"] + ["trained"] + [f"+{l}" for l in info["layers"]] + ["keeps its map"])
        empty = r.get("empty_maps", {}).get(key, {})
        for name, s in r["scores"][key].items():
            verdict = {True: "yes", False: "no", None: "n/a"}[r["keeps"][key][name]]
            if empty.get(name):
                verdict += f" ({empty[name]} of {info['images']} trained maps all 0{', left out' if r['keeps'][key][name] is not None else ''})"
            t.add(name, 1.0, *s["spearman"], verdict)
        acc = info.get("accuracy")
        t.note = (f"Mean Spearman ρ of |map| over {info['images']} test images, after each cumulative step. "
                  f"Keeps its map: ρ >= {p['keep_threshold']} with every kernel random, over the images whose trained "
                  f"map is not all 0 (n/a: every one is). Model: {info.get('note', '')}"
                  + (f"; held-out accuracy {acc:.3f}" if isinstance(acc, float) else "") + ".")
        body = [t]
        if key in r["figures"]:
            body.append(C.image_link(r["figures"][key], folder))
        if r["skipped"][key]:
            body.append("Not run: " + "; ".join(f"{k}: {v}" for k, v in r["skipped"][key].items()))
        sections.append((info["label"], body))
    kept = {k: sorted(n for n, v in r["keeps"][k].items() if v) for k in r["keeps"]}
    summary = "; ".join(f"{r['models'][k]['label']}: {', '.join(v) or 'none'}" for k, v in kept.items())
    sections.insert(0, ("Which methods keep their maps", f"{summary}. The paper: Guided Backprop and DeconvNet "
                        "keep theirs; the gradient, SmoothGrad and Integrated Gradients do not.\n\n"
                        + C.image_link(r["figures"]["curves"], folder)))
    pre = [f"Command: `{r['command']}` ({'quick' if r['quick'] else 'full'} run, seed {r['seed']}, "
           f"{r['seconds_total']:.0f} s). Re-initialisation: {p['randomisation']}; similarities: "
           f"{', '.join(p['similarities'])}."]
    if r.get("interrupted"):
        later = [k for k in r["skipped"] if k not in r["models"]]
        pre.append(f"INTERRUPTED (Ctrl-C) at {r['interrupted']}: the methods finished before it are reported; "
                   "the rest were not run (listed under each model)"
                   + (f"; models not run: {', '.join(later)}." if later else "."))
    if r["quick"]:
        pre.append("QUICK run: few images, few methods, models trained for one epoch when no model file "
                   "exists: a smoke test, not the finding.")
    C.write_report(folder, "Sanity checks: model parameter randomisation", sections, pre)
