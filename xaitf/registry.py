"""Method registry: name -> Explainer class (imported lazily, so optional backends cost nothing).

Keys are study 1's (``grad gb deconvnet sg inpgrad ig lrp lime deeplift mp occlusion pda shap
shapley``; ``shap`` is an alias of ``kernelshap``; the lime / shap library paths are ``lime.lib`` and
``shap.lib``) plus the other methods; iNNvestigate's analyzer names are accepted as aliases
(``gradient``, ``input_t_gradient``, ``integrated_gradients``, ...). ``lrp`` is a group that
expands to the four LRP variants, as in study 1. ``lrp.*`` and ``deep_taylor*`` run on xaitf's own
model graph (:mod:`xaitf.methods.lrp`); iNNvestigate's analyzers of the same names are ``inn.lrp.*``
and ``inn.deep_taylor*``.
"""
import importlib
import importlib.util

import numpy as np

from .errors import MethodError, XaitfError

# name: (module, class, fixed kwargs, figure title)
_METHODS = {
    # native TensorFlow gradient family
    "grad": ("gradients", "Gradient", {}, "Gradient"),
    "gb": ("gradients", "GuidedBackprop", {}, "Guided Backprop"),
    "deconvnet": ("gradients", "DeconvNet", {}, "Deconvnet"),
    "sg": ("gradients", "SmoothGrad", {}, "SmoothGrad"),
    "vargrad": ("gradients", "SmoothGrad", {"postprocess": "variance"}, "VarGrad"),
    "squaregrad": ("gradients", "SmoothGrad", {"postprocess": "square"}, "SquareGrad"),
    "inpgrad": ("gradients", "InputXGradient", {}, "Input*Gradient"),
    "ig": ("gradients", "IntegratedGradients", {}, "Integrated Gradients"),
    "deeplift": ("deeplift", "DeepLift", {}, "DeepLift"),
    "deepliftshap": ("deeplift", "DeepLiftShap", {}, "DeepLiftShap"),
    "gradcam": ("cam", "GradCam", {}, "Grad-CAM"),
    "gradcampp": ("cam", "GradCamPlusPlus", {}, "Grad-CAM++"),
    # native LRP / Deep Taylor on xaitf's model graph (xaitf/graph); composites by name
    "lrp.z": ("lrp", "LRP", {"composite": "lrp.z"}, "LRP-Z"),
    "lrp.epsilon": ("lrp", "LRP", {"composite": "lrp.epsilon"}, "LRP-Epsilon"),
    "lrp.alpha_1_beta_0": ("lrp", "LRP", {"composite": "lrp.alpha_1_beta_0"}, "LRP-alpha1_beta0"),
    "lrp.alpha_2_beta_1": ("lrp", "LRP", {"composite": "lrp.alpha_2_beta_1"}, "LRP-alpha2_beta1"),
    "lrp.alpha_beta": ("lrp", "LRP", {"composite": "lrp.alpha_beta"}, "LRP-alpha_beta"),
    "lrp.z_plus": ("lrp", "LRP", {"composite": "lrp.z_plus"}, "LRP-z+"),
    "lrp.w_square": ("lrp", "LRP", {"composite": "lrp.w_square"}, "LRP-w^2"),
    "lrp.flat": ("lrp", "LRP", {"composite": "lrp.flat"}, "LRP-flat"),
    "lrp.sequential_preset_a": ("lrp", "LRP", {"composite": "lrp.sequential_preset_a"}, "LRP preset A"),
    "lrp.sequential_preset_b": ("lrp", "LRP", {"composite": "lrp.sequential_preset_b"}, "LRP preset B"),
    "lrp.sequential_preset_a_flat": ("lrp", "LRP", {"composite": "lrp.sequential_preset_a_flat"},
                                     "LRP preset A-flat"),
    "lrp.sequential_preset_b_flat": ("lrp", "LRP", {"composite": "lrp.sequential_preset_b_flat"},
                                     "LRP preset B-flat"),
    "lrp.epsilon_plus": ("lrp", "LRP", {"composite": "epsilon_plus"}, "LRP epsilon-plus"),
    "lrp.epsilon_plus_flat": ("lrp", "LRP", {"composite": "epsilon_plus_flat"}, "LRP epsilon-plus-flat"),
    "lrp.epsilon_gamma_box": ("lrp", "LRP", {"composite": "epsilon_gamma_box"}, "LRP epsilon-gamma-box"),
    "lrp.epsilon_alpha_2_beta_1_flat": ("lrp", "LRP", {"composite": "epsilon_alpha_2_beta_1_flat"},
                                        "LRP epsilon-alpha2beta1-flat"),
    "lrp.composite": ("lrp", "LRP", {}, "LRP (composite)"),
    "deep_taylor": ("lrp", "LRP", {"composite": "deep_taylor"}, "DeepTaylor"),
    "deep_taylor.bounded": ("lrp", "LRP", {"composite": "deep_taylor.bounded"}, "DeepTaylor (bounded)"),
    # iNNvestigate backend (cross-checks; needs the graph-mode twin for Keras 3 models)
    "inn.lrp.z": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.z"}, "iNN LRP-Z"),
    "inn.lrp.epsilon": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.epsilon"}, "iNN LRP-Epsilon"),
    "inn.lrp.alpha_1_beta_0": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.alpha_1_beta_0"},
                               "iNN LRP-alpha1_beta0"),
    "inn.lrp.alpha_2_beta_1": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.alpha_2_beta_1"},
                               "iNN LRP-alpha2_beta1"),
    "inn.deep_taylor": ("propagation", "InnvestigateExplainer", {"analyzer": "deep_taylor"}, "iNN DeepTaylor"),
    "inn.deep_taylor.bounded": ("propagation", "InnvestigateExplainer", {"analyzer": "deep_taylor.bounded"},
                                "iNN DeepTaylor (bounded)"),
    "inn.gradient": ("propagation", "InnvestigateExplainer", {"analyzer": "gradient"}, "iNN Gradient"),
    "inn.input_t_gradient": ("propagation", "InnvestigateExplainer", {"analyzer": "input_t_gradient"},
                             "iNN Input*Gradient"),
    "inn.integrated_gradients": ("propagation", "InnvestigateExplainer",
                                 {"analyzer": "integrated_gradients"}, "iNN Integrated Gradients"),
    "inn.guided_backprop": ("propagation", "InnvestigateExplainer", {"analyzer": "guided_backprop"},
                            "iNN Guided Backprop"),
    "inn.deconvnet": ("propagation", "InnvestigateExplainer", {"analyzer": "deconvnet"}, "iNN Deconvnet"),
    "inn.smoothgrad": ("propagation", "InnvestigateExplainer", {"analyzer": "smoothgrad"}, "iNN SmoothGrad"),
    # tf-explain backend, its own implementations under its own names
    "tfx.gradcam": ("tfexplain", "TfxGradCam", {}, "tf-explain Grad-CAM"),
    "tfx.occlusion": ("tfexplain", "TfxOcclusion", {}, "tf-explain Occlusion"),
    "tfx.smoothgrad": ("tfexplain", "TfxSmoothGrad", {}, "tf-explain SmoothGrad"),
    "tfx.ig": ("tfexplain", "TfxIntegratedGradients", {}, "tf-explain IG"),
    # perturbation
    "occlusion": ("occlusion", "Occlusion", {}, "Occlusion"),
    "feature_ablation": ("occlusion", "FeatureAblation", {}, "Feature Ablation"),
    "feature_permutation": ("permutation", "FeaturePermutation", {}, "Feature Permutation"),
    "pda": ("pda", "PredictionDifference", {}, "PDA"),
    "shapley": ("shapley", "ShapleySampling", {}, "Shapley Sampling"),
    "mp": ("meaningful_perturbation", "MeaningfulPerturbation", {}, "Meaningful Perturbation"),
    "rise": ("rise", "Rise", {}, "RISE"),
    # surrogates: native batched programs, and the lime / shap library paths
    "lime": ("surrogates_native", "Lime", {}, "LIME"),
    "kernelshap": ("surrogates_native", "KernelShap", {}, "Kernel SHAP"),
    "lime.lib": ("surrogates", "LimeExplainer", {}, "LIME (lime)"),
    "shap.lib": ("surrogates", "KernelShapExplainer", {}, "Kernel SHAP (shap)"),
    "shap.gradient": ("surrogates", "ShapGradientExplainer", {}, "SHAP Gradient"),
    "shap.deep": ("surrogates", "ShapDeepExplainer", {}, "SHAP Deep"),
    "shap.partition": ("surrogates", "ShapPartitionExplainer", {}, "SHAP Partition"),
    # interventional (study 2)
    "interventional": ("interventional", "Interventional", {}, "Interventional"),
}

ALIASES = {
    "gradient": "grad", "saliency": "grad", "vanilla_gradients": "grad",
    "input_t_gradient": "inpgrad", "input_x_gradient": "inpgrad", "inputxgradient": "inpgrad",
    "integrated_gradients": "ig", "integratedgradients": "ig",
    "smoothgrad": "sg", "guided_backprop": "gb", "guidedbackprop": "gb",
    "deeplift.rescale": "deeplift", "grad_cam": "gradcam", "gradcam++": "gradcampp",
    "lrp.alpha1beta0": "lrp.alpha_1_beta_0", "lrp.alpha2beta1": "lrp.alpha_2_beta_1",
    "inn.lrp.alpha1beta0": "inn.lrp.alpha_1_beta_0", "inn.lrp.alpha2beta1": "inn.lrp.alpha_2_beta_1",
    "lrp.zplus": "lrp.z_plus", "epsilon_plus": "lrp.epsilon_plus", "epsilon_plus_flat": "lrp.epsilon_plus_flat",
    "epsilon_gamma_box": "lrp.epsilon_gamma_box", "epsilon_alpha_2_beta_1_flat": "lrp.epsilon_alpha_2_beta_1_flat",
    "shap": "kernelshap", "kernel_shap": "kernelshap", "meaningful_perturbation": "mp",
    "prediction_difference": "pda", "shapley_sampling": "shapley",
    "shapley_value_sampling": "shapley", "shapleyvaluesampling": "shapley",
    "deep_lift_shap": "deepliftshap", "deeplift_shap": "deepliftshap", "deeplift.shap": "deepliftshap",
    "featureablation": "feature_ablation", "ablation": "feature_ablation",
    "featurepermutation": "feature_permutation", "permutation": "feature_permutation",
    "permutation_importance": "feature_permutation",
}

GROUPS = {"lrp": ["lrp.z", "lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1"]}

# study 1's fixed column order; other methods follow in registry order
STUDY1_ORDER = ["grad", "gb", "deconvnet", "sg", "inpgrad", "ig", "lrp.z", "lrp.epsilon",
                "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "occlusion", "deeplift", "shapley",
                "pda", "lime", "kernelshap", "mp"]


def _available(name):
    module = _METHODS[name][0]
    if not isinstance(module, str):          # a class registered by register()
        return True
    return importlib.util.find_spec(f"xaitf.methods.{module}") is not None


def register(name, cls, title=None, **fixed):
    """Register a method class of your own under ``name`` (lower case), so that
    :func:`create_explainer`, the command lines' ``-hm`` and the studies' tables can use it.

    ``cls`` subclasses :class:`xaitf.explainer.Explainer`; ``fixed`` are keyword arguments the name
    always passes (as ``vargrad`` passes ``postprocess="variance"``). Replacing a built-in name is
    refused. See docs/architecture.md, "Adding a method".
    """
    from .explainer import Explainer

    key = str(name).strip().lower()
    if not (isinstance(cls, type) and issubclass(cls, Explainer)):
        raise MethodError(f"register({name!r}, ...) needs a subclass of xaitf.Explainer, got {cls!r}")
    if key in _METHODS and _METHODS[key][0] is not cls and isinstance(_METHODS[key][0], str):
        raise MethodError(f"method name {key!r} is built in; choose another name")
    _METHODS[key] = (cls, cls.__name__, dict(fixed), title or cls.__name__)
    return cls


def list_methods(include_groups=False):
    """Registered method names whose implementation is present."""
    names = [n for n in _METHODS if _available(n)]
    return names + (sorted(GROUPS) if include_groups else [])


def canonical(name):
    """The registry key for a name, alias or any letter case; MethodError lists the valid keys."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key in _METHODS and _available(key):
        return key
    valid = ", ".join(list_methods(include_groups=True))
    raise MethodError(f"unknown method {name!r}; valid: {valid}")


def expand(names):
    """Expand groups (``lrp``), resolve aliases and order as study 1 does; duplicates removed."""
    keys = []
    for n in names:
        low = str(n).strip().lower()
        for k in GROUPS.get(low, [low]):
            k = canonical(k)
            if k not in keys:
                keys.append(k)
    order = {k: i for i, k in enumerate(STUDY1_ORDER + [m for m in _METHODS if m not in STUDY1_ORDER])}
    return sorted(keys, key=order.__getitem__)


def get_method(name):
    """The Explainer class behind a name (aliases accepted)."""
    key = canonical(name)
    module, cls, _, _ = _METHODS[key]
    if not isinstance(module, str):
        return module
    return getattr(importlib.import_module(f"xaitf.methods.{module}"), cls)


def title(name):
    return _METHODS[canonical(name)][3]


def create_explainer(name, model, **params):
    """Build the explainer ``name`` for ``model`` with the method's own defaults (its signature:
    ``help(xaitf.get_method(name))``) and the keyword arguments given.

    Example::

        ig = xaitf.create_explainer("ig", model, steps=128)
        maps = ig(x, targets)        # (N, H, W)

    An unknown keyword raises MethodError listing the valid ones. The command lines and studies
    use :func:`create_from_presets` instead, which starts from :mod:`xaitf.settings`' presets.
    """
    key = canonical(name)
    cls = get_method(key)
    fixed = dict(_METHODS[key][2])
    fixed.update(params)
    explainer = cls(model, **fixed)
    explainer.name = key
    explainer.title = _METHODS[key][3]
    return explainer


def preset_section(name):
    """The :mod:`xaitf.settings` section that holds the presets of method ``name``."""
    key = canonical(name)
    cls = get_method(key)
    section = getattr(cls, "preset_section", None)
    return section(**_METHODS[key][2]) if callable(section) else cls.key


def preset_kwargs(name):
    """Keyword arguments of method ``name`` from :mod:`xaitf.settings` as it is now (study 1's
    presets plus any ``--set``): GLOBAL's batch_size, channel_reduce, seed and progress, and the
    method's section, keeping the keys the method's signature accepts (less those the name fixes,
    e.g. vargrad's postprocess). Read once, when called:
    an explainer built from them does not change when the settings change later."""
    from . import settings as S

    key = canonical(name)
    fixed = _METHODS[key][2]           # what the name itself sets (vargrad: postprocess="variance")
    accepted = {k for k in get_method(key).parameters() if k not in fixed}
    from .explainer import COMMON

    own = get_method(key).parameters()
    # a common argument whose default the method sets itself (PDA's batch_size=None: "from
    # windows_per_batch") is passed only when the preset was changed from the common default
    kwargs = {k: v for k, v in S.section("global").items()
              if k in COMMON and k in accepted and (own[k] == COMMON[k] or v != COMMON[k])}
    section = preset_section(key)
    if section:
        kwargs.update({k: v for k, v in S.section(section).items()
                       if k in accepted and k not in S.STUDY_SWITCHES.get(section, ())})
    # sections every method of a class reads, whatever its own (native LRP's lrp_graph)
    for shared in getattr(get_method(key), "shared_sections", ()):
        kwargs.update({k: v for k, v in S.section(shared).items() if k in accepted})
    return kwargs


def input_range_arguments(name, value_range, set_keys=()):
    """Keyword arguments that tell method ``name`` the model inputs of a black and a white pixel.

    ``value_range``: ``(low, high)`` as :func:`xaitf.data.preprocess.intensity_range` gives them
    (numbers, or tuples per channel) for the command line's ``--preprocess``. PDA takes them as its
    intensity ``value_range``; an LRP composite whose first layers take the z^B rule
    (``deep_taylor.bounded``, ``lrp.epsilon_gamma_box``) as its ``low``/``high`` bounds, and
    iNNvestigate's ``inn.deep_taylor.bounded`` the box around all channels' ranges. Nothing
    for the others, for (0, 1) (the presets' own range), or where ``set_keys`` (``(section, key)``
    pairs of ``--set``) already names the parameter.
    """
    key = canonical(name)
    low, high = value_range
    if (low, high) == (0.0, 1.0):
        return {}
    section = preset_section(key)
    if section == "pda":
        return {} if ("pda", "value_range") in set_keys else {"value_range": (low, high)}
    accepted = get_method(key).parameters()
    if not {"low", "high"} <= set(accepted) or {(section, "low"), (section, "high")} & set(set_keys):
        return {}
    given = {**preset_kwargs(key), **_METHODS[key][2]}
    if "composite" not in accepted:     # iNNvestigate's deep_taylor.bounded: one box for every channel
        if given.get("analyzer") != "deep_taylor.bounded":
            return {}
        return {"low": float(min(np.atleast_1d(low))), "high": float(max(np.atleast_1d(high)))}
    from .graph import composites as C

    try:
        needs = C.input_bounds(given.get("composite", accepted["composite"])) is not None
    except XaitfError:       # a broken user composite: its explainer reports it
        needs = False
    return {"low": low, "high": high} if needs else {}


def create_from_presets(name, model, **params):
    """:func:`create_explainer` starting from the settings presets (:func:`preset_kwargs`), then
    ``params``: what the command lines and studies build their explainers with."""
    return create_explainer(name, model, **{**preset_kwargs(name), **params})
