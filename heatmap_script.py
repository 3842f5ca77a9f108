#!/usr/bin/env python
"""Study 1's command line: explain images with several methods and save figures.

Examples::

    python heatmap_script.py -hm grad lrp                  # center-pixel model, random image
    python heatmap_script.py -ip digit.png -mp models/mnist_cnn.h5 -hm grad ig lrp gradcam
    python heatmap_script.py -hm ig --set ig.steps=128 -cp 42 --save-arrays
    python heatmap_script.py -ip photos/ -mp r50.keras --preprocess resnet50 -hm grad ig occlusion
    python heatmap_script.py --list                        # methods and their figure titles

Each figure goes to ``<out>/<image stem>/heatmap_<YYYYmmdd-HHMMSS>.png`` (stem ``random`` without
``-ip``); with several images (files, folders or globs after ``-ip``) a summary grid (images x
methods) goes to ``<out>/heatmap_summary_<YYYYmmdd-HHMMSS>.png``; an existing file is never
replaced. Before any method runs, each method's cost is estimated (its model evaluations x a
measured time per evaluation, :mod:`xaitf.budget`) and printed; above ``--budget`` (default 10
minutes) the command stops with one line naming the setting to change. For models other than
study 1's center-pixel model, window methods (occlusion, PDA, tf-explain occlusion) default to a
window scaled to the input (:func:`xaitf.budget.scaled_defaults`); ``--set`` wins. Every user error
ends with one line on stderr and a non-zero exit code, before any heavy work where it can be
detected early, and nothing half-written.
"""
import argparse
import glob
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import xaitf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before tensorflow)
from xaitf import cli, registry  # noqa: E402
from xaitf import settings as S  # noqa: E402
from xaitf.errors import XaitfError  # noqa: E402

DEFAULT_MODEL = HERE / "models" / "center_pixel.h5"
CENTER_PIXEL_GLOBALS = ("image_size", "num_classes", "alpha", "relu_flag")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
INN_SLOW_LAYERS = 50   # iNNvestigate builds analyzers of larger models for minutes (ResNet50: ~2.5 min here)


def build_parser():
    p = cli.ArgumentParser(
        prog="heatmap_script.py",
        description="Explain one image with several attribution methods (study 1, SAM center-pixel "
                    "model) and save a figure: one column per method, optional centre 5x5 crop row.",
        epilog="Method keys (case-insensitive; aliases such as 'gradient' or 'integrated_gradients' "
               "accepted; 'lrp' = lrp.z lrp.epsilon lrp.alpha_1_beta_0 lrp.alpha_2_beta_1): "
               "see --list.")
    p.add_argument("-ip", "--img_path", nargs="+", default=None, metavar="IMAGE",
                   help="image files (png/jpg/...), folders of images or globs ('photos/*.jpg'): "
                        "one figure per image, plus a summary grid when there are several; "
                        "default: study 1's random image (RandomState(0).randint(256, (227,227))), "
                        "saved under the stem 'random'")
    p.add_argument("-mp", "--model_path", default=None,
                   help="Keras model file (.h5 or .keras, tf-keras or Keras 3) or tf-keras SavedModel "
                        "folder; default: the "
                        "center-pixel model (models/center_pixel.h5, or built in memory)")
    p.add_argument("-cl", "--clamp_label", type=int, default=None,
                   help="class (output neuron) to explain; default: the predicted class")
    p.add_argument("-op", "--out_path", default="./results/", help="output folder (default ./results/)")
    p.add_argument("-cp", "--centre_pixel", type=_pixel, default=None,
                   help="0..255: overwrite the centre pixel (all channels) before scaling")
    p.add_argument("-hm", "--heatmap_methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to run, in study 1's column order whatever the order given")
    p.add_argument("--list", action="store_true", help="list the available methods and exit")
    p.add_argument("--save-arrays", action="store_true",
                   help="also save the raw (not z-scored) maps as .npz beside the figure, one "
                        "array per method key")
    crop = p.add_mutually_exclusive_group()
    crop.add_argument("--crop", dest="crop", action="store_true", default=None,
                      help="add the centre 5x5 crop row (default for the center-pixel model)")
    crop.add_argument("--no-crop", dest="crop", action="store_false", help="no crop row")
    p.add_argument("--scale", type=float, default=255.0,
                   help="--preprocess scale divides pixel values by this (default 255)")
    cli.add_model_args(p)
    p.add_argument("--data-dir", default=None,
                   help="folder with the offline .npz files of mnist/cifar10 for --set "
                        "interventional.data=mnist (default $XAITF_DATA_DIR)")
    cli.add_image_args(p)
    cli.add_common_args(p)
    return p


def _pixel(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0..255, got {text!r}") from None
    if not 0 <= v <= 255:
        raise argparse.ArgumentTypeError(f"expected an integer 0..255, got {v}")
    return v


def list_methods():
    keys = registry.list_methods()
    width = max(len(k) for k in keys) if keys else 8
    print("available methods (key: figure title):")
    for k in keys:
        print(f"  {k:<{width}}  {registry.title(k)}")
    for g, members in registry.GROUPS.items():
        present = [m for m in members if m in keys]
        if present:
            print(f"  {g:<{width}}  group: {' '.join(present)}")
    aliases = [f"{a}->{k}" for a, k in registry.ALIASES.items() if k in keys]
    if aliases:
        print("aliases: " + ", ".join(aliases))


def load_or_build_model(path, overridden, safe_mode=True):
    from xaitf.keras_bridge import check_classifier
    from xaitf.model_files import load_model

    if path is not None:
        model = load_model(path, safe_mode=safe_mode)
        check_classifier(model, f"model file {path}")
        return model, str(path)
    if DEFAULT_MODEL.exists() and not overridden:
        return load_model(DEFAULT_MODEL, safe_mode=safe_mode), str(DEFAULT_MODEL.relative_to(HERE))
    from xaitf.zoo import build_center_pixel

    g = S.GLOBAL
    model = build_center_pixel(image_size=int(g["image_size"]), num_classes=int(g["num_classes"]),
                               alpha=float(g["alpha"]), relu=bool(g["relu_flag"]))
    why = "settings overridden" if overridden else "no models/center_pixel.h5"
    return model, f"built in memory ({why}; alpha={g['alpha']}, size={g['image_size']})"


def learning_images(src, model, shape, resize, args):
    """A labelled source's images (``--set interventional.data=SOURCE``) as model inputs: fitted as
    ``python -m xaitf run --data`` fits them (the explained images' filter, else bilinear; a zoo
    model's own rule at its size), divided by the source's scale (255 for integer pixels) or
    preprocessed as the explained images."""
    from types import SimpleNamespace

    from xaitf.data.sources import FILTERS
    from xaitf.runs.cli import fit_source

    flags = SimpleNamespace(scale=None if args.scale == 255.0 else args.scale,
                            resize=resize if resize in FILTERS else "bilinear",
                            preprocess=None if args.preprocess == "scale" else args.preprocess)
    return fit_source(flags, src, shape, args.model_path, model)[0]


def probabilities(model, x):
    """Class probabilities of one image and how they were read: the model's softmax or sigmoid
    output as it is, else the softmax (sigmoid for one unit) of its output."""
    from xaitf.keras_bridge import probabilities as probs, probability_head

    return probs(model, x)[0], probability_head(model)[1]


def image_paths(specs):
    """The image files named by ``-ip``: files, folders (their image files, sorted) and globs, in
    the order given, without repeats. CliError (one line) for a missing file, a folder or glob with
    no images."""
    kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    paths = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise cli.CliError(f"image path {p} is a folder with no image files ({kinds})")
        elif p.is_file():
            found = [p]
        elif any(ch in str(spec) for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(spec))
                           if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise cli.CliError(f"no image files match {spec!r} ({kinds})")
        else:
            raise cli.CliError(f"image file not found: {spec}")
        paths += [f for f in found if f not in paths]
    return paths


def unique_stems(paths):
    """One output folder name per image: its stem, with the suffix added where stems repeat."""
    stems = [p.stem for p in paths]
    out = []
    for p, s in zip(paths, stems):
        name = s if stems.count(s) == 1 else f"{s}_{p.suffix.lstrip('.').lower()}"
        while name in out:
            name += "_"
        out.append(name)
    return out


def summary_figure(images, maps, rows, header=None, dpi=100):
    """Images x methods grid: the input, then each method's map with its own colour bar.

    Args:
        images: list of (H,W) or (H,W,3) images in 0..1 (as displayed, before preprocessing).
        maps: ``{title: (N,H,W) maps}`` in column order.
        rows: one label per image (name, predicted and explained class).
    """
    import numpy as np
    from matplotlib.figure import Figure

    from xaitf import plotting

    titles = list(maps)
    n, m = len(images), len(titles) + 1
    fig = Figure(figsize=(1.2 + 2.3 * m, 0.6 + 2.15 * n), dpi=dpi)
    axes = fig.subplots(n, m, squeeze=False)
    for i, img in enumerate(images):
        ax = axes[i][0]
        shown, kw = plotting._input_display(img)
        ax.imshow(shown, **kw)
        ax.set_title("Input" if i == 0 else "", fontsize=9)
        ax.set_ylabel(rows[i], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for j, t in enumerate(titles, start=1):
            a = plotting.as_map(maps[t][i])
            z = plotting.should_zscore(t)
            a = plotting.zscore(a) if z else a
            lim = plotting.symmetric_limits(a)[1]
            ax = axes[i][j]
            im = ax.imshow(a, cmap=plotting.DIVERGING, vmin=-lim, vmax=lim)
            ax.set_title(f"{t}{' (z)' if z else ''}" if i == 0 else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=[-lim, 0, lim])
            cb.ax.tick_params(labelsize=6)
            cb.ax.set_yticklabels([plotting._fmt(-lim), "0", plotting._fmt(lim)])
    if header:
        fig.suptitle(header, fontsize=9, x=0.01, ha="left", color="0.25")
    fig.tight_layout(rect=(0, 0, 1, 0.97 if header else 1))
    return fig


def main(argv=None):
    try:
        sys.stdout.reconfigure(line_buffering=True)   # logs: printed lines keep their order with
    except (AttributeError, ValueError):              # the progress lines on stderr
        pass
    args = build_parser().parse_args(argv)
    if args.list:
        list_methods()
        return 0
    # ---- everything that can be checked without TensorFlow ----------------------------------
    applied = cli.apply_sets(args.sets, seed=args.seed, batch_size=args.batch_size)
    if not args.heatmap_methods:
        raise cli.CliError("no methods given: pass -hm METHOD [METHOD ...] "
                           f"(valid: {', '.join(registry.list_methods(include_groups=True))})")
    keys = registry.expand(args.heatmap_methods)
    paths = image_paths(args.img_path) if args.img_path else []
    if args.model_path is not None and Path(args.model_path).is_dir():
        from xaitf.safe_loading import model_path_problem   # no TensorFlow: a SavedModel is valid

        problem = model_path_problem(args.model_path)
        if problem:
            raise cli.CliError(problem)
    elif args.model_path is not None and not Path(args.model_path).is_file():
        raise cli.CliError(f"model file not found: {args.model_path} "
                           "(build the zoo with `python create_model.py`, or omit -mp for the "
                           "center-pixel model)")
    out_root = Path(args.out_path)
    if out_root.exists() and not out_root.is_dir():
        raise cli.CliError(f"output path {out_root} exists and is not a folder")
    args.scale = cli.check_flag("--scale", S.positive_finite, args.scale)   # inf would give zeros
    if args.preprocess not in (None, "scale") and args.scale != 255.0:
        raise cli.CliError(f"--scale applies to --preprocess scale only, not {args.preprocess}")
    if args.clamp_label is not None and args.clamp_label < 0:
        raise cli.CliError(f"-cl must be a class index >= 0, got {args.clamp_label}")

    from xaitf.data import images  # PIL and numpy only: a bad image file fails before TensorFlow

    if paths:
        raws = [images.load_image(p) for p in paths]
        stems, sources = unique_stems(paths), [str(p) for p in paths]
        sizes = sorted({f"{r.shape[1]}x{r.shape[0]}" for r in raws})
        if len(sizes) > 1 and args.resize is None:
            raise cli.CliError(f"the images have different sizes ({', '.join(sizes[:4])}"
                               f"{', ...' if len(sizes) > 4 else ''}): choose how each is fitted to "
                               f"the model with --resize {{{','.join(images.RESIZE_POLICIES)}}}")
    else:
        size = int(S.GLOBAL["image_size"])
        raws = [images.random_image(size, 0)]
        stems, sources = ["random"], [f"random {size}x{size} image (RandomState(0))"]

    # ---- model --------------------------------------------------------------------------------
    import numpy as np

    from xaitf import budget
    from xaitf.data.preprocess import describe, intensity_range, model_preprocessing, preprocess
    from xaitf.keras_bridge import input_shape, leaf_layers, logits_model, model_kind
    cli.quiet_tensorflow()

    overridden = any(sec == "global" and key in CENTER_PIXEL_GLOBALS for sec, key, _ in applied)
    cli.import_modules(args.imports)
    model, model_source = load_or_build_model(args.model_path, overridden,
                                              safe_mode=not args.unsafe_model)
    shape = cli.image_input_shape(input_shape(model))
    center_model = budget.is_center_pixel(model)
    resize = args.resize or ("pil" if center_model else "bilinear")
    own = None if center_model else model_preprocessing(model)
    prep = args.preprocess or ("none" if own else "scale")
    imgs = np.concatenate([images.fit_to_model(r, shape, scale=1.0, resize=resize) for r in raws])
    centre = (shape[0] // 2, shape[1] // 2)
    if args.centre_pixel is not None:
        imgs[:, centre[0], centre[1], :] = args.centre_pixel
    x = preprocess(imgs, prep, scale=args.scale)          # imgs: 0..255, what the figures show
    prep_note = describe(prep, args.scale) + (f"; the model has a {own}" if own else "")
    crop = center_model if args.crop is None else args.crop
    n = len(x)

    from xaitf.keras_bridge import probabilities as class_probs, probability_head

    probs_all = class_probs(model, x)
    prob_note = probability_head(model)[1]
    num_classes = probs_all.shape[-1]
    predicted = [int(np.argmax(p)) for p in probs_all]
    if args.clamp_label is not None and args.clamp_label >= num_classes:
        raise cli.CliError(f"-cl {args.clamp_label} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    targets = [p if args.clamp_label is None else int(args.clamp_label) for p in predicted]

    _, note = logits_model(model)
    sigmoid = "sigmoid" in prob_note     # binary / multi-label head: logit per unit, p = sigmoid
    explained = "pre-sigmoid logit" if sigmoid else "pre-softmax logits"
    print(f"model: {model_kind(model)} {getattr(model, 'name', '')!s} from {model_source}; input "
          f"{'x'.join(map(str, shape))}, {num_classes} classes")
    for i in range(n):
        print(f"image: {sources[i]} -> fitted to {shape[0]}x{shape[1]}x{shape[2]} (resize {resize}), "
              f"preprocessing {prep_note}"
              + (f", centre pixel set to {args.centre_pixel}" if args.centre_pixel is not None else ""))
    print(f"explained output: {explained} ({note})")
    for i in range(n):
        true = int(round(float(imgs[i, centre[0], centre[1], 0]))) if center_model else None
        print(f"{stems[i] + ': ' if n > 1 else ''}predicted {'unit' if sigmoid else 'class'} "
              f"{predicted[i]} (p={probs_all[i][predicted[i]]:.5g}, {prob_note}); explaining class "
              f"{targets[i]}" + (f"; true label (centre pixel) {true}" if true is not None else ""))

    # ---- build every explainer first: a method that cannot handle the model fails here -------
    set_keys = {(sec, key) for sec, key, _ in applied}
    value_range = intensity_range(prep, shape[-1], scale=args.scale)   # black and white pixels, preprocessed
    # a method that cannot handle this model (ModelError: a layer it cannot read, a ReLU-only rule
    # on hard-swish...) is reported and left out when other methods were asked for; a bad setting
    # stops the run before any work
    explainers, scaled, failed = [], [], {}
    for k in keys:
        try:
            extra = registry.input_range_arguments(k, value_range, set_keys)   # PDA's, LRP's z^B bounds
            if k == "interventional":     # --set interventional.data=SOURCE: fitted as run --data would
                from xaitf.runs.cli import interventional_data

                data, learned = interventional_data(lambda src: learning_images(src, model, shape, resize, args),
                                                    data_dir=args.data_dir)
                extra.update(data)
                if learned:
                    print(learned, flush=True)
            if not center_model:
                window = budget.unset_scaled_defaults(k, shape, set_keys)
                if window:
                    scaled.append(f"{k} " + " ".join(f"{p}={v}" for p, v in window.items()))
                extra.update(window)
            if k.startswith("inn.") and len(leaf_layers(model)) > INN_SLOW_LAYERS:
                print(f"building {k}: iNNvestigate builds its analyzer in graph mode, which takes minutes on "
                      f"a model of {len(leaf_layers(model))} layers ...", flush=True)
            t0 = time.perf_counter()
            explainers.append(registry.create_from_presets(k, model, **extra))
            if time.perf_counter() - t0 > 10:
                print(f"built {k} in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as e:
            if cli.leave_out(e, k, len(keys), args.debug):
                failed[k] = e
                continue
            if isinstance(e, XaitfError):
                raise type(e)(cli.error_text(e, k)) from e
            raise
    if not explainers:
        cli.fail(f"every method failed ({', '.join(failed)}; errors above); nothing was written",
                 cli.failure_code(failed.values()))
    print("settings used:")
    for e in explainers:
        extra = {"batch_size": e.batch_size}
        if getattr(e, "stochastic", False):
            extra["seed"] = e.seed
        if getattr(e, "output_note", note) != note:
            extra["explains"] = e.output_note
        cli.print_settings(f"{e.title} ({e.name})", e.params, **extra)
    for batch_note in sorted({e.batch_note for e in explainers if getattr(e, "batch_note", None)}):
        print(f"  {batch_note}")
    if scaled:
        print(f"  window defaults scaled to the {shape[0]}x{shape[1]} input (window = stride = "
              f"max(1, round(min(H,W)/{budget.WINDOWS_PER_SIDE})); --set wins): {'; '.join(scaled)}")

    # ---- cost estimate: stop before any work when above --budget -------------------------------
    costs = {}
    for e in explainers:
        try:
            costs[e.name] = budget.cost(e.name, e)
        except (KeyError, AttributeError, TypeError):
            costs[e.name] = None
    timing = budget.measure(model, backward=any(c and c[1] for c in costs.values()))
    budget.measure_segmentation(explainers, x[0], timing)
    per = f"{timing['forward'] * 1e3:.0f} ms per forward"
    if "backward" in timing:
        per += f", {timing['backward'] * 1e3:.0f} ms per forward+backward"
    print(f"estimate ({n} image{'s' if n > 1 else ''}; measured {per}; budget "
          f"{budget.duration(args.budget)[1:] if args.budget else 'none'}):")
    rows, estimates = [], {}
    for e in explainers:
        if costs[e.name] is None:
            print(f"  {e.name}: no estimate (not in xaitf.budget.COSTS)")
            continue
        sec, evals, cnote = budget.seconds(e.name, e, n, timing)
        rows.append((e.name, e, sec))
        estimates[e.name] = sec
        seg = timing["segment"].get(e.name)
        cnote += f"; segmentation {seg:.2g} s per image" if seg is not None else ""
        print(f"  {e.name}: {budget.duration(sec)} ({evals} evaluation{'' if evals == 1 else 's'} per image: {cnote})")
    total = budget.check(rows, args.budget, n, timing)
    print(f"  total: {budget.duration(total)}")

    # ---- explain -------------------------------------------------------------------------------
    # a method that fails (or Ctrl-C) does not cost the others' maps: the figure shows the
    # finished methods, and the exit code says that something failed
    maps, raw_maps, interrupted = {}, {}, False
    t_all = time.perf_counter()
    for e in explainers:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                m = np.asarray(e(x, np.array(targets)))
        except KeyboardInterrupt:
            interrupted = True
            print(f"  {e.name}: interrupted", file=sys.stderr, flush=True)
            break
        except Exception as err:     # noqa: BLE001 - reported on one line, the other methods go on
            if args.debug or len(explainers) == 1:
                if isinstance(err, XaitfError):
                    raise type(err)(cli.error_text(err, e.name)) from err
                raise
            failed[e.name] = err
            print(f"error: {cli.error_text(err, e.name)}", file=sys.stderr, flush=True)
            continue
        said = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
        for text in said:            # the method's own reason, once, instead of the generic one below
            print(f"  warning: {text}", file=sys.stderr)
        if not np.all(np.isfinite(m)):
            print(f"  warning: {e.name} map has non-finite values", file=sys.stderr)
        elif not np.any(m) and not said:
            print(f"  warning: {e.name} map is all 0: the explained output gives it nothing to attribute "
                  "(untrained or saturated model, an output that does not change under the method's "
                  "perturbations, or relevance absorbed by a stabiliser such as LRP's epsilon)", file=sys.stderr)
        maps[e.title] = m
        raw_maps[e.name] = m.astype(np.float32)
        est = f" (estimate {budget.duration(estimates[e.name])})" if e.name in estimates else ""
        print(f"  {e.name}: {time.perf_counter() - t0:.2f} s{est}, map {m.shape[1:]}, range "
              f"[{np.nanmin(m):.4g}, {np.nanmax(m):.4g}]", flush=True)
    print(f"  all methods: {time.perf_counter() - t_all:.1f} s (estimate {budget.duration(total)})")
    if not maps:
        if interrupted:
            raise KeyboardInterrupt
        cli.fail(f"every method failed ({', '.join(failed)}; errors above); nothing was written",
                 cli.failure_code(failed.values()))
    explainers = [e for e in explainers if e.name in raw_maps]

    # ---- figures (atomic, never overwriting) ---------------------------------------------------
    from xaitf import plotting

    other = [e.title for e in explainers if e.output_spec.kind == "probabilities"]
    header = (f"{getattr(model, 'name', 'model')} ({model_kind(model)}, {model_source}) | "
              f"preprocessing: {prep_note} | explained: {explained} ({note})"
              + (f"; probabilities for {', '.join(other)}" if other else ""))
    shown = [im[..., 0] / 255.0 if shape[-1] == 1 else im / 255.0 for im in imgs]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(n):
        probs = probs_all[i]
        top5 = [(int(c), float(probs[c])) for c in np.argsort(-probs, kind="stable")[:5]]
        info = {"predicted": predicted[i], "target": targets[i],
                "probability": float(probs[targets[i]]), "top5": top5}
        if center_model:
            info["true"] = int(round(float(imgs[i, centre[0], centre[1], 0])))
        fig = plotting.heatmap_figure(shown[i], {t: m[i] for t, m in maps.items()}, info, crop=crop,
                                      header=header.replace(" | explained: ",
                                                                     f" | explained: class {targets[i]}, "))
        path = plotting.save_figure(fig, out_root / stems[i] / f"heatmap_{stamp}.png")
        print(f"figure: {path}")
        if args.save_arrays:
            arrays = {k: v[i] for k, v in raw_maps.items()}
            npz = cli.atomic_write(path.with_suffix(".npz"), lambda tmp: np.savez(tmp, **arrays),
                                   overwrite=False)
            print(f"arrays: {npz} ({', '.join(raw_maps)})")
    if n > 1:
        labels = [f"{stems[i]}\npred {predicted[i]}, expl. {targets[i]}\np={probs_all[i][targets[i]]:.3g}"
                  for i in range(n)]
        fig = summary_figure(shown, maps, labels, header=header)
        path = plotting.save_figure(fig, out_root / f"heatmap_summary_{stamp}.png")
        print(f"summary: {path}")
    if interrupted:
        cli.fail(f"interrupted; the figure holds the {len(maps)} method(s) that finished", 130)
    if failed:
        cli.fail(f"{len(failed)} method(s) failed ({', '.join(failed)}; errors above); the figure shows the "
                 f"{len(maps)} that finished", cli.failure_code(failed.values()))
    return 0


if __name__ == "__main__":
    cli.run(main)
