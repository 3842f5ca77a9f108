"""Batched evaluation metrics for any method's maps.

Every function takes numpy arrays: images ``x`` (N,H,W,C) float32, maps (N,H,W), targets ints (N,)
(or one-hot), and tf-keras or Keras 3 models. Model evaluations run in chunks of ``batch_size``
perturbed images, built with vectorised TensorFlow/numpy ops; anything random takes a seed.

Functions (module in brackets):

* ``degradation`` (degrade): accuracy/confidence after keeping the top pixels (study 4)
* ``degrade_images`` (degrade): the degraded images themselves
* ``deletion_curve`` (curves): Petsiuk et al. 2018 deletion, :class:`Curve`
* ``insertion_curve`` (curves): Petsiuk et al. 2018 insertion (fill or blurred start)
* ``irof`` (curves): Rieger & Hansen 2020, superpixels removed by mean value
* ``pixel_flipping`` (faithfulness): Bach et al. 2015, pixels removed one step at a time
* ``region_perturbation`` (faithfulness): Samek et al. 2016, patches removed, AOPC
* ``faithfulness_correlation`` (faithfulness): Bhatt et al. 2020, random pixel subsets vs output drop
* ``mufidelity`` (faithfulness): Bhatt et al. 2020 on grid cells (Xplique's MuFidelity)
* ``infidelity`` (faithfulness): Yeh et al. 2019, (I . map - output change)^2 under noise
* ``road`` (faithfulness): Rong et al. 2022, removal with noisy linear imputation
* ``infidelity_noise``, ``road_noise`` (faithfulness): the noise those two draw (on the device)
* ``noisy_linear_impute`` (imputation): ROAD's imputation of one image (sparse direct solve)
* ``linear_impute_batch`` (imputation): the same for a batch, conjugate gradients in TensorFlow
* ``binarize`` (localization): top-k / threshold / Otsu masks
* ``iou_1``, ``iou_2`` (localization): mask IoU and box IoU against ground truth (study 5)
* ``heatmap_box``, ``box_iou`` (localization): tightest box of a mask; IoU of boxes
* ``centre_mass`` (localization): share of |relevance| on the centre pixel / crop (study 1)
* ``pointing_game`` (localization): Zhang et al. 2018: maximum inside the (dilated) mask
* ``relevance_mass`` (localization): Arras et al. 2022: share of relevance inside the mask
* ``relevance_rank`` (localization): Arras et al. 2022: share of the top-|mask| pixels inside
* ``top_k_intersection`` (localization): Theiner et al. 2021: share of the top-k pixels inside
* ``local_lipschitz`` (robustness): local Lipschitz estimate of an explainer (study 2)
* ``max_sensitivity`` (robustness): Yeh et al. 2019: max relative map change, uniform noise
* ``avg_sensitivity`` (robustness): Yeh et al. 2019: mean relative map change, uniform noise
* ``sparseness`` (complexity): Gini index of |map| (Chalasani et al. 2020)
* ``complexity`` (complexity): entropy of |map| shares (Bhatt et al. 2020)
* ``effective_complexity`` (complexity): pixels with |map|/max > eps (Nguyen & Martinez 2020)
* ``model_parameter_randomisation`` (randomisation): sanity check (Adebayo et al. 2018)
* ``random_logit`` (randomisation): map of the target vs another class (Sixt et al. 2020)

TensorFlow is imported only when a model-based metric is first used.
"""
import importlib

_WHERE = {
    "degradation": "degrade", "degrade_images": "degrade",
    "deletion_curve": "curves", "insertion_curve": "curves", "irof": "curves",
    "pixel_flipping": "faithfulness", "region_perturbation": "faithfulness",
    "faithfulness_correlation": "faithfulness", "mufidelity": "faithfulness",
    "infidelity": "faithfulness", "road": "faithfulness", "infidelity_noise": "faithfulness",
    "road_noise": "faithfulness",
    "noisy_linear_impute": "imputation", "linear_impute_batch": "imputation",
    "Curve": "_common", "fill_image": "_common", "pixel_order": "_checks",
    "binarize": "localization", "iou_1": "localization", "iou_2": "localization",
    "heatmap_box": "localization", "box_iou": "localization", "union_boxes": "localization",
    "gt_mask": "localization", "centre_mass": "localization", "otsu_thresholds": "localization",
    "pointing_game": "localization", "relevance_mass": "localization",
    "relevance_rank": "localization", "top_k_intersection": "localization",
    "local_lipschitz": "robustness", "max_sensitivity": "robustness", "avg_sensitivity": "robustness",
    "sparseness": "complexity", "complexity": "complexity", "effective_complexity": "complexity",
    "model_parameter_randomisation": "randomisation", "random_logit": "randomisation",
}

__all__ = sorted(_WHERE)


# the function complexity() shares its name with its module: importing the module (numpy only)
# now, then binding the name to the function, keeps a later `import xaitf.metrics.complexity` from
# replacing the function by the module on this package
from . import complexity as _complexity_module  # noqa: E402

complexity = _complexity_module.complexity


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xaitf.metrics' has no attribute {name!r}")


def __dir__():
    return __all__
