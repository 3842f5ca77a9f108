"""Every private TensorFlow / Keras / library API that xaitf uses, in one place.

Each function below wraps exactly one private thing (an underscore attribute, a ``.src``/private
module, a class-hierarchy rewrite) and says in its docstring what it uses, why, and what happens
when it is gone. The rest of xaitf calls these functions and never touches a private name itself,
so an upgrade that removes or changes one breaks here, and ``tests/test_compat.py`` (one test per
function, run on the installed versions) says which private API and which library version.

Nothing here imports another xaitf module (``import xaitf`` only sets ``TF_USE_LEGACY_KERAS``),
and the optional libraries (tf-keras internals, shap) are imported on first use.
"""
import contextlib
import sys

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)


# -- TensorFlow ---------------------------------------------------------------------------------
def concrete_flat_call(concrete):
    """The bound ``ConcreteFunction._call_flat`` of ``concrete``, or None when it is gone.

    Private: ``tensorflow.python.eager.polymorphic_function.concrete_function.ConcreteFunction.
    _call_flat(flat_args, captured_inputs)``. Why: calling it with already-flattened tensors skips
    the structured call's matching of (nested) arguments against the signature, ~0.5-0.9 ms per
    call on a 2-core CPU (:class:`xaitf.methods.gradients.FlatCall`). Looked up once here, so the
    per-call cost is the bound method's alone. Fallback (None): the caller uses the structured call
    ``concrete(*args)`` (same results, slower).
    """
    return getattr(concrete, "_call_flat", None)


def quiet_retracing(fn):
    """Switch off TF's "frequent retracing" warning for the ``tf.function`` ``fn``; returns ``fn``.

    Private: the ``tf.function`` attribute ``_omit_frequent_tracing_warning``. Why: some
    explainers build one tf.function per instance around the same code object on purpose; TF
    counts their traces together and warns about retracing that is not happening. Fallback: a
    ``tf.function`` without the attribute (an object that refuses it) is returned unchanged and
    only the warning comes back.
    """
    try:
        fn._omit_frequent_tracing_warning = True
    except AttributeError:
        pass
    return fn


def caller_frame(depth=1):
    """The frame ``depth`` levels above the caller of this function (``sys._getframe``).

    Private-ish: ``sys._getframe`` is a CPython implementation detail. Why: warnings name the
    user's line (:func:`xaitf.explainer._caller_stacklevel` walks out of the package). Fallback:
    None where the interpreter has no ``_getframe`` (the caller then uses stacklevel 1).
    """
    getframe = getattr(sys, "_getframe", None)
    return None if getframe is None else getframe(depth + 1)


# -- Keras graph structure (tf-keras and Keras 3) ----------------------------------------------
def keras_history(tensor):
    """``(layer, node_index, tensor_index)`` of a symbolic Keras tensor, or None if it has none.

    Private: ``KerasTensor._keras_history`` (tf-keras: ``KerasHistory(layer, node_index,
    tensor_index)``; Keras 3: ``KerasHistory(operation, node_index, tensor_index)``). Why: Keras
    has no public way to go from a model's output tensor to the layer call that made it, which
    the twin builder and the LRP checks walk. Fallback: None (callers raise a ModelError
    "cannot trace tensor back to a layer", or print the tensor's own name).
    """
    hist = getattr(tensor, "_keras_history", None)
    if hist is None:
        return None
    return hist[0], int(hist[1]), int(hist[2])


def inbound_node(layer, node_index):
    """The ``node_index``-th call node of ``layer`` (tf-keras or Keras 3).

    Private: ``Layer._inbound_nodes`` (a list of ``Node``; tf-keras ``tf_keras.src.engine.node``,
    Keras 3 ``keras.src.ops.node``). Why: with :func:`keras_history` it gives the tensors a layer
    call consumed, i.e. the model graph. Fallback: none; AttributeError/IndexError propagate.
    """
    return layer._inbound_nodes[node_index]


def node_inputs(node):
    """The flat list of symbolic tensors a layer call (:func:`inbound_node`) consumed.

    Private (``Node`` is not exported by either Keras): tf-keras ``Node.keras_inputs``, Keras 3
    ``Node.input_tensors``. Fallback: none; an AttributeError names the missing attribute.
    """
    if hasattr(node, "keras_inputs"):  # tf-keras
        return list(node.keras_inputs)
    import tensorflow as tf

    return list(tf.nest.flatten(node.input_tensors))


def node_call_args(node):
    """The positional arguments a Keras 3 operation call (:func:`inbound_node`) was given, tensors
    and constants alike: ``[<KerasTensor>, 3.0]`` for ``x + 3.0``.

    Private: Keras 3 ``Node.arguments.args`` (``SymbolicArguments``). Why: the constants of
    operations written in a model's code (MobileNetV3's ``relu6(x + 3) * (1 / 6)``) are kept only
    there. Fallback: none; an AttributeError names the missing attribute (tf-keras has no such node).
    """
    return list(node.arguments.args)


def tf_op_call(node):
    """(positional args, keyword args) of a tf-keras TFOpLambda / SlicingOpLambda call
    (:func:`inbound_node`): ``([<KerasTensor>, 127.5], {"name": None})`` for ``x / 127.5``.

    Private: tf-keras ``Node.call_args`` and ``Node.call_kwargs``. Why: the constants of the TF
    calls that tf.keras.applications' preprocess_input writes into a model are kept only there.
    Fallback: none; an AttributeError names the missing attribute.
    """
    return list(node.call_args), dict(node.call_kwargs or {})


def call_arguments(node):
    """(positional args, keyword args) of a layer call (:func:`inbound_node`), tensors and constants
    alike: ``([q, v], {"use_causal_mask": True})`` for ``MultiHeadAttention()(q, v,
    use_causal_mask=True)``.

    Private: Keras 3 ``Node.arguments.args`` / ``.kwargs``, tf-keras ``Node.call_args`` /
    ``call_kwargs``. Why: which tensor is a MultiHeadAttention's query, value or key, and its
    ``use_causal_mask``, are kept only there. Fallback: none; an AttributeError names the missing
    attribute.
    """
    if hasattr(node, "arguments"):
        return list(node.arguments.args), dict(node.arguments.kwargs or {})
    return list(node.call_args), dict(node.call_kwargs or {})


def attention_projections(layer):
    """The (query, key, value, output) ``EinsumDense`` sublayers of a MultiHeadAttention layer.

    Public in Keras 3 (``query_dense``, ...); private in tf-keras (``_query_dense``, ...). Why: their
    kernels and biases are the layer's weights, by role (``get_weights()`` lists them only by
    position). Fallback: none; an AttributeError names the missing attribute.
    """
    return tuple(getattr(layer, name) if hasattr(layer, name) else getattr(layer, "_" + name)
                 for name in ("query_dense", "key_dense", "value_dense", "output_dense"))


def node_outputs(node):
    """The flat list of symbolic tensors a layer call (:func:`inbound_node`) produced.

    Private: Keras 3 ``Node.output_tensors``, tf-keras ``Node.outputs``. Fallback: none.
    """
    import tensorflow as tf

    return list(tf.nest.flatten(node.output_tensors if hasattr(node, "output_tensors") else node.outputs))


# -- tf-keras v1/v2 layer classes ---------------------------------------------------------------
def _swap_bases(cls, v2, v1, use_v2, memo):
    """``tf_keras.src.utils.version_utils.swap_class``, writing ``__bases__`` only where it changes."""
    if cls is object:
        return cls
    if cls is v2 or cls is v1:
        return v2 if use_v2 else v1
    if cls in memo:
        return cls
    memo.add(cls)
    bases, changed = [], False
    for b in cls.__bases__:
        if (use_v2 and issubclass(b, v1)) or (not use_v2 and issubclass(b, v2)):
            nb = _swap_bases(b, v2, v1, use_v2, memo)
        else:
            nb = b
        bases.append(nb)
        changed |= nb is not b
    if changed:
        cls.__bases__ = tuple(bases)
    return cls


def tf_keras_base_classes():
    """``(Layer_v2, Layer_v1, Model_v2, Model_v1)`` of tf-keras.

    Private modules: ``tf_keras.src.engine.base_layer`` / ``base_layer_v1`` / ``training`` /
    ``training_v1``. Why: :func:`swap_tf_keras_bases` needs the v1 classes, which tf-keras does
    not export. Fallback: none (ImportError names the module).
    """
    from tf_keras.src.engine import base_layer, base_layer_v1, training, training_v1

    return base_layer.Layer, base_layer_v1.Layer, training.Model, training_v1.Model


def swap_tf_keras_bases(use_v2):
    """Rewrite ``__bases__`` of every tf-keras Layer/Model subclass to the v2 (eager) or v1 (graph)
    base classes, as tf-keras itself does per instance.

    Private: assigning ``cls.__bases__`` of tf-keras classes (tf-keras'
    ``version_utils.swap_class`` does the same at construction) and the classes of
    :func:`tf_keras_base_classes`. Why: building a layer in a private graph turns its class into a
    v1 class for every instance (see :mod:`xaitf.twin`); the graph twins' scope switches all
    classes on entry and back on exit. Fallback: none (a TypeError from the assignment
    propagates). About 10 ms when anything changes.
    """
    layer_v2, layer_v1, model_v2, model_v1 = tf_keras_base_classes()
    seen, stack, classes = set(), [layer_v2], []
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                classes.append(sub)
                stack.append(sub)
    memo_layer, memo_model = set(), set()
    for c in classes:
        _swap_bases(c, layer_v2, layer_v1, use_v2, memo_layer)
        if issubclass(c, model_v2):
            _swap_bases(c, model_v2, model_v1, use_v2, memo_model)


def tf_keras_should_use_v2():
    """Whether tf-keras builds v2 (eager) layer classes in the current context.

    Private: ``tf_keras.src.utils.version_utils.should_use_v2``. Why: leaving a graph-twin scope
    restores the classes the surrounding code expects. Fallback: none (ImportError).
    """
    from tf_keras.src.utils.version_utils import should_use_v2

    return should_use_v2()


# -- shap ----------------------------------------------------------------------------------------
def _shap_deep_tf():
    from shap.explainers._deep import deep_tf

    return deep_tf


def shap_op_handlers():
    """shap's TF DeepExplainer table ``{op type: handler}`` (the live dict: changes apply).

    Private: ``shap.explainers._deep.deep_tf.op_handlers``. Why: DeepExplainer fails on op types
    missing from it (FusedBatchNormV3, LeakyRelu, Relu6; shap issue #1761); xaitf adds handlers
    for the duration of a call. Fallback: none (ImportError / AttributeError).
    """
    return _shap_deep_tf().op_handlers


@contextlib.contextmanager
def eager_gradient_recorder_kept():
    """Put TensorFlow's eager gradient recorder back after the block, even when the block raises.

    Private: ``tensorflow.python.eager.execute.record_gradient``. Why: shap 0.51's DeepExplainer
    (``deep_tf.run``) swaps in a recorder that prefixes ``shap_`` to every op type and puts TF's
    back only when the model call returns; after a failed call every later gradient in the process
    fails with "gradient registry has no entry for: shap_Sum". Fallback: none (ImportError).
    """
    from tensorflow.python.eager import execute

    saved = execute.record_gradient
    try:
        yield
    finally:
        execute.record_gradient = saved


def shap_handler(rule, input_index=0):
    """A shap DeepExplainer op handler: ``rule`` is ``"linearity_1d"`` (the op is affine in input
    ``input_index``: plain gradient) or ``"nonlinearity_1d"`` (elementwise: rescale rule).

    Private: ``shap.explainers._deep.deep_tf.linearity_1d`` / ``nonlinearity_1d``. Fallback: none.
    """
    if rule not in ("linearity_1d", "nonlinearity_1d"):
        raise ValueError(f"unknown shap handler rule {rule!r}")
    return getattr(_shap_deep_tf(), rule)(input_index)
