"""Method registry: name -> Explainer class (imported lazily, so optional backends cost nothing).

Keys are study 1's (``grad gb deconvnet sg inpgrad ig lrp lime deeplift mp occlusion pda shap
shapley``; ``shap`` is an alias of ``kernelshap``; the lime / shap library paths are ``lime.lib`` and
``shap.lib``) plus the other methods; iNNvestigate's analyzer names are accepted as aliases
(``gradient``, ``input_t_gradient``, ``integrated_gradients``, ...). ``lrp`` is a group that
expands to the four LRP variants, as in study 1.
"""
import importlib
import importlib.util

from .errors import MethodError

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
    "gradcam": ("cam", "GradCam", {}, "Grad-CAM"),
    "gradcampp": ("cam", "GradCamPlusPlus", {}, "Grad-CAM++"),
    # iNNvestigate backend
    "lrp.z": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.z"}, "LRP-Z"),
    "lrp.epsilon": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.epsilon"}, "LRP-Epsilon"),
    "lrp.alpha_1_beta_0": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.alpha_1_beta_0"},
                           "LRP-alpha1_beta0"),
    "lrp.alpha_2_beta_1": ("propagation", "InnvestigateExplainer", {"analyzer": "lrp.alpha_2_beta_1"},
                           "LRP-alpha2_beta1"),
    "deep_taylor": ("propagation", "InnvestigateExplainer", {"analyzer": "deep_taylor"}, "DeepTaylor"),
    "deep_taylor.bounded": ("propagation", "InnvestigateExplainer", {"analyzer": "deep_taylor.bounded"},
                            "DeepTaylor (bounded)"),
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
    "shap": "kernelshap", "kernel_shap": "kernelshap", "meaningful_perturbation": "mp",
    "prediction_difference": "pda", "shapley_sampling": "shapley",
}

GROUPS = {"lrp": ["lrp.z", "lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1"]}

# study 1's fixed column order; other methods follow in registry order
STUDY1_ORDER = ["grad", "gb", "deconvnet", "sg", "inpgrad", "ig", "lrp.z", "lrp.epsilon",
                "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "occlusion", "deeplift", "shapley",
                "pda", "lime", "kernelshap", "mp"]


def _available(name):
    module = _METHODS[name][0]
    return importlib.util.find_spec(f"xaitf.methods.{module}") is not None


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
    return getattr(importlib.import_module(f"xaitf.methods.{module}"), cls)


def title(name):
    return _METHODS[canonical(name)][3]


def create_explainer(name, model, **params):
    """Build the explainer ``name`` for ``model``; keyword arguments override settings.py.

    Example::

        ig = xaitf.create_explainer("ig", model, steps=128)
        maps = ig(x, targets)        # (N, H, W)
    """
    key = canonical(name)
    cls = get_method(key)
    fixed = dict(_METHODS[key][2])
    fixed.update(params)
    explainer = cls(model, **fixed)
    explainer.name = key
    explainer.title = _METHODS[key][3]
    return explainer
