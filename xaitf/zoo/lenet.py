"""LeNet-5 as used by study 2 (interventional explanations, arXiv 2305.08950).

Input (32, 32, 1) in [0, 1]: MNIST digits resized 28 -> 32 with bilinear interpolation
(see :func:`xaitf.zoo.registry.prepare_inputs`). Layers, named as the study's config expects:

``conv1`` Conv2D 6 5x5 (linear) -> ``relu1`` -> ``pool1`` MaxPool 2 ->
``conv2`` Conv2D 16 5x5 (linear) -> ``relu2`` -> ``pool2`` MaxPool 2 -> ``flatten`` (400) ->
``fc1`` Dense 120 ReLU -> ``fc2`` Dense 84 ReLU -> ``fc3`` Dense 10 (linear: the logits) ->
``softmax`` (a separate Softmax layer).

The conv layers have no built-in activation so that ``conv1``/``conv2`` outputs are the
pre-ReLU/pre-pool activations the study's attribution uses; ``fc3`` outputs logits (the quantity
the interventions measure) and the model's output is the separate softmax, which
:func:`xaitf.keras_bridge.logits_model` strips. 61,706 parameters.
"""
from ..keras_bridge import tfk

LENET_PARAMS = 61_706


def build_lenet(input_shape=(32, 32, 1), num_classes=10):
    """LeNet-5 (tf-keras) with layer names conv1, conv2, fc1, fc2, fc3 and a final ``softmax`` layer.

    Args:
        input_shape: (H, W, C) of the [0, 1] input; (32, 32, 1) gives the 400-unit flatten.
        num_classes: units of ``fc3``.
    """
    inp = tfk.Input(input_shape, name="image")
    h = tfk.layers.Conv2D(6, 5, name="conv1")(inp)
    h = tfk.layers.ReLU(name="relu1")(h)
    h = tfk.layers.MaxPooling2D(2, name="pool1")(h)
    h = tfk.layers.Conv2D(16, 5, name="conv2")(h)
    h = tfk.layers.ReLU(name="relu2")(h)
    h = tfk.layers.MaxPooling2D(2, name="pool2")(h)
    h = tfk.layers.Flatten(name="flatten")(h)
    h = tfk.layers.Dense(120, activation="relu", name="fc1")(h)
    h = tfk.layers.Dense(84, activation="relu", name="fc2")(h)
    h = tfk.layers.Dense(num_classes, name="fc3")(h)
    out = tfk.layers.Softmax(name="softmax")(h)
    return tfk.Model(inp, out, name="lenet")
