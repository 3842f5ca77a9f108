"""Small building blocks shared by the zoo builders."""
import numpy as np

from ..keras_bridge import tfk


def standardize(x, mean, std, name="standardize"):
    """Apply ``(x - mean) / std`` per channel as a frozen BatchNormalization layer.

    A BatchNormalization layer (no gamma/beta, ``trainable=False``) with ``moving_mean = mean`` and
    ``moving_variance = std**2 - epsilon`` computes exactly ``(x - mean) / std`` in every mode. Unlike
    a Normalization/Rescaling/Lambda layer it round-trips through tf-keras ``.h5`` files and Keras 3,
    and iNNvestigate's LRP analysers know it, so the model can take [0, 1] images directly.

    Args:
        x: input tensor (N, H, W, C).
        mean, std: scalars or length-C sequences (the input statistics).
        name: layer name.
    """
    channels = int(x.shape[-1])
    mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,)).copy()
    std = np.broadcast_to(np.asarray(std, np.float32), (channels,)).copy()
    eps = 1e-5
    if np.any(std ** 2 <= 10 * eps):
        raise ValueError(f"standardize: std {std} too small for a BatchNormalization layer")
    layer = tfk.layers.BatchNormalization(center=False, scale=False, epsilon=eps, name=name)
    layer.trainable = False
    y = layer(x)
    layer.set_weights([mean, std ** 2 - eps])
    return y
