"""Study 5: a target-digit classifier on house numbers and the IoU of its heatmaps with the digit boxes.

``python -m xaitf.studies svhn_iou [--quick]`` reproduces Adnan1729/ZIB_SummerIntern_Adnan
(seeds.md section 5) with the zoo's ``svhn_resnet18`` (ResNet-18 from scratch, one logit: "is the
target digit, default 1, in the house number?"):

1. **Data.** SVHN format 1 when the data directory holds it (``<data dir>/svhn/train/digitStruct.mat``
   and the PNGs, optional ``svhn/test``; :func:`xaitf.data.svhn.load_svhn_format1`: crops of the
   digits' union box + 10 px, balanced by undersampling). Otherwise the SYNTHETIC house-number set
   of :mod:`xaitf.data.synthetic_svhn` (same crop pipeline, known boxes, seeded). Which one ran is
   written in report.md, results.json and every figure title; synthetic results are never SVHN
   results. ``--set svhn_iou.data=svhn|synthetic`` forces one.
2. **Model.** ``<models dir>/svhn_resnet18.h5`` (SVHN) or ``svhn_resnet18_synthetic.h5``
   (synthetic) when present; otherwise trained in the run on the training crops with the zoo's
   quick schedule (Adam 1e-3, batch 32; the study trained 100 epochs).
3. **Maps** of the logit for the label-1 test images: the study's Captum methods (Saliency,
   InputXGradient, Integrated Gradients with 200 steps, DeepLift, DeepLiftShap, GradientShap as
   ``shap.gradient`` with 20 samples, Guided Backprop, Deconvolution, Grad-CAM on the last block
   ``layer4``, Guided Grad-CAM = Guided Backprop x Grad-CAM, Occlusion 15x15 stride 8,
   FeatureAblation, FeaturePermutation, Shapley value sampling with 25 samples over superpixels,
   LIME 125 samples, Kernel SHAP 200 samples) and LRP-z on xaitf's native engine
   (:class:`xaitf.methods.lrp.LRP`, composite ``lrp.z``: it reads the residual Add layers and folds
   BatchNormalization into the convolution before it; iNNvestigate refused this ResNet). The study
   used Captum's LRP with "rule Z" (its default rules: epsilon 1e-9 on every layer, i.e. the z
   rule), so ``lrp.z`` is the matching composite (``lrp.z_plus`` would be its "Z+" option). A
   random map is the baseline.

   **Baselines.** The study's baselines are 0 (Captum's default; seeds.md: "DeepLift/DeepLiftShap
   baseline 0") on inputs it had normalised with mean = std = 0.5 before the model, i.e. mid-grey.
   ``svhn_resnet18`` normalises inside the model and takes [0, 1] images, so the same baseline is
   ``ZERO = 0.5`` here, used for every baseline and fill (IG, DeepLift, DeepLiftShap, GradientShap,
   Occlusion, FeatureAblation, Shapley sampling, LIME's hidden segments, Kernel SHAP's background).
   DeepLiftShap with that baseline (the study's setting, a background of identical zero images)
   is exactly DeepLift (:class:`xaitf.methods.deeplift.DeepLiftShap` averages DeepLift over its
   background; identical images give DeepLift's map), so it runs in full runs only, like DeepLift;
   a second row, ``DeepLiftShap (10 train images)``, uses a background of 10 training crops drawn
   (seeded) from the first 100, the usual DeepLiftShap (``background_images``).

   **Features.** FeatureAblation and FeaturePermutation (:mod:`xaitf.methods.permutation`, which
   permutes a feature across the explained label-1 images) run over single pixels in a full run
   (Captum's default; 4,097 model calls per image each, ``pixel_ablation``) and over the
   superpixels ``segments`` (SLIC, 50) in ``--quick``; Shapley value sampling runs over the same
   superpixels with ``shapley_samples`` permutations (25; 3 in ``--quick``): over 4,096 single
   pixels it would cost 25 x 4,097 model calls per image.
4. **IoU** against the target digit's own box(es) (a pixel is inside when its centre is,
   :func:`xaitf.data.svhn.boxes_mask`): IoU_1 = mask IoU of the binarised map and the union MASK of
   the target digit's boxes (:func:`xaitf.metrics.iou_1`), IoU_2 = box IoU of the tightest box around
   the binarised map and the best-matching box of the target digit (``match="best"`` of
   :func:`xaitf.metrics.iou_2`: the largest IoU over the digit's boxes). A house number with the
   target digit twice ("171", "11") is scored against each "1"'s own box, never against one box
   enclosing both (which would also cover the "7"); a map on both copies gets a box around both
   and a lower IoU_2 than a map on one copy. Two explicit rules on |map|: ``threshold``
   (min-max normalised |map| >= 0.8, the study's 0.8 applied to the map itself) and ``top_k`` with
   k = the pixels of the digit mask. **The headline rule is ``threshold``** (``headline_rule``),
   the study's; the report says which methods it puts below the random map and how many pixels
   it keeps per method (a spiky gradient map keeps a handful, hence a tiny IoU_1). The study's
   bug, fixed here: it thresholded one channel of the heatmap rendered as a 0..255 colour image
   at 0.8, so nearly every pixel was "active" and IoU_1 was about box area / image area (0.110 and
   0.156 on its two examples); that degenerate value is reported as ``all pixels`` for comparison.
5. **Training curves**: train and held-out (the test crops, evaluated after every epoch for
   monitoring only) loss and accuracy per epoch when the model is trained in the run; a model
   loaded from a file is plotted from its model card's history (``create_model.py`` writes one),
   and the report says plainly when there is none.

Sizes: ``settings.SVHN_IOU_STUDY`` (``--set svhn_iou.key=value``); ``--quick`` shrinks them.
Outputs: ``report.md``, ``results.json``, ``iou_examples.png``, ``iou_summary.png``,
``training.png``.
"""
import time

import numpy as np

from ..errors import DataError, XaitfError
from . import common as C

STUDY = "svhn_iou"
MODEL = "svhn_resnet18"
QUICK = {"train_images": 64, "test_images": 100, "epochs": 2, "iou_images": 8, "figure_images": 4,
         "svhn_limit": 2000, "pixel_ablation": False, "shapley_samples": 3}
# the study's baseline 0 on its normalised inputs ((x - 0.5) / 0.5 before the model): mid-grey, 0.5
# on svhn_resnet18's [0, 1] input (the model normalises inside); see the module docstring
ZERO = 0.5
# (key, registry name or None, params, full only); "train" / "segments" / "samples" are filled in run()
METHODS = (
    ("grad", "grad", {}, False),
    ("inpgrad", "inpgrad", {}, False),
    ("ig", "ig", {"steps": 200, "baseline": ZERO}, False),
    ("deeplift", "deeplift", {"baseline": ZERO}, True),
    ("deepliftshap", "deepliftshap", {"background": ZERO}, True),           # the study's: = DeepLift
    ("deepliftshap.train", "deepliftshap", {"background": "train"}, False),
    ("gradientshap", "shap.gradient", {"nsamples": 20, "background": ZERO}, True),
    ("gb", "gb", {}, False),
    ("deconvnet", "deconvnet", {}, True),
    ("gradcam", "gradcam", {"layer": "layer4"}, False),
    ("guided_gradcam", None, {}, False),
    ("occlusion", "occlusion", {"window": 15, "stride": 8, "fill": ZERO, "output": "logits"}, False),
    ("feature_ablation", "feature_ablation", {"baseline": ZERO, "segments": "pixels?"}, False),
    ("feature_permutation", "feature_permutation", {"segments": "pixels?"}, False),
    ("shapley", "shapley", {"baseline": ZERO, "segments": "segments", "samples": "samples"}, False),
    ("lime", "lime", {"num_samples": 125, "mask_output": False, "output": "logits", "hide_color": ZERO}, False),
    ("shap", "shap", {"nsamples": 200, "output": "logits", "background": ZERO}, True),
    ("lrp.z", "lrp.z", {}, False),
    ("random", None, {}, False),
)
# lighter settings of --quick (the full run uses METHODS' values)
QUICK_PARAMS = {"ig": {"steps": 32}, "lime": {"num_samples": 50}}
TITLES = {"gradientshap": "GradientShap", "guided_gradcam": "Guided Grad-CAM", "random": "random map",
          "deepliftshap": "DeepLiftShap (zero baseline)", "shapley": "Shapley sampling"}
# the gradient and propagation methods (the report says how they fare against the random map)
GRADIENT_KEYS = ("grad", "inpgrad", "ig", "deeplift", "deepliftshap", "deepliftshap.train", "gradientshap",
                 "gb", "deconvnet", "guided_gradcam", "lrp.z")
REF_IOU1 = (0.110, 0.156)   # the study's two examples, with the 0..255-channel bug
RULES = ("threshold", "top_k")


def _title(key):
    from ..registry import title

    return TITLES.get(key) or title(key)


# -- data ----------------------------------------------------------------------------------------
def has_svhn(data_dir):
    """The SVHN format 1 training folder under the data directory, or None."""
    from ..data import data_dir as resolve

    folder = resolve(data_dir)
    if folder is None:
        return None
    train = folder / "svhn" / "train"
    return train if (train / "digitStruct.mat").is_file() else None


def load_data(p, data_dir, seed):
    """``(dataset, test_boxes, kind, source)``; kind is "svhn" or "synthetic"."""
    from ..data import Dataset
    from ..data.svhn import load_svhn_format1
    from ..data.synthetic_svhn import synthetic_svhn_dataset

    want = str(p["data"]).lower()
    if want not in ("auto", "svhn", "synthetic"):
        raise DataError(f"svhn_iou.data must be auto, svhn or synthetic, got {p['data']!r}")
    train_dir = has_svhn(data_dir)
    if want == "svhn" and train_dir is None:
        raise DataError("svhn_iou.data=svhn but no <data dir>/svhn/train/digitStruct.mat (SVHN format 1, an "
                        "extracted train.tar.gz from http://ufldl.stanford.edu/housenumbers/); use "
                        "--set svhn_iou.data=synthetic or --data-dir")
    size, target = int(p["size"]), int(p["target_digit"])
    if want == "synthetic" or (want == "auto" and train_dir is None):
        ds, boxes = synthetic_svhn_dataset(int(p["train_images"]), int(p["test_images"]), size, target, seed)
        return ds, boxes, "synthetic", ds.source
    limit = p.get("svhn_limit")
    tr = load_svhn_format1(train_dir, size=size, target_digit=target, seed=seed, limit=limit)
    test_dir = train_dir.parent / "test"
    if (test_dir / "digitStruct.mat").is_file():
        te = load_svhn_format1(test_dir, size=size, target_digit=target, seed=seed, limit=limit)
        ds = Dataset("svhn", tr.images, tr.labels, te.images, te.labels, f"{tr.source}; test: {te.source}",
                     f"train {len(tr.labels)} / test {len(te.labels)} (SVHN format 1 train / test)")
        return ds, te.boxes, "svhn", ds.source
    order = np.random.RandomState(seed).permutation(len(tr.labels))
    n_test = max(1, len(order) // 5)
    te_i, tr_i = np.sort(order[:n_test]), np.sort(order[n_test:])
    ds = Dataset("svhn", tr.images[tr_i], tr.labels[tr_i], tr.images[te_i], tr.labels[te_i], tr.source,
                 f"train {len(tr_i)} / test {len(te_i)} (seeded 80/20 split of {train_dir})")
    return ds, [tr.boxes[i] for i in te_i], "svhn", ds.source


def target_boxes(boxes, digit):
    """Per image the boxes ``(left, top, width, height)`` of the target digit only."""
    return [[b[1:5] for b in bx if int(b[0]) == int(digit)] for bx in boxes]


# -- IoU -----------------------------------------------------------------------------------------
def iou_scores(maps, boxes, threshold=0.8):
    """IoU_1 and IoU_2 of maps (N,H,W) against per-image boxes of the target digit, for both rules.

    Rules (on ``|map|``): ``threshold``: min-max normalised |map| >= ``threshold``; ``top_k``: the
    k pixels with the largest |map|, k = the pixel count of the box mask. IoU_1: against the union
    MASK of the image's boxes; IoU_2: the box around the binarised map against each box, the best
    (``match="best"``): a digit that appears twice is scored against each copy's own box.

    Returns ``{rule: {"iou_1": (N,), "iou_2": (N,), "pred_boxes": (N,4), "gt_boxes": (N,4)}}``
    (``gt_boxes``: the best-matching box of each image).
    """
    from ..metrics import iou_1, iou_2

    out = {}
    for rule, kw in (("threshold", {"rule": "threshold", "threshold": float(threshold)}),
                     ("top_k", {"rule": "top_k", "k": "gt"})):
        i1 = iou_1(maps, boxes, absolute=True, **kw)
        i2, pred, gt = iou_2(maps, boxes, return_boxes=True, absolute=True, match="best", **kw)
        out[rule] = {"iou_1": i1, "iou_2": i2, "pred_boxes": pred, "gt_boxes": gt}
    return out


def all_pixels_iou(boxes, shape):
    """IoU_1 of a mask with every pixel on (the study's bug): box mask area / image area."""
    from ..metrics import gt_mask

    m = gt_mask(boxes, (len(boxes),) + tuple(shape))
    return m.mean(axis=(1, 2))


# -- figures -------------------------------------------------------------------------------------
def _rect(ax, box, colour, style="-"):
    from matplotlib.patches import Rectangle

    if box is None or not np.all(np.isfinite(box)):
        return
    ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2], box[3], fill=False, edgecolor=colour,
                           linewidth=1.6, linestyle=style))


def examples_figure(x, boxes, maps, scores, keys, kind_title, threshold, titles=None):
    """Inputs (with the target digit's boxes) and every method's min-max normalised |map|, with
    the threshold rule's pixels, the best-matching digit box and the box around the pixels."""
    from matplotlib.figure import Figure

    titles = titles or {}
    n, m = len(x), len(keys)
    height = 1.95 * n + 1.2
    fig = Figure(figsize=(1.75 * (m + 1) + 0.6, height), dpi=85)
    grid = fig.add_gridspec(n, m + 2, width_ratios=[1.0] * (m + 1) + [0.08])
    image = None
    for i in range(n):
        ax = fig.add_subplot(grid[i, 0])
        C.show_rgb(ax, x[i], "input + target\ndigit box(es)" if i == 0 else None, fontsize=8)
        for b in boxes[i]:
            _rect(ax, b, "lime")
        for j, k in enumerate(keys):
            ax = fig.add_subplot(grid[i, j + 1])
            a = np.abs(maps[k][i])
            span = a.max() - a.min()
            norm = (a - a.min()) / span if span > 0 else np.zeros_like(a)
            image = ax.imshow(norm, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            on = norm >= threshold
            if on.any() and not on.all():
                ax.contour(on.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            s = scores[k]["threshold"]
            _rect(ax, s["gt_boxes"][i], "lime")
            _rect(ax, s["pred_boxes"][i], "red", "--")
            ax.set_xticks([])
            ax.set_yticks([])
            name = titles.get(k) or _title(k)
            if len(name) > 18 and " (" in name:      # "FeatureAblation (superpixels)": two lines
                name = name.replace(" (", "\n(", 1)
            head = f"{name}\n" if i == 0 else ""
            ax.set_title(f"{head}IoU1 {s['iou_1'][i]:.2f} IoU2 {s['iou_2'][i]:.2f}", fontsize=8, pad=2)
    if image is not None:
        cax = fig.add_subplot(grid[:, -1])
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("min-max normalised |map|", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    fig.suptitle(f"{kind_title}: min-max normalised |map| (inferno, 0-1); cyan outline: |map| >= {threshold} "
                 f"(the threshold rule); green: the target digit's best-matching box; red dashed: box around "
                 f"the cyan pixels. IoU1 / IoU2 of the threshold rule.", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.97, top=1 - 1.05 / height, bottom=0.01, wspace=0.08, hspace=0.3)
    return fig


def summary_figure(rows, kind_title, baseline, headline="threshold", threshold=0.8):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.4), dpi=100)
    axes = fig.subplots(1, 2, sharey=True)
    names = [r["title"] for r in rows]
    pos = np.arange(len(rows))
    random = next((r for r in rows if r["method"] == "random"), None)
    for ax, rule in zip(axes, RULES):
        for off, metric, colour in ((-0.2, "iou_1", "tab:blue"), (0.2, "iou_2", "tab:orange")):
            vals = [r[rule][metric]["mean"] if r[rule][metric]["mean"] is not None else np.nan for r in rows]
            errs = [r[rule][metric]["sem"] or 0.0 for r in rows]
            ax.bar(pos + off, vals, 0.4, yerr=errs, color=colour, label=metric.replace("iou", "IoU"), capsize=2)
        if random is not None and random[rule]["iou_1"]["mean"] is not None:
            ax.axhline(random[rule]["iou_1"]["mean"], color="tab:blue", ls="--", lw=1,
                       label=f"random map IoU_1: {random[rule]['iou_1']['mean']:.3f}")
        ax.axhline(baseline, color="k", ls=":", lw=1, label=f"all pixels on (study's bug) IoU_1: {baseline:.3f}")
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        name = (f"|map| min-max >= {threshold}" if rule == "threshold" else "top-k, k = digit-mask pixels")
        ax.set_title(f"rule: {name}" + ("  [HEADLINE]" if rule == headline else ""), fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("mean IoU over label-1 test images (± s.e.m.)")
    fig.suptitle(f"{kind_title}: IoU of heatmaps with the target digit's own box(es)", fontsize=11)
    fig.tight_layout()
    return fig


def training_figure(history, kind_title, source_note=""):
    """Loss and accuracy per epoch, train and held-out (``val_*``) when the history has them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, label, style in (("", "train", "o-"), ("val_", "held-out (test crops)", "s--")):
            vals = history.get(prefix + key) or []
            if vals:
                ax.plot(np.arange(1, len(vals) + 1), vals, style, label=f"{label} {key}")
        n = max(len(history.get("loss") or []), 1)
        if n <= 20:
            ax.set_xticks(np.arange(1, n + 1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("BCE-with-logits loss" if key == "loss" else "accuracy (logit > 0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{kind_title}: training curves" + (f" ({source_note})" if source_note else ""), fontsize=10)
    fig.tight_layout()
    return fig


# -- the study -----------------------------------------------------------------------------------
def _stats(v):
    v = np.asarray(v, np.float64)
    ok = v[np.isfinite(v)]
    if not len(ok):
        return {"mean": None, "std": None, "sem": None, "n": 0, "empty": int(len(v))}
    return {"mean": float(ok.mean()), "std": float(ok.std()), "sem": float(ok.std() / np.sqrt(len(ok))),
            "n": int(len(ok)), "empty": int(len(v) - len(ok))}


def _f(v):
    return "-" if v is None else f"{v:.3f}"


def _segments_short(seg):
    """``SLIC 50`` for ``{"name": "slic", "n_segments": 50}``; ``superpixels`` otherwise."""
    if isinstance(seg, dict) and seg.get("name") and seg.get("n_segments"):
        return f"{str(seg['name']).upper()} {seg['n_segments']}"
    if isinstance(seg, str):
        return seg.upper()
    return "superpixels"


def method_settings(key, params, p, quick, train_images):
    """The keyword arguments and figure title of one METHODS row for this run."""
    kw = dict(params)
    if quick:
        kw.update(QUICK_PARAMS.get(key, {}))
    title = None
    pixels = bool(p["pixel_ablation"])
    if kw.get("segments") == "pixels?":
        kw["segments"] = None if pixels else p["segments"]
        base = {"feature_ablation": "FeatureAblation", "feature_permutation": "FeaturePermutation"}[key]
        title = f"{base} ({'pixels' if pixels else _segments_short(p['segments'])})"
    elif kw.get("segments") == "segments":
        kw["segments"] = p["segments"]
    if kw.get("samples") == "samples":
        kw["samples"] = int(p["shapley_samples"])
        title = f"Shapley sampling ({kw['samples']} x {_segments_short(p['segments'])})"
    if kw.get("background") == "train":
        k = int(p["background_images"])
        kw["background"] = train_images
        kw["n_background"] = min(k, len(train_images))
        title = f"DeepLiftShap ({kw['n_background']} train images)"
    return kw, title


def history_of(info, models_dir):
    """``(history, note)``: the training history of the run's model: from its training in this run,
    or from the model card (``<model>.json``) of a model loaded from a file; ``({}, why)`` if none."""
    import json
    from pathlib import Path

    if info.get("history"):
        return info["history"], "trained in this run"
    path = info.get("path")
    if info.get("source") == "file" and path:
        card = Path(path).with_suffix(".json")
        try:
            hist = json.loads(card.read_text()).get("history") or {}
        except (OSError, ValueError):
            hist = {}
        if hist.get("loss"):
            return hist, f"model loaded from {Path(path).name}, not trained in this run: history from {card.name}"
        return {}, (f"the model was loaded from {path} and not trained in this run, and its model card "
                    f"{card.name} holds no training history")
    return {}, "no training history"


def below_random(rows, rule="threshold", metric="iou_1"):
    """What the report says of the random map under ``rule``: the methods whose mean ``metric`` is
    below the random map's, and the gradient/propagation methods among them (computed)."""
    by = {r["method"]: r for r in rows}
    rnd = by.get("random", {}).get(rule, {}).get(metric, {}).get("mean")
    if rnd is None:
        return {"rule": rule, "metric": metric, "random": None, "below": [], "gradient": [], "gradient_below": []}
    below = [k for k, r in by.items() if k != "random" and r[rule][metric]["mean"] is not None
             and r[rule][metric]["mean"] < rnd]
    grads = [k for k in by if k in GRADIENT_KEYS]
    return {"rule": rule, "metric": metric, "random": rnd, "below": below, "gradient": grads,
            "gradient_below": [k for k in grads if k in below]}


def run(args):
    """Run study 5; returns a dict with the run folder and the numbers written to results.json."""
    from ..metrics import binarize
    from ..registry import create_from_presets as create_explainer
    from ..zoo import registry

    start = C.begin_run(args, STUDY, QUICK)   # settings section (full sizes), QUICK with --quick
    quick, seed, p, folder, say = start.quick, start.seed, start.params, start.folder, start.say
    headline = str(p.get("headline_rule", "threshold"))
    if headline not in RULES:
        raise XaitfError(f"svhn_iou.headline_rule must be one of {', '.join(RULES)}, got {headline!r}")
    ds, boxes, kind, source = load_data(p, getattr(args, "data_dir", None), seed)
    kind_title = "SVHN format 1" if kind == "svhn" else "SYNTHETIC house numbers (not SVHN)"
    say(f"data: {kind_title}: {ds.split}")
    stem = MODEL if kind == "svhn" else f"{MODEL}_synthetic"
    models_dir = getattr(args, "models_dir", "models")
    model, info = C.get_model_subset(MODEL, models_dir, getattr(args, "data_dir", None),
                                     seed=seed, schedule="quick", epochs=p["epochs"], train_limit=p["train_limit"],
                                     data=ds, file_stem=stem, progress=bool(getattr(args, "progress", False)),
                                     safe_mode=C.load_safely(args), validate=True)
    say(f"model: {info['note']}")
    if int(model.inputs[0].shape[1]) != int(p["size"]):
        raise XaitfError(f"the model takes {model.inputs[0].shape[1]}x{model.inputs[0].shape[2]} images but the "
                         f"study's crops are {p['size']}x{p['size']}; set svhn_iou.size to match")
    x = registry.prepare_inputs(MODEL, ds.x_test)
    y = np.asarray(ds.y_test)
    from ..training import predict

    logits = predict(model, x)[:, 0]
    acc = float(np.mean((logits > 0).astype(int) == y))
    pos = np.flatnonzero(y == 1)
    pos = np.asarray([i for i in pos if target_boxes([boxes[i]], p["target_digit"])[0]], np.int64)
    sel = pos[:int(p["iou_images"])]
    gt = target_boxes([boxes[i] for i in sel], p["target_digit"])
    xs = x[sel]
    twice = int(sum(len(b) > 1 for b in gt))
    say(f"test accuracy {acc:.4f} on {len(y)} images; IoU on {len(sel)} label-1 images "
        f"({twice} with the target digit more than once)")
    train_bg = registry.prepare_inputs(MODEL, ds.x_train[:100])

    maps, rows, skipped, seconds, titles = {}, [], {}, {}, {}
    for key, reg, params, full_only in METHODS:
        if quick and full_only:
            continue
        t0 = time.perf_counter()
        try:
            if key == "random":
                maps[key] = np.random.default_rng(seed).random(xs.shape[:3])
            elif key == "guided_gradcam":
                if "gb" not in maps or "gradcam" not in maps:
                    continue
                maps[key] = maps["gb"] * maps["gradcam"]
            else:
                kw, title = method_settings(key, params, p, quick, train_bg)
                if title:
                    titles[key] = title
                ex = create_explainer(reg, model, progress=False, seed=seed, **kw)
                maps[key] = np.asarray(ex(xs, np.zeros(len(xs), np.int64)), np.float64)
        except XaitfError as e:
            skipped[key] = str(e).splitlines()[0]
            say(f"{key}: skipped ({skipped[key]})")
            continue
        seconds[key] = round(time.perf_counter() - t0, 1)
    scores = {k: iou_scores(v, gt, p["threshold"]) for k, v in maps.items()}
    for k in maps:
        kept = binarize(maps[k], rule="threshold", threshold=float(p["threshold"]), absolute=True)
        rows.append({"method": k, "title": titles.get(k) or _title(k), "seconds": seconds.get(k),
                     "map_finite": bool(np.isfinite(maps[k]).all()),
                     "map_abs_max": float(np.nanmax(np.abs(maps[k]))) if maps[k].size else 0.0,
                     "threshold_kept_fraction": float(kept.mean()),
                     **{rule: {m: _stats(scores[k][rule][m]) for m in ("iou_1", "iou_2")} for rule in RULES}})
        th, tk = rows[-1]["threshold"], rows[-1]["top_k"]
        say(f"{k}: threshold rule IoU_1 {_f(th['iou_1']['mean'])} IoU_2 {_f(th['iou_2']['mean'])}; "
            f"top-k rule IoU_1 {_f(tk['iou_1']['mean'])} IoU_2 {_f(tk['iou_2']['mean'])}")
    bug = all_pixels_iou(gt, xs.shape[1:3])
    history, history_note = history_of(info, models_dir)
    figures = {}
    nf = min(int(p["figure_images"]), len(sel))
    keys = list(maps)
    fig = examples_figure(xs[:nf], gt[:nf], {k: v[:nf] for k, v in maps.items()},
                          {k: {r: {m: np.asarray(v[r][m])[:nf] for m in v[r]} for r in RULES} for k, v in scores.items()},
                          keys, kind_title, float(p["threshold"]), titles)
    figures["iou_examples"] = str(C.save_fig(fig, folder, "iou_examples"))
    figures["iou_summary"] = str(C.save_fig(summary_figure(rows, kind_title, float(bug.mean()), headline,
                                                           float(p["threshold"])), folder, "iou_summary"))
    if history:
        figures["training"] = str(C.save_fig(training_figure(history, kind_title, history_note), folder, "training"))
    result = {
        "study": STUDY, "quick": quick, "seed": seed, "folder": str(folder),
        "command": C.command_line(getattr(args, "argv", None)), "settings": p,
        "data": {"kind": kind, "title": kind_title, "is_svhn": kind == "svhn", "source": source, "split": ds.split,
                 "test_images": int(len(y)), "iou_images": int(len(sel)), "iou_indices": sel,
                 "iou_images_with_target_twice": twice},
        "model": info, "training_curves": {"history": history, "note": history_note},
        "test_accuracy": acc, "methods": rows, "skipped": skipped,
        "all_pixels_iou_1": _stats(bug), "reference": {"iou_1_with_bug": REF_IOU1},
        "headline_rule": headline,
        "rules": {"threshold": f"min-max normalised |map| >= {p['threshold']}",
                  "top_k": "the k pixels of largest |map|, k = pixels of the target digit's mask"},
        "ground_truth": ("IoU_1: the union mask of the target digit's own boxes; IoU_2: the box around the "
                         "binarised map against each of the target digit's boxes, the best (max)"),
        "baseline": {"value": ZERO, "note": "the study's 0 on its (x - 0.5) / 0.5 inputs = 0.5 on the model's "
                                            "[0, 1] input (svhn_resnet18 normalises inside)"},
        "below_random": {rule: below_random(rows, rule) for rule in RULES},
        "figures": figures, "seconds": round(start.seconds(), 1),
    }
    C.write_json(folder, "results", result)
    report(folder, result)
    say(f"svhn_iou: done in {result['seconds']:.0f} s ({kind_title})")
    return result


def _names(rows, keys):
    by = {r["method"]: r["title"] for r in rows}
    return ", ".join(by[k] for k in keys) or "none"


def findings(r):
    """The report's plain statements on the headline rule and the random map (from the numbers)."""
    rule = r["headline_rule"]
    rows = r["methods"]
    words = {"threshold": f"**threshold**: a pixel is on when its min-max normalised |map| is >= "
                          f"{r['settings']['threshold']} (the study's 0.8, applied to the map itself)",
             "top_k": "**top-k**: the k pixels of largest |map| are on, k = the pixel count of the target "
                      "digit's mask"}
    out = [f"Headline binarisation rule: {words[rule]}. The table gives the other rule "
           f"({'top-k' if rule == 'threshold' else 'threshold'}) beside it for comparison; IoU_1 and IoU_2 of "
           "the text below are the headline rule's."]
    for rl in RULES:
        b = r["below_random"][rl]
        if b["random"] is None:
            continue
        g, gb = b["gradient"], b["gradient_below"]
        name = "threshold" if rl == "threshold" else "top-k"
        line = (f"With the {name} rule the random map scores IoU_1 {b['random']:.3f}; below it: "
                f"{_names(rows, b['below'])}. ")
        if g:
            if len(gb) == len(g):
                line += (f"Every gradient/propagation method ({len(g)}) scores below the random map with this rule.")
            elif gb:
                line += f"{len(gb)} of the {len(g)} gradient/propagation methods score below the random map."
            else:
                line += "No gradient/propagation method scores below the random map with this rule."
        out.append(line)
    kept = sorted(((row["threshold_kept_fraction"], row["title"]) for row in rows if row["method"] != "random"))
    if kept:
        lo, hi = kept[0], kept[-1]
        out.append(f"Why: the threshold rule keeps a share of the pixels that depends on the map's shape, "
                   f"from {100 * lo[0]:.2f}% ({lo[1]}) to {100 * hi[0]:.1f}% ({hi[1]}) here (the random map: "
                   f"{100 * next(x['threshold_kept_fraction'] for x in rows if x['method'] == 'random'):.1f}%, "
                   "the digit mask about "
                   f"{100 * r['all_pixels_iou_1']['mean']:.1f}%); a spiky gradient map with a few extreme "
                   "pixels keeps a handful, so its IoU_1 is tiny whatever it highlights. The top-k rule "
                   "keeps as many pixels as the digit mask has for every method.")
    return out


def report(folder, r):
    d = r["data"]
    t = C.Table(["method", "IoU_1 (threshold)", "IoU_2 (threshold)", "IoU_1 (top-k)", "IoU_2 (top-k)",
                 "pixels kept (threshold)", "seconds"])
    for row in r["methods"]:
        cells = []
        for rule in RULES:
            for m in ("iou_1", "iou_2"):
                s = row[rule][m]
                cells.append("-" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}")
        t.add(row["title"], *cells, f"{100 * row['threshold_kept_fraction']:.2f}%", row["seconds"])
    b = r["all_pixels_iou_1"]
    t.add("all pixels on (the study's bug)", f"{b['mean']:.3f}", "-", "-", "-", "100%", None)
    t.note = (f"Mean ± std over {d['iou_images']} label-1 test images ({d['title']}; "
              f"{d.get('iou_images_with_target_twice', 0)} of them hold the target digit more than once). "
              f"Ground truth: {r['ground_truth']}. Rules on |map|: {r['rules']['threshold']}; {r['rules']['top_k']}. "
              f"Headline rule: {r['headline_rule']}. Baselines and fills: {r['baseline']['value']} ("
              f"{r['baseline']['note']}). The study reported IoU_1 {REF_IOU1[0]} and {REF_IOU1[1]} on two SVHN "
              "examples with its 0..255-channel bug, which turns (nearly) every pixel on: compare with the "
              "'all pixels on' row, not with the methods.")
    sk = "\n".join(f"- {k}: {v}" for k, v in r["skipped"].items()) or "none"
    figs = r["figures"]
    banner = (f"**Data: {d['title']}.** " + ("" if d["is_svhn"] else
              "No SVHN format 1 folder was found in the data directory, so this run used xaitf's synthetic "
              "house-number set (xaitf.data.synthetic_svhn). These are NOT SVHN results."))
    pre = [banner, f"Command: `{r['command']}` ({'quick' if r['quick'] else 'full'} run, seed {r['seed']}, "
           f"{r['seconds']:.0f} s). Data source: {d['source']}."]
    if r["quick"]:
        st = r["settings"]
        pre.append(f"QUICK run: small data set, {st['epochs']} training epochs, few images and samples, "
                   f"FeatureAblation and FeaturePermutation over "
                   f"{'single pixels' if st['pixel_ablation'] else 'superpixels'}, {st['shapley_samples']} "
                   "Shapley permutations; a smoke test.")
    curves = r.get("training_curves", {})
    if "training" in figs:
        training = [f"Train and held-out loss and accuracy per epoch ({curves.get('note')}; held-out = the test "
                    "crops, evaluated after every epoch for monitoring only).", C.image_link(figs["training"], folder)]
    else:
        training = f"No training curves: {curves.get('note', 'no training history')}."
    sections = [
        ("Model", f"{r['model']['note']}. Test accuracy (logit > 0 = target digit present): "
                  f"{r['test_accuracy']:.4f} on {d['test_images']} test crops."),
        ("Training curves", training),
        ("IoU of heatmaps with the digit box",
         ["\n\n".join(findings(r)), t, C.image_link(figs["iou_summary"], folder)]),
        ("Examples", C.image_link(figs["iou_examples"], folder)),
        ("Methods not run", sk),
    ]
    C.write_report(folder, f"Study 5: target-digit classifier and IoU of heatmaps ({d['title']})", sections, pre)
