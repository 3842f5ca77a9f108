"""LIME and SHAP through their libraries (lime 0.2.0.1, shap 0.51), batched and seeded.

What is explained: lime and shap explain whatever function they are handed. Every class here has
an ``output`` setting: ``"logits"`` (the pre-softmax output from ``keras_bridge.logits_model``, what
the gradient family explains) or ``"probabilities"`` (the softmax of those logits, computed in the
model's precision; equal to the output of a model that ends in softmax). LIME and Kernel SHAP
default to probabilities because study 1 explained the softmax class probability; the Gradient,
Deep and Partition explainers default to logits.

* :class:`LimeExplainer` (Ribeiro et al. 2016): ``lime_image.LimeImageExplainer`` over superpixels
  (:mod:`xaitf.segmentation`), a batched classifier function, one explanation per image.
* :class:`KernelShapExplainer` (Lundberg & Lee 2017): ``shap.KernelExplainer`` over superpixels
  (SLIC by default); a coalition z in {0,1}^S keeps the segments with z_s = 1 and fills the others
  with ``background``; ``l1_reg=False`` (shap's default keeps only 10 features).
* :class:`ShapGradientExplainer`: ``shap.GradientExplainer`` (expected gradients).
* :class:`ShapDeepExplainer`: ``shap.DeepExplainer`` (DeepLIFT-style multipliers averaged over a
  background; Lundberg & Lee 2017).
* :class:`ShapPartitionExplainer`: ``shap.Explainer`` with ``shap.maskers.Image`` (Owen values over
  a hierarchy of image regions).

Every class takes one target per input and never runs more than ``batch_size`` images through the
model at once. Gray models: lime works on RGB images, so the classifier function converts back to
one channel (the three channels lime builds from a gray image are equal).
"""
import contextlib
import re
import warnings

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from .. import segmentation
from ..compat import eager_gradient_recorder_kept, shap_handler, shap_op_handlers
from ..errors import MethodError, ModelError
from ..explainer import Explainer
from ..keras_bridge import tf_warnings_off
from ..keras_bridge import kmodule, logits_model

OUTPUTS = ("probabilities", "logits")


@contextlib.contextmanager
def _numpy_seed(seed):
    """Seed numpy's global generator (shap draws from it) and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % (2 ** 32))
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def _quiet():
    """Hide shap's Python warnings (TF version notes) and TF's retracing notes for shap's own
    per-output ``tf.function``s during a call."""
    with tf_warnings_off(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _shap():
    """The shap module (imported quietly: shap 0.51 warns about matplotlib colour maps on import)."""
    with _quiet():
        import shap
    return shap


@contextlib.contextmanager
def _quiet_lime():
    """lime 0.2.0.1 always wraps its sampling loop in tqdm; silence it for the call."""
    import lime.lime_image as li

    original = li.tqdm
    li.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        li.tqdm = original


@contextlib.contextmanager
def _deep_extra_ops():
    """Teach shap 0.51's DeepExplainer a few common ops for the duration of a call.

    shap's TF DeepExplainer only backpropagates through the op types in its ``op_handlers`` table
    and fails on others ("gradient registry has no entry for: shap_FusedBatchNormV3", shap issue
    #1761, open). Inference-mode batch normalisation (FusedBatchNormV2/V3) is affine in its first
    input, so its plain gradient is the DeepLIFT multiplier (shap's own ``linearity_1d``), and so
    are depthwise convolutions (MobileNets) and resizing (UpSampling2D); LeakyRelu and Relu6 take
    the rescale rule (shap's ``nonlinearity_1d``). The entries are removed afterwards.
    """
    handlers = shap_op_handlers()
    linear = ("FusedBatchNormV3", "FusedBatchNormV2", "FusedBatchNorm", "DepthwiseConv2dNative",
              "ResizeNearestNeighbor", "ResizeBilinear")
    extra = {op: shap_handler("linearity_1d") for op in linear}
    extra.update({op: shap_handler("nonlinearity_1d") for op in ("LeakyRelu", "Relu6")})
    added = [k for k in extra if k not in handlers]
    for k in added:
        handlers[k] = extra[k]
    try:
        yield
    finally:
        for k in added:
            handlers.pop(k, None)


def _background(value, shape, owner, name="background"):
    """A background/fill as float32 (B,H,W,C): a scalar, one value per channel, an image or a batch
    (:func:`xaitf.params.full_baseline`)."""
    from .. import params

    return params.full_baseline(value, shape, name=name, owner=owner)


class SuperpixelMixin:
    """Segments of the explainers that work over superpixels (library and native surrogates):
    ``params["segmenter"]`` with its parameters (:mod:`xaitf.segmentation`), seeded."""

    def _segmenter(self):
        p = dict(self.params)
        p["seed"] = self.seed
        return segmentation.get_segmenter(p["segmenter"], **p)

    def segments(self, x):
        """The superpixel maps (N,H,W) int32 this explainer uses for images x (deterministic)."""
        from ..explainer import as_batch

        p = dict(self.params)
        p["seed"] = self.seed
        return segmentation.segment(as_batch(x, self.model), p.pop("segmenter"), **p)


class _LibraryExplainer(SuperpixelMixin, Explainer):
    """Shared plumbing: output choice, batched scores, parameter checks."""

    # the libraries take a model or a function of the whole (M,K) output: the two named outputs
    outputs = OUTPUTS

    def setup(self):
        self.fixed_shape()
        fwd, probs, sigmoid = self.runner, self.output == "probabilities", self.logit_activation == "sigmoid"

        def scores(z):
            y = fwd(z, training=False)
            if not probs:
                return y
            return tf.nn.sigmoid(y) if sigmoid else tf.nn.softmax(y, axis=-1)

        self._scores_fn = tf.function(scores, input_signature=[tf.TensorSpec([None, *self.shape], tf.float32)], autograph=False)
        self.setup_method()

    def setup_method(self):
        pass

    def scores(self, images):
        """The explained output (M,K) as float64 for images (M,H,W,C), ``batch_size`` at a time."""
        images = np.asarray(images, dtype=np.float32)
        outs = [np.asarray(self._scores_fn(tf.constant(images[i:i + self.batch_size])), dtype=np.float64)
                for i in range(0, len(images), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes))

    def _int(self, name, low=1):
        from .. import params

        return params.integer(self.params[name], name, type(self).__name__, low=low)


    def _keras_head(self, target=None):
        """A tf-keras model: input -> explained output (column ``target`` if given).

        The head keeps the output's dtype (the center-pixel model's float64 logits stay float64, so
        shap's additivity sums are not rounded to float32). A Keras 3 model is replaced by its
        float32 tf-keras twin (:func:`xaitf.twin.tf_keras_twin`, checked against the model), since
        shap's TF explainers accept tf-keras models only.
        """
        from ..twin import require_tf_keras, tf_keras_twin

        require_tf_keras()          # shap reads tf.keras to tell a TF model from others
        probs = self.output == "probabilities"
        sigmoid = self.logit_activation == "sigmoid"
        forward = self.forward
        if self.kind == "keras3":  # shap 0.51's Gradient/Deep explainers refuse Keras 3 models
            forward = logits_model(tf_keras_twin(self.model))[0]
        if not probs and target is None:
            return forward
        km = kmodule("tf-keras")
        inp = km.Input(self.shape, name="xaitf_input")
        y = forward(inp)

        def head(z):
            if probs:
                z = tf.nn.sigmoid(z) if sigmoid else tf.nn.softmax(z, axis=-1)
            return z if target is None else z[:, target:target + 1]

        units = self.num_classes if target is None else 1
        out = km.layers.Lambda(head, output_shape=(units,), dtype=y.dtype, name="xaitf_head")(y)
        return km.Model(inp, out)


# ---------------------------------------------------------------------------------------------
class LimeExplainer(_LibraryExplainer):
    """LIME for images (Ribeiro, Singh & Guestrin, KDD 2016) through ``lime.lime_image``.

    LIME samples ``num_samples`` binary vectors z over the S superpixels (z_s = 0: the segment is
    set to ``hide_color``), scores the images, weights each sample by
    ``sqrt(exp(-d^2 / kernel_width^2))`` with d the cosine distance of z to all-ones, and fits a
    weighted ridge regression (alpha 1) of the target score on z; the coefficients are the segment
    weights.

    Args:
        model: tf-keras or Keras 3 image classifier.
        num_samples: perturbed images per explanation (study 1: 1000).
        hide_color: value of hidden segments (study 1: 0.0); None = each segment's mean colour
            (1- or 3-channel images only).
        kernel_width: width of LIME's exponential kernel on cosine distances (lime default 0.25).
        segmenter: "quickshift" (default) | "slic" | "grid" or a callable image -> int map.
        kernel_size, max_dist, ratio: quickshift settings; None (default) = chosen by image size
            (study 1's 4 / 200 / 0.2 at 227x227; see :mod:`xaitf.segmentation`).
        n_segments, compactness, sigma: SLIC settings (50, 30, 3).
        cell: grid cell side in pixels (4).
        output: "probabilities" (study 1; default) or "logits".
        positive_only, num_features: the mask's selection (study 1: True, 1 = top positive segment).
        mask_output: True (study 1; default): the map is lime's ``get_image_and_mask(label,
            positive_only, num_features, hide_rest=True)`` mask (1 on the chosen segments, -1 on
            negative ones when positive_only is False, 0 elsewhere); False: every segment's weight
            painted on its pixels.
        **common: batch_size (images per classifier call), channel_reduce, seed (lime's sampling
            and quickshift's seed), progress (see :class:`xaitf.explainer.Explainer`).
        seed: seeds the library's own generator (lime's ``RandomState(seed)``, reseeded per
            image); measured independent of batch_size and of the other inputs, but that is the
            library's behaviour, not a guarantee of xaitf.

    Returns (N,H,W).
    """

    key = "lime"          # the preset section of xaitf.settings (shared with the native ``lime``)
    stochastic = True

    def __init__(self, model, *, num_samples=1000, hide_color=0.0, kernel_width=0.25,
                 segmenter="quickshift", kernel_size=None, max_dist=None, ratio=None,
                 n_segments=50, compactness=30, sigma=3, cell=4, output="probabilities",
                 positive_only=True, num_features=1, mask_output=True, **common):
        super().__init__(model, params=dict(
            num_samples=num_samples, hide_color=hide_color, kernel_width=kernel_width,
            segmenter=segmenter, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
            n_segments=n_segments, compactness=compactness, sigma=sigma, cell=cell, output=output,
            positive_only=positive_only, num_features=num_features, mask_output=mask_output),
            **common)

    def setup_method(self):
        self._int("num_samples")
        self._int("num_features")
        hc = self.params["hide_color"]
        if hc is None and self.shape[-1] not in (1, 3):
            raise MethodError("LimeExplainer hide_color=None (segment means) needs 1- or 3-channel "
                              f"images, got {self.shape[-1]} channels; give a number")
        if float(self.params["kernel_width"]) <= 0:
            raise MethodError(f"LimeExplainer kernel_width must be > 0, got {self.params['kernel_width']!r}")
        self._segmenter()  # validates the segmenter's name

    def explain_one(self, image, target):
        """lime's ImageExplanation for one image (H,W,C) and its target."""
        from lime import lime_image

        channels = image.shape[-1]

        def classifier(imgs):
            imgs = np.asarray(imgs, dtype=np.float32)
            if channels == 1:
                imgs = imgs[..., :1]
            return self.scores(imgs)

        lime_input = image[..., 0] if channels == 1 else image  # lime turns 2-D images into RGB
        explainer = lime_image.LimeImageExplainer(kernel_width=float(self.params["kernel_width"]),
                                                  random_state=self.seed)
        with _quiet_lime():
            return explainer.explain_instance(
                lime_input, classifier, labels=(int(target),), hide_color=self.params["hide_color"],
                top_labels=None, num_features=100000, num_samples=int(self.params["num_samples"]),
                batch_size=self.batch_size, segmentation_fn=self._segmenter(), random_seed=self.seed)

    def explain_batch(self, x, targets):
        maps = []
        for image, t in zip(x, targets):
            exp = self.explain_one(image, t)
            if self.params["mask_output"]:
                _, mask = exp.get_image_and_mask(int(t), positive_only=bool(self.params["positive_only"]),
                                                 num_features=int(self.params["num_features"]),
                                                 hide_rest=True)
                maps.append(mask.astype(np.float32))
            else:
                weights = np.zeros(int(exp.segments.max()) + 1)
                for s, w in exp.local_exp[int(t)]:
                    weights[s] = w
                maps.append(weights[exp.segments].astype(np.float32))
        return np.stack(maps)


# ---------------------------------------------------------------------------------------------
class KernelShapExplainer(_LibraryExplainer):
    """Kernel SHAP over superpixels (Lundberg & Lee, NeurIPS 2017) through ``shap.KernelExplainer``;
    the defaults are study 1's.

    The features are the S segments of each image; the game is ``v(z) = f_c(x_z)`` where ``x_z``
    keeps the segments with z_s = 1 and fills the others with ``background``. Kernel SHAP fits
    the Shapley-kernel weighted linear model on ``nsamples`` coalitions (all 2^S - 2 of them when
    that is fewer: then the values are the exact Shapley values); they sum to
    ``f_c(x) - f_c(background image)``.

    Args:
        model: tf-keras or Keras 3 image classifier.
        nsamples: coalitions evaluated per image (1000).
        background: fill of removed segments: scalar (0.0), one value per channel, or an image.
        segmenter: "slic" (default) | "quickshift" | "grid" | a callable image -> int map.
        n_segments, compactness, sigma: SLIC settings (50, 30, 3, on the image; gray images are
            segmented as 3 equal channels, as study 1 did).
        cell: grid cell side (4).
        kernel_size, max_dist, ratio: quickshift settings (None = by size).
        output: "probabilities" (study 1; default) or "logits".
        l1_reg: shap's feature selection; False (default) keeps every segment.
        **common: batch_size (images per model call), channel_reduce, seed (shap's coalition
            sampling: numpy's global generator is seeded for the call and restored afterwards),
            progress (see :class:`xaitf.explainer.Explainer`).
        seed: seeds the library's own generator (numpy's global one, for shap's coalitions); maps
            may depend on the batch composition if shap draws across images (measured: not in
            the current shap version).

    Returns (N,H,W): each segment's SHAP value painted on its pixels.
    """

    key = "shap"          # the preset section of xaitf.settings (shared with ``kernelshap``)
    stochastic = True

    def __init__(self, model, *, nsamples=1000, background=0.0, segmenter="slic", n_segments=50,
                 compactness=30, sigma=3, cell=4, kernel_size=None, max_dist=None, ratio=None,
                 output="probabilities", l1_reg=False, **common):
        super().__init__(model, params=dict(
            nsamples=nsamples, background=background, segmenter=segmenter, n_segments=n_segments,
            compactness=compactness, sigma=sigma, cell=cell, kernel_size=kernel_size,
            max_dist=max_dist, ratio=ratio, output=output, l1_reg=l1_reg), **common)

    def setup_method(self):
        self._int("nsamples")
        self._fill = _background(self.params["background"], self.shape, "KernelShapExplainer")
        if len(self._fill) != 1:
            raise MethodError("KernelShapExplainer background must be one image (or a scalar), not a batch")
        self._segmenter()

        h, w, c = self.shape

        @tf.function(input_signature=[tf.TensorSpec([h, w, c], tf.float32),
                                      tf.TensorSpec([1, h, w, c], tf.float32),
                                      tf.TensorSpec([h, w], tf.int32), tf.TensorSpec([None, None], tf.float32)], autograph=False)
        def compose(x, fill, seg, z):
            keep = tf.gather(z, seg, axis=1)[..., None]             # (M,H,W,1)
            return x[None] * keep + fill * (1.0 - keep)

        self._compose = compose

    def segment_values(self, image, target, seg):
        """Kernel SHAP values (S,) of the segments ``seg`` (H,W) of one image for class ``target``."""
        shap = _shap()

        n_seg = int(seg.max()) + 1
        x = tf.constant(image)
        fill = tf.constant(self._fill)
        seg_t = tf.constant(seg, tf.int32)
        t = int(target)

        def game(z):
            z = np.asarray(z, dtype=np.float32)
            out = []
            for i in range(0, len(z), self.batch_size):
                imgs = self._compose(x, fill, seg_t, tf.constant(z[i:i + self.batch_size]))
                out.append(np.asarray(self._scores_fn(imgs), dtype=np.float64)[:, t])
            return np.concatenate(out)

        with _numpy_seed(self.seed), _quiet():
            explainer = shap.KernelExplainer(game, np.zeros((1, n_seg)))
            values = explainer.shap_values(np.ones((1, n_seg)), nsamples=int(self.params["nsamples"]),
                                           l1_reg=self.params["l1_reg"], silent=True)
        return np.asarray(values, dtype=np.float64).reshape(n_seg)

    def explain_batch(self, x, targets):
        fn = self._segmenter()
        maps = []
        for image, t in zip(x, targets):
            seg = fn(image)
            maps.append(self.segment_values(image, t, seg)[seg])
        return np.stack(maps).astype(np.float32)


# ---------------------------------------------------------------------------------------------
class ShapGradientExplainer(_LibraryExplainer):
    """Expected gradients through ``shap.GradientExplainer`` (Lundberg & Lee 2017; Erion et al. 2021).

    ``phi_i = E_{b ~ background, t ~ U(0,1)} [ (x_i - b_i) * d f_c(b + t (x - b)) / d x_i ]`` estimated
    with ``nsamples`` draws per image. With a constant background (the default: one all-zero image)
    this is integrated gradients from that baseline with random path points.

    Args:
        model: tf-keras or Keras 3 image classifier.
        nsamples: gradient evaluations per image (shap default 200).
        background: scalar (0.0: one all-zero image), an image, or a batch (B,H,W,C) of reference
            images (e.g. a few training images); several identical images add nothing.
        local_smoothing: std of Gaussian noise added to x before each sample (shap option, 0.0).
        output: "logits" (default) or "probabilities".
        **common: batch_size (gradient evaluations per model call), channel_reduce, seed (shap's
            ``rseed``; numpy's global generator is restored afterwards; each image is explained
            with the same seed), progress (see :class:`xaitf.explainer.Explainer`).
        seed: seeds the library's own generator (shap's ``rseed``, the same for each image); maps
            may depend on the batch composition if shap changes how it draws (measured: not in
            the current shap version).

    Returns (N,H,W,C) per-channel values (reduced by ``channel_reduce``).
    """

    key = "shap_gradient"     # the preset section of xaitf.settings
    stochastic = True

    def __init__(self, model, *, nsamples=200, background=0.0, local_smoothing=0.0,
                 output="logits", **common):
        super().__init__(model, params=dict(nsamples=nsamples, background=background,
                                            local_smoothing=local_smoothing, output=output),
                         **common)

    def setup_method(self):
        shap = _shap()

        self._int("nsamples")
        if float(self.params["local_smoothing"]) < 0:
            raise MethodError(f"ShapGradientExplainer local_smoothing must be >= 0, got {self.params['local_smoothing']!r}")
        bg = _background(self.params["background"], self.shape, "ShapGradientExplainer")
        with _quiet():
            self._explainer = shap.GradientExplainer(self._keras_head(), bg, batch_size=self.batch_size,
                                                     local_smoothing=float(self.params["local_smoothing"]))

    def explain_batch(self, x, targets):
        maps = []
        for image, t in zip(x, targets):
            with _numpy_seed(self.seed), _quiet():
                v, _ = self._explainer.shap_values(image[None], nsamples=int(self.params["nsamples"]),
                                                   ranked_outputs=np.array([[int(t)]]),
                                                   output_rank_order="custom", rseed=self.seed)
            maps.append(np.asarray(v)[0, ..., 0])
        return np.stack(maps)


# ---------------------------------------------------------------------------------------------
class ShapDeepExplainer(_LibraryExplainer):
    """Deep SHAP through ``shap.DeepExplainer`` (Lundberg & Lee 2017; DeepLIFT rescale multipliers).

    ``phi_i = mean_b (x_i - b_i) * m_i(x, b)`` with DeepLIFT's rescale multipliers ``m`` between x and
    each background image b; ``sum_i phi_i = f_c(x) - mean_b f_c(b)``. With one constant background
    image (default zeros) this is DeepLIFT (rescale) from that baseline.

    shap 0.51 runs it eagerly on TF 2.21 for tf-keras models (Conv2D, Dense, ReLU, pooling, Softmax,
    ...); it only explains a fixed output column, so xaitf builds one head model per target class
    (input -> column t, in the output's dtype) and caches its explainer.

    Args:
        model: tf-keras or Keras 3 image classifier.
        background: scalar (0.0: one all-zero image), an image, or a batch (B,H,W,C).
        output: "logits" (default) or "probabilities".
        check_additivity: check ``sum phi = f_c(x) - E_b f_c(b)`` (True): xaitf checks it itself
            within ``1e-2 + 1e-6 * max(|f_c(x)|, |E f_c|)``: shap's own check uses an absolute 1e-2
            that float32 rounding exceeds on models with large outputs (the center-pixel logits
            ~3e7).
        **common: batch_size, channel_reduce, seed, progress (see
            :class:`xaitf.explainer.Explainer`).

    Returns (N,H,W,C) per-channel values.
    """

    key = "shap_deep"         # the preset section of xaitf.settings

    def __init__(self, model, *, background=0.0, output="logits", check_additivity=True,
                 **common):
        super().__init__(model, params=dict(background=background, output=output,
                                            check_additivity=check_additivity), **common)

    def setup_method(self):
        self._bg = _background(self.params["background"], self.shape, "ShapDeepExplainer")
        self._explainers = {}

    def _explainer_for(self, target):
        shap = _shap()

        if target not in self._explainers:
            with _quiet():
                self._explainers[target] = shap.DeepExplainer(self._keras_head(target), self._bg)
        return self._explainers[target]

    def explain_batch(self, x, targets):
        out = np.zeros(x.shape, dtype=np.float64)
        for t in np.unique(targets):
            idx = np.flatnonzero(targets == t)
            explainer = self._explainer_for(int(t))
            with _quiet(), _deep_extra_ops(), eager_gradient_recorder_kept():
                try:
                    v = np.asarray(explainer.shap_values(x[idx], check_additivity=False))[..., 0]
                except Exception as e:      # noqa: BLE001 - TF's errors while shap runs its graph
                    shaps_own = isinstance(e, ValueError) and "explainers/_deep/deep_tf.py" in str(e).replace("\\", "/")
                    if not (isinstance(e, (tf.errors.OpError, LookupError)) or type(e).__name__ == "StagingError"
                            or shaps_own):      # ValueError: a shape its handlers get wrong (MobileNetV3)
                        raise
                    op = re.search(r"no entry for: shap_(\w+)", str(e))
                    node = re.search(r"at node (\S+)", str(e))
                    why = (f"has no rule for the TensorFlow operation {op.group(1)}" if op else
                           f"failed ({type(e).__name__}" + (f" at node {node.group(1)})" if node else ")"))
                    raise ModelError(f"ShapDeepExplainer: shap's DeepExplainer {why} on this model; use "
                                     "deepliftshap (xaitf's DeepLIFT-SHAP) or shap.gradient") from None
            if self.params["check_additivity"]:
                fx = self.scores(x[idx])[:, int(t)]
                base = float(np.asarray(explainer.expected_value).reshape(-1)[0])
                err = np.abs(v.reshape(len(idx), -1).sum(1) - (fx - base))
                tol = 1e-2 + 1e-6 * np.maximum(np.abs(fx), abs(base))
                if np.any(err > tol):
                    i = int(np.argmax(err - tol))
                    raise MethodError(
                        f"ShapDeepExplainer: SHAP values of input {idx[i]} sum to f(x) - E f(b) only "
                        f"within {err[i]:.3g} (tolerance {tol[i]:.3g}); the model has an operation shap's "
                        "DeepExplainer does not support; use shap.gradient, or check_additivity=False")
            out[idx] = v
        return out


# ---------------------------------------------------------------------------------------------
class ShapPartitionExplainer(_LibraryExplainer):
    """Partition SHAP (Owen values over a hierarchy of image regions) through ``shap.Explainer``
    with ``shap.maskers.Image`` (Lundberg et al.; shap >= 0.36).

    A removed region is replaced by the masker: ``"blur(k,k)"`` (the image blurred with a k x k box),
    ``"inpaint_telea"`` / ``"inpaint_ns"`` (OpenCV inpainting), or a number (a constant fill).
    Values over all pixels sum to ``f_c(x) - f_c(fully masked x)``. Works at any image size.

    Args:
        model: tf-keras or Keras 3 image classifier.
        max_evals: model evaluations per image (shap default 500).
        masker: see above (default "blur(8,8)").
        output: "logits" (default) or "probabilities".
        **common: batch_size (images per model call), channel_reduce, seed (unused:
            deterministic, the partition tree is fixed), progress (see
            :class:`xaitf.explainer.Explainer`).

    Returns (N,H,W,C) per-channel values.
    """

    key = "shap_partition"    # the preset section of xaitf.settings

    def __init__(self, model, *, max_evals=500, masker="blur(8,8)", output="logits", **common):
        super().__init__(model, params=dict(max_evals=max_evals, masker=masker, output=output),
                         **common)

    def setup_method(self):
        shap = _shap()

        self._int("max_evals", low=3)
        masker = self.params["masker"]
        if isinstance(masker, str):
            ok = masker in ("inpaint_telea", "inpaint_ns") or (masker.startswith("blur(") and masker.endswith(")"))
        else:
            ok = isinstance(masker, (int, float, np.integer, np.floating)) and not isinstance(masker, bool)
            masker = float(masker) if ok else masker
        if not ok:
            raise MethodError(f"ShapPartitionExplainer masker must be 'blur(k,k)', 'inpaint_telea', "
                              f"'inpaint_ns' or a number, got {masker!r}")
        self._masker = shap.maskers.Image(masker, self.shape)

    def explain_batch(self, x, targets):
        shap = _shap()

        maps = []
        for image, t in zip(x, targets):
            t = int(t)

            def f(z, t=t):
                return self.scores(np.asarray(z, dtype=np.float32).reshape((-1, *self.shape)))[:, t]

            explainer = shap.Explainer(f, self._masker, algorithm="partition")
            with _quiet():
                ex = explainer(image[None], max_evals=int(self.params["max_evals"]),
                               batch_size=self.batch_size, silent=True)
            maps.append(np.asarray(ex.values)[0].reshape(self.shape))
        return np.stack(maps)
