"""The native gradient family: analytic oracles, completeness, hand-computed references,
tf-keras vs Keras 3 agreement, batching, seeds and error messages."""
import warnings

import numpy as np
import pytest

import xaitf
import tensorflow as tf

from conftest import make_cnn, make_linear
from xaitf.errors import InputError, MethodError, ModelError
from xaitf.keras_bridge import keras3, tfk
from xaitf.methods.cam import GradCam, GradCamPlusPlus
from xaitf.methods._xla import xla_available
from xaitf.methods.deeplift import DeepLift
from xaitf.methods.gradients import FlatCall
from xaitf.methods.gradients import (DeconvNet, Gradient, GuidedBackprop, InputXGradient,
                                     IntegratedGradients, SmoothGrad, hashed_normal, path_points)

ALL = ["grad", "inpgrad", "ig", "sg", "vargrad", "squaregrad", "gb", "deconvnet", "deeplift",
       "gradcam", "gradcampp"]


def explain(name, model, x, targets=None, **kw):
    kw.setdefault("progress", False)
    return xaitf.create_explainer(name, model, **kw)(x, targets)


def with_biases(model, scale, seed=1):
    """Give every layer random biases (zero biases make a ReLU net positively homogeneous)."""
    rs = np.random.RandomState(seed)
    model.set_weights([w if w.ndim > 1 else (rs.randn(*w.shape) * scale).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def keras3_cnn(shape, classes, name="tiny_cnn_k3"):
    """make_cnn's architecture in Keras 3 (same layer names and weight order)."""
    k = keras3()
    inp = k.Input(shape, name="image")
    h = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = k.layers.MaxPooling2D(2, name="pool1")(h)
    h = k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = k.layers.Flatten(name="flatten")(h)
    h = k.layers.Dense(16, activation="relu", name="fc1")(h)
    out = k.layers.Dense(classes, activation="softmax", name="fc2")(h)
    return k.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def cnn28():
    return with_biases(make_cnn(shape=(28, 28, 1), classes=10), 0.05)


@pytest.fixture(scope="module")
def x28():
    return np.random.default_rng(0).random((6, 28, 28, 1)).astype(np.float32)


# -- 1. the study-1 center-pixel model --------------------------------------------------------
@pytest.fixture(scope="module")
def center_case():
    from xaitf.zoo import build_center_pixel, center_index

    model = build_center_pixel()
    img = np.random.RandomState(0).randint(256, size=(227, 227))
    r, c = center_index()
    img[r, c] = 206
    return model, (img / 255.0).astype(np.float32)[None, ..., None], (r, c)


def test_center_pixel_gradient_and_deeplift(center_case):
    model, x, (r, c) = center_case
    g = explain("grad", model, x)[0]
    assert int(np.asarray(model(x)).argmax()) == 206  # targets=None explains the prediction
    z = (g - g.mean()) / (g.std() + 1e-15)
    assert z[r, c] == pytest.approx(-4.97, rel=0.02)
    assert np.unravel_index(z.argmin(), z.shape) == (r, c)
    dl = explain("deeplift", model, x)[0]
    ixg = explain("inpgrad", model, x)[0]
    assert np.abs(dl - ixg).max() <= 1e-4 * np.abs(ixg).max()
    # the logits' ReLU is the identity here (logits ~3e7 > 0) and the upstream gradient is 1 >= 0,
    # so the modified-ReLU methods reduce to the gradient and IG (straight path, f linear on it)
    # to input x gradient; this runs every method through the float64 head
    for name in ("gb", "deconvnet"):
        np.testing.assert_allclose(explain(name, model, x)[0], g, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(explain("ig", model, x, steps=4)[0], ixg, rtol=1e-4,
                               atol=1e-6 * np.abs(ixg).max())
    sg = explain("sg", model, x, samples=4, postprocess="none")[0]
    np.testing.assert_allclose(sg, g, rtol=1e-6)  # constant gradient: noise changes nothing


# -- 2. Integrated Gradients completeness -----------------------------------------------------
def _target_delta(model, x, x0):
    ig = IntegratedGradients(model, progress=False)
    f, f0 = ig.predict(x), ig.predict(np.broadcast_to(x0, x.shape).copy())
    t = f.argmax(1)
    return t, f[np.arange(len(x)), t] - f0[np.arange(len(x)), t]


def test_ig_completeness_mnist_cnn():
    """Zero baseline on make_cnn (the project's check) and a grey baseline, where the path is not
    trivial (the zero-bias ReLU net is positively homogeneous, so f is linear along rays from 0)."""
    model = make_cnn(shape=(28, 28, 1), classes=10)
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)
    t, delta = _target_delta(model, x, np.float32(0))
    s = IntegratedGradients(model, steps=64, progress=False)(x, t).reshape(16, -1).sum(1)
    np.testing.assert_allclose(s, delta, rtol=0.01)
    t, delta = _target_delta(model, x, np.float32(0.5))
    s = IntegratedGradients(model, steps=64, baseline=0.5, progress=False)(x, t).reshape(16, -1).sum(1)
    assert np.abs(s - delta).sum() <= 0.01 * np.abs(delta).sum()
    assert not np.allclose(s, delta, rtol=1e-4)  # the grey path does cross ReLU kinks


def test_ig_completeness_on_the_zoo_mnist_cnn_trained_on_mnist(data_dir):
    """Issue acceptance: the zoo's MNIST CNN (trained one short epoch on real digits), its logits,
    a zero baseline, 64 steps: each map sums to f(x) - f(0) within 1%."""
    import dataclasses

    from xaitf import data as D
    from xaitf.keras_bridge import logits_model
    from xaitf.training import fit, set_seed
    from xaitf.zoo import registry as R

    ds = D.load_dataset("mnist", data_dir=data_dir)
    set_seed(0)
    model = R.build("mnist_cnn")
    fit(model, R.prepare_inputs("mnist_cnn", ds.x_train[:4000]), ds.y_train[:4000],
        dataclasses.replace(R.get("mnist_cnn").quick, epochs=1), progress=False)
    x = R.prepare_inputs("mnist_cnn", ds.x_test[:32])
    logits = logits_model(model)[0]
    f, f0 = logits.predict(x, verbose=0), logits.predict(np.zeros_like(x), verbose=0)
    t = f.argmax(1)
    assert (t == ds.y_test[:32]).mean() > 0.6          # a model that has learned something
    delta = f[np.arange(32), t] - f0[np.arange(32), t]
    s = IntegratedGradients(model, steps=64, progress=False)(x, t).reshape(32, -1).sum(1)
    np.testing.assert_allclose(s, delta, rtol=0.01)


def test_ig_midpoint_converges_on_smooth_model():
    tf.keras.utils.set_random_seed(0)
    inp = tfk.Input((10, 10, 1))
    h = tfk.layers.Conv2D(4, 3, activation="softplus", bias_initializer="random_normal")(inp)
    h = tfk.layers.Flatten()(h)
    h = tfk.layers.Dense(8, activation="tanh", bias_initializer="random_normal")(h)
    model = tfk.Model(inp, tfk.layers.Dense(3, bias_initializer="random_normal")(h))
    x = np.random.default_rng(1).random((8, 10, 10, 1)).astype(np.float32) * 3
    t, delta = _target_delta(model, x, np.float32(0))
    err = {}
    for rule in ("midpoint", "left", "trapezoid"):
        s = IntegratedGradients(model, steps=64, rule=rule, progress=False)(x, t).reshape(8, -1).sum(1)
        err[rule] = np.abs(s - delta).sum() / np.abs(delta).sum()
    assert err["midpoint"] < 1e-3
    assert err["midpoint"] < err["left"] / 10


def test_path_points():
    for rule in ("midpoint", "trapezoid", "left", "right"):
        a, w = path_points(7, rule)
        assert w.sum() == pytest.approx(1.0) and a.min() >= 0 and a.max() <= 1
    a, _ = path_points(4, "midpoint")
    np.testing.assert_allclose(a, [0.125, 0.375, 0.625, 0.875])


# -- 3. analytic answers on a linear model ----------------------------------------------------
@pytest.mark.filterwarnings("ignore:model 'linear' has no")
def test_linear_model_analytic(linear_model):
    w, b = [np.asarray(v) for v in linear_model.layers[-1].get_weights()]
    x = np.random.default_rng(2).normal(size=(5, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0])
    wc = w[:, t].T.reshape(5, 6, 6)
    xs = x[..., 0]
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explain("grad", linear_model, x, t), wc, **tol)
    np.testing.assert_allclose(explain("inpgrad", linear_model, x, t), wc * xs, **tol)
    base = np.random.default_rng(3).normal(size=(6, 6, 1)).astype(np.float32)
    for bl in (0.0, 0.3, base):
        ref = wc * (xs - np.broadcast_to(bl, (6, 6, 1))[..., 0])
        np.testing.assert_allclose(explain("ig", linear_model, x, t, baseline=bl, steps=5), ref, **tol)
        np.testing.assert_allclose(explain("deeplift", linear_model, x, t, baseline=bl), ref, **tol)
    np.testing.assert_allclose(explain("sg", linear_model, x, t, postprocess="none"), wc, **tol)
    np.testing.assert_allclose(explain("squaregrad", linear_model, x, t), wc ** 2, **tol)
    np.testing.assert_allclose(explain("vargrad", linear_model, x, t), 0.0, atol=1e-10)


@pytest.mark.filterwarnings("ignore:model 'linear' has no")
def test_per_input_baselines(linear_model):
    w = linear_model.layers[-1].get_weights()[0]
    x = np.random.default_rng(4).normal(size=(5, 6, 6, 1)).astype(np.float32)
    x0 = np.random.default_rng(5).normal(size=(5, 6, 6, 1)).astype(np.float32)
    ref = w[:, [1] * 5].T.reshape(5, 6, 6) * (x - x0)[..., 0]
    for name in ("ig", "deeplift"):
        got = explain(name, linear_model, x, 1, baseline=x0, batch_size=4)  # chunks of 1-2
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="5 baselines given for 3 inputs"):
        explain("ig", linear_model, x[:3], 1, baseline=x0)
    with pytest.raises(MethodError, match="needs baseline to be"):
        IntegratedGradients(linear_model, baseline=np.zeros((5, 5)))


# -- DeepLIFT: summation-to-delta and a hand-computed reference ---------------------------------
def _dense_net(kind="tf-keras", functional=False, seed=0):
    """Input (2,2,1) -> Dense 5 ReLU -> Dense 4 ReLU -> Dense 3 (logits); weights from numpy."""
    km = tfk if kind == "tf-keras" else keras3()
    rs = np.random.RandomState(seed)
    ws = [rs.randn(4, 5), rs.randn(5) * 0.5, rs.randn(5, 4), rs.randn(4) * 0.5, rs.randn(4, 3), rs.randn(3)]
    ws = [w.astype(np.float32) for w in ws]
    if functional:  # ReLU as separate layers: a ReLU layer and an Activation layer
        inp = km.Input((2, 2, 1), name="image")
        h = km.layers.Flatten()(inp)
        h = km.layers.ReLU()(km.layers.Dense(5)(h))
        h = km.layers.Activation("relu")(km.layers.Dense(4)(h))
        model = km.Model(inp, km.layers.Dense(3)(h))
    else:
        model = km.Sequential([km.Input((2, 2, 1)), km.layers.Flatten(),
                               km.layers.Dense(5, activation="relu"),
                               km.layers.Dense(4, activation="relu"), km.layers.Dense(3)])
    model.set_weights(ws)
    return model, ws


def _hand_rules(ws, x, x0, c):
    """Numpy references for one input: gradient, guided backprop, deconvnet, DeepLIFT rescale."""
    w1, b1, w2, b2, w3, _ = [w.astype(np.float64) for w in ws]
    v, v0 = x.reshape(-1).astype(np.float64), x0.reshape(-1).astype(np.float64)
    z1, z01 = v @ w1 + b1, v0 @ w1 + b1
    z2, z02 = np.maximum(z1, 0) @ w2 + b2, np.maximum(z01, 0) @ w2 + b2
    g3 = w3[:, c]
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    out = {}
    out["grad"] = w1 @ ((z1 > 0) * (w2 @ ((z2 > 0) * g3)))
    out["gb"] = w1 @ ((z1 > 0) * relu(w2 @ ((z2 > 0) * relu(g3))))
    out["deconvnet"] = w1 @ relu(w2 @ relu(g3))

    def m(z, z0):
        d = z - z0
        return np.where(np.abs(d) > 1e-9, (relu(z) - relu(z0)) / np.where(d == 0, 1, d), z > 0)

    mult = w1 @ (m(z1, z01) * (w2 @ (m(z2, z02) * g3)))
    out["deeplift"] = (v - v0) * mult
    f = lambda zz: relu(zz) @ w3[:, c]  # noqa: E731
    out["delta"] = f(z2) - f(z02)
    return {k: (val.reshape(2, 2) if np.ndim(val) else val) for k, val in out.items()}


@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
@pytest.mark.parametrize("functional", [False, True])
def test_modified_gradients_match_hand_reference(kind, functional):
    model, ws = _dense_net(kind, functional)
    x = np.random.default_rng(6).normal(size=(4, 2, 2, 1)).astype(np.float32)
    x0 = np.float32(0.25)
    t = np.array([0, 1, 2, 0])
    maps = {name: explain(name, model, x, t, **({"baseline": x0} if name == "deeplift" else {}))
            for name in ("grad", "gb", "deconvnet", "deeplift")}
    for i in range(4):
        ref = _hand_rules(ws, x[i], np.full((2, 2, 1), x0), t[i])
        for name, got in maps.items():
            np.testing.assert_allclose(got[i], ref[name], rtol=1e-4, atol=1e-5, err_msg=name)
        assert maps["deeplift"][i].sum() == pytest.approx(ref["delta"], rel=1e-4, abs=1e-5)
    # the references differ from each other on this net, so each comparison is a real check
    assert not np.allclose(maps["gb"], maps["grad"]) and not np.allclose(maps["deconvnet"], maps["gb"])
    assert not np.allclose(maps["deeplift"], x[..., 0] * maps["grad"] - x0 * maps["grad"])


def test_deeplift_summation_to_delta_conv():
    """Conv/Dense ReLU net with biases, no max pooling: sum(a) = f(x) - f(x0) exactly."""
    tf.keras.utils.set_random_seed(3)
    inp = tfk.Input((12, 12, 2))
    h = tfk.layers.Conv2D(5, 3, activation="relu", bias_initializer="random_normal")(inp)
    h = tfk.layers.BatchNormalization()(h)
    h = tfk.layers.Conv2D(4, 3, strides=2, bias_initializer="random_normal")(h)
    h = tfk.layers.ReLU()(h)
    h = tfk.layers.Flatten()(tfk.layers.AveragePooling2D(2)(h))
    h = tfk.layers.Dense(8, activation="relu", bias_initializer="random_normal")(h)
    model = tfk.Model(inp, tfk.layers.Dense(4, activation="softmax")(h))
    bn = model.layers[2]
    bn.set_weights([np.full(5, 1.5, np.float32), np.full(5, 0.2, np.float32),
                    np.full(5, 0.1, np.float32), np.full(5, 2.0, np.float32)])
    x = np.random.default_rng(7).random((5, 12, 12, 2)).astype(np.float32)
    x0 = np.random.default_rng(8).random((12, 12, 2)).astype(np.float32)
    dl = DeepLift(model, baseline=x0, progress=False, channel_reduce="none")
    t = np.array([0, 1, 2, 3, 1])
    a = dl(x, t)
    f, f0 = dl.predict(x), dl.predict(x0[None])
    delta = f[np.arange(5), t] - f0[0, t]
    np.testing.assert_allclose(a.reshape(5, -1).sum(1), delta, rtol=1e-4, atol=1e-5)
    ixg = IntegratedGradients(model, steps=256, baseline=x0, progress=False, channel_reduce="none")(x, t)
    assert not np.allclose(a, ixg, atol=1e-4)  # DeepLIFT is not IG here: the test is not vacuous


def test_relu_rescale_kernel_and_its_fallback():
    """The XLA-fused multiplier and the plain one (used without XLA) give the same numbers."""
    from xaitf.methods import _modified_grad as MG

    rs = np.random.RandomState(12)
    z = rs.randn(5, 7).astype(np.float32)
    z[:, :2] = z[-1:, :2]                                        # z = z0: falls back to 1[z > 0]
    z, g = tf.constant(z), tf.constant(rs.randn(5, 7).astype(np.float32))
    plain = MG._relu_rescale(g, z, z[-1:]).numpy()
    zn = z.numpy()
    yn = np.maximum(zn, 0)
    same = zn == zn[-1:]
    want = g.numpy() * np.where(same, zn > 0, (yn - yn[-1:]) / np.where(same, 1, zn - zn[-1:]))
    np.testing.assert_allclose(plain, want, rtol=1e-6)
    if xla_available():
        np.testing.assert_allclose(MG.RELU_RESCALE.xla(g, z, z[-1:]).numpy(), plain, rtol=1e-6)
    m = MG._relu_multiplier(z, z[-1:])
    np.testing.assert_allclose((g * m).numpy(), plain, rtol=1e-6)
    if xla_available():
        np.testing.assert_allclose(MG.RELU_MULTIPLIER.xla(z, z[-1:]).numpy(), m.numpy(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
def test_recorded_baseline_equals_the_stacked_baseline_row(kind):
    """The shared-baseline rescale clone gives the same gradients whether the baseline's
    pre-activations were recorded beforehand (inputs alone run) or the baseline rides as the
    batch's last row; ReLU (fused path) and tanh (generic path) alike."""
    from xaitf.methods import _modified_grad as MG

    km = tfk if kind == "tf-keras" else keras3()
    inp = km.Input((6, 6, 2))
    h = km.layers.Conv2D(4, 3, activation="relu", bias_initializer="random_normal")(inp)
    h = km.layers.Dense(5, activation="tanh")(km.layers.Flatten()(h))
    model = km.Model(inp, km.layers.Dense(3)(km.layers.ReLU()(km.layers.Dense(6)(h))))
    clone = MG.modified_clone(model, "rescale")
    rs = np.random.RandomState(4)
    x = tf.constant(rs.rand(5, 6, 6, 2).astype(np.float32))
    x0 = tf.constant(rs.rand(1, 6, 6, 2).astype(np.float32))
    x = tf.concat([x[:2], x0, x[2:4]], 0)                 # one input equal to the baseline

    def grads(batch, refs=None):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            if refs is None:
                out = clone(batch, training=False)
            else:
                with MG.use_references(clone, refs):
                    out = clone(batch, training=False)
            total = tf.reduce_sum(out[:5, 1])
        return tape.gradient(total, batch)[:5].numpy()

    refs = MG.record_references(clone, x0)
    assert len(refs) == 3 and all(v[0].shape[0] == 1 for v in refs.values())
    recorded = grads(x, refs)
    stacked = grads(tf.concat([x, x0], 0))
    # float32 rounding of the baseline's pre-activations in a batch of 1 vs 6 (the input equal to the
    # baseline divides two such roundings): 1e-5 of the map's scale
    np.testing.assert_allclose(recorded, stacked, rtol=1e-5, atol=1e-5 * np.abs(stacked).max())
    assert np.all(np.isfinite(recorded)) and np.abs(recorded).max() > 0
    with pytest.raises(RuntimeError, match="no baseline pre-activation"):
        grads(x, {})


@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
def test_deeplift_other_nonlinearities(kind):
    """tanh, sigmoid, softplus activations and a LeakyReLU layer take the generic rescale path;
    an input equal to its baseline (z = z0 everywhere) gets an all-zero map, not NaN."""
    km = tfk if kind == "tf-keras" else keras3()
    inp = km.Input((3, 3, 1))
    h = km.layers.Flatten()(inp)
    h = km.layers.Dense(6, activation="tanh")(h)
    h = km.layers.Dense(5, activation="sigmoid")(h)
    h = km.layers.LeakyReLU(0.2)(km.layers.Dense(5)(h))
    h = km.layers.Dense(4, activation="softplus")(h)
    model = km.Model(inp, km.layers.Dense(2)(h))
    rs = np.random.RandomState(11)
    model.set_weights([rs.randn(*w.shape).astype(np.float32) for w in model.get_weights()])
    x = rs.rand(4, 3, 3, 1).astype(np.float32) * 2
    for x0 in (np.float32(0.3), rs.rand(4, 3, 3, 1).astype(np.float32)):
        x[3] = np.broadcast_to(x0, (4, 3, 3, 1))[3]
        dl = DeepLift(model, baseline=x0, progress=False)
        a = dl(x, 1)
        f, f0 = dl.predict(x)[:, 1], dl.predict(np.broadcast_to(x0, x.shape).copy())[:, 1]
        np.testing.assert_allclose(a.reshape(4, -1).sum(1), f - f0, rtol=1e-4, atol=1e-6)
        assert np.all(a[3] == 0)
        g = Gradient(model, progress=False)(x, 1)
        assert not np.allclose(a[:3], (g * (x - x0)[..., 0])[:3], atol=1e-4)


# -- 4. targets, batching, seeds, errors ------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_targets_and_batching(name, cnn28, x28):
    p = np.asarray(cnn28(x28)).argmax(1)
    base = explain(name, cnn28, x28, p, batch_size=4096)
    assert base.shape == (6, 28, 28) and base.dtype == np.float32 and np.abs(base).max() > 0
    np.testing.assert_allclose(explain(name, cnn28, x28, None, batch_size=4096), base, rtol=1e-6, atol=1e-9)
    onehot = np.eye(10)[p]
    np.testing.assert_allclose(explain(name, cnn28, x28, onehot, batch_size=4096), base, rtol=1e-6, atol=1e-9)
    # small batch sizes: chunks of inputs, and for ig/sg steps/samples split over calls
    for bs in (7, 40):
        small = explain(name, cnn28, x28, p, batch_size=bs)
        np.testing.assert_allclose(small, base, rtol=2e-4, atol=1e-6 * np.abs(base).max(), err_msg=str(bs))
    other = explain(name, cnn28, x28, (p + 1) % 10, batch_size=4096)
    assert not np.allclose(other, base)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_reduce_channels_matches_numpy(channels):
    """The channel-plane fold equals numpy's reductions, and the result is the caller's to write."""
    from xaitf.explainer import REDUCTIONS, reduce_channels

    m = np.random.RandomState(channels).randn(5, 6, 7, channels).astype(np.float32)
    want = {"sum": m.sum(-1), "mean": m.mean(-1), "abs_sum": np.abs(m).sum(-1),
            "max_abs": np.abs(m).max(-1), "none": m}
    for how in REDUCTIONS:
        got = reduce_channels(m, how)
        assert got.dtype == np.float32 and got.shape == want[how].shape, how
        np.testing.assert_allclose(got, want[how], rtol=1e-6, atol=1e-7, err_msg=how)
    with pytest.raises(MethodError, match="valid: sum, mean"):
        reduce_channels(m, "median")


def test_maps_are_writeable_arrays(cnn28, x28):
    for reduce in ("sum", "none"):
        maps = xaitf.create_explainer("grad", cnn28, progress=False, channel_reduce=reduce)(x28, 1)
        maps[0] = 0                                  # not a read-only view of a tensor's buffer
        assert maps.flags.writeable and maps.dtype == np.float32


def test_one_trace_per_model_and_method(cnn28, x28):
    for name in ALL:
        e = xaitf.create_explainer(name, cnn28, progress=False, batch_size=64)
        e(x28[:5], 1)
        e(x28, 2)
        e2 = xaitf.create_explainer(name, cnn28, progress=False, batch_size=5)  # reuses the function
        e2(x28[:3], 0)
        assert e2._fn is e._fn
        # one concrete function (input signature: it cannot retrace), or a tf.function traced once
        fn = e._fn
        assert isinstance(fn, FlatCall) or fn.experimental_get_tracing_count() == 1, name


def test_smoothgrad_seeds(cnn28, x28):
    a = explain("sg", cnn28, x28, 3, seed=1, postprocess="none")
    np.testing.assert_array_equal(a, explain("sg", cnn28, x28, 3, seed=1, postprocess="none"))
    b = explain("sg", cnn28, x28, 3, seed=2, postprocess="none")
    assert not np.allclose(a, b)
    g = explain("grad", cnn28, x28, 3)
    np.testing.assert_allclose(explain("sg", cnn28, x28, 3, noise_scale=0.0, postprocess="none"), g,
                               rtol=1e-5, atol=1e-8)
    # one image explained alone gets the same noise as inside the batch (noise keyed by sample only)
    np.testing.assert_array_equal(explain("sg", cnn28, x28[:1], 3, seed=1, postprocess="none"), a[:1])


def test_smoothgrad_against_reference(cnn28, x28):
    """Mean, mean square and variance of gradients at x + sigma * noise, recomputed by hand from
    the documented noise (id = sample index, the same noise for every input); batch_size 3 splits
    the 5 samples into groups of 3 and 2, so the group merge is checked too."""
    x = x28[:2]
    m, seed, scale = 5, 3, 0.2
    ids = tf.range(m, dtype=tf.int64)
    noise = hashed_normal(ids, tf.constant(seed, tf.int64), (28, 28, 1)).numpy()[None]
    sigma = scale * (x.max((1, 2, 3)) - x.min((1, 2, 3)))
    xs = (x[:, None] + sigma[:, None, None, None, None] * noise).reshape(2 * m, 28, 28, 1)
    g = Gradient(cnn28, channel_reduce="none", progress=False)(xs, 4)
    g = g.reshape(2, m, 28, 28, 1).astype(np.float64)
    refs = {"none": g.mean(1), "square": (g ** 2).mean(1), "variance": g.var(1)}
    for post, ref in refs.items():
        got = SmoothGrad(cnn28, samples=m, noise_scale=scale, postprocess=post, seed=seed, batch_size=3,
                         channel_reduce="none", progress=False)(x, 4)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max(), err_msg=post)
    assert refs["variance"].max() > 0.01 * refs["square"].max()


def test_hashed_normal_statistics():
    z = hashed_normal(tf.range(64, dtype=tf.int64), tf.constant(0, tf.int64), (32, 32, 1)).numpy().ravel()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z ** 4) - 3) < 0.2                      # normal kurtosis (std err 0.04)
    from scipy import stats

    assert stats.kstest(z, "norm").statistic < 0.008           # 5% critical value 0.0053
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01
    z1 = hashed_normal(tf.range(64, dtype=tf.int64), tf.constant(1, tf.int64), (32, 32, 1)).numpy().ravel()
    assert abs(np.corrcoef(z, z1)[0, 1]) < 0.01


def test_parameter_and_model_errors(linear_model, cnn28):
    with pytest.raises(ModelError, match="needs a Conv2D layer"):
        GradCam(linear_model)
    with pytest.raises(ModelError, match="no layer 'nope'"):
        GradCam(cnn28, layer="nope")
    with pytest.raises(ModelError, match=r"\(N,h,w,K\) or token \(N,T,K\) output"):
        GradCamPlusPlus(cnn28, layer="fc1")
    with pytest.raises(MethodError, match="postprocess"):
        SmoothGrad(cnn28, postprocess="cube")
    with pytest.raises(MethodError, match="steps to be an integer >= 1"):
        IntegratedGradients(cnn28, steps=0)
    with pytest.raises(MethodError, match="unknown IG rule"):
        IntegratedGradients(cnn28, rule="simpson")
    with pytest.raises(MethodError, match="noise_scale"):
        SmoothGrad(cnn28, noise_scale=-1)
    for e in (ModelError, MethodError):
        try:
            GradCam(linear_model) if e is ModelError else SmoothGrad(cnn28, postprocess="x")
        except e as err:
            assert "\n" not in str(err)


# -- Grad-CAM against the CAM closed form -----------------------------------------------------
def test_gradcam_closed_form():
    """conv -> global average pooling -> dense: d f_c / d A_k = W[k, c] / (h w) everywhere, so
    Grad-CAM = relu(sum_k W[k,c] A_k / (h w)) and Grad-CAM++ weights are
    sum_ij relu(g) / (2 + S_k g) with S_k = sum_ij A_k."""
    tf.keras.utils.set_random_seed(4)
    inp = tfk.Input((8, 8, 2))
    conv = tfk.layers.Conv2D(3, 3, activation="relu", name="conv", bias_initializer="random_normal")
    a = conv(inp)
    h = tfk.layers.GlobalAveragePooling2D()(a)
    dense = tfk.layers.Dense(4, name="head")
    model = tfk.Model(inp, dense(h))
    x = np.random.default_rng(9).random((3, 8, 8, 2)).astype(np.float32)
    t = np.array([0, 2, 3])
    acts = tfk.Model(inp, a)(x).numpy()                              # (3, 6, 6, 3)
    w = dense.get_weights()[0]
    g = w[:, t].T[:, None, None, :] / 36.0
    cam = np.maximum((acts * g).sum(-1), 0)
    s = acts.sum((1, 2), keepdims=True)
    wpp = 36.0 * np.maximum(g, 0) / (2 + s * g)
    campp = np.maximum((acts * wpp).sum(-1), 0)
    for cls, ref in ((GradCam, cam), (GradCamPlusPlus, campp)):
        got = cls(model, progress=False)(x, t)
        up = tf.image.resize(ref[..., None], (8, 8), method="bilinear").numpy()[..., 0]
        assert got.shape == (3, 8, 8)
        np.testing.assert_allclose(got, up, rtol=1e-4, atol=1e-6)
    assert GradCam(model, layer="conv", progress=False).layer.name == "conv"


def test_gradcam_layer_names_are_the_users(cnn28, x28):
    """Defect 10: ``layer="predictions"`` (the user's last Dense with softmax) was looked up in the
    logits copy, where it is ``predictions_logits``, and refused with the copy's names. Names are
    the user's: the replaced layer is found under its twin, and refused for its 2-D output with
    the user's 4-D layers listed; every other layer of the user's model works by its name."""
    import xaitf

    inp = tfk.Input((28, 28, 1), name="image")
    h = tfk.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = tfk.layers.MaxPooling2D(2, name="pool")(h)
    out = tfk.layers.Dense(10, activation="softmax", name="predictions")(tfk.layers.Flatten(name="flat")(h))
    model = tfk.Model(inp, out)
    for method, title in (("gradcam", "Grad-CAM"), ("gradcampp", "Grad-CAM++"), ("tfx.gradcam", "tfx.gradcam")):
        # native Grad-CAM also takes layers of tokens (vision transformers); tf-explain's does not
        output, layers = (("4-D (N,h,w,K) output", "4-D output") if method.startswith("tfx") else
                          ("4-D (N,h,w,K) or token (N,T,K) output", "4-D output or square-grid tokens"))
        with pytest.raises(ModelError) as e:
            xaitf.create_explainer(method, model, layer="predictions")
        assert str(e.value) == (f"{title}: layer 'predictions' has a 2-D output (None, 10); {title} needs "
                                f"a convolutional layer with a {output}; layers with a {layers}: conv, pool")
        with pytest.raises(ModelError, match=rf"no layer 'predictions_logits'; layers with a {layers}: conv, pool$"):
            xaitf.create_explainer(method, model, layer="predictions_logits")
    from xaitf.methods.cam import resolve_layer
    from xaitf.keras_bridge import logits_model

    forward, _ = logits_model(model)
    assert resolve_layer(model, forward, "predictions", "x", rank=2).name == "predictions_logits"
    cam = xaitf.create_explainer("gradcam", model, layer="pool")
    assert cam.layer is model.get_layer("pool") and cam(x28[:2], [1, 2]).shape == (2, 28, 28)


def _patch_models(seed=5):
    """The same patch classifier twice: 4x4 patches (a strided Conv2D), then a token-wise Dense on
    the 16 tokens (Reshape to (16, 8)) and GlobalAveragePooling1D, or the same map as a 1x1
    Conv2D on the 4x4 grid and GlobalAveragePooling2D."""
    k = keras3()
    L = k.layers
    k.utils.set_random_seed(seed)
    inp = k.Input((16, 16, 3))
    patches = L.Conv2D(8, 4, strides=4, name="patches")
    h = L.Reshape((16, 8))(patches(inp))
    tokens = L.Dense(6, activation="relu", name="tokens")
    head = L.Dense(3, name="head")
    vit = k.Model(inp, head(L.GlobalAveragePooling1D()(tokens(h))))
    grid = L.Conv2D(6, 1, activation="relu", name="grid")
    g = grid(patches(inp))
    cnn = k.Model(inp, head(L.GlobalAveragePooling2D()(g)))
    w, b = tokens.get_weights()
    grid.set_weights([w[None, None], b])
    return vit, cnn


def _class_token_layer():
    """A Keras 3 layer that prepends a learned class token to (N, T, K) tokens."""
    k = keras3()

    class ClassToken(k.layers.Layer):
        def build(self, shape):
            self.token = self.add_weight(name="token", shape=(1, 1, shape[-1]), initializer="random_normal")

        def call(self, x):
            return k.ops.concatenate([k.ops.repeat(self.token, k.ops.shape(x)[0], axis=0), x], axis=1)

    return ClassToken


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_gradcam_on_tokens_equals_the_convolutional_twin(method):
    """Tokens on their patch grid: Grad-CAM at a token-wise Dense (16 tokens as 4x4, row-major)
    equals Grad-CAM at the 1x1 Conv2D that computes the same map on the grid. A model whose only
    convolution is its patch embedding takes its last token layer by default (the CNN keeps its
    last convolution)."""
    import xaitf

    vit, cnn = _patch_models()
    x = np.random.default_rng(2).random((3, 16, 16, 3), dtype=np.float32)
    t = np.array([0, 1, 2])
    np.testing.assert_allclose(vit(x).numpy(), cnn(x).numpy(), rtol=1e-5, atol=1e-6)
    ref = xaitf.create_explainer(method, cnn, layer="grid", progress=False)(x, t)
    got = xaitf.create_explainer(method, vit, layer="tokens", progress=False)(x, t)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    given = xaitf.create_explainer(method, vit, layer="tokens", grid=(4, 4), progress=False)(x, t)
    np.testing.assert_array_equal(given, got)
    assert xaitf.create_explainer(method, vit).layer.name == "tokens"
    assert xaitf.create_explainer(method, cnn).layer.name == "grid"


def test_gradcam_token_grids_and_refusals():
    """A class token before a 4x4 grid (17 tokens) is left out; the default layer of a model
    without a convolution is its last token layer; 15 tokens form no square grid (one line asking
    for grid=), a grid larger than the tokens and grid= on a convolutional layer are refused."""
    import xaitf

    k = keras3()
    L = k.layers
    ClassToken = _class_token_layer()

    inp = k.Input((16, 16, 3))
    h = L.Reshape((16, 48))(k.ops.image.extract_patches(inp, 4))
    h = L.Dense(8, activation="relu", name="tokens")(ClassToken(name="cls")(h))
    model = k.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h)))
    x = np.random.default_rng(3).random((2, 16, 16, 3), dtype=np.float32)
    cam = xaitf.create_explainer("gradcam", model, progress=False)
    assert cam.layer.name == "tokens"
    auto = cam(x, [0, 1])
    assert auto.shape == (2, 16, 16) and np.isfinite(auto).all() and auto.max() > 0
    np.testing.assert_array_equal(xaitf.create_explainer("gradcam", model, grid=(4, 4), progress=False)(x, [0, 1]),
                                  auto)
    odd = k.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(L.Reshape((15, 4), name="odd")(
        L.Dense(60)(L.Flatten()(inp))))))
    with pytest.raises(ModelError, match=r"15 tokens form no square grid .* pass grid=\(h, w\)") as e:
        xaitf.create_explainer("gradcam", odd, layer="odd")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match=r"grid=\(5, 4\) needs h\*w <= the layer's 17 tokens"):
        xaitf.create_explainer("gradcam", model, layer="tokens", grid=(5, 4))
    _, cnn = _patch_models()
    with pytest.raises(ModelError, match="grid= is for a layer of tokens"):
        xaitf.create_explainer("gradcam", cnn, grid=(4, 4))


def test_gradcam_default_on_a_class_token_vit_is_the_last_attentions_query():
    """A ViT whose head reads only the class token: after the last attention no other token
    reaches the output, so Grad-CAM there is all 0 (and says so, naming the layer); the default
    layer is the tokens entering the last MultiHeadAttention, which the gradient reaches."""
    import xaitf

    k = keras3()
    L = k.layers
    ClassToken = _class_token_layer()

    k.utils.set_random_seed(7)
    inp = k.Input((16, 16, 3))
    h = ClassToken()(L.Reshape((16, 8))(L.Conv2D(8, 4, strides=4)(inp)))
    for block in range(2):
        q = L.LayerNormalization(name=f"norm{block}")(h)
        h = L.Add()([h, L.MultiHeadAttention(2, 4, name=f"attention{block}")(q, q)])
    h = L.LayerNormalization(name="final_norm")(h)
    model = k.Model(inp, L.Dense(3)(h[:, 0]))
    x = np.random.default_rng(4).random((2, 16, 16, 3), dtype=np.float32)
    x, t = np.concatenate([x] * 3), np.repeat([0, 1, 2], 2)
    cam = xaitf.create_explainer("gradcam", model, progress=False)
    assert cam.layer.name == "norm1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # the gradient reaches norm1's grid tokens
        assert np.isfinite(cam(x, t)).all()           # (relu(sum_k alpha_k A_k) may be 0 on random weights)
    with pytest.warns(UserWarning, match=r"reaches none of the grid tokens of layer 'final_norm' for 6 of 6 "
                                         r"images.*layer="):
        late = xaitf.create_explainer("gradcam", model, layer="final_norm", progress=False)(x, t)
    assert not late.any()


@pytest.mark.parametrize("kind", ["tf_keras", "keras3"])
def test_gradcam_on_a_nested_base_model(kind):
    """Transfer learning, ``Sequential([base, pooling, softmax head])`` with the base a functional
    model: Grad-CAM's default layer was "the last Conv2D" of the top level (there is none: one line
    refused the model) and ``layer="base"`` cut the graph at the base's inner output (Graph
    disconnected). The default is now the base's feature map, and both equal Grad-CAM at the
    base's last conv of the same layers built flat."""
    import xaitf
    from xaitf.keras_bridge import keras3

    k = tfk if kind == "tf_keras" else keras3()
    inp = k.Input((12, 12, 3))
    c1, c2 = k.layers.Conv2D(4, 3, activation="relu", name="c1"), k.layers.Conv2D(5, 3, activation="relu", name="c2")
    base = k.Model(inp, c2(c1(inp)), name="base")
    gap, head = k.layers.GlobalAveragePooling2D(), k.layers.Dense(3, activation="softmax", name="head")
    nested = k.Sequential([k.Input((12, 12, 3)), base, gap, head])
    flat_in = k.Input((12, 12, 3))
    flat = k.Model(flat_in, head(gap(c2(c1(flat_in)))))                 # the same layer objects, flat
    rs = np.random.RandomState(7)
    for layer in (c1, c2, head):
        layer.set_weights([rs.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    x = np.random.RandomState(4).rand(3, 12, 12, 3).astype(np.float32)
    for method in ("gradcam", "gradcampp"):
        want = xaitf.create_explainer(method, flat, layer="c2", progress=False)(x, [0, 1, 2])
        assert np.abs(want).max() > 0
        for kw in ({}, {"layer": "base"}):
            got = xaitf.create_explainer(method, nested, progress=False, **kw)(x, [0, 1, 2])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


@pytest.mark.parametrize("kind", ["tf_keras", "keras3"])
def test_gradcam_inside_a_classifier_wrapped_with_preprocessing(kind):
    """A whole classifier nested behind preprocessing (``Model(x, clf(preprocess(x)))``, as a
    keras.applications model with its preprocess_input put in front): Grad-CAM refused the model
    ("has neither" a Conv2D nor tokens: the nested model's output is not a feature map). Its
    default layer is now the last conv inside, a layer inside can be named, and the maps equal
    Grad-CAM of the same layer objects built flat, with a layer after the nested model too."""
    import xaitf
    from xaitf.keras_bridge import keras3

    k = tfk if kind == "tf_keras" else keras3()
    L = k.layers
    c1, c2 = L.Conv2D(4, 3, activation="relu", name="c1"), L.Conv2D(5, 3, name="c2")
    relu, gap, head = L.Activation("relu"), L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax", name="pred")
    inner_in = k.Input((12, 12, 3))
    clf = k.Model(inner_in, head(gap(relu(c2(c1(inner_in))))), name="clf")
    scale, after = L.Rescaling(1 / 255.0, offset=-0.5), L.Dense(3, name="after")
    x_in = k.Input((12, 12, 3))
    wrapped = k.Model(x_in, clf(scale(x_in)))
    flat_in = k.Input((12, 12, 3))
    flat = k.Model(flat_in, head(gap(relu(c2(c1(scale(flat_in)))))))
    rs = np.random.RandomState(7)
    for layer in (c1, c2, head):
        layer.set_weights([rs.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    x = (np.random.RandomState(4).rand(3, 12, 12, 3) * 255).astype(np.float32)
    for method in ("gradcam", "gradcampp"):
        for name in ("c2", "c1"):
            want = xaitf.create_explainer(method, flat, layer=name, progress=False)(x, [0, 1, 2])
            assert np.abs(want).max() > 0
            kw = {} if name == "c2" else {"layer": name}           # c2: the default, found inside
            got = xaitf.create_explainer(method, wrapped, progress=False, **kw)(x, [0, 1, 2])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # a part after the nested classifier (its probabilities into another Dense)
    x_in2 = k.Input((12, 12, 3))
    more = k.Model(x_in2, after(clf(scale(x_in2))))
    flat_in2 = k.Input((12, 12, 3))
    flat2 = k.Model(flat_in2, after(head(gap(relu(c2(c1(scale(flat_in2))))))))
    want = xaitf.create_explainer("gradcam", flat2, layer="c2", progress=False)(x, [0, 1, 2])
    got = xaitf.create_explainer("gradcam", more, progress=False)(x, [0, 1, 2])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # a connection around the nested classifier: one line, not a graph error
    x_in3 = k.Input((12, 12, 3))
    around = k.Model(x_in3, L.Add()([clf(scale(x_in3)), L.Dense(3)(gap(x_in3))]))
    with pytest.raises(ModelError, match=r"inside the nested model 'clf'.*connection around it"):
        xaitf.create_explainer("gradcam", around, progress=False)


# -- tf-keras and Keras 3 give the same maps ----------------------------------------------------
def test_tf_keras_and_keras3_agree(cnn28, x28):
    k3 = keras3_cnn((28, 28, 1), 10)
    k3.set_weights(cnn28.get_weights())
    np.testing.assert_allclose(np.asarray(k3(x28)), np.asarray(cnn28(x28)), rtol=1e-5, atol=1e-6)
    for name in ALL:
        a = explain(name, cnn28, x28, 2)
        b = explain(name, k3, x28, 2)
        scale = np.abs(a).max()
        assert np.abs(a - b).max() <= 1e-5 * max(scale, 1.0), name


def test_no_relu_warns():
    model = make_linear(seed=5)
    with pytest.warns(UserWarning, match="has no ReLU"):
        GuidedBackprop(model)


def test_registry_classes():
    assert xaitf.get_method("grad") is Gradient and xaitf.get_method("inpgrad") is InputXGradient
    assert xaitf.get_method("gb") is GuidedBackprop and xaitf.get_method("deconvnet") is DeconvNet
    assert xaitf.get_method("deeplift") is DeepLift and xaitf.get_method("vargrad") is SmoothGrad


def test_hashed_uniforms_fused_equal_plain():
    """The XLA-fused hashing gives the same bits as the plain TF ops (so the same noise)."""
    from xaitf.methods import _random as G

    ids, seed = tf.constant([0, 5, 2 ** 33 + 7], tf.int64), tf.constant(-3, tf.int64)
    plain = [v.numpy() for v in G.hashed_uniforms(ids, seed, 37)]
    assert plain[0].min() > 0 and plain[0].max() < 1 and plain[1].max() < 2 * np.pi
    if xla_available():
        fused = [v.numpy() for v in G.HASHED_UNIFORMS.xla(ids, seed, 37)]
        np.testing.assert_array_equal(fused[0], plain[0])
        np.testing.assert_array_equal(fused[1], plain[1])


def test_models_of_any_input_size():
    """A fully convolutional model built on Input((None, None, C)): DeepLIFT records its shared
    baseline's references per input size and equals DeepLIFT on the same weights built at that
    size (two sizes through one explainer, both Kerases), as does tf-explain's Grad-CAM (its maps
    resized to the input's size); methods with masks or superpixels of one size refuse it with one
    ModelError line saying what to do."""
    for km in (tfk, keras3()):
        L = km.layers

        def build(h, w):
            inp = km.Input((h, w, 3))
            z = L.Conv2D(4, 3, activation="relu", padding="same", name="c1")(inp)
            z = L.Conv2D(3, 3, activation="relu", padding="same", name="c2")(z)
            return km.Model(inp, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(z)))

        anysize = build(None, None)
        anysize.set_weights([np.random.default_rng(i).normal(0, 0.5, w.shape).astype(np.float32)
                             for i, w in enumerate(anysize.get_weights())])
        for name, kw in (("deeplift", {"baseline": 0.1}), ("tfx.gradcam", {})):
            ex = xaitf.create_explainer(name, anysize, **kw)
            for h, w in [(9, 12), (6, 6), (9, 12)]:
                x = np.random.default_rng(h).random((2, h, w, 3)).astype(np.float32)
                fixed = build(h, w)
                fixed.set_weights(anysize.get_weights())
                want = xaitf.create_explainer(name, fixed, **kw)(x, [0, 2])
                np.testing.assert_allclose(ex(x, [0, 2]), want, rtol=1e-5, atol=1e-6, err_msg=name)
        for name in ("lime", "kernelshap", "rise", "mp", "deepliftshap", "tfx.occlusion"):
            with pytest.raises(ModelError, match=r"needs a model with a fixed input size \(H, W, C\), this one "
                                                 r"takes \(None, None, 3\): build it on keras.Input"):
                xaitf.create_explainer(name, anysize)


def test_channels_first_models_are_refused_with_a_wrapper_that_works():
    """A model whose first convolution reads the input channels_first (a PyTorch-style port) would
    give maps of the wrong axes: refused in one line that gives the Permute wrapper, and through
    that wrapper the maps equal those of the same weights built channels_last (gradient, Grad-CAM
    and Grad-CAM++ reading the channels_first feature maps)."""
    k = keras3()
    L = k.layers
    inp = k.Input((3, 10, 12))
    cf = k.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D(data_format="channels_first")(
        L.Conv2D(4, 3, activation="relu", data_format="channels_first")(inp))))
    cf.set_weights([np.random.default_rng(i).normal(0, 0.5, w.shape).astype(np.float32)
                    for i, w in enumerate(cf.get_weights())])
    with pytest.raises(ModelError, match=r"reads the input channels_first, \(3, 10, 12\); xaitf explains "
                                         r"\(N,H,W,C\) images: wrap the model, inp = keras.Input\(\(10, 12, 3\)\)"):
        xaitf.create_explainer("grad", cf)
    hwc = k.Input((10, 12, 3))
    wrapped = k.Model(hwc, cf(L.Permute((3, 1, 2))(hwc)))
    inp = k.Input((10, 12, 3))
    last = k.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu")(inp))))
    last.set_weights(cf.get_weights())
    x = np.random.default_rng(0).random((2, 10, 12, 3)).astype(np.float32)
    for name in ("grad", "gradcam", "gradcampp"):
        np.testing.assert_allclose(xaitf.create_explainer(name, wrapped)(x, [0, 2]),
                                   xaitf.create_explainer(name, last)(x, [0, 2]), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
