"""Study 5's SVHN target-digit classifier: ResNet-18 trained from scratch, one logit.

Input (S, S, 3) in [0, 1] (S = 64 for training; the network is fully convolutional up to a global
average pool, so ``input_size=None`` builds a variable-size model for 128/224-pixel explanations).
The study's ``(x - 0.5) / 0.5`` normalisation is the model's first layer (``standardize``, a frozen
BatchNormalization), so callers feed [0, 1] images.

Architecture (He et al. 2016, ResNet-18 as in torchvision): ZeroPad 3, Conv 7x7/2 64, BN, ReLU,
ZeroPad 1, MaxPool 3x3/2; four stages of two basic blocks (64, 128, 256, 512 filters; stride 2 at the
first block of stages 2-4, with a 1x1/2 Conv + BN projection shortcut); each basic block is
Conv 3x3 BN ReLU Conv 3x3 BN, Add, ReLU. The ReLU that ends stage k is named ``layer{k}`` (Grad-CAM
on the last block: ``layer="layer4"``). GlobalAveragePooling, Dense 1 (``logit``): output (N, 1), the
logit of "target digit present" (train with binary cross-entropy on logits; probability =
sigmoid(logit)). 11,186,631 parameters (11,177,025 trainable, as torchvision's resnet18 with one output; the rest are BN moving statistics).
"""
from ..keras_bridge import tfk
from ._common import standardize


def _conv_bn(h, filters, kernel, stride, name):
    L = tfk.layers
    if kernel > 1:
        h = L.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(h)
    h = L.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{name}_conv")(h)
    return L.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(h)


def _basic_block(h, filters, stride, name, out_name=None):
    L = tfk.layers
    shortcut = h
    y = _conv_bn(h, filters, 3, stride, f"{name}_1")
    y = L.ReLU(name=f"{name}_relu1")(y)
    y = _conv_bn(y, filters, 3, 1, f"{name}_2")
    if stride != 1 or int(shortcut.shape[-1]) != filters:
        shortcut = _conv_bn(shortcut, filters, 1, stride, f"{name}_down")
    y = L.Add(name=f"{name}_add")([y, shortcut])
    return L.ReLU(name=out_name or f"{name}_out")(y)


def build_svhn_resnet18(input_size=64, channels=3, mean=0.5, std=0.5):
    """ResNet-18 with a single logit output (N, 1) for study 5 (tf-keras).

    Args:
        input_size: square input side (64 in the study's training); None for any size.
        channels: input channels (3 for SVHN RGB).
        mean, std: the built-in input normalisation ``(x - mean) / std`` (study: 0.5, 0.5).
    """
    L = tfk.layers
    inp = tfk.Input((input_size, input_size, channels), name="image")
    h = standardize(inp, mean, std)
    h = _conv_bn(h, 64, 7, 2, "stem")
    h = L.ReLU(name="stem_relu")(h)
    h = L.ZeroPadding2D(1, name="stem_pool_pad")(h)
    h = L.MaxPooling2D(3, strides=2, name="stem_pool")(h)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        stride = 1 if stage == 1 else 2
        h = _basic_block(h, filters, stride, f"layer{stage}_0")
        h = _basic_block(h, filters, 1, f"layer{stage}_1", out_name=f"layer{stage}")
    h = L.GlobalAveragePooling2D(name="avgpool")(h)
    out = L.Dense(1, name="logit")(h)
    return tfk.Model(inp, out, name="svhn_resnet18")
