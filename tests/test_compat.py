"""One test per function of :mod:`xaitf.compat` (xaitf's only uses of private TF / Keras / shap
APIs): each exercises the private API on the installed versions and fails loudly, naming the
private API and the library version, when an upgrade removes it or changes what it does."""
import sys

import numpy as np
import pytest

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from xaitf import compat as C
from xaitf.keras_bridge import keras3, tfk


def _version(lib):
    if lib == "tensorflow":
        return f"tensorflow {tf.__version__}"
    if lib == "tf-keras":
        import tf_keras

        return f"tf-keras {tf_keras.__version__}"
    if lib == "keras":
        return f"keras {keras3().__version__}"
    if lib == "shap":
        import shap

        return f"shap {shap.__version__}"
    return f"python {sys.version.split()[0]}"


def _fail_unless(ok, api, lib, what):
    if not ok:
        pytest.fail(f"private API {api} ({_version(lib)}): {what}. xaitf.compat must be adapted "
                    "to this version", pytrace=False)


def _chain_model(km):
    """a -> dense1 -> dense2, and a second branch b; out = add(dense2, b), plus a nested call."""
    a = km.Input((4,), name="a")
    b = km.Input((3,), name="b")
    d1 = km.layers.Dense(5, activation="relu", name="dense1")
    d2 = km.layers.Dense(3, name="dense2")
    h = d2(d1(a))
    out = km.layers.Add(name="add")([h, b])
    return km.Model([a, b], out, name="chain"), d1, d2


# -- TensorFlow -----------------------------------------------------------------------------------
def test_concrete_flat_call():
    api, lib = "ConcreteFunction._call_flat", "tensorflow"

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32)],
                 autograph=False)
    def fn(x, t):
        return {"y": tf.reduce_sum(x * 2.0, axis=1) + tf.cast(t, tf.float32), "n": tf.shape(x)[0]}

    concrete = fn.get_concrete_function()
    flat = C.concrete_flat_call(concrete)
    _fail_unless(callable(flat), api, lib, "ConcreteFunction has no _call_flat")
    x = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    t = tf.constant([1, 2], tf.int32)
    want = concrete(x, t)
    try:
        got = flat(tf.nest.flatten((x, t)), concrete.captured_inputs)
    except Exception as e:  # noqa: BLE001
        _fail_unless(False, api, lib, f"_call_flat(flat_args, captured_inputs) raised {type(e).__name__}: {e}")
    _fail_unless(isinstance(got, dict) and set(got) == {"y", "n"}, api, lib,
                 f"returns {type(got).__name__}, not the structured outputs")
    np.testing.assert_array_equal(got["y"].numpy(), want["y"].numpy())
    assert int(got["n"]) == int(want["n"]) == 2
    # the xaitf caller, with a captured variable (captured_inputs non-empty)
    from xaitf.methods.gradients import FlatCall

    v = tf.Variable(3.0)
    g = FlatCall(tf.function(lambda x: x * v, input_signature=[tf.TensorSpec([None], tf.float32)]))
    _fail_unless(g._flat is not None, api, lib, "FlatCall fell back to the structured call")
    np.testing.assert_array_equal(g(tf.constant([1.0, 2.0])).numpy(), [3.0, 6.0])


def test_quiet_retracing():
    api, lib = "tf.function._omit_frequent_tracing_warning", "tensorflow"
    fn = tf.function(lambda x: x + 1, autograph=False)
    _fail_unless(getattr(fn, "_omit_frequent_tracing_warning", None) is False, api, lib,
                 "a fresh tf.function no longer defines the attribute (TF stopped reading it)")
    assert C.quiet_retracing(fn) is fn and fn._omit_frequent_tracing_warning is True
    assert int(fn(tf.constant(1))) == 2


def test_caller_frame():
    api, lib = "sys._getframe", "python"

    def inner():
        return C.caller_frame(1)

    frame = inner()
    _fail_unless(frame is not None, api, lib, "sys._getframe is missing")
    _fail_unless(frame.f_code.co_name == "test_caller_frame", api, lib,
                 f"caller_frame(1) gave {frame.f_code.co_name!r}, not the caller's caller")


# -- Keras graph structure -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tf-keras", "keras"])
def test_keras_history(kind):
    api = "KerasTensor._keras_history"
    model, d1, d2 = _chain_model(tfk if kind == "tf-keras" else keras3())
    hist = C.keras_history(model.outputs[0])
    _fail_unless(hist is not None, api, kind, "symbolic outputs carry no _keras_history")
    layer, node_index, tensor_index = hist
    _fail_unless(layer is model.get_layer("add") and (node_index, tensor_index) == (0, 0), api, kind,
                 f"history of the output is {hist!r}, expected (Add layer, 0, 0)")
    assert C.keras_history(tf.constant([1.0])) is None


@pytest.mark.parametrize("kind", ["tf-keras", "keras"])
def test_inbound_node_and_node_tensors(kind):
    api = "Layer._inbound_nodes / Node.keras_inputs|input_tensors / Node.outputs|output_tensors"
    model, d1, d2 = _chain_model(tfk if kind == "tf-keras" else keras3())

    def inbound_layers(layer):
        node = C.inbound_node(layer, 0)
        return [C.keras_history(t)[0].name for t in C.node_inputs(node)]

    try:
        got = {name: inbound_layers(model.get_layer(name)) for name in ("dense1", "dense2", "add")}
        add_node = C.inbound_node(model.get_layer("add"), 0)
        outs = C.node_outputs(add_node)
    except (AttributeError, IndexError, TypeError) as e:
        _fail_unless(False, api, kind, f"{type(e).__name__}: {e}")
    _fail_unless(got == {"dense1": ["a"], "dense2": ["dense1"], "add": ["dense2", "b"]}, api, kind,
                 f"inbound layers {got}")
    _fail_unless(len(outs) == 1 and outs[0] is model.outputs[0], api, kind,
                 "the Add node's output tensors are not the model's output")
    # a layer called twice has two nodes, in call order
    km = tfk if kind == "tf-keras" else keras3()
    shared = km.layers.Dense(2, name="shared")
    x1, x2 = km.Input((2,), name="x1"), km.Input((2,), name="x2")
    shared(x1), shared(x2)
    names = [C.keras_history(C.node_inputs(C.inbound_node(shared, i))[0])[0].name for i in (0, 1)]
    _fail_unless(names == ["x1", "x2"], api, kind, f"nodes of a shared layer read {names}")


def test_node_call_args():
    api, k = "Node.arguments.args (Keras 3)", keras3()
    inp = k.Input((3,))
    y = 2.5 - inp
    op = C.keras_history(y)[0]
    try:
        args = C.node_call_args(C.inbound_node(op, 0))
    except AttributeError as e:
        _fail_unless(False, api, "keras", f"{type(e).__name__}: {e}")
    _fail_unless(len(args) == 2 and args[0] == 2.5 and args[1] is inp, api, "keras",
                 f"the arguments of 2.5 - x are {args!r}")


def test_tf_op_call():
    api = "Node.call_args / Node.call_kwargs (tf-keras)"
    inp = tfk.Input((4, 4, 3))
    y = tfk.applications.densenet.preprocess_input(inp)       # x / 255, bias_add(x, -mean), x / std
    layers = [l for l in tfk.Model(inp, y).layers if type(l).__name__ == "TFOpLambda"]
    try:
        calls = [C.tf_op_call(C.inbound_node(l, 0)) for l in layers]
    except AttributeError as e:
        _fail_unless(False, api, "tf-keras", f"{type(e).__name__}: {e}")
    _fail_unless([l.symbol for l in layers] == ["math.truediv", "nn.bias_add", "math.truediv"], api, "tf-keras",
                 f"preprocess_input's layers are {[l.symbol for l in layers]}")
    (args, kwargs), (bias_args, bias_kwargs) = calls[0], calls[1]
    _fail_unless(len(args) == 2 and args[0] is inp and args[1] == 255.0 and isinstance(kwargs, dict), api,
                 "tf-keras", f"the call of x / 255 is {args!r}, {kwargs!r}")
    _fail_unless(np.allclose(np.asarray(bias_args[1]), [-0.485, -0.456, -0.406]) and
                 bias_kwargs.get("data_format") == "NHWC", api, "tf-keras",
                 f"the call of bias_add is {bias_args!r}, {bias_kwargs!r}")


@pytest.mark.parametrize("kind", ["tf-keras", "keras"])
def test_call_arguments(kind):
    api = "Node.arguments.args|kwargs (Keras 3) / Node.call_args|call_kwargs (tf-keras)"
    k = tfk if kind == "tf-keras" else keras3()
    q, v = k.Input((4, 6)), k.Input((5, 6))
    mha = k.layers.MultiHeadAttention(2, 3)
    mha(q, v, use_causal_mask=True)
    try:
        args, kwargs = C.call_arguments(C.inbound_node(mha, 0))
    except AttributeError as e:
        _fail_unless(False, api, kind, f"{type(e).__name__}: {e}")
    _fail_unless(len(args) == 2 and args[0] is q and args[1] is v and kwargs.get("use_causal_mask") is True,
                 api, kind, f"the arguments of mha(q, v, use_causal_mask=True) are {args!r}, {kwargs!r}")


@pytest.mark.parametrize("kind", ["tf-keras", "keras"])
def test_attention_projections(kind):
    api = "MultiHeadAttention.query_dense|... (Keras 3) / ._query_dense|... (tf-keras)"
    k = tfk if kind == "tf-keras" else keras3()
    x = k.Input((4, 6))
    mha = k.layers.MultiHeadAttention(2, 3, value_dim=5)
    mha(x, x)
    try:
        parts = C.attention_projections(mha)
    except AttributeError as e:
        _fail_unless(False, api, kind, f"{type(e).__name__}: {e}")
    shapes = [tuple(p.get_weights()[0].shape) for p in parts]
    _fail_unless(shapes == [(6, 2, 3), (6, 2, 3), (6, 2, 5), (2, 5, 6)] and
                 all(type(p).__name__ == "EinsumDense" for p in parts), api, kind,
                 f"the projections' kernels are {shapes}")


# -- tf-keras v1/v2 classes ----------------------------------------------------------------------
def test_tf_keras_base_classes():
    api, lib = "tf_keras.src.engine.{base_layer,base_layer_v1,training,training_v1}", "tf-keras"
    try:
        layer_v2, layer_v1, model_v2, model_v1 = C.tf_keras_base_classes()
    except ImportError as e:
        _fail_unless(False, api, lib, f"ImportError: {e}")
    _fail_unless(layer_v2 is tfk.layers.Layer and model_v2 is tfk.Model, api, lib,
                 "the v2 classes are not tf.keras.layers.Layer / tf.keras.Model")
    _fail_unless(layer_v1 is not layer_v2 and issubclass(layer_v1, layer_v2)
                 and model_v1 is not model_v2 and issubclass(model_v1, model_v2), api, lib,
                 "the v1 Layer/Model classes are no longer subclasses of the v2 ones")


def test_swap_tf_keras_bases_round_trip():
    api, lib = "tf-keras class __bases__ rewrite (version_utils.swap_class)", "tf-keras"
    layer_v2, layer_v1, model_v2, model_v1 = C.tf_keras_base_classes()
    inp = tfk.Input((2,))
    dense, functional = tfk.layers.Dense, type(tfk.Model(inp, tfk.layers.Dense(1)(inp)))
    before = {c: c.__bases__ for c in (dense, functional)}
    try:
        C.swap_tf_keras_bases(use_v2=False)
        _fail_unless(layer_v1 in dense.__mro__, api, lib, "Dense is not a v1 layer after the swap to v1")
        _fail_unless(model_v1 in functional.__mro__, api, lib,
                     "Functional is not a v1 model after the swap to v1")
    finally:
        C.swap_tf_keras_bases(use_v2=True)
    _fail_unless({c: c.__bases__ for c in before} == before, api, lib, "the swap back to v2 did not restore "
                 "the original bases")
    _fail_unless(layer_v1 not in dense.__mro__ and model_v1 not in functional.__mro__, api, lib,
                 "v1 classes left in the hierarchy after the swap back to v2")
    m = tfk.Sequential([tfk.Input((2,)), tfk.layers.Dense(1)])     # eager models still work
    assert m(np.ones((1, 2), np.float32)).shape == (1, 1)


def test_tf_keras_should_use_v2():
    api, lib = "tf_keras.src.utils.version_utils.should_use_v2", "tf-keras"
    try:
        eager = C.tf_keras_should_use_v2()
        with tf.compat.v1.Graph().as_default():
            graph = C.tf_keras_should_use_v2()
    except ImportError as e:
        _fail_unless(False, api, lib, f"ImportError: {e}")
    _fail_unless(eager is True and graph is False, api, lib,
                 f"should_use_v2() is {eager} eagerly and {graph} in a v1 graph (expected True, False)")


# -- shap ----------------------------------------------------------------------------------------
def test_shap_op_handlers():
    pytest.importorskip("shap")
    api, lib = "shap.explainers._deep.deep_tf.op_handlers", "shap"
    try:
        handlers = C.shap_op_handlers()
    except (ImportError, AttributeError) as e:
        _fail_unless(False, api, lib, f"{type(e).__name__}: {e}")
    _fail_unless(isinstance(handlers, dict), api, lib, f"op_handlers is a {type(handlers).__name__}")
    needed = {"Relu", "Conv2D", "MatMul", "BiasAdd", "MaxPool", "AvgPool", "Softmax", "Reshape", "AddV2",
              "Tanh", "Sigmoid", "FusedBatchNorm"}
    missing = sorted(needed - set(handlers))
    _fail_unless(not missing, api, lib, f"op_handlers lacks {missing}")
    # the live dict: xaitf's temporary additions go in and come out again
    from xaitf.methods.surrogates import _deep_extra_ops

    before = dict(handlers)
    with _deep_extra_ops():
        _fail_unless(all(k in C.shap_op_handlers() for k in ("FusedBatchNormV3", "LeakyRelu", "Relu6")), api,
                     lib, "additions to op_handlers are not seen by shap's table")
    assert C.shap_op_handlers() == before


def test_shap_handler():
    pytest.importorskip("shap")
    api, lib = "shap.explainers._deep.deep_tf.linearity_1d / nonlinearity_1d", "shap"
    for rule in ("linearity_1d", "nonlinearity_1d"):
        try:
            h = C.shap_handler(rule, 0)
        except (ImportError, AttributeError, TypeError) as e:
            _fail_unless(False, api, lib, f"{rule}(0): {type(e).__name__}: {e}")
        _fail_unless(callable(h), api, lib, f"{rule}(0) is not a handler")
    with pytest.raises(ValueError):
        C.shap_handler("nope")


def test_eager_gradient_recorder_kept():
    api, lib = "tensorflow.python.eager.execute.record_gradient", "tensorflow"
    try:
        from tensorflow.python.eager import execute
    except ImportError as e:
        _fail_unless(False, api, lib, f"ImportError: {e}")
    saved = execute.record_gradient
    _fail_unless(callable(saved), api, lib, "record_gradient is not a function")
    with pytest.raises(RuntimeError):
        with C.eager_gradient_recorder_kept():
            execute.record_gradient = lambda *a, **k: None       # as shap's DeepExplainer does
            raise RuntimeError("the model call failed")
    assert execute.record_gradient is saved
    x = tf.constant([1.0, 2.0])
    with tf.GradientTape() as tape:                             # TF still records through it
        tape.watch(x)
        y = tf.reduce_sum(x * x)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [2.0, 4.0])
