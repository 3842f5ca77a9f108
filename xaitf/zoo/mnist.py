"""Study 4's MNIST CNN (LIME / Kernel SHAP / LRP on MNIST).

Input (28, 28, 3) in [0, 1]: the gray digit replicated into three channels (the study fed RGB-shaped
images to LIME). Layers: Conv2D 32 3x3 ReLU, MaxPool 2, Conv2D 64 3x3 ReLU, MaxPool 2, Flatten,
Dropout 0.5, Dense 10 softmax. 896 + 18,496 + 16,010 = 35,402 parameters. The study trained it with
Adam, batch 128, 15 epochs on the 60k MNIST training set (test accuracy 0.9917).
"""
from ..keras_bridge import tfk

MNIST_CNN_PARAMS = 35_402


def build_mnist_cnn(input_shape=(28, 28, 3), num_classes=10, dropout=0.5):
    """The study-4 MNIST CNN (tf-keras; final Dense ``predictions`` with a softmax activation).

    Args:
        input_shape: (H, W, C) of the [0, 1] input; (28, 28, 3) gives the study's 35,402 parameters.
        num_classes: output units.
        dropout: rate of the Dropout layer before the classifier.
    """
    inp = tfk.Input(input_shape, name="image")
    h = tfk.layers.Conv2D(32, 3, activation="relu", name="conv1")(inp)
    h = tfk.layers.MaxPooling2D(2, name="pool1")(h)
    h = tfk.layers.Conv2D(64, 3, activation="relu", name="conv2")(h)
    h = tfk.layers.MaxPooling2D(2, name="pool2")(h)
    h = tfk.layers.Flatten(name="flatten")(h)
    h = tfk.layers.Dropout(dropout, name="dropout")(h)
    out = tfk.layers.Dense(num_classes, activation="softmax", name="predictions")(h)
    return tfk.Model(inp, out, name="mnist_cnn")
