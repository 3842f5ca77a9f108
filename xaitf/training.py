"""Shared training helpers for the model zoo (used by ``create_model.py``).

* Training schedules are :class:`xaitf.zoo.registry.Recipe` objects (optimizer, learning rate and
  its halving period, epochs, batch size, augmentation, loss).
* :func:`set_seed`: one call that seeds Python, NumPy and TensorFlow.
* :func:`fit`: compile and train a tf-keras model on in-memory arrays with a ``tf.data`` pipeline
  (shuffling and augmentation seeded), a progress bar, and per-epoch history.
* :func:`accuracy`: top-1 accuracy of a probability/logit model in chunks.
* :class:`ProgressBar`: a tqdm bar per epoch; on CI (``CI=true``) or when stdout is not a terminal,
  one short line per epoch instead.
"""
import math
import os
import sys
import time

import numpy as np

from .keras_bridge import tfk


def set_seed(seed, deterministic=False):
    """Seed Python's ``random``, NumPy and TensorFlow (``tf.keras.utils.set_random_seed``).

    ``deterministic=True`` also turns on TensorFlow's op determinism (process-wide; slower on GPU;
    used by create_model.py, which runs in its own process).
    """
    import tensorflow as tf

    tfk.utils.set_random_seed(int(seed))
    if deterministic:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001 - older TF: best effort
            pass


def quiet_logs():
    """True when progress output should be one line per epoch (``CI`` set, or not a terminal)."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or not sys.stdout.isatty()


class ProgressBar(tfk.callbacks.Callback):
    """Training progress: a tqdm bar over the steps of each epoch, or one line per epoch.

    Args:
        epochs: total epochs (for the "epoch i/n" label).
        steps: steps per epoch.
        label: prefix of every line (the model name).
        compact: one line per epoch instead of a bar (default: :func:`quiet_logs`).
        stream: where to write (stdout).
    """

    def __init__(self, epochs, steps, label="", compact=None, stream=None):
        super().__init__()
        self.epochs, self.steps, self.label = epochs, steps, label
        self.compact = quiet_logs() if compact is None else compact
        self.stream = stream or sys.stdout
        self._bar = None
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        if not self.compact:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.steps, desc=f"{self.label} epoch {epoch + 1}/{self.epochs}",
                             leave=False, file=self.stream, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            if logs and batch % 5 == 0:
                self._bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()
                                       if k in ("loss", "accuracy")}, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()
                          if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        dt = time.perf_counter() - self._t0
        print(f"{self.label} epoch {epoch + 1}/{self.epochs}: {shown} ({dt:.1f} s)",
              file=self.stream, flush=True)


def augmenter(kind, seed=0):
    """A tf-keras Sequential of random preprocessing layers for ``kind`` (see :class:`xaitf.zoo.registry.Recipe`)."""
    L = tfk.layers
    if kind == "flip_affine":      # study 3: torchvision flips + RandomAffine(10, (0.1, 0.1), (0.9, 1.1))
        layers = [L.RandomFlip("horizontal", seed=seed),
                  L.RandomRotation(10 / 360, fill_mode="constant", seed=seed + 1),
                  L.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 2),
                  L.RandomZoom(0.1, fill_mode="constant", seed=seed + 3)]
    elif kind == "flip":           # horizontal flips only
        layers = [L.RandomFlip("horizontal", seed=seed)]
    elif kind == "shift_flip":     # the quick CIFAR schedules: pad-and-crop style shifts + h-flips
        layers = [L.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed),
                  L.RandomFlip("horizontal", seed=seed + 1)]
    elif kind == "vgg":            # study 4: ImageDataGenerator(rotation 15, shifts 0.1, h-flip)
        layers = [L.RandomRotation(15 / 360, fill_mode="nearest", seed=seed),
                  L.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
                  L.RandomFlip("horizontal", seed=seed + 2)]
    else:
        raise ValueError(f"unknown augmentation {kind!r}; expected flip, shift_flip, flip_affine or vgg")
    return tfk.Sequential(layers, name=f"augment_{kind}")


def make_dataset(x, y, batch_size, shuffle=True, augment=None, seed=0):
    """A ``tf.data`` pipeline over in-memory arrays: seeded shuffle, optional augmentation, batches."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        aug = augmenter(augment, seed)
        ds = ds.map(lambda a, b: (aug(a, training=True), b))
    return ds.prefetch(2)


def learning_rate(recipe, steps_per_epoch):
    """The optimizer's learning rate for ``recipe``: a float, or a per-step cosine schedule."""
    if recipe.schedule is None:
        return recipe.lr
    if recipe.schedule != "cosine":
        raise ValueError(f"unknown schedule {recipe.schedule!r}; expected cosine or None")
    warm = int(recipe.warmup) * steps_per_epoch
    decay = max(1, (recipe.epochs - int(recipe.warmup)) * steps_per_epoch)
    if warm:
        return tfk.optimizers.schedules.CosineDecay(recipe.lr / 10, decay, warmup_target=recipe.lr,
                                                    warmup_steps=warm)
    return tfk.optimizers.schedules.CosineDecay(recipe.lr, decay)


def _optimizer(recipe, steps_per_epoch=1):
    lr = learning_rate(recipe, steps_per_epoch)
    if recipe.optimizer == "adam":
        return tfk.optimizers.Adam(lr)
    if recipe.optimizer == "sgd":
        return tfk.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; expected adam or sgd")


def _loss(name):
    if name == "sparse_ce":
        return tfk.losses.SparseCategoricalCrossentropy(), ["accuracy"]
    if name == "sparse_ce_logits":
        return tfk.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    if name == "bce_logits":
        return (tfk.losses.BinaryCrossentropy(from_logits=True),
                [tfk.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
    raise ValueError(f"unknown loss {name!r}")


def fit(model, x, y, recipe, validation=None, seed=0, label="", progress=True, callbacks=None):
    """Compile ``model`` for ``recipe`` and train it on arrays ``x`` (float, model input) and ``y``.

    Args:
        model: a tf-keras model.
        x, y: training inputs and integer labels (or 0/1 labels for ``bce_logits``).
        recipe: a :class:`xaitf.zoo.registry.Recipe`.
        validation: optional ``(x_val, y_val)`` evaluated after every epoch (monitoring only; no
            model selection or early stopping uses it).
        seed: seed of the shuffle and augmentation.
        label: name shown on progress lines.
        progress: False trains silently.
        callbacks: extra Keras callbacks (e.g. ``xaitf.tracking.keras_callback``).

    Returns a dict: ``history`` (per-epoch lists), ``train_seconds``, ``steps_per_epoch``.
    """
    loss, metrics = _loss(recipe.loss)
    steps = math.ceil(len(x) / recipe.batch_size)
    model.compile(optimizer=_optimizer(recipe, steps), loss=loss, metrics=metrics)
    ds = make_dataset(x, y, recipe.batch_size, shuffle=True, augment=recipe.augment, seed=seed)
    callbacks = list(callbacks or [])
    if recipe.halve_every:
        lr0, every = recipe.lr, recipe.halve_every
        callbacks.append(tfk.callbacks.LearningRateScheduler(lambda e: lr0 * 0.5 ** (e // every)))
    if progress:
        callbacks.append(ProgressBar(recipe.epochs, steps, label=label))
    val = None
    if validation is not None:
        val = make_dataset(validation[0], validation[1], 512, shuffle=False)
    t0 = time.perf_counter()
    hist = model.fit(ds, epochs=recipe.epochs, validation_data=val, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return {"history": history, "train_seconds": seconds, "steps_per_epoch": steps}


def predict(model, x, batch_size=512):
    """``model`` outputs for ``x`` in chunks, as one numpy array (inference mode)."""
    outs = [model(np.asarray(x[i:i + batch_size], np.float32), training=False).numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def accuracy(model, x, y, batch_size=512):
    """Top-1 accuracy; for a one-unit output, the logit's sign against 0/1 labels."""
    out = predict(model, x, batch_size)
    y = np.asarray(y).reshape(-1)
    pred = (out[:, 0] > 0).astype(y.dtype) if out.shape[-1] == 1 else out.argmax(axis=1)
    return float(np.mean(pred == y))
