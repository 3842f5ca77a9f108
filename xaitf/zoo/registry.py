"""The model zoo's table: name -> study, builder, dataset, input preparation, training recipes.

Every zoo model takes images in [0, 1] (N, H, W, C) float32; any standardisation a study used is a
layer inside the model. Outputs are class probabilities (a final softmax, stripped by
:func:`xaitf.keras_bridge.logits_model` where a method needs logits), except ``svhn_resnet18``
(one logit, shape (N, 1)) and ``xainn_softmax`` (an average of per-pixel softmaxes: probabilities
with no softmax to strip).

Two recipes per trainable model: ``quick`` (the default of ``create_model.py``: CPU-friendly, on the
offline data subsets) and ``full`` (``--full``: the published schedule, for full datasets and a GPU).

``python create_model.py --list`` prints this table.
"""
import importlib
import json
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import ModelError


@dataclass(frozen=True)
class Recipe:
    """A training schedule.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per gradient step.
        optimizer: "adam" or "sgd".
        lr: initial learning rate.
        momentum, nesterov: SGD momentum settings (ignored by Adam).
        halve_every: if set, the learning rate is halved every this many epochs (study 4's VGG).
        schedule: None (constant, or ``halve_every``) or "cosine": a linear warm-up from lr/10 to lr
            over ``warmup`` epochs, then cosine decay to 0 at the last step (per step, Loshchilov &
            Hutter 2017), the schedule that lets the quick CPU recipes learn in ~20 epochs.
        warmup: warm-up epochs of the cosine schedule.
        augment: None, "flip" (horizontal flips), "shift_flip" (shifts up to 4 of 32 px, reflected,
            and h-flips: the usual CIFAR augmentation), "flip_affine" (study 3: h-flip, rotation +-10 deg, translation 0.1, scale
            0.9-1.1) or "vgg" (study 4: rotation +-15 deg, shifts 0.1, h-flip).
        loss: "sparse_ce" (categorical cross-entropy on probabilities, integer labels),
            "sparse_ce_logits" or "bce_logits" (binary cross-entropy on one logit).
        note: free text copied into the model's .json.
        builder_kwargs: extra builder arguments this schedule needs (e.g. BatchNorm momentum).
    """

    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    halve_every: int = None
    schedule: str = None
    warmup: int = 0
    augment: str = None
    loss: str = "sparse_ce"
    note: str = ""
    builder_kwargs: dict = field(default_factory=dict)

    def with_overrides(self, epochs=None, batch_size=None):
        """A copy with ``epochs``/``batch_size`` replaced where given."""
        kw = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
        return replace(self, **kw)

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: zoo name (also the file stem under ``models/``).
        study: which of the five studies (1-5) uses it.
        builder: ``"module:function"`` under ``xaitf.zoo`` (resolved lazily).
        dataset: "mnist", "cifar10", "svhn" or None (hand-built, never trained).
        input_shape: (H, W, C) of one [0, 1] input image.
        output: "probabilities" or "logit".
        params: parameter count of the default build (trainable + BN statistics).
        quick, full: training recipes (None for center_pixel).
        description: one line for ``--list``.
        save_format: "model" (a complete tf-keras .h5) or "weights" (weights + builder name and
            arguments in the .h5 attributes; for tfp layers, which .h5 model files cannot restore).
        preprocess: how raw uint8 images become the model input (see :func:`prepare_inputs`).
    """

    name: str
    study: int
    builder: str
    dataset: str
    input_shape: tuple
    output: str
    params: int
    quick: Recipe
    full: Recipe
    description: str
    save_format: str = "model"
    preprocess: str = "scale"


_MNIST_CNN_FULL = Recipe(15, 128, "adam", 1e-3, note="study 4: Adam, batch 128, 15 epochs (60k images)")
_XAINN_QUICK = Recipe(18, 64, "adam", 2e-3, schedule="cosine", warmup=1, augment="shift_flip",
                      note="quick CPU schedule for the 2,000-image offline subset (Adam 2e-3, 1 warm-up "
                           "epoch then cosine decay, 18 epochs, shifts + h-flips; ~11 min on 2 cores), "
                           "not the study's")
_XAINN_FULL = Recipe(50, 64, "sgd", 5e-3, augment="flip_affine",
                     note="study 3: SGD lr 5e-3, batch 64, 50 epochs, flips + affine")

ZOO = {e.name: e for e in [
    ZooEntry("center_pixel", 1, "center_pixel:build_center_pixel", None, (227, 227, 1),
             "probabilities", 13_191_680, None, None,
             "hand-built: prediction = centre pixel intensity (0..255); never trained",
             preprocess="gray"),
    ZooEntry("mnist_cnn", 4, "mnist:build_mnist_cnn", "mnist", (28, 28, 3), "probabilities", 35_402,
             Recipe(15, 128, "adam", 1e-3, note="study 4 schedule (Adam, batch 128, 15 epochs)"),
             _MNIST_CNN_FULL, "Conv32-Conv64-Dropout-Dense10 softmax, gray digit replicated to RGB",
             preprocess="gray_to_rgb"),
    ZooEntry("lenet", 2, "lenet:build_lenet", "mnist", (32, 32, 1), "probabilities", 61_706,
             Recipe(10, 64, "adam", 1e-3, note="quick schedule (the study ships no training recipe)"),
             Recipe(20, 64, "adam", 1e-3, note="20 epochs Adam 1e-3 (the study ships no recipe)"),
             "LeNet-5 conv1/conv2/fc1/fc2/fc3 (logits) + softmax; MNIST resized 28->32 bilinear",
             preprocess="resize32"),
    ZooEntry("bayesian_mlp", 4, "bayesian:build_bayesian_mlp", "mnist", (28, 28, 1),
             "probabilities", 1_628_180,
             Recipe(5, 128, "adam", 0.01, note="study 4: Adam lr 0.01, batch 128, 5 epochs; init_rho -1"),
             Recipe(5, 128, "adam", 0.01, note="study 4: Adam lr 0.01, batch 128, 5 epochs; init_rho -1"),
             "tfp DenseReparameterization 784-1024-10, N(0,1) priors, mean-field posterior, ELBO",
             save_format="weights"),
    ZooEntry("cifar_vgg", 4, "cifar:build_cifar_vgg", "cifar10", (32, 32, 3), "probabilities",
             15_001_424,
             Recipe(24, 64, "adam", 1e-3, schedule="cosine", warmup=1, augment="shift_flip",
                    builder_kwargs={"bn_momentum": 0.9, "weight_decay": 0.0, "dropout": 0.5},
                    note="quick CPU schedule for the 2,000-image offline subset (Adam 1e-3, 1 warm-up "
                         "epoch then cosine decay, 24 epochs, shifts + h-flips, BN momentum 0.9, no L2, "
                         "half the study's dropout; ~11 min on 2 cores), not the study's"),
             Recipe(250, 128, "sgd", 0.1, momentum=0.9, nesterov=True, halve_every=20, augment="vgg",
                    note="study 4: SGD 0.1 Nesterov momentum 0.9, halved every 20 epochs, 250 epochs"),
             "VGG16-style with BN/dropout/L2 5e-4, standardisation inside the model"),
    ZooEntry("xainn_baseline", 3, "xainn:build_xainn_baseline", "cifar10", (32, 32, 3),
             "probabilities", 4_506_180, _XAINN_QUICK, _XAINN_FULL,
             "XAINN model 1: shared trunk (10x16x16 class maps) + MLP head"),
    ZooEntry("xainn_softmax", 3, "xainn:build_xainn_softmax", "cifar10", (32, 32, 3),
             "probabilities", 699_170, _XAINN_QUICK, _XAINN_FULL,
             "XAINN model 2: trunk, per-pixel softmax, global average pool"),
    ZooEntry("xainn_poollinear", 3, "xainn:build_xainn_poollinear", "cifar10", (32, 32, 3),
             "probabilities", 1_270_680, _XAINN_QUICK, _XAINN_FULL,
             "XAINN model 3: trunk, per-pixel softmax, AvgPool 2, MLP head"),
    ZooEntry("svhn_resnet18", 5, "resnet:build_svhn_resnet18", "svhn", (64, 64, 3), "logit",
             11_186_631,
             Recipe(5, 32, "adam", 1e-3, loss="bce_logits", note="quick schedule"),
             Recipe(100, 32, "adam", 1e-3, loss="bce_logits",
                    note="study 5: BCE with logits, Adam 1e-3, batch 32, 100 epochs"),
             "ResNet-18 from scratch, one logit (target digit present), normalisation inside"),
]}


def names():
    """Zoo names in table order."""
    return list(ZOO)


def get(name):
    """The :class:`ZooEntry` for ``name``; ModelError naming the valid names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(f"unknown zoo model {name!r}; valid: {', '.join(ZOO)}") from None


def builder(name):
    """The builder function of a zoo model (imports its module on first use)."""
    mod, fn = get(name).builder.split(":")
    return getattr(importlib.import_module(f"xaitf.zoo.{mod}"), fn)


def build(name, **kwargs):
    """Build zoo model ``name`` (untrained, or hand-built for center_pixel)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*add_variable.*")   # tfp layers' deprecation noise
        return builder(name)(**kwargs)


def prepare_inputs(name, images):
    """Raw images -> the model's [0, 1] float32 input.

    ``images``: (N, H, W, C) or (N, H, W); integer dtypes are divided by 255, floats are taken as
    already in [0, 1]. Then, by model: ``mnist_cnn`` replicates gray to 3 channels; ``lenet``
    resizes 28x28 -> 32x32 (bilinear, TensorFlow ``tf.image.resize``; chosen over 2-px padding to
    match the study's resize transform); ``center_pixel`` converts RGB to gray.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    how = get(name).preprocess
    if how == "gray_to_rgb" and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif how == "gray" and x.shape[-1] == 3:
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    elif how == "resize32":
        import tensorflow as tf

        h, w = get(name).input_shape[:2]
        if x.shape[1:3] != (h, w):
            x = np.clip(tf.image.resize(x, (h, w), method="bilinear").numpy(), 0.0, 1.0)
    return x


def training_kwargs(name, x_train, seed=0):
    """Builder arguments that depend on the training data (recorded in the model's .json).

    ``cifar_vgg``: per-channel mean/std of the [0, 1] training images (study 4 standardises with
    training-set statistics); ``bayesian_mlp``: ``n_train`` (the ELBO's KL scale), ``init_rho``
    and the initialisers' ``seed``.
    """
    if name == "cifar_vgg":
        flat = np.asarray(x_train, np.float64).reshape(-1, x_train.shape[-1])
        return {"mean": [round(float(v), 6) for v in flat.mean(0)],
                "std": [round(float(v), 6) for v in flat.std(0)]}
    if name == "bayesian_mlp":
        from .bayesian import DEFAULT_INIT_RHO

        return {"n_train": int(len(x_train)), "init_rho": DEFAULT_INIT_RHO, "seed": int(seed)}
    return {}


# -- evaluation --------------------------------------------------------------------------------
def evaluate(name, model, x_test, y_test, seed=0):
    """Held-out metrics of a trained zoo model, as a dict of plain floats/ints.

    Every model: ``test_accuracy``. ``bayesian_mlp``: accuracy of the 10-sample model average
    (``test_accuracy``, as in study 4), the refusal rule (100 samples, median > 0.2) on the test digits
    (``refused_test_fraction``, ``accuracy_on_accepted``) and on 100 uniform-noise images
    (``refused_noise_fraction``), plus the single-sample accuracy.
    """
    from ..training import accuracy

    if name != "bayesian_mlp":
        return {"test_accuracy": accuracy(model, x_test, y_test)}
    from .bayesian import refuse, refusal_rule, sample_probs

    y = np.asarray(y_test)
    probs = sample_probs(model, x_test, samples=100, seed=seed)   # the first 10 give the average
    pred, refused = refusal_rule(probs, threshold=0.2)
    noise = np.random.RandomState(seed).uniform(0, 1, (100,) + tuple(x_test.shape[1:])).astype(np.float32)
    _, refused_noise = refuse(model, noise, samples=100, threshold=0.2, seed=seed + 1)
    accepted = ~refused
    return {
        "test_accuracy": float(np.mean(probs[:10].mean(0).argmax(1) == y)),
        "test_accuracy_single_sample": float(np.mean(probs[0].argmax(1) == y)),
        "refusal_rule": "100 samples, refuse unless some class's median probability > 0.2",
        "refused_test_fraction": float(refused.mean()),
        "refused_test_count": int(refused.sum()),
        "accuracy_on_accepted": float(np.mean(pred[accepted] == y[accepted])) if accepted.any() else None,
        "refused_noise_fraction": float(refused_noise.mean()),
        "noise_images": 100,
    }


def center_pixel_selftest(model, per_class=10, seed=0):
    """Study 1's self-test: accuracy on ``per_class`` random images per class (centre pixel = class)."""
    import tensorflow as tf

    size = int(model.inputs[0].shape[1])
    classes = int(model.outputs[0].shape[-1])
    rs = np.random.RandomState(seed)
    labels = np.repeat(np.arange(classes), per_class)
    x = rs.randint(0, 256, size=(len(labels), size, size, 1), dtype=np.uint8)
    c = (size * size) // 2
    x[:, c // size, c % size, 0] = labels
    forward = tf.function(lambda t: model(t, training=False), autograph=False)
    probs = np.concatenate([forward(tf.constant(x[i:i + 256], tf.float32) / 255.0).numpy()
                            for i in range(0, len(x), 256)])
    return {"test_accuracy": float(np.mean(probs.argmax(1) == labels)),
            "selftest_images": int(len(labels)),
            "min_top_probability": float(probs.max(1).min()),
            "mean_top_probability": float(probs.max(1).mean())}


# -- files -------------------------------------------------------------------------------------
WEIGHTS_ATTR = "xaitf_zoo_builder"
KWARGS_ATTR = "xaitf_zoo_kwargs"


def save(model, name, path, builder_kwargs=None):
    """Write ``model`` to ``path`` (.h5), atomically; returns the path.

    ``save_format == "model"``: a complete tf-keras .h5 (loads with any Keras). ``"weights"``:
    ``model.save_weights`` plus two root attributes, the zoo name (``xaitf_zoo_builder``) and the
    builder's keyword arguments as JSON (``xaitf_zoo_kwargs``); :func:`load_weights_file` (called by
    :func:`xaitf.load_model`) rebuilds the model and loads the weights.
    """
    from ..cli import atomic_write

    entry = get(name)
    kwargs = dict(builder_kwargs or {})

    def write(tmp):
        import h5py

        if entry.save_format == "weights":
            model.save_weights(tmp, save_format="h5")
        else:
            from ..keras_bridge import tf_warnings_off

            with tf_warnings_off(), warnings.catch_warnings():     # "compiled metrics have yet to be built"
                warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy.*")
                model.save(tmp, include_optimizer=False, save_format="h5")
        with h5py.File(tmp, "a") as f:
            f.attrs[WEIGHTS_ATTR if entry.save_format == "weights" else "xaitf_zoo_name"] = name
            f.attrs[KWARGS_ATTR] = json.dumps(kwargs)
        readable(tmp)

    return atomic_write(path, write)


def readable(path):
    """Give a file the usual permissions (0666 minus the umask; temporary files start at 0600)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def load_weights_file(path):
    """Rebuild a zoo model saved as weights (see :func:`save`); None if ``path`` is not such a file.

    The file names its builder and arguments; both are checked before anything is built, so a file
    cannot make xaitf call anything but a registered zoo builder with arguments it accepts: the name
    must be a zoo name, the arguments a JSON object whose keys the builder takes. Anything else, and
    weights that do not fit the rebuilt model, is a ModelError with one line naming the file.
    """
    import inspect

    import h5py

    from ..safe_loading import one_line

    try:
        with h5py.File(path, "r") as f:
            if WEIGHTS_ATTR not in f.attrs or "model_config" in f.attrs:
                return None
            name = f.attrs[WEIGHTS_ATTR]
            raw = f.attrs.get(KWARGS_ATTR, "{}")
    except OSError:
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    raw = raw.decode() if isinstance(raw, bytes) else str(raw)
    if name not in ZOO:
        raise ModelError(f"model file {path}: stored builder {one_line(name, 60)!r} ({WEIGHTS_ATTR}) "
                         f"is not a zoo model; valid: {', '.join(ZOO)}")
    try:
        kwargs = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ModelError(f"model file {path}: stored builder arguments ({KWARGS_ATTR}) are not valid "
                         f"JSON ({one_line(e, 100)})") from None
    if not isinstance(kwargs, dict):
        raise ModelError(f"model file {path}: stored builder arguments ({KWARGS_ATTR}) must be a JSON "
                         f"object, got {type(kwargs).__name__}")
    params = inspect.signature(builder(name)).parameters.values()
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = [k for k in kwargs if k not in valid]
        if unknown:
            raise ModelError(f"model file {path}: stored argument {one_line(unknown[0], 60)!r} is not "
                             f"an argument of zoo builder {name!r}; valid: {', '.join(valid)}")
    try:
        model = build(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - values a builder cannot take (types, ranges)
        raise ModelError(f"model file {path}: cannot rebuild zoo model {name!r} from its stored "
                         f"arguments {one_line(json.dumps(kwargs), 120)} ({type(e).__name__}: "
                         f"{one_line(e, 120)}); valid arguments: {', '.join(valid)}") from None
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - weights that do not fit the rebuilt model
        raise ModelError(f"model file {path}: its weights do not fit zoo model {name!r} built from "
                         f"its stored arguments ({type(e).__name__}: {one_line(e, 120)})") from None
    return model
