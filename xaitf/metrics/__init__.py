"""Batched evaluation metrics for any method's maps.

Every function takes numpy arrays: images ``x`` (N,H,W,C) float32, maps (N,H,W), targets ints (N,)
(or one-hot), and tf-keras or Keras 3 models. Model evaluations run in chunks of ``batch_size``
perturbed images, built with vectorised TensorFlow/numpy ops; anything random takes a seed.

==========================  =========================================================  ==========
function                    what                                                       module
==========================  =========================================================  ==========
``degradation``             accuracy/confidence after keeping the top pixels (study 4)  degrade
``degrade_images``          the degraded images themselves                             degrade
``deletion_curve``          Petsiuk et al. 2018 deletion, :class:`Curve`              curves
``insertion_curve``         Petsiuk et al. 2018 insertion (fill or blurred start)      curves
``irof``                    Rieger & Hansen 2020, superpixels removed by mean value    curves
``binarize``                top-k / threshold / Otsu masks                             localization
``iou_1``, ``iou_2``        mask IoU and box IoU against ground truth (study 5)        localization
``heatmap_box``, ``box_iou`` tightest box of a mask; IoU of boxes                     localization
``centre_mass``             share of |relevance| on the centre pixel / crop (study 1)  localization
``local_lipschitz``         local Lipschitz estimate of an explainer (study 2)          robustness
``sparseness``              Gini index of |map| (Chalasani et al. 2020)                complexity
==========================  =========================================================  ==========

TensorFlow is imported only when a model-based metric is first used.
"""
import importlib

_WHERE = {
    "degradation": "degrade", "degrade_images": "degrade",
    "deletion_curve": "curves", "insertion_curve": "curves", "irof": "curves",
    "Curve": "_common", "fill_image": "_common", "pixel_order": "_checks",
    "binarize": "localization", "iou_1": "localization", "iou_2": "localization",
    "heatmap_box": "localization", "box_iou": "localization", "union_boxes": "localization",
    "gt_mask": "localization", "centre_mass": "localization", "otsu_thresholds": "localization",
    "local_lipschitz": "robustness",
    "sparseness": "complexity",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xaitf.metrics' has no attribute {name!r}")


def __dir__():
    return __all__
