"""Study 4: LIME, Kernel SHAP and LRP on MNIST and CIFAR-10; the degradation test; a Bayesian MLP.

``python -m xaitf.studies mnist_cifar [--quick]`` reproduces arm-on/interpretable-image-classification
(seeds.md section 4) with the zoo's ``mnist_cnn``, ``cifar_vgg`` and ``bayesian_mlp``:

1. **Maps** (``compare_<model>.png``): 3 random test images per class (seeded) x {LIME, Kernel SHAP,
   LRP-epsilon, LRP-z}, the study's comparison; ``all_methods_<model>.png``: one test image per class
   x every method of xaitf that applies to a CNN classifier (gradient family, LRP and DeepTaylor,
   Grad-CAM(++), occlusion, RISE, LIME, Kernel SHAP). Gradient and LRP maps explain the logit of the
   predicted class (final softmax stripped); LIME and Kernel SHAP its probability, as the study did.
2. **Degradation** (:func:`xaitf.metrics.degradation`): keep the top 20% of pixels of each map (by
   signed value), set the rest to 0, classify; accuracy on the first 1,000 test images, beside the
   study's LIME 0.416 / 0.198, Kernel SHAP 0.232 / -, LRP 0.145 / 0.229 (MNIST / CIFAR-10). A random
   map gives the chance level of the test. Quirks fixed: CIFAR-10 maps live on the real 32x32 grid
   (the original used 28x28), "LRP" is LRP (epsilon and z rules; the original's MNIST run used
   iNNvestigate's Input analyser), and Kernel SHAP's removed segments take 0 on the [0, 1] input
   (the original filled them with 255). LIME's map is each superpixel's weight painted on its pixels
   (quickshift sized for 28/32-pixel images, :func:`xaitf.segmentation.quickshift_params`); Kernel
   SHAP runs over SLIC segments (50, compactness 30, sigma 3).
3. **Bayesian MLP** (``bayesian_mlp``, tfp mean-field posterior): the refusal rule (100 sampled
   networks, refuse unless some class's median probability exceeds 0.2) on the test digits and on
   100 uniform-noise images (study: 1,242 of 10,000 digits skipped, 96% accuracy on the rest, noise
   100/100 refused); the posterior-averaged saliency (the mean over sampled networks of each one's
   input gradient of the predicted class's logit) with its per-pixel uncertainty (the std of those
   gradients); and the model-average confidence when the 20% most salient pixels (by |mean
   gradient|) are replaced by uniform noise, against 20% random pixels replaced the same way.

Sizes come from ``settings.MNIST_CIFAR_STUDY`` (``--set mnist_cifar.key=value``); ``--quick``
shrinks them (:data:`QUICK`). Outputs: ``report.md``, ``results.json`` and the PNGs.
"""
import time

import numpy as np

from . import common as C

STUDY = "mnist_cifar"
MODELS = (("mnist_cnn", "MNIST", "mnist"), ("cifar_vgg", "CIFAR-10", "cifar10"))
COMPARE = ("lime", "shap", "lrp.epsilon", "lrp.z")
ALL_METHODS = COMPARE + ("lrp.alpha_1_beta_0", "deep_taylor", "grad", "inpgrad", "ig", "sg", "gb",
                         "deconvnet", "deeplift", "gradcam", "gradcampp", "occlusion", "rise")
DEGRADE = ("lime", "shap", "lrp.epsilon", "lrp.z", "deep_taylor", "grad", "inpgrad", "gradcam", "random")
QUICK_ALL = ("lime", "shap", "lrp.epsilon", "grad", "inpgrad", "ig", "gradcam")
QUICK_DEGRADE = ("lime", "shap", "lrp.epsilon", "deep_taylor", "grad", "random")
# LRP and DeepTaylor run natively (xaitf.methods.lrp): on the VGG one trace per method, ~10-20 s on 2 CPU cores
QUICK_CIFAR = ("lime", "shap", "lrp.epsilon", "deep_taylor", "grad", "inpgrad", "gradcam")
# (study's name, MNIST, CIFAR-10): seeds.md section 4
REF_DEGRADATION = {"lime": ("LIME", 0.416, 0.198), "shap": ("Kernel SHAP", 0.232, None),
                   "lrp.epsilon": ("LRP", 0.145, 0.229), "lrp.z": ("LRP", 0.145, 0.229)}
REF_BAYES = {"skipped": 1242, "of": 10000, "accuracy_on_rest": 0.96, "noise_refused": 1.0,
             "model_average_accuracy": 0.89}
QUICK = {"per_class": 1, "degradation_images": 20, "cifar_degradation_images": 10, "lime_samples": 100,
         "shap_nsamples": 100, "train_limit": 2000, "epochs": 1, "bayes_test_images": 500,
         "bayes_samples": 100, "noise_images": 100, "saliency_images": 8, "saliency_samples": 20,
         "cifar_train_limit": 256, "bayes_epochs": 2, "eval_limit": 300}


def registry_name(name, p):
    """The registry method behind a study name: ``lime`` / ``shap`` are the native batched programs
    (``lime``, ``kernelshap``), or the lime / shap libraries with ``surrogates="lib"``."""
    lib = str(p.get("surrogates", "native")) == "lib"
    return {"lime": "lime.lib" if lib else "lime", "shap": "shap.lib" if lib else "kernelshap"}.get(name, name)


def method_params(name, p, quick):
    """Keyword arguments of one method in this study (beyond settings.py's defaults)."""
    kw = {"progress": False}
    if name == "lime":
        kw.update(num_samples=int(p["lime_samples"]), mask_output=False, segmenter="quickshift")
    elif name == "shap":
        kw.update(nsamples=int(p["shap_nsamples"]), segmenter="slic", n_segments=50, compactness=30,
                  sigma=3, background=0.0)
    elif name == "ig":
        kw.update(steps=16 if quick else 64)
    elif name == "occlusion":
        kw.update(window=4, stride=2)
    elif name == "rise":
        kw.update(masks=2000)
    return kw


class Maps:
    """Maps of test images ``x`` by index, each computed once per (method, image).

    Explainers are built once per method; every map explains the image's predicted class.
    ``random`` is a seeded uniform map (the chance level of the degradation test). Every method
    here explains each image on its own (LIME and Kernel SHAP with the same seed per image), so a
    cached map is the map a fresh call would give.
    """

    def __init__(self, model, x, p, quick, seed):
        self.model, self.x, self.p, self.quick, self.seed = model, x, p, quick, seed
        self.pred = {}
        self._ex, self._cache = {}, {}
        self.seconds, self.notes = {}, {}
        self.failed = {}      # method -> one-line error (see _try_maps)

    def predicted(self, idx):
        idx = np.asarray(idx)
        todo = np.asarray([i for i in idx if int(i) not in self.pred], np.int64)
        if len(todo):
            for i, c in zip(todo, _predict(self.model, self.x[todo]).argmax(1)):
                self.pred[int(i)] = int(c)
        return np.asarray([self.pred[int(i)] for i in idx], np.int64)

    def __call__(self, name, idx):
        idx = np.asarray(idx, np.int64)
        todo = np.asarray([i for i in idx if (name, int(i)) not in self._cache], np.int64)
        t0 = time.perf_counter()
        if len(todo) and name == "random":
            rng = np.random.default_rng(self.seed)
            full = rng.random((len(self.x),) + self.x.shape[1:3])
            out = full[todo]
        elif len(todo):
            from ..registry import create_from_presets

            if name not in self._ex:
                self._ex[name] = create_from_presets(registry_name(name, self.p), self.model, seed=self.seed,
                                                     **method_params(name, self.p, self.quick))
                self.notes[name] = getattr(self._ex[name], "output_note", "")
            out = self._ex[name](self.x[todo], self.predicted(todo))
        if len(todo):
            for i, a in zip(todo, np.asarray(out, np.float64)):
                self._cache[(name, int(i))] = a
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return np.stack([self._cache[(name, int(i))] for i in idx])


def _title(name):
    from ..registry import title

    return "random map" if name == "random" else title(name)


def maps_figure(x, rows, maps, names, methods, header):
    """Rows of images x [input, each method]; maps are raw (LIME/SHAP values, logit relevances)."""
    from matplotlib.figure import Figure

    n, m = len(x), len(methods)
    fig = Figure(figsize=(1.95 * (m + 1), 1.75 * n + 1.0), dpi=80)
    axes = fig.subplots(n, m + 1, squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], rows[i], fontsize=7)
        for j, meth in enumerate(methods):
            C.map_panel(fig, axes[i, j + 1], maps[meth][i], _title(meth) if i == 0 else None, fontsize=7)
    fig.suptitle(header, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.97, top=1 - 0.85 / (1.75 * n + 1.0), bottom=0.01,
                        wspace=0.55, hspace=0.3)
    return fig


def part_maps(key, label, dataset, model, maps, x, y, p, quick, folder, seed, say, methods):
    """Figures: the study's comparison (per_class images per class) and all methods (1 per class)."""
    names = C.class_names(dataset)
    rs = np.random.RandomState(seed)
    sel = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        sel.extend(sorted(rs.choice(idx, size=min(int(p["per_class"]), len(idx)), replace=False)))
    sel = np.asarray(sel)
    probs = _predict(model, x[sel])
    pred = maps.predicted(sel)
    rows = [f"#{i} true {names[y[i]]}\npred {names[k]} ({probs[j, k]:.2f})" for j, (i, k) in enumerate(zip(sel, pred))]
    compare = _try_maps(maps, [m for m in COMPARE if m in methods], sel, key, say)
    say(f"{key}: LIME, Kernel SHAP, LRP on {len(sel)} images")
    figs = {}
    fig = maps_figure(x[sel], rows, compare, names, list(compare),
                      f"{label} ({key}): LIME, Kernel SHAP (probability of the predicted class) and LRP "
                      "(its logit); red = for, blue = against")
    figs[f"compare_{key}"] = str(C.save_fig(fig, folder, f"compare_{key}"))
    pos = np.asarray([j for j in range(len(sel)) if j % int(p["per_class"]) == 0])
    first = sel[pos]
    all_maps = _try_maps(maps, methods, first, key, say)
    say(f"{key}: {len(all_maps)} methods on {len(first)} images")
    fig = maps_figure(x[first], [rows[j] for j in pos], all_maps, names, list(all_maps),
                      f"{label} ({key}): every applicable method, one test image per class (raw maps; "
                      "LIME/SHAP explain the probability, the others the logit)")
    figs[f"all_methods_{key}"] = str(C.save_fig(fig, folder, f"all_methods_{key}"))
    return {"figure_indices": sel, "figures": figs, "methods": methods}


def _try_maps(maps, methods, idx, key, say):
    """``{method: maps}`` for the methods that run; a method that fails is recorded in
    ``maps.failed`` (one line) and left out, so one backend's failure does not end the study."""
    out = {}
    for m in methods:
        if m in maps.failed:
            continue
        try:
            out[m] = maps(m, idx)
        except Exception as e:  # noqa: BLE001 - reported in the report's "Methods not run"
            from ..cli import one_line

            maps.failed[m] = f"{type(e).__name__}: {one_line(e)}"
            say(f"{key}: {m} failed, left out: {maps.failed[m]}")
    return out


def _predict(model, x):
    from ..training import predict

    return predict(model, x, 256).astype(np.float64)


def part_degradation(key, model, maps, idx, y, p, methods, say):
    """Accuracy after keeping the top ``keep`` pixels of every method's map (test images ``idx``)."""
    from ..metrics import degradation

    xs, ys = maps.x[idx], y[idx]
    rows = []
    alt = p.get("fill_alt")
    for m in methods:
        if m in maps.failed:
            continue
        a = maps(m, idx)
        r = degradation(model, xs, a, ys, keep=float(p["keep"]), fill=p["fill"], seed=0,
                        progress=C.progress_enabled())
        rows.append({"method": m, "title": _title(m), "accuracy": r["accuracy"],
                     "confidence_true": r["confidence_true"], "accuracy_original": r["accuracy_original"],
                     "kept_pixels": r["kept_pixels"], "images": int(len(idx)),
                     "map_seconds": round(maps.seconds.get(m, 0.0), 1)})
        if alt is not None:    # the README's other fill (salt and pepper): the same maps, other removed pixels
            rows[-1]["accuracy_fill_alt"] = degradation(model, xs, a, ys, keep=float(p["keep"]), fill=alt,
                                                        seed=0)["accuracy"]
        say(f"{key}: degradation {m}: accuracy {r['accuracy']:.3f} (original {r['accuracy_original']:.3f})")
    return rows


# -- Bayesian MLP ------------------------------------------------------------------------------
def bayes_saliency(model, x, targets, samples, seed=0):
    """Gradients of ``samples`` sampled networks: array (samples, N, H, W, C).

    Each call of the model draws one network (tfp ``DenseReparameterization``) for the whole batch;
    the gradient is that network's logit of ``targets`` (the separate final softmax stripped)
    with respect to the input.
    """
    import tensorflow as tf

    from ..keras_bridge import logits_model

    fwd, _ = logits_model(model)
    tf.random.set_seed(int(seed))
    xt = tf.constant(np.asarray(x, np.float32))
    tt = tf.constant(np.asarray(targets, np.int32))

    @tf.function(autograph=False)
    def one(xi, ti):
        with tf.GradientTape() as tape:
            tape.watch(xi)
            z = fwd(xi, training=False)
            sel = tf.gather(z, ti, batch_dims=1)
        return tape.gradient(sel, xi)

    return np.stack([one(xt, tt).numpy() for _ in range(int(samples))])


def replace_pixels(x, mask, seed):
    """``x`` with the pixels of ``mask`` (N,H,W) replaced by uniform noise U(0, 1) (seeded)."""
    noise = np.random.default_rng(seed).random(x.shape).astype(np.float32)
    return np.where(mask[..., None], noise, x).astype(np.float32)


def part_bayes(args, p, quick, folder, seed, say):
    from ..metrics import binarize
    from ..zoo.bayesian import predict_mean, refusal_rule, sample_probs

    model, info = C.get_model_subset("bayesian_mlp", getattr(args, "models_dir", "models"),
                                     getattr(args, "data_dir", None), seed=seed, schedule="quick",
                                     epochs=p.get("bayes_epochs"), train_limit=p["train_limit"],
                                     eval_limit=p.get("eval_limit"), progress=bool(getattr(args, "progress", False)),
                                     safe_mode=C.load_safely(args))
    say(f"bayesian_mlp: {info['note']}")
    x, y, ds = C.load_split("bayesian_mlp", getattr(args, "data_dir", None))
    n = len(x) if p["bayes_test_images"] is None else min(int(p["bayes_test_images"]), len(x))
    x, y = x[:n], y[:n]
    probs = sample_probs(model, x, samples=int(p["bayes_samples"]), seed=seed)
    pred, refused = refusal_rule(probs, threshold=0.2)
    avg_acc = float(np.mean(probs[:10].mean(0).argmax(1) == y))
    acc_rest = float(np.mean(pred[~refused] == y[~refused])) if (~refused).any() else None
    noise = np.random.RandomState(seed).uniform(0, 1, (int(p["noise_images"]),) + x.shape[1:]).astype(np.float32)
    nprobs = sample_probs(model, noise, samples=int(p["bayes_samples"]), seed=seed + 1)
    _, nref = refusal_rule(nprobs, threshold=0.2)
    refusal = {"test_images": int(n), "skipped": int(refused.sum()), "skipped_fraction": float(refused.mean()),
               "skipped_per_10000": float(refused.mean() * 10000), "accuracy_on_rest": acc_rest,
               "model_average_accuracy": avg_acc, "noise_images": int(len(noise)),
               "noise_refused": int(nref.sum()), "noise_refused_fraction": float(nref.mean()),
               "rule": f"{int(p['bayes_samples'])} sampled networks; refuse unless some class's median "
                       "probability > 0.2"}
    say(f"bayesian_mlp: skipped {refused.sum()}/{n} digits ({refused.mean():.1%}), accuracy on the rest "
        f"{acc_rest if acc_rest is None else round(acc_rest, 4)}, noise refused {nref.sum()}/{len(noise)}")

    # saliency: mean and std over sampled networks of the predicted class's logit gradient
    m = min(int(p["saliency_images"]), n)
    xs, ys = x[:m], y[:m]
    target = predict_mean(model, xs, samples=10, seed=seed).argmax(1)
    grads = bayes_saliency(model, xs, target, int(p["saliency_samples"]), seed=seed)[..., 0]  # (S,m,H,W)
    mean, std = grads.mean(0), grads.std(0)
    important = binarize(np.abs(mean), rule="top_k", k=0.2)
    rng = np.random.default_rng(seed)
    rand_mask = np.stack([rng.permutation(important[i].size).reshape(important[i].shape)
                          < important[i].sum() for i in range(m)])
    x_imp = replace_pixels(xs, important, seed + 2)
    x_rand = replace_pixels(xs, rand_mask, seed + 2)

    def conf(images):
        pm = predict_mean(model, images, samples=10, seed=seed)
        return pm[np.arange(m), target], pm.argmax(1)

    c0, p0 = conf(xs)
    c_imp, p_imp = conf(x_imp)
    c_rand, p_rand = conf(x_rand)
    _, ref_imp = refusal_rule(sample_probs(model, x_imp, samples=int(p["bayes_samples"]), seed=seed))
    _, ref_rand = refusal_rule(sample_probs(model, x_rand, samples=int(p["bayes_samples"]), seed=seed))
    rel = std / (np.abs(mean) + 1e-12)
    saliency = {"images": int(m), "samples": int(p["saliency_samples"]),
                "confidence_original": float(c0.mean()), "confidence_important_noised": float(c_imp.mean()),
                "confidence_random_noised": float(c_rand.mean()),
                "kept_prediction_important": float(np.mean(p_imp == target)),
                "kept_prediction_random": float(np.mean(p_rand == target)),
                "refused_important": float(ref_imp.mean()), "refused_random": float(ref_rand.mean()),
                "mean_abs_saliency": float(np.abs(mean).mean()), "mean_std": float(std.mean()),
                "median_std_over_abs_mean": float(np.median(rel)),
                "replaced_pixels": int(important[0].sum()), "explained": "logit of the model-average prediction"}
    say(f"bayesian_mlp: confidence {c0.mean():.3f} -> {c_imp.mean():.3f} (top-20% salient pixels noised) vs "
        f"{c_rand.mean():.3f} (random 20% noised)")
    figs = {"bayes_saliency": str(C.save_fig(
        bayes_figure(xs, ys, mean, std, x_imp, x_rand, target, c0, c_imp, c_rand, int(p["saliency_samples"])),
        folder, "bayes_saliency")),
        "bayes_refusal": str(C.save_fig(refusal_figure(probs, nprobs, refused, nref), folder, "bayes_refusal"))}
    return {"model": info, "refusal": refusal, "saliency": saliency, "figures": figs,
            "data": {"source": ds.source, "split": ds.split}}


def bayes_figure(x, y, mean, std, x_imp, x_rand, target, c0, c_imp, c_rand, samples, rows=5):
    from matplotlib.figure import Figure

    n = min(rows, len(x))
    fig = Figure(figsize=(13.5, 2.3 * n + 1.0), dpi=85)
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], f"true {y[i]}, pred {target[i]}\np = {c0[i]:.2f}")
        C.map_panel(fig, axes[i, 1], mean[i], "posterior-mean saliency" if i == 0 else None)
        C.map_panel(fig, axes[i, 2], std[i], "uncertainty (std)" if i == 0 else None, cmap="magma",
                    limits=(0.0, float(std[i].max()) or 1.0))
        C.show_rgb(axes[i, 3], x_imp[i], f"top-20% salient -> noise\np({target[i]}) = {c_imp[i]:.2f}")
        C.show_rgb(axes[i, 4], x_rand[i], f"random 20% -> noise\np({target[i]}) = {c_rand[i]:.2f}")
    fig.suptitle(f"Bayesian MLP: gradients of {samples} sampled networks (logit of the predicted class): "
                 "mean and std per pixel;\nmodel-average probability after replacing pixels with uniform noise",
                 fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.97, top=1 - 0.9 / (2.3 * n + 1.0), bottom=0.01, wspace=0.35, hspace=0.4)
    return fig


def refusal_figure(probs, nprobs, refused, nref):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.0), dpi=100)
    ax = fig.subplots()
    top_t = np.median(probs, axis=0).max(1)
    top_n = np.median(nprobs, axis=0).max(1)
    bins = np.linspace(0, 1, 41)
    ax.hist(top_t, bins=bins, alpha=0.7, label=f"test digits ({refused.mean():.1%} refused)")
    ax.hist(top_n, bins=bins, alpha=0.7, label=f"uniform noise ({nref.mean():.0%} refused)")
    ax.axvline(0.2, color="k", ls="--", lw=1, label="threshold 0.2")
    ax.set_xlabel("largest per-class median probability over sampled networks")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Bayesian MLP refusal rule: predict only if some class's median probability > 0.2", fontsize=10)
    fig.tight_layout()
    return fig


# -- the study ---------------------------------------------------------------------------------
def run(args):
    """Run study 4; returns a dict with the run folder and the numbers written to results.json."""
    start = C.begin_run(args, STUDY, QUICK)   # settings section (full sizes), QUICK with --quick
    quick, seed, p, folder, say = start.quick, start.seed, start.params, start.folder, start.say
    result = {"study": STUDY, "quick": quick, "seed": seed, "folder": str(folder),
              "command": C.command_line(getattr(args, "argv", None)), "settings": p,
              "models": {}, "data": {}, "maps": {}, "degradation": {}, "figures": {}, "method_notes": {}}
    for key, label, dataset in MODELS:
        limit = p.get("cifar_train_limit", p["train_limit"]) if key == "cifar_vgg" else p["train_limit"]
        model, info = C.get_model_subset(key, getattr(args, "models_dir", "models"),
                                         getattr(args, "data_dir", None), seed=seed, schedule="quick",
                                         epochs=p["epochs"], train_limit=limit, eval_limit=p.get("eval_limit"),
                                         progress=bool(getattr(args, "progress", False)),
                                         safe_mode=C.load_safely(args))
        say(f"{key}: {info['note']}")
        x, y, ds = C.load_split(key, getattr(args, "data_dir", None))
        result["models"][key] = info
        result["data"][key] = {"source": ds.source, "split": ds.split, "test_images": int(len(x))}
        maps = Maps(model, x, p, quick, seed)
        if quick:
            methods = QUICK_CIFAR if key == "cifar_vgg" else QUICK_ALL
            degrade = [m for m in QUICK_DEGRADE if m in methods or m == "random"]
        else:
            methods, degrade = ALL_METHODS, DEGRADE
        part = part_maps(key, label, dataset, model, maps, x, y, p, quick, folder, seed, say, methods)
        result["maps"][key] = {"figure_indices": part["figure_indices"], "methods": part["methods"]}
        result["figures"].update(part["figures"])
        n = int(p["cifar_degradation_images"] if key == "cifar_vgg" else p["degradation_images"])
        # quick: the degradation test runs on the figure's images (maps computed once)
        idx = part["figure_indices"][:n] if quick else np.arange(min(n, len(x)))
        result["degradation"][key] = part_degradation(key, model, maps, idx, y, p, degrade, say)
        result["method_notes"][key] = {m: {"explained": maps.notes.get(m, ""), "seconds": round(s, 1)}
                                       for m, s in maps.seconds.items() if m not in maps.failed}
        result.setdefault("failed", {})[key] = dict(maps.failed)
    bayes = part_bayes(args, p, quick, folder, seed, say)
    result["figures"].update(bayes.pop("figures"))
    result["bayesian"] = bayes
    result["reference"] = {"degradation": {k: {"name": v[0], "mnist": v[1], "cifar10": v[2]}
                                           for k, v in REF_DEGRADATION.items()}, "bayesian": REF_BAYES}
    result["seconds"] = round(start.seconds(), 1)
    C.write_json(folder, "results", result)
    report(folder, result)
    say(f"mnist_cifar: done in {result['seconds']:.0f} s")
    return result


def report(folder, r):
    quick, p = r["quick"], r["settings"]
    rows = {key: {d["method"]: d for d in r["degradation"][key]} for key in r["degradation"]}
    alt = p.get("fill_alt")
    alt_cols = ([f"MNIST (ours, fill {alt})", f"CIFAR-10 (ours, fill {alt})"]
                if alt is not None and any("accuracy_fill_alt" in d for v in rows.values() for d in v.values())
                else [])
    deg = C.Table(["method", f"MNIST (ours, fill {p['fill']})", "MNIST (study)",
                   f"CIFAR-10 (ours, fill {p['fill']})", "CIFAR-10 (study)"] + alt_cols)
    methods = list(dict.fromkeys(m for key in rows for m in rows[key]))

    def get(key, m, field):
        return rows.get(key, {}).get(m, {}).get(field)

    for m in methods:
        ref = REF_DEGRADATION.get(m)
        deg.add(_title(m) + (f" (study: {ref[0]})" if ref and ref[0] != _title(m) else ""),
                get("mnist_cnn", m, "accuracy"), ref[1] if ref else None,
                get("cifar_vgg", m, "accuracy"), ref[2] if ref else None,
                *([get("mnist_cnn", m, "accuracy_fill_alt"), get("cifar_vgg", m, "accuracy_fill_alt")]
                  if alt_cols else []))
    first = {k: next(iter(v.values())) for k, v in rows.items() if v}
    deg.add("(no degradation)", first.get("mnist_cnn", {}).get("accuracy_original"), None,
            first.get("cifar_vgg", {}).get("accuracy_original"), None,
            *([first.get("mnist_cnn", {}).get("accuracy_original"),
               first.get("cifar_vgg", {}).get("accuracy_original")] if alt_cols else []))
    n_m = first.get("mnist_cnn", {}).get("images")
    n_c = first.get("cifar_vgg", {}).get("images")
    deg.note = (f"Accuracy after keeping the top {p['keep']:.0%} of pixels by map value (the rest set to "
                f"{p['fill']}), first {n_m} MNIST and {n_c} CIFAR-10 test images of the data directory "
                "(study: the first 1,000 of the official test sets). Both LRP rules are shown beside the "
                "study's single LRP value. 'random map' = pixels kept at random: the chance level of the test. "
                + (f"The '{alt}' columns: the same maps, removed pixels black or white at random (the study's "
                   "README names 0, 255 or salt and pepper). On MNIST a fill of 0 is the background itself, so "
                   "keeping the top 20% keeps most of the digit and accuracy stays high. " if alt_cols else "")
                + "Our models are trained on the offline subsets (MNIST 8,000 images, CIFAR-10 2,000) with the "
                "zoo's quick schedules; the study's VGG reached 0.935 after 250 epochs on 50,000 images. "
                + ("LIME and Kernel SHAP: the lime and shap libraries (surrogates=lib)."
                   if str(p.get("surrogates", "native")) == "lib" else
                   "LIME and Kernel SHAP: xaitf's native batched programs (--set mnist_cifar.surrogates=lib "
                   "runs the lime and shap libraries instead)."))
    acc = C.Table(["model", "held-out accuracy (ours)", "study", "training"])
    ref_acc = {"mnist_cnn": 0.9917, "cifar_vgg": 0.935, "bayesian_mlp": REF_BAYES["model_average_accuracy"]}
    for key, info in list(r["models"].items()) + [("bayesian_mlp", r["bayesian"]["model"])]:
        acc.add(key, info.get("test_accuracy"), ref_acc[key], info["note"])
    b = r["bayesian"]["refusal"]
    bay = C.Table(["quantity", "ours", "study"])
    bay.add("test digits skipped", f"{b['skipped']} / {b['test_images']} ({b['skipped_fraction']:.1%})",
            f"{REF_BAYES['skipped']} / {REF_BAYES['of']} ({REF_BAYES['skipped'] / REF_BAYES['of']:.1%})")
    bay.add("accuracy on the rest", b["accuracy_on_rest"], REF_BAYES["accuracy_on_rest"])
    bay.add("model-average accuracy (10 networks)", b["model_average_accuracy"], REF_BAYES["model_average_accuracy"])
    bay.add("uniform noise refused", f"{b['noise_refused']} / {b['noise_images']}", "100 / 100")
    s = r["bayesian"]["saliency"]
    sal = C.Table(["images", "probability of the predicted class", "prediction kept", "refused"])
    sal.add("original", s["confidence_original"], 1.0, None)
    sal.add("top-20% salient pixels -> noise", s["confidence_important_noised"], s["kept_prediction_important"],
            s["refused_important"])
    sal.add("random 20% pixels -> noise", s["confidence_random_noised"], s["kept_prediction_random"],
            s["refused_random"])
    sal.note = (f"{s['images']} test digits, {s['samples']} sampled networks for the saliency; probabilities are "
                "the 10-network model average; refusal with the 100-network rule. Median per-pixel "
                f"std / |mean| of the gradients: {s['median_std_over_abs_mean']:.3g}.")
    figs = r["figures"]
    pre = [f"Command: `{r['command']}` ({'quick' if quick else 'full'} run, seed {r['seed']}, {r['seconds']:.0f} s)."]
    if quick:
        pre.append("QUICK run: short training, few images and samples (see results.json 'settings'); a smoke "
                   "test, not a reproduction.")
    sections = [
        ("Models", acc),
        ("Degradation test", deg),
        ("Maps", ["LIME: superpixel weights (quickshift sized for 28/32 px) for the probability of the predicted "
                  f"class, {p['lime_samples']} samples; Kernel SHAP: SLIC 50/30/3, {p['shap_nsamples']} samples, "
                  "removed segments = 0; gradient/LRP family: the predicted class's logit.",
                  *[C.image_link(v, folder) for k, v in figs.items() if k.startswith(("compare_", "all_methods_"))]]),
        ("Methods not run", [f"- {key}: {m}: {err}" for key, fails in r.get("failed", {}).items()
                             for m, err in fails.items()] or ["Every method ran."]),
        ("Bayesian MLP: refusal", [bay, C.image_link(figs["bayes_refusal"], folder)]),
        ("Bayesian MLP: saliency and its uncertainty", [sal, C.image_link(figs["bayes_saliency"], folder)]),
    ]
    C.write_report(folder, "Study 4: LIME / Kernel SHAP / LRP on MNIST and CIFAR-10, degradation, Bayesian MLP",
                   sections, pre)
