"""Every hyperparameter of xaitf: global settings and one dict per method.

Plain Python, so it is easy to read and tune. Defaults follow study 1 (the center-pixel model,
see docs/reproduction.md) unless a comment says otherwise. Three ways to change a value:

* edit this file (the package is installed editable);
* pass keyword arguments: ``xaitf.create_explainer("ig", model, steps=128)``;
* on the command line: ``heatmap_script.py --set ig.steps=128 --set global.seed=1``.

A method's dict lists every parameter it accepts; anything else is rejected with the valid names.
"""
import ast
import copy

# ----------------------------------------------------------------------------------------------
GLOBAL = {
    "seed": 0,              # numpy / TensorFlow seed for every stochastic method
    "batch_size": 256,      # model evaluations per chunk (inputs x steps/samples/perturbations)
    "channel_reduce": "sum",  # per-pixel map from per-channel attributions: sum|mean|abs_sum|max_abs|none
    "progress": True,       # tqdm bars for long work
    "image_size": 227,      # study 1: center-pixel model input size
    "num_classes": 256,     # study 1
    "alpha": 10,            # study 1: center-pixel model sharpness
    "relu_flag": True,      # study 1: ReLU after the Dense layer of the center-pixel model
    "zscore": True,         # study 1: z-score every map but Input, LIME and SHAP in figures
}

# Gradient family (native TensorFlow) ----------------------------------------------------------
GRAD = {}                                   # saliency: d logit_c / d x
INPGRAD = {}                                # input x gradient
IG = {"steps": 64, "baseline": 0.0}         # integrated gradients, Riemann midpoint... see methods
SG = {                                      # SmoothGrad (Smilkov et al. 2017)
    "samples": 16,                          # study 1 augment_by_n
    "noise_scale": 0.1,                     # std as a fraction of the input range (max - min)
    "postprocess": "square",                # none (SmoothGrad) | square (SquareGrad) | variance (VarGrad)
}
GB = {}                                     # guided backprop (Springenberg et al. 2015)
DECONVNET = {}                              # DeconvNet (Zeiler & Fergus 2014)
DEEPLIFT = {"baseline": 0.0}                # DeepLIFT rescale rule (Shrikumar et al. 2017)
GRADCAM = {"layer": None}                   # Grad-CAM (Selvaraju et al. 2017); None = last conv
GRADCAMPP = {"layer": None}                 # Grad-CAM++ (Chattopadhyay et al. 2018)

# Propagation (iNNvestigate backend) -----------------------------------------------------------
LRP = {"epsilon": 1.0}                      # lrp.epsilon; alpha/beta fixed by the variant name
DEEP_TAYLOR = {"low": 0.0, "high": 1.0}     # bounds for deep_taylor.bounded

# Perturbation ---------------------------------------------------------------------------------
OCCLUSION = {"window": 1, "stride": 1, "fill": 0.0, "output": "probabilities"}
PDA = {"window": 1, "sampling": "marginal", "values": 256, "train_samples": 256000,
       "num_classes": None, "patch": 2}
SHAPLEY = {"samples": 100, "baseline": 0.0}  # permutation sampling (Castro et al. 2009)
MP = {"tv_beta": 3, "lr": 0.1, "max_iterations": 1000, "l1_coeff": 0.01, "tv_coeff": 0.2,
      "category_coeff": 1.0, "blur_size": 11, "mask_scale": 1}
RISE = {"masks": 4000, "cell": 7, "p": 0.5}

# Surrogates -----------------------------------------------------------------------------------
LIME = {
    "num_samples": 1000, "hide_color": 0.0, "kernel_width": 0.25,
    "segmenter": "quickshift", "kernel_size": 4, "max_dist": 200, "ratio": 0.2,
    "positive_only": True, "num_features": 1, "mask_output": True,
}
SHAP = {"nsamples": 1000, "background": 0.0, "n_segments": 50, "compactness": 30, "sigma": 3}

# Interventional (study 2, config.yaml keys) ---------------------------------------------------
INTERVENTIONAL = {
    "target_idx": 3, "n_samples": 100, "soft_interventions": True, "graph_stab": True,
    "layer_name": "conv2", "layer_name_soft": "fc3", "beta": 0.0, "z": 1.65,
}

# tf-explain backend (its own implementations, wrapped as they are) ----------------------------
TFX_GRADCAM = {"layer": None}
TFX_OCCLUSION = {"patch_size": 4}
TFX_SMOOTHGRAD = {"samples": 16, "noise": 1.0}
TFX_IG = {"steps": 64}

SECTIONS = {
    "global": GLOBAL, "grad": GRAD, "inpgrad": INPGRAD, "ig": IG, "sg": SG, "gb": GB,
    "deconvnet": DECONVNET, "deeplift": DEEPLIFT, "gradcam": GRADCAM, "gradcampp": GRADCAMPP,
    "lrp": LRP, "deep_taylor": DEEP_TAYLOR, "occlusion": OCCLUSION, "pda": PDA,
    "shapley": SHAPLEY, "mp": MP, "rise": RISE, "lime": LIME, "shap": SHAP,
    "interventional": INTERVENTIONAL, "tfx_gradcam": TFX_GRADCAM,
    "tfx_occlusion": TFX_OCCLUSION, "tfx_smoothgrad": TFX_SMOOTHGRAD, "tfx_ig": TFX_IG,
}


def section(name):
    """A copy of one section's dict (``{}`` for a method without settings)."""
    return copy.deepcopy(SECTIONS.get(name, {}))


def parse_override(text):
    """Parse ``"section.key=value"`` into ``(section, key, value)``; value read as a Python literal."""
    from .errors import MethodError

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise MethodError(f"bad --set {text!r}: expected section.key=value, e.g. ig.steps=128")
    lhs, raw = text.split("=", 1)
    sec, key = lhs.strip().lower().split(".", 1)
    if sec not in SECTIONS:
        raise MethodError(f"bad --set {text!r}: unknown section {sec!r}; valid: {', '.join(sorted(SECTIONS))}")
    if SECTIONS[sec] and key not in SECTIONS[sec]:
        raise MethodError(f"bad --set {text!r}: {sec} has no {key!r}; valid: {', '.join(sorted(SECTIONS[sec]))}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()  # plain strings need no quotes
    return sec, key, value


def apply_overrides(texts):
    """Apply ``section.key=value`` overrides in place; returns the list of (section, key, value)."""
    done = []
    for t in texts or ():
        sec, key, value = parse_override(t)
        SECTIONS[sec][key] = value
        done.append((sec, key, value))
    return done
