"""tf-explain 0.3.1's own methods, wrapped as they are and shown under their own names (``tfx.*``).

tf-explain (Meudec, github.com/sicara/tf-explain) handles tf-keras models only; Keras 3 models and
float64 models go through the eager tf-keras twin (:func:`xaitf.twin.tf_keras_twin`). Its
``explain()`` methods return coloured display grids, so these wrappers call the numeric core
functions behind them. tf-explain explains one class per call: inputs are grouped by target class
and each group goes through one call.

Known deviations of tf-explain 0.3.1 from the papers, kept on purpose so that its maps can be
compared with xaitf's own methods (say so wherever these maps are shown):

* :class:`TfxIntegratedGradients` returns the path-averaged gradient ``mean_k grad f(k/(m-1) x)``,
  k = 0..m-1, WITHOUT the ``(x - baseline)`` factor of Integrated Gradients; baseline fixed at 0.
* :class:`TfxSmoothGrad` differentiates the categorical cross-entropy ``-log p_c`` of the model's
  output, which assumes softmax outputs (on a logits model the maps are zero or sign-flipped).
* :class:`TfxOcclusion` fills each patch with the hard-coded value 127.5 (meant for 0..255 images,
  far outside a [0, 1] input range), moves the patch by its own size (stride = patch_size), scores
  ``1 - p_c(occluded)`` rather than the drop ``p_c(x) - p_c(occluded)``, and mixes up height and
  width on non-square images (refused here).
* :class:`TfxGradCam` needs the conv layer's name (default: the last Conv2D), uses guided
  gradients by default and does not clip negative values (no ReLU on the map).

Gradient maps are reduced over channels as tf-explain does before its display normalisation:
``sum_c |g_c|``. All maps come back as (N,H,W).
"""
import numpy as np

import tensorflow as tf

from ..errors import MethodError, ModelError
from ..explainer import Explainer
from ..keras_bridge import find_last_conv, kmodule, logits_model, output_head
from ..twin import require_tf_keras, tf_keras_twin

OUTPUTS = ("logits", "probabilities")


class _TfxBase(Explainer):
    """Shared plumbing: the tf-keras twin, the explained output, per-class grouping."""

    outputs = OUTPUTS     # tf-explain takes a model: the two named outputs (xaitf.outputs)

    def setup(self):
        # imported before the twin's tf.keras check: with keras imported before xaitf, importing
        # tf_explain leaves tf.keras as Keras 3
        try:
            import tf_explain  # noqa: F401
        except (AttributeError, ImportError):
            require_tf_keras()          # Keras 3's tf.keras: one line (tf_keras_twin below checks it too)
            raise

        self.twin = tf_keras_twin(self.model)
        logits = logits_model(self.twin)[0]
        if self.output == "logits":
            self.tfx_model = logits
        elif output_head(self.model) is not None:
            self.tfx_model = self.twin                   # its own softmax / sigmoid output
        else:                                            # no final softmax: add one to the twin
            km = kmodule("tf-keras")
            head = km.layers.Activation(self.logit_activation, name="xaitf_probabilities")
            self.tfx_model = km.Model(logits.inputs, head(logits.outputs[0]))
        self._setup()

    def _setup(self):
        pass

    def explain_class(self, x, class_index):
        """Maps (n,H,W) for inputs x that all share the target ``class_index``."""
        raise NotImplementedError

    def explain_batch(self, x, targets):
        out = np.zeros(x.shape[:3], dtype=np.float32)
        for c in np.unique(targets):
            idx = np.flatnonzero(targets == c)
            out[idx] = np.asarray(self.explain_class(x[idx], int(c)), dtype=np.float32)
        return out


class TfxGradCam(_TfxBase):
    """tf-explain's Grad-CAM (Selvaraju et al. 2017, ICCV), per class.

    ``cam = sum_k w_k A_k`` with ``A`` the activations of conv layer ``layer`` and ``w_k`` the
    spatial mean of ``dy_c/dA_k``; with ``use_guided_grads`` (tf-explain's default) the gradients are
    first masked by ``A > 0`` and ``grad > 0``. No ReLU is applied. The (h,w) map is resized to the
    input size bilinearly (as tf-explain's display does).

    Args:
        model: tf-keras or Keras 3 image classifier with a convolutional layer.
        layer: conv layer name; None = the last Conv2D (tf-explain itself needs the name) (None).
        use_guided_grads: mask the gradients by ``A > 0`` and ``grad > 0`` (tf-explain's default)
            (True).
        output: "logits" (y_c pre-softmax) | "probabilities" (tf-explain's own usage, the model as
            given) ("logits").
        **common: batch_size, channel_reduce, seed, progress (see :class:`xaitf.explainer.Explainer`).
    """

    key = "tfx_gradcam"     # the settings preset section (command lines and studies)

    def __init__(self, model, *, layer=None, use_guided_grads=True, output="logits", **common):
        super().__init__(model, params=dict(layer=layer, use_guided_grads=use_guided_grads,
                                            output=output), **common)

    def _setup(self):
        from tf_explain.core.grad_cam import GradCAM

        self._core = GradCAM
        name = self.params["layer"]
        if name is None:
            name = find_last_conv(self.twin, "tfx.gradcam").name
        from .cam import resolve_layer     # the user's layer names, looked up in the explained copy

        layer = resolve_layer(self.twin, self.tfx_model, name, "tfx.gradcam")
        if getattr(layer, "data_format", None) == "channels_first":
            raise ModelError(f"tfx.gradcam: layer {layer.name!r} is channels_first, which tf-explain reads as "
                             "channels_last; use the native gradcam")
        self.layer_name = layer.name

    def explain_class(self, x, class_index):
        outputs, grads = self._core.get_gradients_and_filters(
            self.tfx_model, x, self.layer_name, class_index, bool(self.params["use_guided_grads"]))
        cams = tf.stack(self._core.generate_ponderated_output(outputs, grads))[..., None]
        return tf.image.resize(cams, np.shape(x)[1:3], method="bilinear")[..., 0].numpy()   # any input size


class TfxOcclusion(_TfxBase):
    """tf-explain's occlusion sensitivity (Zeiler & Fergus 2014), per image and class.

    Patches of ``patch_size`` x ``patch_size`` pixels, stepped by ``patch_size``, are filled with
    127.5; the coarse map holds ``1 - y_c(occluded)`` and is resized to the input size (cv2
    bilinear). Square images only (tf-explain mixes up height and width otherwise).

    Args:
        model: tf-keras or Keras 3 image classifier (square images).
        patch_size: patch side = stride in pixels, an integer >= 1 (4); the fill is tf-explain's
            fixed 127.5.
        output: "probabilities" (what tf-explain's 1 - confidence assumes) | "logits"
            ("probabilities").
        **common: batch_size (occluded images per forward pass), channel_reduce, seed, progress
            (see :class:`xaitf.explainer.Explainer`).
    """

    key = "tfx_occlusion"     # the settings preset section (command lines and studies)

    def __init__(self, model, *, patch_size=4, output="probabilities", **common):
        super().__init__(model, params=dict(patch_size=patch_size, output=output), **common)

    def _setup(self):
        from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

        p = int(self.params["patch_size"])
        if p < 1:
            raise MethodError(f"tfx.occlusion needs patch_size >= 1, got {self.params['patch_size']!r}")
        self.fixed_shape()          # its patches are laid out for one size
        if self.shape[0] != self.shape[1]:
            raise ModelError(f"tfx.occlusion needs a model with square inputs (tf-explain 0.3.1 swaps "
                             f"height and width), this one takes {self.shape[0]}x{self.shape[1]}; use the "
                             "native 'occlusion' method")
        self._core = OcclusionSensitivity(batch_size=self.batch_size)
        self._fast = _FastPredict(self.tfx_model, self.batch_size)

    def explain_class(self, x, class_index):
        p = int(self.params["patch_size"])
        return np.stack([self._core.get_sensitivity_map(self._fast, image, class_index, p) for image in x])


class _FastPredict:
    """A ``model.predict`` stand-in for tf-explain: one compiled forward pass per chunk.

    tf-keras ``Model.predict`` costs tens of milliseconds of setup per call, and tf-explain calls
    it once per image.
    """

    def __init__(self, model, batch_size):
        self.model = model
        self.batch_size = batch_size
        self._fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True, autograph=False)

    def predict(self, x, batch_size=None, **_):
        bs = int(batch_size or self.batch_size)
        x = np.asarray(x, np.float32)
        return np.concatenate([self._fn(tf.constant(x[i:i + bs])).numpy() for i in range(0, len(x), bs)])


class TfxSmoothGrad(_TfxBase):
    """tf-explain's SmoothGrad (Smilkov et al. 2017), per class.

    ``g = mean_k d CE(onehot_c, y(x + n_k)) / dx``, ``n_k ~ N(0, noise^2)`` drawn with numpy's global
    generator (seeded from ``seed`` for the call, then restored); map = ``sum_c |g_c|``. The
    cross-entropy assumes ``y`` are softmax probabilities, hence ``output="probabilities"`` by
    default.

    Args:
        model: tf-keras or Keras 3 image classifier.
        samples: noisy copies per input, an integer >= 1 (16).
        noise: the absolute std of the Gaussian noise, >= 0 (tf-explain's default 1.0, not a
            fraction of the input range) (1.0).
        output: "probabilities" (its cross-entropy loss assumes softmax outputs) | "logits"
            ("probabilities").
        **common: batch_size (inputs x samples per gradient call), channel_reduce, seed, progress
            (see :class:`xaitf.explainer.Explainer`).
        seed: seeds the library's own generator (numpy's global one) for the call: the noise is
            drawn in call order, so an input's map may depend on batch_size and on the other
            inputs (unlike the native ``sg``).
    """

    key = "tfx_smoothgrad"     # the settings preset section (command lines and studies)
    stochastic = True

    def __init__(self, model, *, samples=16, noise=1.0, output="probabilities", **common):
        super().__init__(model, params=dict(samples=samples, noise=noise, output=output), **common)

    def _setup(self):
        from tf_explain.core.smoothgrad import SmoothGrad

        if int(self.params["samples"]) < 1 or float(self.params["noise"]) < 0:
            raise MethodError(f"tfx.smoothgrad needs samples >= 1 and noise >= 0, got "
                              f"{self.params['samples']!r}, {self.params['noise']!r}")
        self._core = SmoothGrad

    def chunk_size(self):
        return max(1, self.batch_size // int(self.params["samples"]))

    def __call__(self, x, targets=None):
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            return super().__call__(x, targets)
        finally:
            np.random.set_state(state)

    def explain_class(self, x, class_index):
        n = int(self.params["samples"])
        noisy = self._core.generate_noisy_images(x, n, float(self.params["noise"]))
        grads = self._core.get_averaged_gradients(tf.constant(noisy), self.tfx_model, class_index, n)
        return tf.reduce_sum(tf.abs(grads), axis=-1).numpy()


class TfxIntegratedGradients(_TfxBase):
    """tf-explain's "integrated gradients" (Sundararajan et al. 2017), per class.

    ``g = mean_k grad y_c(k/(m-1) x)``, k = 0..m-1 (baseline 0, both ends included), WITHOUT the
    ``(x - baseline)`` factor of the paper, so completeness does not hold; map = ``sum_c |g_c|``.

    Args:
        model: tf-keras or Keras 3 image classifier.
        steps: m, path points, an integer >= 2 (64).
        output: "logits" | "probabilities" ("logits").
        **common: batch_size (inputs x steps per gradient call), channel_reduce, seed, progress
            (see :class:`xaitf.explainer.Explainer`).
    """

    key = "tfx_ig"     # the settings preset section (command lines and studies)

    def __init__(self, model, *, steps=64, output="logits", **common):
        super().__init__(model, params=dict(steps=steps, output=output), **common)

    def _setup(self):
        from tf_explain.core.integrated_gradients import IntegratedGradients

        if int(self.params["steps"]) < 2:
            raise MethodError(f"tfx.ig needs steps >= 2, got {self.params['steps']!r}")
        self._core = IntegratedGradients

    def chunk_size(self):
        return max(1, self.batch_size // int(self.params["steps"]))

    def explain_class(self, x, class_index):
        m = int(self.params["steps"])
        path = self._core.generate_interpolations(np.asarray(x), m).astype(np.float32)
        grads = self._core.get_integrated_gradients(tf.constant(path), self.tfx_model, class_index, m)
        return tf.reduce_sum(tf.abs(grads), axis=-1).numpy()
