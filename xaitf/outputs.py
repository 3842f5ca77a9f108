"""Which output of the model a method explains: one ``output=`` contract for every method.

Every explainer takes ``output`` (see :class:`xaitf.explainer.Explainer`):

* ``"logits"``: the target class's pre-softmax (pre-sigmoid) output ``f_c(x)``, computed by the
  model with its final softmax or sigmoid stripped (:func:`xaitf.keras_bridge.logits_model`; a
  model without one is used as it is, and the figure header says so);
* ``"probabilities"``: ``p_c(x) = softmax(f(x))_c`` (``sigmoid(f_c(x))`` for a sigmoid head,
  :func:`xaitf.keras_bridge.logit_activation`);
* a callable ``output(outputs, targets) -> (N,)``: any score per input computed from the model's
  own outputs ``model(x)`` (N,K) and the int32 targets (N,), e.g. the log-probability
  ``lambda p, t: tf.math.log(tf.gather(p, t, batch_dims=1))`` or a margin. It is traced into the
  methods' tf.functions, so it must be written with TensorFlow ops (and be differentiable for the
  gradient methods).

A method lists the kinds it can explain in ``outputs`` (PDA is defined on probabilities, DeepLIFT's
rescale rule and the iNNvestigate analyzers on logits); another kind is refused with one line.
"""
import xaitf  # noqa: F401
import tensorflow as tf

from .errors import MethodError
from .grouped_conv import runner
from .keras_bridge import logit_activation, logits_model

NAMES = ("logits", "probabilities")
KINDS = NAMES + ("callable",)


def class_probabilities(logits, activation="softmax"):
    """Softmax (or sigmoid) of logits in their own precision (float64 heads keep it), as float32."""
    p = tf.nn.sigmoid(logits) if activation == "sigmoid" else tf.nn.softmax(logits, axis=-1)
    return tf.cast(p, tf.float32)


def _describe(output):
    return repr(output) if isinstance(output, str) else type(output).__name__


def kind_of(output, owner="method"):
    """``"logits"``, ``"probabilities"`` or ``"callable"`` for an ``output=`` value; MethodError
    with one line for anything else."""
    if isinstance(output, str):
        if output in NAMES:
            return output
    elif callable(output):
        return "callable"
    raise MethodError(f"{owner} needs output to be one of 'logits', 'probabilities' or a "
                      f"callable(outputs, targets) -> (N,) scores, got {_describe(output)}")


class Output:
    """The explained output of ``model`` for an ``output=`` value.

    Attributes:
        kind: ``"logits"`` | ``"probabilities"`` | ``"callable"``.
        fn: the user's callable (``kind == "callable"``), else None.
        forward: the model whose outputs :meth:`select` reads: the logit model for the two named
            kinds, the model itself for a callable.
        runner: the same function as ``forward``, to call (not to walk its layers): ``forward``
            itself, or for a Keras 3 model with grouped convolutions a faster copy
            (:func:`xaitf.grouped_conv.runner`); made on first use, so that methods which only
            walk the layers (native LRP) never build it.
        activation: ``"softmax"`` or ``"sigmoid"``, what turns logits into probabilities.
        note: what is explained, in words (figure headers, run records).
        tag: a cache key part for compiled functions (None for a callable: not shared).
    """

    def __init__(self, model, output="logits", owner="method", supported=KINDS):
        self.kind = kind_of(output, owner)
        if self.kind not in supported:
            valid = ", ".join(repr(k) if k in NAMES else "a callable" for k in supported)
            raise MethodError(f"{owner} cannot explain output={_describe(output)}: it explains "
                              f"{valid} only (use grad, ig, occlusion or shapley for other outputs)")
        self.fn = output if self.kind == "callable" else None
        self.activation = logit_activation(model)
        if self.kind == "callable":
            self.forward = model
            name = getattr(output, "__name__", type(output).__name__)
            self.note = f"{name}(model output, target) (a user's output function)"
            self.tag = None
        else:
            self.forward, logit_note = logits_model(model)
            self.note = logit_note if self.kind == "logits" else \
                f"{self.activation} probabilities of the logits ({logit_note})"
            self.tag = self.kind

    @property
    def runner(self):
        return runner(self.forward)      # cached per model by grouped_conv

    def select(self, outputs, targets):
        """The explained score (N,) of each row of ``outputs`` (``self.forward``'s) for int targets
        (N,): the target's logit, its probability or the user's function. Keeps the outputs'
        dtype for the named kinds (float64 heads stay float64)."""
        if self.kind == "callable":
            return self.call_user(outputs, targets)
        if self.kind == "probabilities":
            outputs = (tf.nn.sigmoid(outputs) if self.activation == "sigmoid"
                       else tf.nn.softmax(outputs, axis=-1))
        return tf.gather(outputs, targets, axis=1, batch_dims=1)

    def select_onehot(self, outputs, onehot):
        """:meth:`select` for one-hot float32 targets (N,K), as float32 ``sum_k s_k onehot_k``
        (the form RISE and meaningful perturbation use inside their compiled loops)."""
        if self.kind == "callable":
            t = tf.argmax(onehot, axis=-1, output_type=tf.int32)
            return tf.cast(self.call_user(outputs, t), tf.float32)
        if self.kind == "probabilities":
            outputs = class_probabilities(outputs, self.activation)
        return tf.reduce_sum(tf.cast(outputs, tf.float32) * onehot, axis=-1)

    def call_user(self, outputs, targets):
        """The user's function on (outputs, int32 targets), checked to give one float per input."""
        scores = tf.convert_to_tensor(self.fn(outputs, tf.cast(targets, tf.int32)))
        if scores.shape.rank is not None and scores.shape.rank != 1:
            raise MethodError(f"the output callable must return one score per input, shape (N,); "
                              f"it returned shape {tuple(scores.shape)}")
        if not scores.dtype.is_floating:
            raise MethodError(f"the output callable must return float scores, got {scores.dtype.name}")
        return scores
