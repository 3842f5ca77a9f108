#!/usr/bin/env python
"""Study 1's command line: explain one image with several methods and save one figure.

Examples::

    python heatmap_script.py -hm grad lrp                  # center-pixel model, random image
    python heatmap_script.py -ip digit.png -mp models/mnist_cnn.h5 -hm grad ig lrp gradcam
    python heatmap_script.py -hm ig --set ig.steps=128 -cp 42 --save-arrays
    python heatmap_script.py --list                        # methods and their figure titles

The figure goes to ``<out>/<image stem>/heatmap_<YYYYmmdd-HHMMSS>.png`` (stem ``random`` without
``-ip``); an existing file is never replaced. Every user error ends with one line on stderr and
exit code 1, before any heavy work where it can be detected early, and nothing half-written.
"""
import argparse
import sys
import time
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


def build_parser():
    p = cli.ArgumentParser(
        prog="heatmap_script.py",
        description="Explain one image with several attribution methods (study 1, SAM center-pixel "
                    "model) and save a figure: one column per method, optional centre 5x5 crop row.",
        epilog="Method keys (case-insensitive; aliases such as 'gradient' or 'integrated_gradients' "
               "accepted; 'lrp' = lrp.z lrp.epsilon lrp.alpha_1_beta_0 lrp.alpha_2_beta_1): "
               "see --list.")
    p.add_argument("-ip", "--img_path", default=None,
                   help="image file (png/jpg/...); default: study 1's random image "
                        "(RandomState(0).randint(256, (227,227))), saved under the stem 'random'")
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
                   help="pixel values are divided by this before the model sees them (default 255)")
    p.add_argument("--unsafe-model", action="store_true",
                   help="allow the model file to run Python code stored in it (Lambda layers) "
                        "while it loads; only for files you trust (default: such files are refused)")
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


def is_center_pixel(model):
    """The study-1 model: named so, or one gray odd square input, 256 classes, Flatten-Dense-Softmax."""
    if str(getattr(model, "name", "")).startswith("center_pixel"):
        return True
    from xaitf.keras_bridge import input_shape, layer_type, output_units

    shape = input_shape(model)
    kinds = {layer_type(l) for l in model.layers}
    return (len(shape) == 3 and shape[-1] == 1 and shape[0] == shape[1] and shape[0] % 2 == 1
            and output_units(model) == 256 and kinds <= {"InputLayer", "Flatten", "Dense", "Softmax",
                                                         "Activation", "ReLU"})


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


def probabilities(model, x):
    """Class probabilities of one image and how they were read: the model's softmax or sigmoid
    output as it is, else the softmax (sigmoid for one unit) of its output."""
    from xaitf.keras_bridge import probabilities as probs, probability_head

    return probs(model, x)[0], probability_head(model)[1]


def main(argv=None):
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
    if args.img_path is not None and Path(args.img_path).is_dir():
        raise cli.CliError(f"image path {args.img_path} is a folder, expected an image file")
    if args.img_path is not None and not Path(args.img_path).is_file():
        raise cli.CliError(f"image file not found: {args.img_path}")
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
    if args.clamp_label is not None and args.clamp_label < 0:
        raise cli.CliError(f"-cl must be a class index >= 0, got {args.clamp_label}")

    from xaitf.data import images  # PIL and numpy only: a bad image file fails before TensorFlow

    if args.img_path is not None:
        raw = images.load_image(args.img_path)
        stem, source = Path(args.img_path).stem, args.img_path
    else:
        size = int(S.GLOBAL["image_size"])
        raw = images.random_image(size, 0)
        stem, source = "random", f"random {size}x{size} image (RandomState(0))"

    # ---- model --------------------------------------------------------------------------------
    import numpy as np

    from xaitf.keras_bridge import input_shape, logits_model, model_kind
    cli.quiet_tensorflow()

    overridden = any(sec == "global" and key in CENTER_PIXEL_GLOBALS for sec, key, _ in applied)
    model, model_source = load_or_build_model(args.model_path, overridden,
                                              safe_mode=not args.unsafe_model)
    shape = input_shape(model)
    if len(shape) != 3 or None in shape[:2]:
        raise cli.CliError(f"expected an image classifier with input (H,W,C), got input shape {shape}")
    img = np.array(images.fit_to_model(raw, shape, scale=1.0)[0], dtype=np.float32)  # 0..255, (H,W,C)
    centre = (shape[0] // 2, shape[1] // 2)
    if args.centre_pixel is not None:
        img[centre[0], centre[1], :] = args.centre_pixel
    x = (img / np.float32(args.scale))[None]
    center_model = is_center_pixel(model)
    crop = center_model if args.crop is None else args.crop

    probs, prob_note = probabilities(model, x)
    num_classes = probs.shape[-1]
    predicted = int(np.argmax(probs))
    target = predicted if args.clamp_label is None else int(args.clamp_label)
    if target >= num_classes:
        raise cli.CliError(f"-cl {target} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    top5 = [(int(c), float(probs[c])) for c in np.argsort(-probs, kind="stable")[:5]]
    true = int(round(float(img[centre[0], centre[1], 0]))) if center_model else None

    _, note = logits_model(model)
    sigmoid = "sigmoid" in prob_note     # binary / multi-label head: logit per unit, p = sigmoid
    explained = "pre-sigmoid logit" if sigmoid else "pre-softmax logits"
    print(f"model: {model_kind(model)} {getattr(model, 'name', '')!s} from {model_source}; input "
          f"{'x'.join(map(str, shape))}, {num_classes} classes")
    print(f"image: {source} -> fitted to {shape[0]}x{shape[1]}x{shape[2]}, pixels / {args.scale:g}"
          + (f", centre pixel set to {args.centre_pixel}" if args.centre_pixel is not None else ""))
    print(f"explained output: {explained} ({note})")
    print(f"predicted {'unit' if sigmoid else 'class'} {predicted} (p={probs[predicted]:.5g}, {prob_note}); explaining class "
          f"{target}" + (f"; true label (centre pixel) {true}" if true is not None else ""))

    # ---- build every explainer first: a method that cannot handle the model fails here -------
    explainers = []
    for k in keys:
        try:
            explainers.append(registry.create_from_presets(k, model))
        except Exception as e:
            if isinstance(e, XaitfError):
                raise type(e)(f"{k}: {cli.one_line(e)}") from e
            raise
    print("settings used:")
    for e in explainers:
        extra = {"batch_size": e.batch_size}
        if getattr(e, "stochastic", False):
            extra["seed"] = e.seed
        if getattr(e, "output_note", note) != note:
            extra["explains"] = e.output_note
        cli.print_settings(f"{e.title} ({e.name})", e.params, **extra)

    # ---- explain -------------------------------------------------------------------------------
    maps, raw_maps = {}, {}
    for e in explainers:
        t0 = time.perf_counter()
        m = np.asarray(e(x, np.array([target])))[0]
        if not np.all(np.isfinite(m)):
            print(f"  warning: {e.name} map has non-finite values", file=sys.stderr)
        maps[e.title] = m
        raw_maps[e.name] = m.astype(np.float32)
        print(f"  {e.name}: {time.perf_counter() - t0:.2f} s, map {m.shape}, range "
              f"[{np.nanmin(m):.4g}, {np.nanmax(m):.4g}]")

    # ---- figure (atomic, never overwriting) ----------------------------------------------------
    from xaitf import plotting

    info = {"predicted": predicted, "target": target, "probability": float(probs[target]), "top5": top5}
    if center_model:
        info["true"] = true
    other = [e.title for e in explainers if e.output_spec.kind == "probabilities"]
    header = (f"{getattr(model, 'name', 'model')} ({model_kind(model)}, {model_source}) | explained: "
              f"class {target}, {explained} ({note})"
              + (f"; probabilities for {', '.join(other)}" if other else ""))
    fig = plotting.heatmap_figure(img[..., 0] / args.scale if shape[-1] == 1 else img / args.scale,
                                  maps, info, crop=crop, header=header)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = plotting.save_figure(fig, out_root / stem / f"heatmap_{stamp}.png")
    print(f"figure: {path}")
    if args.save_arrays:
        npz = cli.atomic_write(path.with_suffix(".npz"), lambda tmp: np.savez(tmp, **raw_maps),
                               overwrite=False)
        print(f"arrays: {npz} ({', '.join(raw_maps)})")
    return 0


if __name__ == "__main__":
    cli.run(main)
