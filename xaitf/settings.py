"""Presets: the values the command lines and studies start from (global settings, one dict per
method, the studies' sizes).

Plain Python, so it is easy to read and tune. Values follow study 1 (the center-pixel model, see
docs/reproduction.md) unless a comment says otherwise. The methods themselves never read this
module: each declares its parameters and defaults in its ``__init__`` signature (equal to these
presets today), and ``xaitf.create_explainer("ig", model, steps=128)`` uses those. The command
lines and studies turn the presets into keyword arguments when they build an explainer
(:func:`xaitf.registry.create_from_presets`), so a value can be changed for a run:

* on the command line: ``heatmap_script.py --set ig.steps=128 --set global.seed=1``;
* or by editing this file (the package is installed editable).

A method's dict lists parameters its signature accepts; anything else is rejected with the valid names.
``--set`` refuses, with one line, an unknown section or key (sections of methods without settings
take none), a GLOBAL value of the wrong type or range (the validators below, shared with the flags
``--seed``/``--batch-size`` and the Python API) and a method value of the wrong kind for its
default (see :func:`check_value`); the methods check their own ranges when they are built.
"""
import ast
import copy
import math

# ----------------------------------------------------------------------------------------------
GLOBAL = {
    "seed": 0,              # numpy / TensorFlow seed for every stochastic method
    "batch_size": 256,      # model evaluations per chunk (inputs x steps/samples/perturbations)
    "channel_reduce": "sum",  # per-pixel map from per-channel attributions: sum|mean|abs_sum|max_abs|none
    "progress": True,       # tqdm bars for long work
    "memory_budget_mb": 4096,  # chunks hold at most this many MB of activations (caps batch_size)
    "image_size": 227,      # study 1: center-pixel model input size
    "num_classes": 256,     # study 1
    "alpha": 10,            # study 1: center-pixel model sharpness
    "relu_flag": True,      # study 1: ReLU after the Dense layer of the center-pixel model
    "zscore": True,         # study 1: z-score every map but Input, LIME and SHAP in figures
}

# Gradient family (native TensorFlow) ----------------------------------------------------------
GRAD = {}                                   # saliency: d logit_c / d x
INPGRAD = {}                                # input x gradient
IG = {                                      # integrated gradients (Sundararajan et al. 2017)
    "steps": 64,                            # gradient evaluations on the path
    "baseline": 0.0,                        # scalar, image (H,W,C) or one image per input
    "rule": "midpoint",                     # quadrature: midpoint | trapezoid | left | right
}
SG = {                                      # SmoothGrad (Smilkov et al. 2017)
    "samples": 16,                          # study 1 augment_by_n
    "noise_scale": 0.1,                     # std as a fraction of the input range (max - min)
    "postprocess": "square",                # none (SmoothGrad) | square (SquareGrad) | variance (VarGrad)
}
GB = {}                                     # guided backprop (Springenberg et al. 2015)
DECONVNET = {}                              # DeconvNet (Zeiler & Fergus 2014)
DEEPLIFT = {"baseline": 0.0}                # DeepLIFT rescale rule (Shrikumar et al. 2017)
DEEPLIFTSHAP = {                            # DeepLiftShap (Lundberg & Lee 2017): DeepLift averaged over
    "background": 0.0,                      # baselines: number, per channel, (H,W,C) or a set (K,H,W,C)
    "n_background": None,                   # None: all of them | K drawn (seeded) from the set
}
GRADCAM = {"layer": None,                   # Grad-CAM (Selvaraju et al. 2017); None = last conv (else tokens)
           "grid": None}                    # (h, w) of a token layer's patch grid; None = square
GRADCAMPP = {"layer": None, "grid": None}   # Grad-CAM++ (Chattopadhyay et al. 2018)

# Propagation (iNNvestigate backend) -----------------------------------------------------------
LRP = {"epsilon": 1.0}                      # lrp.epsilon; alpha/beta fixed by the variant name
# how native LRP reads the model, for every lrp.* / deep_taylor* method: custom layers declared affine
# maps of their input (names or class names; --set lrp_graph.affine_layers=Patches,PatchEncoder)
LRP_GRAPH = {"affine_layers": ()}
DEEP_TAYLOR = {"low": 0.0, "high": 1.0}     # bounds for deep_taylor.bounded

# Perturbation ---------------------------------------------------------------------------------
# Window presets are study 1's (window 1 on its center-pixel model). heatmap_script.py gives other
# models input-scaled windows (window = stride = max(1, round(min(H,W)/14)), PDA values 16, Shapley
# over that grid with 25 permutations; see xaitf.budget.scaled_defaults) unless --set names the key.
OCCLUSION = {                               # occlusion (Zeiler & Fergus 2014)
    "window": 1,                            # window side in pixels (int or (h, w)); covers all channels
    "stride": 1,                            # step between windows; the last window is flush with the border
    "fill": 0.0,                            # value written into the window: number, one per channel,
                                            # an (H,W,C) image or one image per input (N,H,W,C)
    "output": "probabilities",              # probabilities (study 1) | logits
    "shortcut": True,                       # exact first-layer shortcut when the model allows it
    "segments": None,                       # None: windows | segmenter name ("slic"), {"name": ..., kw},
                                            # or an int label map (N,H,W)/(H,W): occlude one segment at a time
}
PDA = {                                     # prediction difference analysis (Zintgraf et al. 2017)
    "window": 1,                            # window side (int or (h, w)); covers all channels
    "stride": 1,                            # step between windows (overlaps averaged per pixel)
    "sampling": "marginal",                 # marginal | conditional (Gaussian given the patch; needs data)
    "values": 256,                          # marginal without data: intensities v/(values-1), v=0..values-1
    "value_range": (0.0, 1.0),              # (low, high) of those intensities in model input space
    "train_samples": 256000,                # N of the Laplace correction (pN + 1)/(N + K)
    "num_classes": None,                    # K of the Laplace correction; None = model outputs
    "patch": 2,                             # conditional: surrounding patch width on each side
    "data": None,                           # (M,H,W,C) images to sample from (marginal) / fit (conditional)
    "samples": 10,                          # draws per window when sampling from data
    "ridge": 1e-4,                          # conditional: added to the covariance diagonals
    "windows_per_batch": 11,                # study 1: 11 features per batch (used when no batch_size)
    "shortcut": True,                       # exact first-layer shortcut when the model allows it
}
SHAPLEY = {                                 # permutation sampling (Castro et al. 2009)
    "samples": 100,                         # permutations (study 1 settings: 100; its script used 2)
    "baseline": 0.0,                        # value of a removed feature: number, per channel, (H,W,C), (N,H,W,C)
    "features": "pixels",                   # pixels (all channels together) | channels (pixels x channels)
    "shortcut": "dense",                    # first-layer shortcut: True | False | dense (only after Flatten->Dense)
    "segments": None,                       # None: pixels/channels | segmenter name ("slic"), {"name": ..., kw},
                                            # or an int label map (N,H,W)/(H,W): features = segments
}
FEATURE_ABLATION = {                        # Captum FeatureAblation = occlusion with 1x1 windows / segments
    "baseline": 0.0,                        # value of an ablated feature: number, per channel, (H,W,C), (N,H,W,C)
    "segments": None,                       # None: pixels | segmenter name, {"name": ..., kw} or an int label map
    "output": "logits",                     # logits | probabilities
    "shortcut": True,                       # exact first-layer / cropped-window shortcut (pixels)
}
FEATURE_PERMUTATION = {                     # permutation importance (Fisher et al. 2019), across the batch
    "segments": None,                       # None: pixels | segmenter name, {"name": ..., kw} or an int label map
    "output": "logits",                     # logits | probabilities
    "shortcut": True,                       # exact first-layer / cropped-window shortcut (pixels)
}
MP = {"tv_beta": 3, "lr": 0.1, "max_iterations": 1000, "l1_coeff": 0.01, "tv_coeff": 0.2,
      "category_coeff": 1.0, "blur_size": 11, "mask_scale": 1,
      "normalize": "study1"}              # map 1-(m-min)/max as study 1 | minmax | none
RISE = {"masks": 4000, "cell": 7, "p": 0.5}

# Surrogates -----------------------------------------------------------------------------------
LIME = {                                    # lime_image (Ribeiro et al. 2016)
    "num_samples": 1000, "hide_color": 0.0, "kernel_width": 0.25,
    "segmenter": "quickshift",              # quickshift | slic | grid (see xaitf/segmentation.py)
    # quickshift: None = by image size (study 1's 4 / 200 / 0.2 at >= 128 px; 1 / 5 / 0.2 below 64 px)
    "kernel_size": None, "max_dist": None, "ratio": None,
    "n_segments": 50, "compactness": 30, "sigma": 3,   # slic
    "cell": 4,                              # grid cell side in pixels
    "output": "probabilities",              # study 1 explains the softmax probability | logits
    "positive_only": True, "num_features": 1, "mask_output": True,  # study 1's top-1 positive mask
}
SHAP = {                                    # Kernel SHAP over superpixels (shap.KernelExplainer)
    "nsamples": 1000, "background": 0.0,
    "segmenter": "slic", "n_segments": 50, "compactness": 30, "sigma": 3,
    "cell": 4, "kernel_size": None, "max_dist": None, "ratio": None,
    "output": "probabilities",              # study 1 | logits
    "l1_reg": False,                        # shap's default "num_features(10)" keeps 10 segments only
}
SHAP_GRADIENT = {"nsamples": 200, "background": 0.0, "local_smoothing": 0.0, "output": "logits"}
SHAP_DEEP = {"background": 0.0, "output": "logits", "check_additivity": True}
SHAP_PARTITION = {"max_evals": 500, "masker": "blur(8,8)", "output": "logits"}

# Interventional (study 2, config.yaml keys) ---------------------------------------------------
INTERVENTIONAL = {
    "target_idx": 3, "n_samples": 100, "soft_interventions": True, "graph_stab": True,
    "layer_name": None,          # node maps' Conv2D (fed by a Conv2D); None: the last one (LeNet: conv2)
    "layer_name_soft": "fc3", "beta": 0.0, "z": 1.65,
    # study 2's config.yaml switches (read by the study command, which refuses other values with
    # one line). config.yaml ships learn_explainer/gen_attr/vis_attr/eval_attr/baseline_attr False
    # because it loads a saved graph and runs only the stability; here the graph is always learned
    # and every part runs: graph_stab and eval_attr can switch the stability / the metrics off, the
    # others must keep these values (save_attr: the maps are not pickled)
    "dataset_name": "MNIST", "model_name": "LeNet", "learn_explainer": True,
    "gen_attr": True, "save_attr": False, "vis_attr": True, "eval_attr": True,
    "baseline_attr": True,
    "soft_width": 0.01,          # learning: soft u ~ U(beta, beta + soft_width) per weight
    "fallback": -0.001,          # keep units with mean(Y_w / Y_obs - 1) < this if none passes the z-test
    "repeats": 10,               # graph stability: repeats per beta
    "beta_max": 0.5, "beta_step": 0.01,   # graph stability: beta in 0..beta_max, u ~ U(0, beta)
    "stability_protocol": "original",   # original: every repeat a fresh random subset of the eligible
                                 # images and one scalar u per layer (study 2's code) | fixed: the
                                 # graph's first n_samples images, one u per weight (100% at beta 0)
    "intervention_batch": 4096,  # (unit, sample) pairs per batched forward chunk
    # command lines (heatmap_script, python -m xaitf run / evaluate): where the graphs come from.
    # data: a labelled image source to learn each explained class's graph from (mnist, cifar10, an
    # .npz with x/y, a folder of class sub-folders), fitted and preprocessed as the explained images;
    # None: run and evaluate use their own --data images and labels. graph: a graph JSON file
    # (python -m xaitf.studies interventional writes graph_class<k>.json). The study uses neither.
    "data": None, "graph": None,
}

# tf-explain backend (its own implementations, wrapped as they are) ----------------------------
TFX_GRADCAM = {"layer": None,               # conv layer name; None = last Conv2D
               "use_guided_grads": True,    # tf-explain default: grads masked by A > 0 and grad > 0
               "output": "logits"}          # logits | probabilities (tf-explain uses the model as given)
TFX_OCCLUSION = {"patch_size": 4,            # patch side = stride; fill is tf-explain's fixed 127.5
                 "output": "probabilities"}  # tf-explain scores 1 - confidence
TFX_SMOOTHGRAD = {"samples": 16, "noise": 1.0,  # noise: absolute std of the Gaussian noise
                  "output": "probabilities"}   # its cross-entropy loss assumes softmax outputs
TFX_IG = {"steps": 64, "output": "logits"}  # path-averaged gradient, no (x - baseline) factor

# Studies 3-5 (python -m xaitf.studies NAME): the full run's sizes; --quick shrinks them (see each
# study's QUICK), --set NAME.key=value overrides either ------------------------------------------
XAINN_STUDY = {
    "train_limit": None,     # train on the first N training images when no models/<name>.h5 (None: all)
    "epochs": None,          # None: the zoo's quick CPU recipe (5 epochs)
    "test_limit": None,      # test images used (None: all in the data directory)
    "shap_images": 10,       # one test image per class
    "ranked": 3,             # study: ranked_outputs=3
    "background": 54,        # study: 54 background images
    "lime_images": 10, "lime_samples": 500, "lime_features": 10,   # study: top-10 positive segments
}
MNIST_CIFAR_STUDY = {
    "per_class": 3,          # figure images per class (study: 3 random test images per class)
    "degradation_images": 1000,        # MNIST: first N test images (study: 1,000)
    "cifar_degradation_images": 1000,  # CIFAR-10: first N test images (study: 1,000)
    "keep": 0.2, "fill": 0.0,          # degradation: keep the top 20% pixels, the rest = fill
    "fill_alt": "salt_pepper",         # a second degradation column with this fill (None: none); the
                                       # study's README: removed pixels 0, or 255, or salt and pepper
    "degradation_mode": "both",        # corrected (xaitf's pipeline) | original (the study's three MNIST
                                       # notebooks replayed: Input map + divmod indexing, lime's default
                                       # quickshift, Kernel SHAP fill 255) | both
    "lime_samples": 1000,    # lime's explain_instance default
    "shap_nsamples": 1000,   # study: Kernel SHAP nsamples 1000
    "surrogates": "native",  # LIME / Kernel SHAP: native batched programs | lib (the lime / shap libraries)
    "train_limit": None, "epochs": None,   # training when no models/<name>.h5 (None: all / recipe)
    "bayes_test_images": None,  # refusal on the first N test images (None: all)
    "bayes_samples": 100,    # sampled networks for the refusal rule (study: 100)
    "noise_images": 100,     # uniform-noise images (study: 100)
    "notmnist": "auto",      # letters for the refusal rule: auto (<data dir>/notmnist.npz, else synthetic) |
                             # synthetic (xaitf.data.synthetic_notmnist) | real (the file, or an error)
    "notmnist_images": 400,  # letters A-J (synthetic: balanced; real: the file's first N; study: 399)
    "saliency_images": 100, "saliency_samples": 100,   # posterior saliency: images, sampled networks
}
SANITY_STUDY = {              # python -m xaitf.studies sanity (Adebayo et al. 2018)
    "images": 32,            # test images explained per model (the trained model's predicted class)
    "methods": None,         # None: every registered native method; or a list of registry keys
    "similarities": ("spearman", "ssim", "hog"),
    "randomisation": "normal",   # normal (re-initialisation, N(0, std of the kernel)) | permute | shuffle
    "keep_threshold": 0.5,   # "keeps its map": mean Spearman >= this with every kernel random
    "train_limit": None, "epochs": None, "eval_limit": None,   # training when no models/<name>.h5
}
SVHN_IOU_STUDY = {
    "data": "auto",          # auto: SVHN format 1 if the data directory has it, else synthetic | svhn | synthetic
    "target_digit": 1,       # study: label 1 = digit 1 present
    "size": 64,              # crop side (training and explanations)
    "train_images": 4000, "test_images": 1000,   # synthetic set sizes (SVHN: all, balanced)
    "svhn_limit": None,      # read only the first N digitStruct entries of SVHN (None: all)
    "train_limit": None, "epochs": None,   # when no model file: None = all / the zoo recipe
    "iou_images": 200,       # label-1 test images whose maps are scored
    "threshold": 0.8,        # IoU rule "threshold": min-max normalised |map| >= this (the study's 0.8)
    "headline_rule": "threshold",   # the rule the report's text states results for: threshold | top_k
    "figure_images": 6,
    "segments": {"name": "slic", "n_segments": 50},   # superpixels of Shapley sampling (and of
                             # FeatureAblation / FeaturePermutation when pixel_ablation is False)
    "pixel_ablation": False,  # True: FeatureAblation / FeaturePermutation over single pixels (Captum's default,
                             # 4,097 model calls per image each, ~2 h for 200 images on 2 cores); False: superpixels)
    "shapley_samples": 25,   # Shapley value sampling: permutations of the superpixels (study: n_samples 25)
    "background_images": 10,  # DeepLiftShap's second row: training crops drawn (seeded) from the first 100
}

# keys of a method's section that only its study reads (python -m xaitf.studies interventional):
# not parameters of the method, never passed to it
STUDY_SWITCHES = {
    "interventional": ("target_idx", "graph_stab", "layer_name_soft", "repeats", "beta_max",
                       "beta_step", "dataset_name", "model_name", "learn_explainer", "gen_attr",
                       "save_attr", "vis_attr", "eval_attr", "baseline_attr", "stability_protocol"),
}

SECTIONS = {
    "global": GLOBAL, "grad": GRAD, "inpgrad": INPGRAD, "ig": IG, "sg": SG, "gb": GB,
    "deconvnet": DECONVNET, "deeplift": DEEPLIFT, "deepliftshap": DEEPLIFTSHAP,
    "gradcam": GRADCAM, "gradcampp": GRADCAMPP,
    "lrp": LRP, "lrp_graph": LRP_GRAPH, "deep_taylor": DEEP_TAYLOR, "occlusion": OCCLUSION, "pda": PDA,
    "shapley": SHAPLEY, "feature_ablation": FEATURE_ABLATION, "feature_permutation": FEATURE_PERMUTATION,
    "mp": MP, "rise": RISE, "lime": LIME, "shap": SHAP,
    "shap_gradient": SHAP_GRADIENT, "shap_deep": SHAP_DEEP, "shap_partition": SHAP_PARTITION,
    "interventional": INTERVENTIONAL, "tfx_gradcam": TFX_GRADCAM,
    "tfx_occlusion": TFX_OCCLUSION, "tfx_smoothgrad": TFX_SMOOTHGRAD, "tfx_ig": TFX_IG,
    "xainn": XAINN_STUDY, "mnist_cifar": MNIST_CIFAR_STUDY, "svhn_iou": SVHN_IOU_STUDY,
    "sanity": SANITY_STUDY,
}


CHANNEL_REDUCE = ("sum", "mean", "abs_sum", "max_abs", "none")   # GLOBAL["channel_reduce"] choices
SEED_MAX = 2 ** 32 - 1          # numpy's RandomState takes seeds 0..2**32-1


# -- validators --------------------------------------------------------------------------------
# Each takes a value (a number, or the text of a flag) and returns it normalised, or raises
# ValueError("expected ..., got ...") (:class:`xaitf.params.Expected`, worded like the method parameters'
# "<owner> needs <name> to be ..., got ..."). The command-line flags (xaitf.cli), ``--set global.*`` and
# the Python API (Explainer keyword arguments) use the same functions, so one mistake gets the same
# words wherever it is made.
from .params import Expected, _integral, _real  # noqa: E402  (one parser of numbers: xaitf.params)


def _shown(value, parsed):
    """How a refused value is quoted: the number it parses to (``0`` for the flag text "0", as for
    ``--set ...=0``), else its repr (``'abc'``)."""
    return repr(parsed) if parsed is not None and isinstance(value, str) else repr(value)


def positive_int(value):
    """An integer >= 1 (``--batch-size``, ``global.batch_size``, ``batch_size=``)."""
    v = _integral(value)
    if v is None or v < 1:
        raise Expected("an integer >= 1", _shown(value, v))
    return v


def seed_int(value):
    """A seed: an integer 0..2**32-1 (``--seed``, ``global.seed``, ``seed=``)."""
    v = _integral(value)
    if v is None or not 0 <= v <= SEED_MAX:
        raise Expected(f"an integer in [0, {SEED_MAX}]", _shown(value, v))
    return v


def odd_positive_int(value):
    """An odd integer >= 1 (``global.image_size``: the center-pixel model needs a centre pixel)."""
    v = _integral(value)
    if v is None or v < 1 or v % 2 == 0:
        raise Expected("an odd integer >= 1 (the center-pixel model has a centre pixel)", _shown(value, v))
    return v


def class_count(value):
    """A number of classes: an integer >= 2."""
    v = _integral(value)
    if v is None or v < 2:
        raise Expected("an integer >= 2", _shown(value, v))
    return v


def positive_finite(value):
    """A finite number > 0 (``global.alpha``, ``--scale``)."""
    v = _real(value)
    if v is None or not (math.isfinite(v) and v > 0):
        raise Expected("a finite number > 0", _shown(value, v))
    return v


def boolean(value):
    """True or False (also 0/1 and the words true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    if _integral(value) in (0, 1) and not isinstance(value, str):
        return bool(_integral(value))
    raise Expected("True or False", repr(value))


def channel_reduce(value):
    """One of :data:`CHANNEL_REDUCE`."""
    if isinstance(value, str) and value in CHANNEL_REDUCE:
        return value
    raise Expected(f"one of {', '.join(CHANNEL_REDUCE)}", repr(value))


GLOBAL_CHECKS = {
    "seed": seed_int, "batch_size": positive_int, "channel_reduce": channel_reduce,
    "progress": boolean, "memory_budget_mb": positive_int, "image_size": odd_positive_int, "num_classes": class_count,
    "alpha": positive_finite, "relu_flag": boolean, "zscore": boolean,
}

# Method/study values are checked by the methods themselves; ``--set`` only refuses a value of the
# wrong kind for its default: a number where the default is a number (None, tuples and lists stay
# allowed: windows, per-channel fills, optional values), True/False (or true/false, yes/no, 0/1,
# normalised to a bool) where it is a bool. Keys whose values legitimately take other kinds are
# listed here.
UNTYPED = {("shap", "l1_reg")}     # shap.lib also takes "auto", "num_features(10)", ...


def check_value(sec, key, value):
    """``value`` for ``settings.SECTIONS[sec][key]``, normalised; ValueError("expected ...") if wrong.

    GLOBAL keys get their full check (type and range); other sections only a kind check against
    the default (see ``UNTYPED``); the methods check ranges when they are built.
    """
    if sec == "global" and key in GLOBAL_CHECKS:
        return GLOBAL_CHECKS[key](value)
    if (sec, key) in UNTYPED:
        return value
    default = SECTIONS.get(sec, {}).get(key)
    if isinstance(default, bool):
        return boolean(value)
    if isinstance(default, (int, float)):
        if isinstance(value, (str, bool)):
            raise ValueError(f"expected a number (default {default!r}), got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expected a finite number (default {default!r}), got {value!r}")
    return value


def section(name):
    """A copy of one section's dict (``{}`` for a method without settings)."""
    return copy.deepcopy(SECTIONS.get(name, {}))


def parse_override(text):
    """Parse ``"section.key=value"`` into ``(section, key, value)``; value read as a Python literal.

    The section and key must exist (sections without settings take none) and the value must suit
    the key (:func:`check_value`); anything else raises MethodError with one line naming the
    override and what is expected.
    """
    from .errors import MethodError

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise MethodError(f"bad --set {text!r}: expected section.key=value, e.g. ig.steps=128")
    lhs, raw = text.split("=", 1)
    sec, key = lhs.strip().lower().split(".", 1)
    if sec not in SECTIONS:
        raise MethodError(f"bad --set {text!r}: unknown section {sec!r}; valid: {', '.join(sorted(SECTIONS))}")
    if not SECTIONS[sec]:
        raise MethodError(f"bad --set {text!r}: {sec} has no settings")
    if key not in SECTIONS[sec]:
        raise MethodError(f"bad --set {text!r}: {sec} has no {key!r}; valid: {', '.join(sorted(SECTIONS[sec]))}")
    raw = raw.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw  # plain strings need no quotes
    try:
        value = check_value(sec, key, value)
    except ValueError as e:
        raise MethodError(f"bad --set {text!r}: {sec}.{key}: {e}") from None
    return sec, key, value


def apply_overrides(texts):
    """Apply ``section.key=value`` overrides in place; returns the list of (section, key, value).

    Every override is parsed and checked before any is applied: a bad one changes nothing.
    """
    done = [parse_override(t) for t in texts or ()]
    for sec, key, value in done:
        SECTIONS[sec][key] = value
    return done
