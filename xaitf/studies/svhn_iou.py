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
3. **Maps** of the logit for the label-1 test images: the study's Captum methods where xaitf has
   them (Saliency, InputXGradient, Integrated Gradients with 200 steps, DeepLift with a zero
   baseline, GradientShap as ``shap.gradient`` with 20 samples, Guided Backprop, Deconvolution,
   Grad-CAM on the last block ``layer4``, Guided Grad-CAM = Guided Backprop x Grad-CAM, Occlusion
   15x15 stride 8, LIME 125 samples, Kernel SHAP 200 samples) and LRP-z on xaitf's native engine
   (:class:`xaitf.methods.lrp.LRP`, composite ``lrp.z``: it reads the residual Add layers and folds
   BatchNormalization into the convolution before it; iNNvestigate refused this ResNet). The study
   used Captum's LRP with "rule Z" (its default rules: epsilon 1e-9 on every layer, i.e. the z
   rule), so ``lrp.z`` is the matching composite (``lrp.z_plus`` would be its "Z+" option). A
   random map is the baseline. Not run: Shapley value sampling over single pixels (25 x 4,096 model calls per image)
   and FeatureAblation/FeaturePermutation (per-pixel occlusion / a batch permutation, no new map).
4. **IoU** against the target digit's box(es) (a pixel is inside when its centre is,
   :func:`xaitf.data.svhn.boxes_mask`): IoU_1 = mask IoU of the binarised map and the box mask,
   IoU_2 = box IoU of the tightest box around the binarised map and the digit's box
   (:func:`xaitf.metrics.iou_1` / :func:`~xaitf.metrics.iou_2`). Two explicit rules on |map|:
   ``threshold`` (min-max normalised |map| >= 0.8, the study's 0.8 applied to the map itself) and
   ``top_k`` with k = the box's pixel count. The study's bug, fixed here: it thresholded one
   channel of the heatmap rendered as a 0..255 colour image at 0.8, so nearly every pixel was
   "active" and IoU_1 was about box area / image area (0.110 and 0.156 on its two examples); that
   degenerate value is reported as ``all pixels`` for comparison.

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
QUICK = {"train_images": 320, "test_images": 100, "epochs": 2, "iou_images": 8, "figure_images": 4,
         "svhn_limit": 2000}
# (key, registry name or None, params, full only)
METHODS = (
    ("grad", "grad", {}, False),
    ("inpgrad", "inpgrad", {}, False),
    ("ig", "ig", {"steps": 200}, False),
    ("deeplift", "deeplift", {"baseline": 0.0}, True),
    ("gradientshap", "shap.gradient", {"nsamples": 20, "background": 0.0}, True),
    ("gb", "gb", {}, False),
    ("deconvnet", "deconvnet", {}, True),
    ("gradcam", "gradcam", {"layer": "layer4"}, False),
    ("guided_gradcam", None, {}, False),
    ("occlusion", "occlusion", {"window": 15, "stride": 8, "fill": 0.0, "output": "logits"}, False),
    ("lime", "lime", {"num_samples": 125, "mask_output": False, "output": "logits"}, False),
    ("shap", "shap", {"nsamples": 200, "output": "logits"}, True),
    ("lrp.z", "lrp.z", {}, False),
    ("random", None, {}, False),
)
TITLES = {"gradientshap": "GradientShap", "guided_gradcam": "Guided Grad-CAM", "random": "random map"}
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
    """IoU_1 and IoU_2 of maps (N,H,W) against per-image boxes, for both rules.

    Rules (on ``|map|``): ``threshold``: min-max normalised |map| >= ``threshold``; ``top_k``: the
    k pixels with the largest |map|, k = the pixel count of the box mask.

    Returns ``{rule: {"iou_1": (N,), "iou_2": (N,), "pred_boxes": (N,4), "gt_boxes": (N,4)}}``.
    """
    from ..metrics import iou_1, iou_2

    out = {}
    for rule, kw in (("threshold", {"rule": "threshold", "threshold": float(threshold)}),
                     ("top_k", {"rule": "top_k", "k": "gt"})):
        i1 = iou_1(maps, boxes, absolute=True, **kw)
        i2, pred, gt = iou_2(maps, boxes, return_boxes=True, absolute=True, **kw)
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


def examples_figure(x, boxes, maps, scores, keys, kind_title, threshold):
    from matplotlib.figure import Figure

    n, m = len(x), len(keys)
    fig = Figure(figsize=(1.9 * (m + 1), 2.05 * n + 1.1), dpi=85)
    axes = fig.subplots(n, m + 1, squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], "input + digit box" if i == 0 else None, fontsize=7)
        for b in boxes[i]:
            _rect(axes[i, 0], b, "lime")
        for j, k in enumerate(keys):
            ax = axes[i, j + 1]
            a = np.abs(maps[k][i])
            span = a.max() - a.min()
            norm = (a - a.min()) / span if span > 0 else np.zeros_like(a)
            ax.imshow(norm, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            on = norm >= threshold
            if on.any() and not on.all():
                ax.contour(on.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            s = scores[k]["threshold"]
            _rect(ax, s["gt_boxes"][i], "lime")
            _rect(ax, s["pred_boxes"][i], "red", "--")
            ax.set_xticks([])
            ax.set_yticks([])
            head = f"{_title(k)}\n" if i == 0 else ""
            ax.set_title(f"{head}IoU1 {s['iou_1'][i]:.2f} IoU2 {s['iou_2'][i]:.2f}", fontsize=7, pad=2)
    fig.suptitle(f"{kind_title}: min-max normalised |map| (0-1, inferno); cyan: |map| >= {threshold}; "
                 "green: digit box; red dashed: box around the cyan pixels", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.8 / (2.05 * n + 1.1), bottom=0.01,
                        wspace=0.08, hspace=0.35)
    return fig


def summary_figure(rows, kind_title, baseline):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=100)
    axes = fig.subplots(1, 2, sharey=True)
    names = [r["title"] for r in rows]
    pos = np.arange(len(rows))
    for ax, rule in zip(axes, RULES):
        for off, metric, colour in ((-0.2, "iou_1", "tab:blue"), (0.2, "iou_2", "tab:orange")):
            vals = [r[rule][metric]["mean"] if r[rule][metric]["mean"] is not None else np.nan for r in rows]
            errs = [r[rule][metric]["sem"] or 0.0 for r in rows]
            ax.bar(pos + off, vals, 0.4, yerr=errs, color=colour, label=metric.replace("iou", "IoU"), capsize=2)
        ax.axhline(baseline, color="k", ls=":", lw=1, label=f"all pixels on: {baseline:.3f}")
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title("rule: |map| min-max >= threshold" if rule == "threshold" else "rule: top-k, k = box pixels",
                     fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean IoU over label-1 test images (+- s.e.m.)")
    fig.suptitle(f"{kind_title}: IoU of heatmaps with the target digit's box", fontsize=10)
    fig.tight_layout()
    return fig


def training_figure(history, kind_title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        vals = history.get(key) or []
        ax.plot(np.arange(1, len(vals) + 1), vals, "o-", label=f"train {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle(f"{kind_title}: training curves (BCE with logits)", fontsize=10)
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


def run(args):
    """Run study 5; returns a dict with the run folder and the numbers written to results.json."""
    from ..registry import create_from_presets as create_explainer
    from ..zoo import registry

    start = C.begin_run(args, STUDY, QUICK)   # settings section (full sizes), QUICK with --quick
    quick, seed, p, folder, say = start.quick, start.seed, start.params, start.folder, start.say
    ds, boxes, kind, source = load_data(p, getattr(args, "data_dir", None), seed)
    kind_title = "SVHN format 1" if kind == "svhn" else "SYNTHETIC house numbers (not SVHN)"
    say(f"data: {kind_title}: {ds.split}")
    stem = MODEL if kind == "svhn" else f"{MODEL}_synthetic"
    model, info = C.get_model_subset(MODEL, getattr(args, "models_dir", "models"), getattr(args, "data_dir", None),
                                     seed=seed, schedule="quick", epochs=p["epochs"], train_limit=p["train_limit"],
                                     data=ds, file_stem=stem, progress=bool(getattr(args, "progress", False)),
                                     safe_mode=C.load_safely(args))
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
    say(f"test accuracy {acc:.4f} on {len(y)} images; IoU on {len(sel)} label-1 images")

    maps, rows, skipped, seconds = {}, [], {}, {}
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
                kw = dict(params)
                if key == "ig" and quick:
                    kw["steps"] = 32
                if key == "lime" and quick:
                    kw["num_samples"] = 50
                ex = create_explainer(reg, model, progress=False, seed=seed, **kw)
                maps[key] = np.asarray(ex(xs, np.zeros(len(xs), np.int64)), np.float64)
        except XaitfError as e:
            skipped[key] = str(e).splitlines()[0]
            say(f"{key}: skipped ({skipped[key]})")
            continue
        seconds[key] = round(time.perf_counter() - t0, 1)
    scores = {k: iou_scores(v, gt, p["threshold"]) for k, v in maps.items()}
    for k in maps:
        rows.append({"method": k, "title": _title(k), "seconds": seconds.get(k),
                     "map_finite": bool(np.isfinite(maps[k]).all()),
                     "map_abs_max": float(np.nanmax(np.abs(maps[k]))) if maps[k].size else 0.0,
                     **{rule: {m: _stats(scores[k][rule][m]) for m in ("iou_1", "iou_2")} for rule in RULES}})
        th, tk = rows[-1]["threshold"], rows[-1]["top_k"]
        say(f"{k}: threshold rule IoU_1 {_f(th['iou_1']['mean'])} IoU_2 {_f(th['iou_2']['mean'])}; "
            f"top-k rule IoU_1 {_f(tk['iou_1']['mean'])} IoU_2 {_f(tk['iou_2']['mean'])}")
    bug = all_pixels_iou(gt, xs.shape[1:3])
    figures = {}
    nf = min(int(p["figure_images"]), len(sel))
    keys = list(maps)
    fig = examples_figure(xs[:nf], gt[:nf], {k: v[:nf] for k, v in maps.items()},
                          {k: {r: {m: np.asarray(v[r][m])[:nf] for m in v[r]} for r in RULES} for k, v in scores.items()},
                          keys, kind_title, float(p["threshold"]))
    figures["iou_examples"] = str(C.save_fig(fig, folder, "iou_examples"))
    figures["iou_summary"] = str(C.save_fig(summary_figure(rows, kind_title, float(bug.mean())), folder, "iou_summary"))
    if info.get("history"):
        figures["training"] = str(C.save_fig(training_figure(info["history"], kind_title), folder, "training"))
    result = {
        "study": STUDY, "quick": quick, "seed": seed, "folder": str(folder),
        "command": C.command_line(getattr(args, "argv", None)), "settings": p,
        "data": {"kind": kind, "title": kind_title, "is_svhn": kind == "svhn", "source": source, "split": ds.split,
                 "test_images": int(len(y)), "iou_images": int(len(sel)), "iou_indices": sel},
        "model": info, "test_accuracy": acc, "methods": rows, "skipped": skipped,
        "all_pixels_iou_1": _stats(bug), "reference": {"iou_1_with_bug": REF_IOU1},
        "rules": {"threshold": f"min-max normalised |map| >= {p['threshold']}",
                  "top_k": "the k pixels of largest |map|, k = pixels of the digit-box mask"},
        "figures": figures, "seconds": round(start.seconds(), 1),
    }
    C.write_json(folder, "results", result)
    report(folder, result)
    say(f"svhn_iou: done in {result['seconds']:.0f} s ({kind_title})")
    return result


def report(folder, r):
    d = r["data"]
    t = C.Table(["method", "IoU_1 (threshold)", "IoU_2 (threshold)", "IoU_1 (top-k)", "IoU_2 (top-k)", "seconds"])
    for row in r["methods"]:
        cells = []
        for rule in RULES:
            for m in ("iou_1", "iou_2"):
                s = row[rule][m]
                cells.append("-" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}")
        t.add(row["title"], *cells, row["seconds"])
    b = r["all_pixels_iou_1"]
    t.add("all pixels on (the study's bug)", f"{b['mean']:.3f}", "-", "-", "-", None)
    t.note = (f"Mean ± std over {d['iou_images']} label-1 test images ({d['title']}); ground truth = the target "
              f"digit's box(es). Rules on |map|: {r['rules']['threshold']}; {r['rules']['top_k']}. The study "
              f"reported IoU_1 {REF_IOU1[0]} and {REF_IOU1[1]} on two SVHN examples with its 0..255-channel bug, "
              "which turns (nearly) every pixel on: compare with the 'all pixels on' row, not with the methods.")
    sk = "\n".join(f"- {k}: {v}" for k, v in r["skipped"].items()) or "none"
    figs = r["figures"]
    banner = (f"**Data: {d['title']}.** " + ("" if d["is_svhn"] else
              "No SVHN format 1 folder was found in the data directory, so this run used xaitf's synthetic "
              "house-number set (xaitf.data.synthetic_svhn). These are NOT SVHN results."))
    pre = [banner, f"Command: `{r['command']}` ({'quick' if r['quick'] else 'full'} run, seed {r['seed']}, "
           f"{r['seconds']:.0f} s). Data source: {d['source']}."]
    if r["quick"]:
        pre.append("QUICK run: small data set, 2 training epochs, few images and samples; a smoke test.")
    sections = [
        ("Model", f"{r['model']['note']}. Test accuracy (logit > 0 = target digit present): "
                  f"{r['test_accuracy']:.4f} on {d['test_images']} test crops."),
        ("IoU of heatmaps with the digit box", [t, C.image_link(figs["iou_summary"], folder)]),
        ("Examples", C.image_link(figs["iou_examples"], folder)),
        ("Methods not run", sk),
    ]
    if "training" in figs:
        sections.insert(1, ("Training curves", C.image_link(figs["training"], folder)))
    C.write_report(folder, f"Study 5: target-digit classifier and IoU of heatmaps ({d['title']})", sections, pre)
