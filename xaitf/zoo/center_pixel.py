"""The hand-built center-pixel model of study 1 (never trained).

Input (S,S,1) in [0,1]; Flatten; Dense(C) + ReLU; a separate Softmax layer. The logit of class i is
``alpha * (255 * sum_j r_j x_j - 510 p + 2 i p - i^2 + C^2 + 1 + 3e6)`` with p the centre pixel's
intensity (0..255): the class-dependent part is ``-alpha (p - i)^2``, so the prediction is the centre
pixel's value, while every other pixel moves all logits equally and has a non-zero gradient.
"""
import numpy as np

from ..keras_bridge import tfk


def center_pixel_weights(image_size=227, num_classes=256, alpha=10.0, seed=0):
    """(W, b) of the Dense layer: W (S*S, C), b (C,), float64 before the cast."""
    n = image_size * image_size
    c = num_classes
    k = n // 2
    r = np.random.RandomState(seed).uniform(-1, 1, size=n) * 2 * c / 15
    w = np.repeat(r[:, None], c, axis=1)
    i = np.arange(c, dtype=np.float64)
    w[k, :] = 2 * i - 2 * (c - 1)
    b = c ** 2 + 1 - i ** 2 + 3_000_000
    return w * 255 * alpha, b * alpha


def build_center_pixel(image_size=227, num_classes=256, alpha=10.0, relu=True, seed=0):
    """The study-1 center-pixel classifier as a tf-keras model (pre-softmax Dense named 'logits')."""
    w, b = center_pixel_weights(image_size, num_classes, alpha, seed)
    inp = tfk.Input((image_size, image_size, 1), name="image")
    h = tfk.layers.Flatten(name="flatten")(inp)
    # float64: logits are ~3e7 and neighbouring classes differ by alpha; float32 rounding (ulp 4)
    # would blur the softmax (top probability 0.9993 instead of 0.99991).
    dense = tfk.layers.Dense(num_classes, activation="relu" if relu else None, name="logits",
                             dtype="float64")
    h = dense(h)
    out = tfk.layers.Softmax(name="softmax", dtype="float64")(h)
    model = tfk.Model(inp, out, name="center_pixel")
    dense.set_weights([w, b])
    return model


def center_index(image_size=227):
    """(row, col) of the centre pixel: flat index n // 2."""
    k = (image_size * image_size) // 2
    return divmod(k, image_size)
