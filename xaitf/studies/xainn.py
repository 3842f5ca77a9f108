"""Study 3 (XAINN): three CIFAR-10 architectures, their class maps, SHAP DeepExplainer and LIME.

``python -m xaitf.studies xainn [--quick]`` reproduces drausg/xainn (seeds.md section 3) with the
zoo's three models (:mod:`xaitf.zoo.xainn`): model 1 "Baseline" (trunk + MLP head), model 2
"Softmax" (per-pixel softmax over the trunk's 10 channels, global average pool) and model 3
"PoolLinear" (per-pixel softmax, AvgPool 2, MLP head). All three share a trunk whose last block
(layer ``class_maps_bn``) outputs one 16x16 map per class.

1. **Accuracy** of each model on the CIFAR-10 test images of the data directory, beside the
   study's 83.6% / 63.8% / 79.0% (50 epochs of SGD on the full 50,000-image training set). Models
   come from ``models/<name>.h5`` when present; otherwise they are trained in the run with the zoo's
   quick CPU schedule (Adam with warm-up and cosine decay, 18 epochs, shifts and flips) on the
   training images at hand (the offline subset has 2,000): far less data and training than the
   study, which the report says next to the numbers.
2. **Class maps** (the study's "callbacks"): the trunk's 10x16x16 maps of a test image; the
   predicted class's map upsampled x2 (bilinear) and overlaid on the image; a 4x4 grid per model
   (image, overlay, the predicted map as it is, the per-pixel argmax class, the 10 class maps and the
   model's class probabilities) and a 10-row table (one test image per class) x [image, model 1,
   model 2, model 3]. Also measured: how often the class whose map has the largest spatial mean is
   the model's prediction (by construction always for model 2, whose output is the mean of the
   per-pixel softmaxes, up to the softmax's nonlinearity).
3. **SHAP DeepExplainer** (``shap.deep``): 54 random training images as background, one test image
   per class, the top-3 predicted classes explained (the study's ``ranked_outputs=3``); models 1 and
   3 on their logits (final softmax stripped), model 2 on its output (an average of softmaxes,
   nothing to strip). Additivity (sum of the values = f(x) - mean f(background)) is checked.
4. **LIME** (``lime``): quickshift superpixels, 500 samples, the top-10 positive segments of the
   predicted class shown (the study: ``top_labels=10, num_features=100, hide_color=1,
   num_samples=500``). Fixed quirk: the original fed LIME 0..255 images with height and width
   swapped; here LIME sees the model's own [0, 1] input in (H, W, C) order, and the hidden
   segments take the value 1/255 (the study's ``hide_color=1`` on its 0..255 scale, i.e. black).
   Quickshift's parameters come from :func:`xaitf.segmentation.quickshift_params` (kernel 1,
   max_dist 5 on 32x32 images: the library defaults make one or two segments at this size). Only
   the predicted class is explained (LIME fits each label separately, so the other 9 of
   ``top_labels=10`` would not change it).

``--quick`` trains each model for 1 epoch on the first 64 training images (when no model file exists),
explains 2 images with SHAP (top-1 class) and LIME (100 samples). Outputs: ``report.md``,
``results.json`` and the PNGs.
"""
import time

import numpy as np

from . import common as C

STUDY = "xainn"
VARIANTS = (("xainn_baseline", "Model 1 (Baseline)"), ("xainn_softmax", "Model 2 (Softmax)"),
            ("xainn_poollinear", "Model 3 (PoolLinear)"))
REF_ACCURACY = {"xainn_baseline": 0.836, "xainn_softmax": 0.638, "xainn_poollinear": 0.790}
REF_SETUP = "50 epochs, SGD lr 5e-3, batch 64, flips + affine, full CIFAR-10 (50,000 training images)"

QUICK = {"train_limit": 64, "epochs": 1, "test_limit": 200, "shap_images": 2, "ranked": 1, "background": 54,
         "lime_images": 2, "lime_samples": 100, "lime_features": 10}
HIDE_COLOR = 1.0 / 255.0   # the study's hide_color=1 on its 0..255 scale


# -- numbers -----------------------------------------------------------------------------------
def class_maps(model, x, batch_size=256):
    """The trunk's class maps (N, 16, 16, 10) of images x (N, 32, 32, 3) in [0, 1]."""
    from ..training import predict
    from ..zoo.xainn import class_maps_model

    return predict(class_maps_model(model), x, batch_size)


def upsample(maps, factor=2):
    """(N, h, w, K) -> (N, factor*h, factor*w, K), bilinear (TensorFlow ``tf.image.resize``)."""
    import tensorflow as tf

    n, h, w, _ = maps.shape
    return tf.image.resize(np.asarray(maps, np.float32), (factor * h, factor * w), method="bilinear").numpy()


def map_agreement(maps, predictions):
    """Fraction of images whose class map with the largest spatial mean is the predicted class."""
    return float(np.mean(np.asarray(maps).mean(axis=(1, 2)).argmax(-1) == np.asarray(predictions)))


def _probs(model, x):
    from ..training import predict

    return predict(model, x, 256).astype(np.float64)


def _accuracy(probs, y):
    return float(np.mean(probs.argmax(1) == np.asarray(y)))


# -- figures -----------------------------------------------------------------------------------
def _overlay(ax, image, amap, title=None, fig=None, fontsize=8):
    """Image in gray-scale with a class map (same H, W) over it (jet, alpha 0.55) and a colour bar."""
    gray = np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(amap, cmap="jet", alpha=0.55, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, pad=3)
    if fig is not None:
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=6)
    return im


def grid_figure(image, maps16, probs, names, model_title, true_label, data_note):
    """The 4x4 grid of one image: image, overlay, raw predicted map, argmax map, 10 maps, probs."""
    from matplotlib.figure import Figure

    pred = int(np.argmax(probs))
    up = upsample(maps16[None])[0]
    fig = Figure(figsize=(12.5, 12.0), dpi=100)
    axes = fig.subplots(4, 4)
    C.show_rgb(axes[0, 0], image, f"input (true: {names[true_label]})")
    _overlay(axes[0, 1], image, up[..., pred], f"overlay: map of '{names[pred]}'\n(16x16 upsampled x2)", fig)
    C.map_panel(fig, axes[0, 2], maps16[..., pred], f"raw map of '{names[pred]}' (16x16)", cmap="viridis",
                limits=(float(maps16[..., pred].min()), float(maps16[..., pred].max())))
    am = axes[0, 3].imshow(maps16.argmax(-1), cmap="tab10", vmin=-0.5, vmax=9.5, interpolation="nearest")
    axes[0, 3].set_title("per-pixel argmax class", fontsize=8, pad=3)
    axes[0, 3].set_xticks([])
    axes[0, 3].set_yticks([])
    cb = fig.colorbar(am, ax=axes[0, 3], fraction=0.046, pad=0.03, ticks=range(10))
    cb.ax.set_yticklabels(names, fontsize=6)
    lo, hi = float(maps16.min()), float(maps16.max())
    for k in range(10):
        ax = axes[1 + k // 4, k % 4]
        C.map_panel(fig, ax, maps16[..., k], f"{k}: {names[k]}" + ("  (predicted)" if k == pred else ""),
                    cmap="viridis", limits=(lo, hi))
    ax = axes[3, 2]
    ax.barh(range(10), probs, color=["tab:red" if k == pred else "tab:blue" for k in range(10)])
    ax.set_yticks(range(10))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("model output", fontsize=8, pad=3)
    axes[3, 3].set_axis_off()
    fig.suptitle(f"XAINN {model_title}: trunk class maps (class_maps_bn, 10x16x16; shared colour scale)\n"
                 f"{data_note}", fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.97, top=0.91, bottom=0.04, wspace=0.45, hspace=0.35)
    return fig


def _grid_figure(rows, cols, row_in, col_in, header_in=1.4):
    """A Figure with a rows x cols grid and ``header_in`` inches on top for a two-line suptitle
    plus the first row's two-line panel titles (so they never overlap); see :func:`_finish`."""
    from matplotlib.figure import Figure

    height = row_in * rows + header_in
    fig = Figure(figsize=(col_in * cols, height), dpi=90)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes, (1 - header_in / height, 1 - 0.12 / height)


def _finish(fig, layout, title, **adjust):
    """Suptitle 0.12 in below the top edge, the grid below the header of :func:`_grid_figure`."""
    grid_top, title_y = layout
    fig.suptitle(title, fontsize=10, y=title_y, va="top")
    fig.subplots_adjust(top=grid_top, bottom=0.01, **adjust)
    return fig


def table_figure(x, y, ups, probs, names, titles, data_note):
    """10 rows (one image per class) x [image, model 1, model 2, model 3] overlays."""
    n = len(x)
    fig, axes, layout = _grid_figure(n, 1 + len(ups), 2.35, 2.6)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], f"true: {names[y[i]]}")
        for j, (up, p) in enumerate(zip(ups, probs)):
            pred = int(np.argmax(p[i]))
            head = f"{titles[j]}\n" if i == 0 else ""
            _overlay(axes[i, 1 + j], x[i], up[i][..., pred],
                     f"{head}pred: {names[pred]} ({p[i][pred]:.2f})", fig)
    return _finish(fig, layout, "Predicted class's trunk map (16x16, upsampled x2) over each test image\n"
                   + data_note, left=0.03, right=0.96, wspace=0.35, hspace=0.35)


def shap_figure(x, y, values, ranked, probs, names, title, data_note):
    """Rows: images; columns: image + the SHAP map of each ranked class (row-shared symmetric limits)."""
    n, r = ranked.shape
    fig, axes, layout = _grid_figure(n, 1 + r, 2.4, 2.7, header_in=1.1)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], f"true: {names[y[i]]}")
        m = float(np.abs(values[i]).max()) or 1.0
        gray = np.asarray(x[i], np.float64) @ np.array([0.299, 0.587, 0.114])
        for j in range(r):
            ax = axes[i, 1 + j]
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1, alpha=0.25)
            c = int(ranked[i, j])
            C.map_panel(fig, ax, values[i, j], f"#{j + 1} {names[c]} ({probs[i, c]:.2f})",
                        limits=(-m, m))
    return _finish(fig, layout, f"SHAP DeepExplainer, {title}: top-{r} classes (red raises, blue lowers the "
                   "output)\n" + data_note, left=0.03, right=0.95, wspace=0.4, hspace=0.35)


def lime_figure(x, y, masks, preds, names, titles, data_note, samples):
    """Rows: images; columns: image + each model's top positive LIME segments (others dimmed)."""
    n, m = masks.shape[:2]
    fig, axes, layout = _grid_figure(n, 1 + m, 2.3, 2.5)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], f"true: {names[y[i]]}")
        for j in range(m):
            keep = masks[i, j] > 0
            shown = np.where(keep[..., None], x[i], 0.25 * x[i] + 0.3)
            head = f"{titles[j]}\n" if i == 0 else ""
            ax = axes[i, 1 + j]
            C.show_rgb(ax, shown, f"{head}pred: {names[preds[j][i]]} ({keep.mean():.0%} of pixels)")
            if keep.any() and not keep.all():
                ax.contour(keep.astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
    return _finish(fig, layout, f"LIME (quickshift, {samples} samples): top positive segments of the predicted "
                   "class (others dimmed)\n" + data_note, left=0.03, right=0.97, wspace=0.15, hspace=0.35)


# -- the study ---------------------------------------------------------------------------------
def run(args):
    """Run study 3; returns a dict with the run folder and the numbers written to results.json."""
    from ..registry import create_from_presets as create_explainer
    from .. import data as D
    from ..keras_bridge import logits_model
    from ..segmentation import quickshift_params
    from ..zoo import registry

    start = C.begin_run(args, STUDY, QUICK)   # settings section (full sizes), QUICK with --quick
    quick, seed, p, folder, say = start.quick, start.seed, start.params, start.folder, start.say
    progress = bool(getattr(args, "progress", False))
    ds = D.load_dataset("cifar10", data_dir=getattr(args, "data_dir", None))
    names = C.class_names("cifar10")
    n_test = len(ds.x_test) if p["test_limit"] is None else min(p["test_limit"], len(ds.x_test))
    x_test = registry.prepare_inputs("xainn_baseline", ds.x_test[:n_test])
    y_test = np.asarray(ds.y_test[:n_test])
    data_note = f"CIFAR-10 test images ({len(x_test):,} from the data directory)"

    models, infos, rows = {}, {}, []
    for name, title in VARIANTS:
        model, info = C.get_model_subset(name, getattr(args, "models_dir", "models"),
                                         getattr(args, "data_dir", None), seed=seed, schedule="quick",
                                         epochs=p["epochs"], train_limit=p["train_limit"],
                                         eval_limit=p["test_limit"], progress=progress,
                                         safe_mode=C.load_safely(args))
        say(f"{name}: {info['note']}")
        models[name], infos[name] = model, info

    # accuracy, class maps
    probs, maps16 = {}, {}
    for name, title in VARIANTS:
        probs[name] = _probs(models[name], x_test)
        maps16[name] = class_maps(models[name], x_test)
        acc = _accuracy(probs[name], y_test)
        rows.append({"model": name, "title": title, "test_accuracy": acc,
                     "reference_accuracy": REF_ACCURACY[name],
                     "map_agreement": map_agreement(maps16[name], probs[name].argmax(1)),
                     "train_images": (infos[name].get("data") or {}).get("train_images"),
                     "epochs": infos[name].get("epochs"), "model_source": infos[name]["source"]})
        say(f"{name}: test accuracy {acc:.4f} (study {REF_ACCURACY[name]:.3f}); class map with the largest "
            f"mean = prediction for {rows[-1]['map_agreement']:.1%}")

    figures = {}
    idx = C.first_per_class(y_test, 1)
    xs, ys = x_test[idx], y_test[idx]
    first = 0
    for name, title in VARIANTS:
        fig = grid_figure(x_test[first], maps16[name][first], probs[name][first], names, title,
                          int(y_test[first]), f"test image {first}; {data_note}")
        figures[f"class_maps_{name}"] = str(C.save_fig(fig, folder, f"class_maps_{name}"))
    fig = table_figure(xs, ys, [upsample(maps16[n][idx]) for n, _ in VARIANTS],
                       [probs[n][idx] for n, _ in VARIANTS], names, [t for _, t in VARIANTS], data_note)
    figures["class_maps_table"] = str(C.save_fig(fig, folder, "class_maps_table"))

    # SHAP DeepExplainer
    rs = np.random.RandomState(seed)
    x_train = registry.prepare_inputs("xainn_baseline", ds.x_train)
    bg_idx = np.sort(rs.choice(len(x_train), size=min(p["background"], len(x_train)), replace=False))
    background = x_train[bg_idx]
    sel = idx[:p["shap_images"]]
    shap_rows = []
    for name, title in VARIANTS:
        t0 = time.perf_counter()
        ranked = np.argsort(-probs[name][sel], axis=1)[:, :p["ranked"]]
        explainer = create_explainer("shap.deep", models[name], background=background, progress=False,
                                     seed=seed)
        xr = np.repeat(x_test[sel], p["ranked"], axis=0)
        values = explainer(xr, ranked.reshape(-1)).reshape(len(sel), p["ranked"], 32, 32)
        fig = shap_figure(x_test[sel], y_test[sel], values, ranked, probs[name][sel], names, title, data_note)
        figures[f"shap_{name}"] = str(C.save_fig(fig, folder, f"shap_{name}"))
        top = values[:, 0]
        shap_rows.append({"model": name, "explained": explainer.output_note, "images": int(len(sel)),
                          "ranked_outputs": p["ranked"], "background": int(len(background)),
                          "mean_abs_value_top1": float(np.abs(top).mean()),
                          "positive_share_top1": float((top > 0).mean()),
                          "seconds": round(time.perf_counter() - t0, 1)})
        say(f"{name}: SHAP DeepExplainer on {len(sel)} images x top-{p['ranked']} "
              f"({shap_rows[-1]['seconds']:.0f} s; additivity checked)")

    # LIME
    sel = idx[:p["lime_images"]]
    lime_masks, lime_preds, lime_rows = [], [], []
    for name, title in VARIANTS:
        t0 = time.perf_counter()
        has_softmax = logits_model(models[name])[1].startswith(("stripped", "replaced"))
        explainer = create_explainer(
            "lime", models[name], num_samples=p["lime_samples"], hide_color=HIDE_COLOR,
            segmenter="quickshift", positive_only=True, num_features=p["lime_features"], mask_output=True,
            output="probabilities" if has_softmax else "logits", progress=False, seed=seed)
        pred = probs[name][sel].argmax(1)
        masks = explainer(x_test[sel], pred)
        segs = explainer.segments(x_test[sel])
        lime_masks.append(masks)
        lime_preds.append(pred)
        lime_rows.append({"model": name, "images": int(len(sel)), "num_samples": p["lime_samples"],
                          "segments_mean": float(np.mean([s.max() + 1 for s in segs])),
                          "kept_pixel_fraction": float((masks > 0).mean()),
                          "explained": "class probabilities" if has_softmax else "model output (probabilities)",
                          "seconds": round(time.perf_counter() - t0, 1)})
        say(f"{name}: LIME on {len(sel)} images ({lime_rows[-1]['seconds']:.0f} s, "
              f"{lime_rows[-1]['segments_mean']:.1f} segments per image)")
    fig = lime_figure(x_test[sel], y_test[sel], np.stack(lime_masks, 1), lime_preds, names,
                      [t for _, t in VARIANTS], data_note, p["lime_samples"])
    figures["lime"] = str(C.save_fig(fig, folder, "lime"))

    qs = quickshift_params(32, 32)
    result = {
        "study": STUDY, "quick": quick, "seed": seed, "folder": str(folder),
        "command": C.command_line(getattr(args, "argv", None)),
        "data": {"dataset": "cifar10", "source": ds.source, "split": ds.split,
                 "test_images": int(len(x_test)), "train_images_available": int(len(ds.x_train))},
        "settings": {**p, "hide_color": HIDE_COLOR, "quickshift": qs, "upsampling": "x2 bilinear",
                     "background_indices": bg_idx},
        "models": infos, "accuracy": rows, "shap": shap_rows, "lime": lime_rows,
        "explained_images": {"test_indices": idx, "classes": [names[int(c)] for c in y_test[idx]]},
        "figures": figures, "reference": {"accuracy": REF_ACCURACY, "setup": REF_SETUP},
        "seconds": round(start.seconds(), 1),
    }
    C.write_json(folder, "results", result)
    report(folder, result)
    say(f"xainn: done in {result['seconds']:.0f} s")
    return result


def ranking_sentence(rows):
    """Study 3's ranking (Model 1 > Model 3 > Model 2 by test accuracy) against ours, in words."""
    def order(key):
        ranked = sorted(range(len(rows)), key=lambda i: -rows[i][key])
        return " > ".join(f"M{i + 1}" for i in ranked)

    ours, study = order("test_accuracy"), order("reference_accuracy")
    values = " / ".join(f"{row['test_accuracy']:.3f}" for row in rows)
    same = "the same ranking" if ours == study else "a different ranking"
    return f"Ranking by test accuracy: ours {ours} ({values}), study {study}: {same}."


def report(folder, r):
    quick = r["quick"]
    table = C.Table(["model", "test accuracy (ours)", "study (ref.)", "training images", "epochs", "model",
                     "largest-mean class map = prediction"])
    for row in r["accuracy"]:
        table.add(row["title"], row["test_accuracy"], row["reference_accuracy"],
                  row["train_images"] if row["train_images"] is not None else "?",
                  row["epochs"] if row["epochs"] is not None else "?", row["model_source"],
                  f"{row['map_agreement']:.1%}")
    table.note = (f"Ours: {r['data']['test_images']} CIFAR-10 test images ({r['data']['split']}); models "
                  "trained on the training images at hand (the offline subset holds 2,000, the study used "
                  f"50,000) with the zoo's quick CPU schedule. Study: {REF_SETUP}. The gap is expected from "
                  "25x less data and fewer epochs; the ranking of the three models is what to compare. "
                  + ranking_sentence(r["accuracy"]))
    shap_t = C.Table(["model", "images", "ranked outputs", "background", "explained output", "mean |value| (top 1)",
                      "seconds"])
    for s in r["shap"]:
        shap_t.add(s["model"], s["images"], s["ranked_outputs"], s["background"], s["explained"],
                   s["mean_abs_value_top1"], s["seconds"])
    lime_t = C.Table(["model", "images", "num_samples", "segments per image", "share of pixels shown",
                      "explained output", "seconds"])
    for s in r["lime"]:
        lime_t.add(s["model"], s["images"], s["num_samples"], s["segments_mean"], s["kept_pixel_fraction"],
                   s["explained"], s["seconds"])
    figs = r["figures"]
    pre = [f"Command: `{r['command']}` ({'quick' if quick else 'full'} run, seed {r['seed']}, "
           f"{r['seconds']:.0f} s). Data: {r['data']['source']}."]
    if quick:
        q = r["settings"]
        pre.append(f"QUICK run: models trained for {q['epochs']} epoch(s) on {q['train_limit']} images (unless "
                   f"models/ holds them), {q['test_limit']} test images, {q['shap_images']} images explained "
                   f"with SHAP and LIME ({q['lime_samples']} samples). A smoke test, not a reproduction.")
    models = "\n".join(f"- {k}: {v['note']}" for k, v in r["models"].items())
    sections = [
        ("Models", models),
        ("Test accuracy", table),
        ("Class maps", ["The trunk's last block (`class_maps_bn`) gives one 16x16 map per class; the predicted "
                        "class's map is upsampled x2 (bilinear) and laid over the image. The last column of the "
                        "accuracy table: how often the class whose map has the largest spatial mean is the "
                        "model's prediction.",
                        *[C.image_link(figs[f"class_maps_{n}"], folder) for n, _ in VARIANTS],
                        C.image_link(figs["class_maps_table"], folder)]),
        ("SHAP DeepExplainer", [shap_t, "Background: random training images; additivity (sum of the values = "
                                "f(x) - mean f(background)) checked for every map.",
                                *[C.image_link(figs[f"shap_{n}"], folder) for n, _ in VARIANTS]]),
        ("LIME", [lime_t, f"Quickshift {r['settings']['quickshift']} on the [0, 1] image in (H, W, C) order "
                  "(the original's 0..255 input with H and W swapped is fixed); hidden segments take 1/255 (the "
                  "study's hide_color=1 on its 0..255 scale); top-10 positive segments of the predicted class.",
                  C.image_link(figs["lime"], folder)]),
    ]
    C.write_report(folder, "Study 3: XAINN, explainability by architecture (CIFAR-10)", sections, pre)
