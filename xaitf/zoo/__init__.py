"""Model zoo: builders for every model of the five studies (see ``python create_model.py --list``).

Builders are imported lazily (``from xaitf.zoo import build_mnist_cnn`` works), so that
``xaitf.zoo.registry`` (the zoo's table) can be read without importing TensorFlow.
"""
import importlib

_EXPORTS = {
    "build_center_pixel": "center_pixel", "center_index": "center_pixel",
    "center_pixel_weights": "center_pixel",
    "build_mnist_cnn": "mnist", "build_lenet": "lenet", "build_cifar_vgg": "cifar",
    "build_xainn": "xainn", "build_xainn_baseline": "xainn", "build_xainn_softmax": "xainn",
    "build_xainn_poollinear": "xainn", "class_maps_model": "xainn",
    "build_svhn_resnet18": "resnet",
    "build_bayesian_mlp": "bayesian", "predict_mean": "bayesian", "refuse": "bayesian",
    "refusal_rule": "bayesian", "sample_probs": "bayesian",
    "build": "registry", "get": "registry", "names": "registry", "prepare_inputs": "registry",
    "ZOO": "registry",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'xaitf.zoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
