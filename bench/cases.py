"""The benchmark's models, inputs and per-case settings.

The cases (``--cases``; the default run takes ``DEFAULT``):

* ``mnist_cnn``: study 4's MNIST CNN (``xaitf.zoo.build_mnist_cnn``), up to 256 MNIST test images
  (rows 8000+ of the 10k test file: the bench trains the model for one epoch on rows 0-7999 the
  first time and caches the weights in ``bench/.cache``, so that agreement between stochastic
  implementations is measured on a model with a real signal);
* ``cifar_cnn``: a CIFAR-10 CNN (study 4's architecture at 32x32x3: Conv 32, MaxPool, Conv 64,
  MaxPool, Dense 10; no BatchNorm, so every iNNvestigate analyzer runs on it), trained 2 epochs on
  the CIFAR-10 train subset (cached in ``bench/.cache``), up to 64 CIFAR-10 test images;
* ``xainn_baseline`` (not in the default run: ``--cases xainn_baseline``): study 3's CIFAR-10 CNN
  (``xaitf.zoo.build_xainn_baseline``, seeded, untrained: ~0.35 GMAC per image; iNNvestigate's LRP
  does not take its BatchNormalization layers), up to 64 CIFAR-10 test images;
* ``resnet50_k3`` (not in the default run: ``--cases resnet50_k3``): Keras 3
  ``keras.applications.ResNet50(weights=None)`` (``import keras``, next to tf-keras; seeded random
  weights, BatchNormalization at its initial statistics), 8 CIFAR-10 test images resized to
  224x224x3 (bilinear, in [0, 1]): the LRP acceptance case (native LRP within 1.5x of the gradient
  on the same batch; iNNvestigate refuses its BatchNormalization, which the peer column records);
* ``vit_tiny_k3`` (not in the default run: ``--cases vit_tiny_k3``): a Keras 3 vision transformer
  of DeiT-Tiny's size built from Keras layers (:func:`vit_tiny`: 16x16 patches by a Conv2D, 6
  blocks of LayerNormalization, MultiHeadAttention with 3 heads of 64 and a 768-unit GELU MLP,
  no position embedding or class token, global average pooling; seeded random weights), 8
  CIFAR-10 test images resized to 224x224x3: native LRP on attention against the gradient;
* ``vit_custom_k3`` (not in the default run): the same ViT with the patch embedding of keras.io's
  ViT example, two custom layers (``vit_tiny(custom=True)``) that every native LRP row declares
  affine (``affine_layers``): LRP through custom layers against the gradient;
  ``vit_custom_read_k3``: the same model with nothing declared, its custom layers read through
  their calls (the patch extraction as an identity convolution, the position embedding as a shift);
* ``center_pixel``: study 1's hand-built 227x227 center-pixel model, 1 image (a CIFAR-10 test
  image in gray, resized to 227x227).

Real images come from the data directory (``XAITF_DATA_DIR``); without it, seeded uniform noise
is used and the case says so. Targets are the model's own predictions.

Every method gets the same settings for ours and for each peer. The settings are xaitf's defaults
except where a case lists an override (``overrides``): the defaults of some perturbation methods
would take minutes per call on a 2-core CPU for the larger models; the overrides are recorded in
every row. The number of inputs of a row is ``min(n_max, budget // cost)`` (at least 1), where
``cost`` is the method's model evaluations per input (forward + backward counted as 3), so
every row costs about the same; ``--quick`` uses smaller budgets and settings. ``n`` fixes the
inputs of a row instead: issue 11's LIME / Kernel SHAP rows (1,000 samples per image on 32 images,
with lime, shap and Xplique as peers on the same 32 images); the library paths' own rows get a
few inputs (they are timed on 32 as peers of the native rows).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

# the same override for every name that shares a hyperparameter
_QUICK_ALL = {
    "ig": {"steps": 16}, "inn.integrated_gradients": {"steps": 16}, "tfx.ig": {"steps": 16},
    "sg": {"samples": 4}, "vargrad": {"samples": 4}, "squaregrad": {"samples": 4},
    "inn.smoothgrad": {"samples": 4}, "tfx.smoothgrad": {"samples": 4},
    "occlusion": {"window": 4, "stride": 4}, "tfx.occlusion": {"patch_size": 4},
    "pda": {"window": 4, "stride": 4, "values": 4}, "shapley": {"samples": 1},
    "rise": {"masks": 64}, "mp": {"max_iterations": 8}, "interventional": {"n_samples": 10},
    "lime": {"num_samples": 64}, "lime.lib": {"num_samples": 64},
    "kernelshap": {"nsamples": 64}, "shap.lib": {"nsamples": 64},
    "shap.gradient": {"nsamples": 8}, "shap.partition": {"max_evals": 32},
}

# issue 11: native LIME / Kernel SHAP with 1,000 samples per image on 32 images, library paths as peers
_SURROGATES_32 = {"lime": {"num_samples": 1000}, "lime.lib": {"num_samples": 1000},
                  "kernelshap": {"nsamples": 1000}, "shap.lib": {"nsamples": 1000}}
_N_32 = {"lime": 32, "kernelshap": 32, "lime.lib": 2, "shap.lib": 2}
# Meaningful Perturbation's iterations are sequential: it fills chunks only with many inputs at once
_MP = {"mp": {"max_iterations": 100}}

CASES = {
    "mnist_cnn": {
        "full": {"n_max": 256, "budget": 1 << 13, "n": {**_N_32, "mp": 256}, "overrides": {
            "pda": {"values": 32}, "shapley": {"samples": 10}, **_SURROGATES_32, **_MP}},
        "quick": {"n_max": 16, "budget": 1 << 9, "overrides": _QUICK_ALL},
    },
    "cifar_cnn": {
        "full": {"n_max": 64, "budget": 1 << 13, "n": {**_N_32, "mp": 64}, "overrides": {
            "pda": {"values": 16}, "shapley": {"samples": 4}, **_SURROGATES_32, **_MP}},
        "quick": {"n_max": 8, "budget": 1 << 9, "overrides": _QUICK_ALL},
    },
    "xainn_baseline": {
        "full": {"n_max": 64, "budget": 1 << 7, "overrides": {
            "occlusion": {"window": 4, "stride": 4}, "tfx.occlusion": {"patch_size": 4},
            "pda": {"window": 4, "stride": 4, "values": 4}, "shapley": {"samples": 1},
            "rise": {"masks": 256}, "mp": {"max_iterations": 64},
            "lime": {"num_samples": 256}, "lime.lib": {"num_samples": 256},
            "kernelshap": {"nsamples": 256}, "shap.lib": {"nsamples": 256},
            "shap.gradient": {"nsamples": 32}, "shap.partition": {"max_evals": 256}}},
        "quick": {"n_max": 4, "budget": 1 << 4, "overrides": _QUICK_ALL},
    },
    "resnet50_k3": {
        "full": {"n_max": 8, "budget": 1 << 13, "batch_size": 8, "overrides": {}},
        "quick": {"n_max": 2, "budget": 1 << 13, "batch_size": 2, "overrides": _QUICK_ALL},
    },
    "vit_tiny_k3": {
        "full": {"n_max": 8, "budget": 1 << 13, "batch_size": 8, "overrides": {}},
        "quick": {"n_max": 2, "budget": 1 << 13, "batch_size": 2, "overrides": _QUICK_ALL},
    },
    "vit_custom_k3": {
        "full": {"n_max": 8, "budget": 1 << 13, "batch_size": 8, "overrides": "custom"},
        "quick": {"n_max": 2, "budget": 1 << 13, "batch_size": 2, "overrides": "custom"},
    },
    "vit_custom_read_k3": {
        "full": {"n_max": 8, "budget": 1 << 13, "batch_size": 8, "overrides": {}},
        "quick": {"n_max": 2, "budget": 1 << 13, "batch_size": 2, "overrides": _QUICK_ALL},
    },
    "center_pixel": {
        "full": {"n_max": 1, "budget": 1, "overrides": {
            "pda": {"values": 16}, "shapley": {"samples": 2}, "rise": {"masks": 1000}}},
        # 227x227 with one input: the quick run keeps every row but at the smallest useful budgets
        "quick": {"n_max": 1, "budget": 1, "overrides": {
            **_QUICK_ALL, "occlusion": {"window": 16, "stride": 16}, "tfx.occlusion": {"patch_size": 16},
            "pda": {"window": 16, "stride": 16, "values": 4}, "ig": {"steps": 8}, "tfx.ig": {"steps": 8},
            "inn.integrated_gradients": {"steps": 8}, "sg": {"samples": 2}, "vargrad": {"samples": 2},
            "squaregrad": {"samples": 2}, "inn.smoothgrad": {"samples": 2}, "tfx.smoothgrad": {"samples": 2},
            "lime": {"num_samples": 32}, "lime.lib": {"num_samples": 32}, "kernelshap": {"nsamples": 32},
            "shap.lib": {"nsamples": 32}, "shap.partition": {"max_evals": 32}}},
    },
}


def _cifar_224(n, rng):
    """``n`` CIFAR-10 test images resized to 224x224x3 (bilinear, in [0, 1]) and their note; seeded
    uniform noise without the data directory."""
    ds, why = _dataset("cifar10")
    if ds is not None:
        x = tf.image.resize(ds.x_test[:n].astype(np.float32) / 255.0, (224, 224)).numpy().clip(0, 1)
        return x, f"CIFAR-10 test images 0-{n - 1}, resized to 224x224 (bilinear)"
    return rng.random((n, 224, 224, 3), dtype=np.float32), f"seeded uniform noise ({why})"


# the custom layers of vit_tiny(custom=True), which native LRP reads when they are declared affine
VIT_CUSTOM_LAYERS = ("Patches", "PatchEncoder")


def vit_tiny(keras, blocks=6, dim=192, heads=3, mlp=768, patch=16, size=224, classes=1000, custom=False):
    """A vision transformer of DeiT-Tiny's size: patches embedded by a strided Conv2D, ``blocks``
    pre-norm blocks (LayerNormalization, MultiHeadAttention, residual; LayerNormalization, Dense GELU
    MLP, residual), a final LayerNormalization, the tokens' mean and a Dense head; from Keras layers
    only, without position embedding or class token. ``custom=True``: the patch embedding of
    keras.io's ViT example instead, two custom layers (:data:`VIT_CUSTOM_LAYERS`): ``Patches``
    (``keras.ops.image.extract_patches``) and ``PatchEncoder`` (a Dense projection plus a learned
    position embedding)."""
    L, ops = keras.layers, keras.ops
    tokens = (size // patch) ** 2

    class Patches(L.Layer):
        def call(self, images):
            p = ops.image.extract_patches(images, size=patch)
            return ops.reshape(p, (ops.shape(images)[0], tokens, patch * patch * 3))

    class PatchEncoder(L.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.projection, self.position_embedding = L.Dense(dim), L.Embedding(tokens, dim)

        def call(self, x):
            return self.projection(x) + self.position_embedding(ops.expand_dims(ops.arange(0, tokens), 0))

    inp = keras.Input((size, size, 3))
    if custom:
        x = PatchEncoder()(Patches()(inp))
    else:
        x = L.Reshape((tokens, dim))(L.Conv2D(dim, patch, strides=patch)(inp))
    for _ in range(blocks):
        h = L.LayerNormalization(epsilon=1e-6)(x)
        x = L.Add()([x, L.MultiHeadAttention(heads, dim // heads)(h, h)])
        h = L.LayerNormalization(epsilon=1e-6)(x)
        x = L.Add()([x, L.Dense(dim)(L.Dense(mlp, activation="gelu")(h))])
    x = L.GlobalAveragePooling1D()(L.LayerNormalization(epsilon=1e-6)(x))
    return keras.Model(inp, L.Dense(classes)(x), name="vit_custom" if custom else "vit_tiny")


@dataclass
class Case:
    name: str
    model: object
    x: np.ndarray
    targets: np.ndarray
    inputs_note: str
    weights_note: str
    n_max: int
    budget: int
    overrides: dict
    batch_size: int = 256
    extra: dict = field(default_factory=dict)
    fixed_n: dict = field(default_factory=dict)

    def settings(self, method):
        return dict(self.overrides.get(method, {}))

    def n_for(self, evals_per_input, backward, method=None):
        """Inputs of a row: ``fixed_n[method]`` if set, else as many as the budget allows, at least
        1, at most n_max."""
        if method in self.fixed_n:
            return int(min(self.fixed_n[method], len(self.x)))
        per = evals_per_input * (3 if backward else 1)
        return int(max(1, min(self.n_max, self.budget // max(1, per))))


def _dataset(name):
    from xaitf.data import load_dataset

    try:
        return load_dataset(name, download=False), None
    except Exception as e:  # noqa: BLE001 - timing works on noise too, but the case says so
        return None, f"{type(e).__name__}: {str(e)[:160]}"


def predict(model, x, batch_size=256):
    return np.concatenate([np.asarray(model(tf.constant(x[i:i + batch_size]), training=False))
                           for i in range(0, len(x), batch_size)])


def _trained_mnist(model, ds):
    """One epoch on MNIST rows 0-7999 (cached): a model with a signal, not a tuned one."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "mnist_cnn_1epoch.weights.h5"
    if path.exists():
        model.load_weights(str(path))
        return f"trained 1 epoch on {ds.split.split('/')[0].strip()} (cached {path.name})"
    from xaitf.keras_bridge import tfk

    x = np.repeat(ds.x_train.astype(np.float32) / 255.0, 3, axis=-1)
    model.compile(tfk.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, ds.y_train, batch_size=128, epochs=1, verbose=0, shuffle=True)
    xt = np.repeat(ds.x_test.astype(np.float32) / 255.0, 3, axis=-1)
    acc = float((predict(model, xt).argmax(1) == ds.y_test).mean())
    model.save_weights(str(path))
    return f"trained 1 epoch on {ds.split.split('/')[0].strip()} (held-out accuracy {acc:.3f})"


def _trained_cifar(model, ds, epochs=2):
    """Two epochs on the CIFAR-10 train subset (cached): a model with a signal, not a tuned one."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"cifar_cnn_{epochs}epochs.weights.h5"
    split = ds.split.split('/')[0].strip()
    if path.exists():
        model.load_weights(str(path))
        return f"trained {epochs} epochs on CIFAR-10 {split} (cached {path.name})"
    from xaitf.keras_bridge import tfk

    model.compile(tfk.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(ds.x_train.astype(np.float32) / 255.0, ds.y_train.reshape(-1), batch_size=64,
              epochs=epochs, verbose=0, shuffle=True)
    xt = ds.x_test.astype(np.float32) / 255.0
    acc = float((predict(model, xt).argmax(1) == ds.y_test.reshape(-1)).mean())
    model.save_weights(str(path))
    return f"trained {epochs} epochs on CIFAR-10 {split} (held-out accuracy {acc:.3f})"


def build_case(name, quick=False, seed=0):
    """The :class:`Case` ``name`` with its model, inputs and targets (all seeded)."""
    from xaitf import zoo

    spec = CASES[name]["quick" if quick else "full"]
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    n = spec["n_max"]
    extra = {}      # data: (images, labels) the interventional method learns its class graphs from
    if name == "mnist_cnn":
        model = zoo.build_mnist_cnn()
        ds, why = _dataset("mnist")
        if ds is not None:
            x = np.repeat(ds.x_test[:n].astype(np.float32) / 255.0, 3, axis=-1)
            inputs = f"MNIST test images ({ds.source.split(' (')[0]}, held-out rows)"
            weights = _trained_mnist(model, ds)
            extra["data"] = (np.repeat(ds.x_test[1000:3000].astype(np.float32) / 255.0, 3, axis=-1),
                             ds.y_test[1000:3000].reshape(-1))
        else:
            x = rng.random((n, 28, 28, 3), dtype=np.float32)
            inputs, weights = f"seeded uniform noise ({why})", "untrained, seeded"
    elif name == "cifar_cnn":
        model = zoo.build_mnist_cnn(input_shape=(32, 32, 3))
        ds, why = _dataset("cifar10")
        if ds is not None:
            x = ds.x_test[:n].astype(np.float32) / 255.0
            inputs = f"CIFAR-10 test images ({ds.source.split(' + ')[-1].split(' (')[0]})"
            weights = _trained_cifar(model, ds)
            extra["data"] = (ds.x_test[200:].astype(np.float32) / 255.0, ds.y_test[200:].reshape(-1))
        else:
            x = rng.random((n, 32, 32, 3), dtype=np.float32)
            inputs, weights = f"seeded uniform noise ({why})", "untrained, seeded"
    elif name == "xainn_baseline":
        model = zoo.build_xainn_baseline()
        ds, why = _dataset("cifar10")
        if ds is not None:
            x = ds.x_test[:n].astype(np.float32) / 255.0
            inputs = f"CIFAR-10 test images ({ds.source.split(' + ')[-1].split(' (')[0]})"
        else:
            x = rng.random((n, 32, 32, 3), dtype=np.float32)
            inputs = f"seeded uniform noise ({why})"
        weights = "untrained, seeded (timing and agreement of deterministic methods need no training)"
    elif name == "resnet50_k3":
        from xaitf.keras_bridge import keras3

        k3 = keras3()
        k3.utils.set_random_seed(seed)
        model = k3.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=1000)
        x, inputs = _cifar_224(n, rng)
        weights = f"Keras {k3.__version__} ResNet50(weights=None), seeded random (not trained)"
    elif name == "vit_tiny_k3":
        from xaitf.keras_bridge import keras3

        k3 = keras3()
        k3.utils.set_random_seed(seed)
        model = vit_tiny(k3)
        x, inputs = _cifar_224(n, rng)
        weights = f"Keras {k3.__version__} layers, DeiT-Tiny-sized ViT, seeded random (not trained)"
    elif name in ("vit_custom_k3", "vit_custom_read_k3"):
        from xaitf.keras_bridge import keras3

        k3 = keras3()
        k3.utils.set_random_seed(seed)
        model = vit_tiny(k3, custom=True)
        x, inputs = _cifar_224(n, rng)
        weights = (f"Keras {k3.__version__}, DeiT-Tiny-sized ViT with keras.io's custom patch layers, seeded "
                   "random (not trained)")
    elif name == "center_pixel":
        model = zoo.build_center_pixel()
        ds, why = _dataset("cifar10")
        if ds is not None:
            img = ds.x_test[:1].astype(np.float32).mean(-1, keepdims=True) / 255.0
            x = tf.image.resize(img, (227, 227)).numpy().clip(0, 1)
            inputs = "CIFAR-10 test image 0, gray, resized to 227x227"
        else:
            x = rng.random((1, 227, 227, 1), dtype=np.float32)
            inputs = f"seeded uniform noise ({why})"
        weights = "hand-built (study 1)"
    else:
        raise KeyError(f"unknown case {name!r}; valid: {', '.join(CASES)}")
    targets = predict(model, x).argmax(1).astype(np.int64)
    overrides = spec["overrides"]
    if overrides == "custom":           # every native LRP method declares the custom layers affine
        from xaitf import registry

        overrides = {**(_QUICK_ALL if quick else {}),
                     **{m: {"affine_layers": VIT_CUSTOM_LAYERS} for m in registry.list_methods()
                        if m.startswith(("lrp.", "deep_taylor"))}}
    return Case(name, model, x.astype(np.float32), targets, inputs, weights, spec["n_max"],
                spec["budget"], overrides, batch_size=spec.get("batch_size", 256), extra=extra,
                fixed_n=dict(spec.get("n", {})))


DEFAULT = ("mnist_cnn", "cifar_cnn", "center_pixel")


def tiny_case(model, x, name="tiny"):
    """A :class:`Case` around any small model (tests): 1 input per row."""
    targets = predict(model, x).argmax(1).astype(np.int64)
    return Case(name, model, np.asarray(x, np.float32), targets, "given", "given", len(x), 1,
                dict(_QUICK_ALL), batch_size=64)


def data_dir():
    return os.environ.get("XAITF_DATA_DIR", "")
