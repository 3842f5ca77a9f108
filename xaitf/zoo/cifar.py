"""Study 4's CIFAR-10 VGG16-style network (LIME / Kernel SHAP / LRP on CIFAR-10).

Input (32, 32, 3) in [0, 1]; the study's per-channel standardisation ``(x - mean) / std`` (training
set statistics) is the model's first layer (``standardize``, a frozen BatchNormalization), so users
and explanation methods feed [0, 1] images. Thirteen 3x3 'same' convolutions in blocks
[64, 64], [128, 128], [256 x 3], [512 x 3], [512 x 3], each Conv -> ReLU -> BatchNorm, followed by
Dropout (0.3 after the first conv, 0.4 after the other non-final convs of a block), a MaxPool 2 after
each block, Dropout 0.5, Flatten, Dense 512 ReLU BN, Dropout 0.5, Dense 10 (``logits``) and a separate
``softmax`` layer. L2 weight decay 5e-4 on every kernel. Study 4 trained it 250 epochs with SGD
(lr 0.1, momentum 0.9, Nesterov, halved every 20 epochs) and rotation 15 / shifts 0.1 / h-flip
augmentation, reaching 0.935 validation accuracy.
"""
from ..keras_bridge import tfk
from ._common import standardize

# ImageNet-free defaults: CIFAR-10 training-set channel statistics of [0, 1] images (50k images).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def build_cifar_vgg(input_shape=(32, 32, 3), num_classes=10, weight_decay=5e-4,
                    mean=CIFAR_MEAN, std=CIFAR_STD, bn_momentum=0.99, dropout=1.0):
    """The study-4 VGG16-style CIFAR-10 classifier (tf-keras, ~15.0M parameters).

    Args:
        input_shape: (H, W, C) of the [0, 1] input.
        num_classes: output units.
        weight_decay: L2 coefficient on every Conv2D/Dense kernel (study: 5e-4).
        mean, std: per-channel statistics used by the built-in ``standardize`` layer (create_model.py
            sets them from the training images it trains on).
        bn_momentum: Keras momentum of the BatchNormalization layers (0.99, Keras' default, as in
            the study; the quick CPU schedule uses 0.9 so that ~150 steps give usable moving
            statistics).
        dropout: factor on every dropout rate (1.0: the study's 0.3 / 0.4 / 0.5; the quick CPU
            schedule, on 2,000 images and ~20 epochs, uses less so that the network learns at all).
    """
    scale = float(dropout)
    if not 0.0 <= scale <= 2.0:
        raise ValueError(f"dropout is a factor on the study's rates in [0, 2], got {dropout!r}")
    reg = tfk.regularizers.l2(weight_decay) if weight_decay else None
    inp = tfk.Input(input_shape, name="image")
    h = standardize(inp, mean, std)
    for b, widths in enumerate(VGG_BLOCKS, start=1):
        for c, width in enumerate(widths, start=1):
            h = tfk.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_regularizer=reg,
                                  name=f"block{b}_conv{c}")(h)
            h = tfk.layers.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{c}")(h)
            if c < len(widths):
                rate = 0.3 if b == 1 else 0.4
                h = tfk.layers.Dropout(min(rate * scale, 0.9), name=f"block{b}_drop{c}")(h)
        h = tfk.layers.MaxPooling2D(2, name=f"block{b}_pool")(h)
    h = tfk.layers.Dropout(min(0.5 * scale, 0.9), name="drop_flat")(h)
    h = tfk.layers.Flatten(name="flatten")(h)
    h = tfk.layers.Dense(512, activation="relu", kernel_regularizer=reg, name="fc1")(h)
    h = tfk.layers.BatchNormalization(momentum=bn_momentum, name="fc1_bn")(h)
    h = tfk.layers.Dropout(min(0.5 * scale, 0.9), name="drop_fc1")(h)
    h = tfk.layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(h)
    out = tfk.layers.Softmax(name="softmax")(h)
    return tfk.Model(inp, out, name="cifar_vgg")
