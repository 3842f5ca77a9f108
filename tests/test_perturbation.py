"""Occlusion, PDA and Shapley sampling against analytic oracles and plain reference loops.

The reference loops build one perturbed image at a time in numpy and score them with
``model.predict``; they share nothing with ``xaitf.methods.perturb`` but the window convention
(starts 0, s, 2s, ... plus one window flush with the border).
"""
import numpy as np
import pytest

import xaitf
import tensorflow as tf

from xaitf.errors import InputError, MethodError
from xaitf.keras_bridge import keras3, tfk
from xaitf.zoo import center_index

from conftest import make_linear


# ------------------------------------------------------------------------------------------------
# reference implementations (one perturbation at a time)
# ------------------------------------------------------------------------------------------------
def starts(size, k, s):
    out = list(range(0, size - k + 1, s))
    if out[-1] != size - k:
        out.append(size - k)
    return out


def windows(h, w, k, s):
    return [(r, c) for r in starts(h, k, s) for c in starts(w, k, s)]


def predict(model, images):
    return model.predict(np.stack(images).astype(np.float32), verbose=0, batch_size=512).astype(np.float64)


def logits_of(model):
    from xaitf.keras_bridge import logits_model

    return logits_model(model)[0]


def ref_occlusion(model, x, t, k, s, fill, logits=False):
    f = logits_of(model) if logits else model
    h, w = x.shape[:2]
    wins = windows(h, w, k, s)
    imgs = []
    for r, c in wins:
        y = x.copy()
        y[r:r + k, c:c + k, :] = fill
        imgs.append(y)
    out = predict(f, [x] + imgs)[:, t]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for (r, c), v in zip(wins, out[0] - out[1:]):
        total[r:r + k, c:c + k] += v
        count[r:r + k, c:c + k] += 1
    return total / np.maximum(count, 1)      # pixels in no window (stride > window): 0


def ref_pda(model, x, t, k, s, values, n_train, n_classes):
    h, w = x.shape[:2]
    wins = windows(h, w, k, s)
    imgs = []
    for r, c in wins:
        for v in range(values):
            y = x.copy()
            y[r:r + k, c:c + k, :] = v / (values - 1)
            imgs.append(y)
    out = predict(model, [x] + imgs)[:, t]
    lap = (out * n_train + 1) / (n_train + n_classes)
    lo = np.log2(lap / (1 - lap))
    pbar = out[1:].reshape(len(wins), values).mean(1)
    lap_bar = (pbar * n_train + 1) / (n_train + n_classes)
    we = lo[0] - np.log2(lap_bar / (1 - lap_bar))
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for (r, c), v in zip(wins, we):
        total[r:r + k, c:c + k] += v
        count[r:r + k, c:c + k] += 1
    return total / np.maximum(count, 1)      # pixels in no window (stride > window): 0


def ref_shapley(model, x, t, perms, baseline):
    f = logits_of(model)
    h, w, ch = x.shape
    phi = np.zeros(h * w)
    for perm in perms:
        y = x.copy()
        imgs = [y.copy()]
        for p in perm:
            y[p // w, p % w, :] = baseline
            imgs.append(y.copy())
        out = predict(f, imgs)[:, t]
        phi[perm] += out[:-1] - out[1:]
    return (phi / len(perms)).reshape(h, w)


def explain(name, model, x, targets=None, **kw):
    kw.setdefault("progress", False)
    e = xaitf.create_explainer(name, model, **kw)
    return e, e(x, targets)


@pytest.fixture(scope="module")
def images8():
    return np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def rgb8():
    return np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def center_image():
    img = np.random.RandomState(0).randint(256, size=(15, 15)).astype(np.float32) / 255
    return img[None, :, :, None]


# ------------------------------------------------------------------------------------------------
# study 1: the centre pixel carries the relevance
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["occlusion", "pda"])
def test_center_pixel_relevance_on_the_centre(center_pixel_small, center_image, name):
    e, maps = explain(name, center_pixel_small, center_image)
    assert e.engine.path.startswith("shortcut (Dense")
    a = np.abs(maps[0])
    assert a[center_index(15)] / a.sum() >= 0.99
    assert maps[0][center_index(15)] > 0


def test_center_pixel_pda_value(center_pixel_small, center_image):
    """1x1 window, all 256 values: pbar ~ 1/256 at the centre, Laplace N=256000, K=256."""
    _, maps = explain("pda", center_pixel_small, center_image)
    probs = center_pixel_small.predict(center_image, verbose=0)[0]
    c = int(probs.argmax())
    img = np.repeat(center_image, 256, axis=0)
    img[:, 7, 7, 0] = np.arange(256) / 255
    pbar = center_pixel_small.predict(img, verbose=0)[:, c].mean()
    lap = lambda p: (p * 256000 + 1) / (256000 + 256)  # noqa: E731
    lo = lambda p: np.log2(lap(p) / (1 - lap(p)))      # noqa: E731
    assert maps[0][7, 7] == pytest.approx(lo(probs[c]) - lo(pbar), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# exactness and agreement with the reference loops
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("samples,baseline,shortcut", [(1, 0.0, True), (3, 0.3, True), (2, 0.5, False)])
def test_shapley_exact_on_linear_model(linear_model, samples, baseline, shortcut):
    x = np.random.default_rng(2).uniform(0, 1, (3, 6, 6, 1)).astype(np.float32)
    t = np.array([0, 2, 1])
    _, maps = explain("shapley", linear_model, x, t, samples=samples, baseline=baseline, shortcut=shortcut)
    w = linear_model.layers[-1].get_weights()[0]            # (36, 3)
    want = np.stack([w[:, t[i]] * (x[i].ravel() - baseline) for i in range(3)]).reshape(3, 6, 6)
    np.testing.assert_allclose(maps, want, atol=2e-5)


def test_shapley_channel_features_exact_on_linear_rgb():
    model = make_linear(shape=(4, 4, 3), classes=2, seed=3)
    x = np.random.default_rng(3).uniform(0, 1, (1, 4, 4, 3)).astype(np.float32)
    base = np.array([0.1, 0.2, 0.3], np.float32)
    _, maps = explain("shapley", model, x, [1], samples=2, baseline=base, features="channels",
                      channel_reduce="none")
    w = model.layers[-1].get_weights()[0][:, 1]
    np.testing.assert_allclose(maps[0], (w.reshape(4, 4, 3) * (x[0] - base)), atol=2e-5)


@pytest.mark.parametrize("k,s", [(1, 1), (3, 2)])
def test_occlusion_matches_reference_loop(tiny_rgb_cnn, rgb8, k, s):
    e, maps = explain("occlusion", tiny_rgb_cnn, rgb8, [1, 3], window=k, stride=s, fill=0.2)
    assert e.engine.path.startswith("shortcut (Conv2D")
    for i, t in enumerate([1, 3]):
        np.testing.assert_allclose(maps[i], ref_occlusion(tiny_rgb_cnn, rgb8[i], t, k, s, 0.2), atol=2e-6)


def test_occlusion_logits_matches_reference_loop(tiny_cnn, images8):
    _, maps = explain("occlusion", tiny_cnn, images8, [2, 0], window=2, stride=3, output="logits")
    for i, t in enumerate([2, 0]):
        np.testing.assert_allclose(maps[i], ref_occlusion(tiny_cnn, images8[i], t, 2, 3, 0.0, True),
                                   atol=2e-5)


@pytest.mark.parametrize("k,s", [(1, 1), (2, 3)])
def test_pda_matches_reference_loop(tiny_cnn, images8, k, s):
    _, maps = explain("pda", tiny_cnn, images8, [1, 4], window=k, stride=s, values=5, train_samples=100)
    for i, t in enumerate([1, 4]):
        np.testing.assert_allclose(maps[i], ref_pda(tiny_cnn, images8[i], t, k, s, 5, 100, 5), atol=1e-4)


@pytest.mark.parametrize("shortcut", ["dense", True])
def test_shapley_matches_reference_loop(tiny_rgb_cnn, rgb8, shortcut):
    e, maps = explain("shapley", tiny_rgb_cnn, rgb8, [0, 2], samples=2, baseline=0.1, batch_size=50,
                      shortcut=shortcut)
    # the default "dense" leaves a Conv2D-first model on the plain path; True takes the Conv2D shortcut
    assert e.engine.path.startswith("plain" if shortcut == "dense" else "shortcut (Conv2D")
    perms = e.permutations(64)
    for i, t in enumerate([0, 2]):
        np.testing.assert_allclose(maps[i], ref_shapley(tiny_rgb_cnn, rgb8[i], t, perms, 0.1), atol=1e-5)
    # efficiency: one permutation's contributions add up to g(x) - g(baseline)
    logits = logits_of(tiny_rgb_cnn).predict(np.concatenate([rgb8, np.full_like(rgb8[:1], 0.1)]), verbose=0)
    assert maps[0].sum() == pytest.approx(logits[0, 0] - logits[2, 0], abs=1e-4)


def test_pda_data_marginal_equals_copying_the_data_window(tiny_cnn, images8):
    """With M copies of one image d, every draw is d's window: pbar = p(x with window <- d)."""
    d = np.random.default_rng(5).uniform(0, 1, (8, 8, 1)).astype(np.float32)
    _, maps = explain("pda", tiny_cnn, images8[:1], [3], data=np.repeat(d[None], 4, 0), samples=3,
                      window=2, stride=2, train_samples=50)
    imgs = []
    for r, c in windows(8, 8, 2, 2):
        y = images8[0].copy()
        y[r:r + 2, c:c + 2] = d[r:r + 2, c:c + 2]
        imgs.append(y)
    p = predict(tiny_cnn, [images8[0]] + imgs)[:, 3]
    lap = (p * 50 + 1) / 55
    lo = np.log2(lap / (1 - lap))
    want = np.zeros((8, 8))
    for (r, c), v in zip(windows(8, 8, 2, 2), lo[0] - lo[1:]):
        want[r:r + 2, c:c + 2] = v
    np.testing.assert_allclose(maps[0], want, atol=1e-4)


def test_pda_conditional_on_perfectly_correlated_data(tiny_cnn):
    """Data images are constant, so a window given its surroundings is known exactly: on a
    constant input the conditional draws rebuild the window and every relevance is ~0, while
    marginal sampling from the same data finds relevance."""
    levels = np.linspace(0, 1, 12, dtype=np.float32)
    data = np.broadcast_to(levels[:, None, None, None], (12, 8, 8, 1)).copy()
    x = np.full((1, 8, 8, 1), 0.4, np.float32)
    _, cond = explain("pda", tiny_cnn, x, [0], sampling="conditional", data=data, samples=4, window=2,
                      patch=1, ridge=1e-9, train_samples=50)
    _, marg = explain("pda", tiny_cnn, x, [0], sampling="marginal", data=data, samples=4, window=2,
                      train_samples=50)
    assert np.abs(cond).max() < 1e-3
    assert np.abs(marg).max() > 10 * max(np.abs(cond).max(), 1e-4)


def test_pda_conditional_gaussian_matches_numpy(tiny_cnn, images8):
    """Mean and covariance of the window given its zero-padded surroundings, and the draws."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=(200, 1, 1, 1))
    data = (0.5 + 0.2 * base + 0.05 * rng.normal(size=(200, 8, 8, 1))).astype(np.float32)
    e = xaitf.create_explainer("pda", tiny_cnn, sampling="conditional", data=data, samples=4000,
                               window=1, patch=1, ridge=1e-6, progress=False)
    e._prepare_conditional(1)
    corner = np.array([[0, 3]], np.int32)                  # top border: the patch pokes out
    mu_w, mu_r, at, chol = (np.asarray(a)[0] for a in e._gaussians(corner))
    padded = np.pad(data[..., 0].astype(np.float64), [[0, 0], [1, 1], [1, 1]])
    patch = padded[:, 0:3, 3:6].reshape(200, 9)            # window = flat index 4
    ring = [0, 1, 2, 3, 5, 6, 7, 8]
    cov = np.cov(patch, rowvar=False) + 1e-6 * np.eye(9)
    a_t = np.linalg.solve(cov[np.ix_(ring, ring)], cov[np.ix_(ring, [4])])
    cond = (cov[4, 4] - cov[[4], ring] @ a_t).reshape(1, 1)
    np.testing.assert_allclose(mu_w, patch[:, [4]].mean(0), atol=1e-6)
    np.testing.assert_allclose(at, a_t, rtol=1e-4, atol=1e-6)   # padded ring rows: 0
    np.testing.assert_allclose(chol @ chol.T, cond, rtol=1e-3)
    xp = tf.constant(np.pad(images8[:1], [[0, 0], [1, 1], [1, 1], [0, 0]]))
    pos = np.array([3])                                     # grid index of corner (0, 3)
    assert tuple(window_grid_of(e)[3]) == (0, 3)
    draws = e._conditional_values(xp, window_grid_of(e), np.array([0]), pos)[0, :, 0, 0, 0]
    x_ring = np.pad(images8[0, ..., 0], 1)[0:3, 3:6].ravel()[ring]
    mean = mu_w[0] + (x_ring - mu_r) @ at[:, 0]
    assert draws.mean() == pytest.approx(mean, abs=4 * np.sqrt(cond[0, 0] / 4000))
    assert draws.std() == pytest.approx(np.sqrt(cond[0, 0]), rel=0.05)


def window_grid_of(e):
    from xaitf.methods.perturb import window_grid

    return window_grid(8, 8, e.window, e.stride, "test")


# ------------------------------------------------------------------------------------------------
# shortcut == plain path
# ------------------------------------------------------------------------------------------------
def dense_first(kind="tf-keras"):
    k = tfk if kind == "tf-keras" else keras3()
    k.utils.set_random_seed(4)
    inp = k.Input((7, 6, 2))
    h = k.layers.Dense(9, activation="tanh")(k.layers.Flatten()(inp))
    return k.Model(inp, k.layers.Dense(4, activation="softmax")(h))


def conv_first(kernel, strides, padding, kind="tf-keras"):
    k = tfk if kind == "tf-keras" else keras3()
    k.utils.set_random_seed(5)
    return k.Sequential([
        k.Input((7, 6, 2)),
        k.layers.Conv2D(3, kernel, strides=strides, padding=padding, activation="relu"),
        k.layers.BatchNormalization(), k.layers.Flatten(), k.layers.Dense(4, activation="softmax")])


SHORTCUT_MODELS = {
    "dense": lambda: dense_first(),
    "dense-keras3": lambda: dense_first("keras3"),
    "conv3-s2-valid": lambda: conv_first(3, 2, "valid"),
    "conv2-s3-same-keras3": lambda: conv_first(2, 3, "same", "keras3"),
}
METHODS = [("occlusion", dict(window=3, stride=2)), ("pda", dict(window=2, values=3)),
           ("shapley", dict(samples=1, features="channels"))]


@pytest.mark.parametrize("model_name", list(SHORTCUT_MODELS))
def test_shortcut_equals_plain_path(model_name):
    model = SHORTCUT_MODELS[model_name]()
    x = np.random.default_rng(6).uniform(0, 1, (2, 7, 6, 2)).astype(np.float32)
    for name, kw in METHODS:
        fast, a = explain(name, model, x, [1, 2], shortcut=True, batch_size=16, **kw)
        slow, b = explain(name, model, x, [1, 2], shortcut=False, batch_size=16, **kw)
        assert fast.engine.path.startswith("shortcut") and slow.engine.path.startswith("plain")
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, np.abs(b).max()), err_msg=name)


def deep_conv(kind):
    """Several window ops in a row: crops through convs (valid/same, strides), pools, BN, ReLU layers."""
    k = tfk if kind == "tf-keras" else keras3()
    k.utils.set_random_seed(11)
    if kind == "tf-keras":
        inp = k.Input((32, 30, 2))
        h = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
        h = k.layers.BatchNormalization()(h)
        h = k.layers.MaxPooling2D(2, padding="same")(h)
        h = k.layers.LeakyReLU(0.1)(k.layers.Conv2D(5, 3, strides=2)(h))
        h = k.layers.AveragePooling2D(2)(h)
        model = k.Model(inp, k.layers.Dense(4, activation="softmax")(k.layers.Flatten()(h)))
    else:
        model = k.Sequential([
            k.Input((32, 30, 2)), k.layers.Rescaling(2.0, offset=-1.0),
            k.layers.Conv2D(4, 5), k.layers.ReLU(), k.layers.Dropout(0.5),
            k.layers.Conv2D(6, 3, strides=2, padding="same", activation="elu"),
            k.layers.MaxPooling2D(3, strides=2), k.layers.Flatten(), k.layers.Dense(4)])
    bn = [layer for layer in model.layers if "batch_norm" in layer.name]
    for layer in bn:   # non-trivial inference statistics
        rs = np.random.RandomState(1)
        layer.set_weights([rs.uniform(0.5, 2, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("kind", ["tf-keras", "keras3"])
def test_cropped_windows_equal_the_plain_path(kind):
    """Occlusion and PDA through the receptive-field crops equal the whole-model path, for windows
    at every position (borders included), square and not, overlapping or not."""
    model = deep_conv(kind)
    x = np.random.default_rng(12).uniform(0, 1, (3, 32, 30, 2)).astype(np.float32)
    t = [0, 3, 1]
    cases = [("occlusion", dict(window=1, stride=1)), ("occlusion", dict(window=3, stride=2, fill=0.5)),
             ("occlusion", dict(window=(2, 4), stride=(3, 1), output="logits")),
             ("occlusion", dict(window=14, stride=6)),            # big: cropped part way only
             ("pda", dict(window=2, stride=2, values=3))]
    depth = set()
    for name, kw in cases:
        fast, a = explain(name, model, x, t, shortcut=True, batch_size=40, **kw)
        slow, b = explain(name, model, x, t, shortcut=False, batch_size=40, **kw)
        assert fast.engine.window_path.startswith("shortcut (cropped through"), fast.engine.window_path
        depth.add(int(fast.engine.window_path.split()[3]))
        assert slow.engine.window_path.startswith("plain")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=f"{name} {kw}")
    assert max(depth) == 6 and min(depth) < 6      # every window op cropped, and a partial cut


def test_crop_plan_stops_where_cropping_stops_paying():
    from xaitf.methods._local_windows import local_stack
    from xaitf.methods.perturb import chain_layers, window_grid
    from xaitf.zoo import build_mnist_cnn

    model = build_mnist_cnn()        # conv1 (26x26), pool (13x13), conv2 (11x11), pool (5x5), ...
    stack, why = local_stack(chain_layers(model)[0], model, None)
    assert stack is not None, why
    spatial = [st.kind for st in stack.stages if st.spatial]
    assert spatial == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D"]
    cut, crops = stack.plan(window_grid(28, 28, (4, 4), (4, 4), "t"), (4, 4))
    assert cut == 4 and crops[0] == (6, 6)     # a 3x3 conv widens a 4-pixel window to 6 outputs
    assert all(a * b <= 0.5 * st.out_hw[0] * st.out_hw[1]
               for (a, b), st in zip(crops, [st for st in stack.stages if st.spatial]))
    # a window covering most of the image: the first conv's crop is the whole map, nothing to crop
    assert stack.plan(window_grid(28, 28, (24, 24), (4, 4), "t"), (24, 24)) is None
    e = xaitf.create_explainer("occlusion", model, window=24, stride=4, progress=False)
    e(np.zeros((1, 28, 28, 3), np.float32), 0)
    assert e.engine.window_path == "shortcut (Conv2D)"     # the first-layer shortcut instead
    assert local_stack(chain_layers(dense_first())[0], dense_first(), None)[0] is None


def test_non_chain_model_falls_back_to_plain_path(rgb8):
    tfk.utils.set_random_seed(7)
    inp = tfk.Input((8, 8, 3))
    h = tfk.layers.Conv2D(3, 3, padding="same", activation="relu")(inp)
    h = tfk.layers.Add()([h, inp])                      # residual: not a simple chain
    out = tfk.layers.Dense(3, activation="softmax")(tfk.layers.Flatten()(h))
    model = tfk.Model(inp, out)
    e, maps = explain("occlusion", model, rgb8, [1, 1], window=2, stride=2)
    assert e.engine.path.startswith("plain (")
    np.testing.assert_allclose(maps[1], ref_occlusion(model, rgb8[1], 1, 2, 2, 0.0), atol=2e-6)


def test_any_image_size_on_a_fully_convolutional_model():
    tfk.utils.set_random_seed(8)
    inp = tfk.Input((None, None, 2))
    h = tfk.layers.Conv2D(4, 3, activation="relu")(inp)
    out = tfk.layers.Dense(3, activation="softmax")(tfk.layers.GlobalAveragePooling2D()(h))
    model = tfk.Model(inp, out)
    x = np.random.default_rng(9).uniform(0, 1, (1, 7, 9, 2)).astype(np.float32)
    _, maps = explain("occlusion", model, x, [2], window=2, stride=2)
    assert maps.shape == (1, 7, 9)
    np.testing.assert_allclose(maps[0], ref_occlusion(model, x[0], 2, 2, 2, 0.0), atol=2e-6)


# ------------------------------------------------------------------------------------------------
# batching, memory, seeds
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", [("occlusion", dict(window=2)), ("pda", dict(values=4, window=2)),
                                     ("shapley", dict(samples=2))])
def test_batch_size_does_not_change_the_maps(tiny_cnn, images8, name, kw):
    maps = [explain(name, tiny_cnn, images8, [0, 1], batch_size=b, **kw)[1] for b in (1, 4096)]
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], atol=1e-5)
    # N inputs at once == one input at a time
    one = explain(name, tiny_cnn, images8[1:], [1], batch_size=37, **kw)[1]
    np.testing.assert_allclose(one[0], maps[0][1], atol=1e-5)


def test_shapley_seed(tiny_cnn, images8):
    a = explain("shapley", tiny_cnn, images8, [0, 1], samples=2, seed=3)[1]
    b = explain("shapley", tiny_cnn, images8, [0, 1], samples=2, seed=3, batch_size=11)[1]
    c = explain("shapley", tiny_cnn, images8, [0, 1], samples=2, seed=4)[1]
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).max() > 1e-4


def test_model_never_sees_more_than_batch_size_inputs(images8):
    """A layer asserts its batch size: every model call stays within one chunk."""
    limit = 24

    def guard(h):
        with tf.control_dependencies([tf.debugging.assert_less_equal(tf.shape(h)[0], limit)]):
            return tf.identity(h)

    tfk.utils.set_random_seed(10)
    inp = tfk.Input((8, 8, 1))
    h = tfk.layers.Lambda(guard)(inp)
    h = tfk.layers.Conv2D(2, 3, activation="relu")(h)
    h = tfk.layers.Lambda(guard)(h)
    out = tfk.layers.Dense(3, activation="softmax")(tfk.layers.Flatten()(h))
    model = tfk.Model(inp, out)
    for name, kw in METHODS[:2] + [("shapley", dict(samples=1)), ("pda", dict(values=2 * limit + 3))]:
        explain(name, model, images8, [0, 1], batch_size=limit, shortcut=False, **kw)
    with pytest.raises(tf.errors.InvalidArgumentError):
        explain("occlusion", model, images8, [0, 1], batch_size=limit + 8, shortcut=False)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw,match", [
    ("occlusion", dict(window=9), "larger than the image"),
    ("occlusion", dict(stride=0), "stride"),
    ("occlusion", dict(window=(2, 2, 2)), "window"),
    ("occlusion", dict(output="softmax"), "needs output to be one of"),
    ("occlusion", dict(fill=[0.0, 1.0]), "fill"),
    ("pda", dict(values=1), "values"),
    ("pda", dict(window=9), "larger than the image"),
    ("pda", dict(sampling="conditional"), "needs data"),
    ("pda", dict(sampling="gibbs"), "sampling must be one of"),
    ("pda", dict(train_samples=0), "train_samples"),
    ("pda", dict(sampling="conditional", data=np.zeros((4, 8, 8, 1)), patch=0), "patch"),
    ("shapley", dict(samples=0), "samples"),
    ("shapley", dict(baseline=np.zeros((3, 3))), "baseline"),
    ("shapley", dict(features="rows"), "features"),
    ("shapley", dict(shortcut="conv"), "shortcut must be True, False or 'dense'"),
])
def test_clear_errors(tiny_cnn, name, kw, match):
    with pytest.raises(MethodError, match=match) as info:
        xaitf.create_explainer(name, tiny_cnn, **kw)
    assert "\n" not in str(info.value)


def test_pda_data_shape_error(tiny_cnn):
    with pytest.raises(InputError, match=r"\(M,8,8,1\)"):
        xaitf.create_explainer("pda", tiny_cnn, data=np.zeros((4, 6, 6, 1)))


def test_registry_names_and_aliases(tiny_cnn):
    from xaitf.methods.occlusion import Occlusion
    from xaitf.methods.pda import PredictionDifference
    from xaitf.methods.shapley import ShapleySampling

    assert isinstance(xaitf.create_explainer("occlusion", tiny_cnn), Occlusion)
    assert isinstance(xaitf.create_explainer("prediction_difference", tiny_cnn), PredictionDifference)
    assert isinstance(xaitf.create_explainer("shapley_sampling", tiny_cnn), ShapleySampling)


@pytest.mark.parametrize("channel_features", [False, True])
def test_prefix_images_fused_and_plain(channel_features):
    """Shapley's prefix images (XLA-fused where available, plain TF otherwise) against numpy:
    prefix k of input i has the features of rank < k set to the baseline."""
    from xaitf.methods import perturb as P

    rs = np.random.RandomState(2)
    X = rs.rand(2, 3, 4, 2).astype(np.float32)
    base = rs.rand(3, 4, 2).astype(np.float32)
    F = 3 * 4 * (2 if channel_features else 1)
    rank = np.stack([rs.permutation(F) for _ in range(2)]).astype(np.int32)
    limit = np.array([[0, 5, F], [1, 2, 7]], np.int32)
    want = np.empty((2, 3, 3, 4, 2), np.float32)
    for i in range(2):
        for k in range(3):
            gone = (rank[i] < limit[i, k]).reshape(3, 4, -1)
            want[i, k] = np.where(gone, base, X[i])
    args = (tf.constant(X), tf.constant(rank), tf.constant(limit), tf.constant(base), channel_features)
    np.testing.assert_array_equal(P._prefix_images(*args).numpy(), want)
    np.testing.assert_array_equal(P.prefix_images(*args).numpy(), want)


@pytest.mark.parametrize("shortcut", [True, False])
def test_pda_value_range_follows_the_models_input_space(tiny_rgb_cnn, rgb8, shortcut):
    """A model that reads u = x * s + o (per channel, as after caffe/torch preprocessing) explained
    with value_range (o, s + o) gives the maps of the [0, 1] model with the default range."""
    s = np.array([2.0, 0.5, 1.5], np.float32)
    o = np.array([-0.3, 0.1, 0.5], np.float32)
    inp = tfk.Input((8, 8, 3))
    shifted = tfk.Model(inp, tiny_rgb_cnn(tfk.layers.Lambda(lambda u: (u - o) / s)(inp)))
    kw = dict(window=2, stride=2, values=5, train_samples=100, shortcut=shortcut)
    _, want = explain("pda", tiny_rgb_cnn, rgb8, [1, 4], **kw)
    _, got = explain("pda", shifted, rgb8 * s + o, [1, 4], value_range=(o, s + o), **kw)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_pda_value_range_errors(tiny_rgb_cnn):
    for bad in [(1.0, 0.0), (0.0, [1.0, 2.0]), "0..1", (0.0, float("nan"))]:
        with pytest.raises(MethodError, match="value_range") as err:
            xaitf.create_explainer("pda", tiny_rgb_cnn, value_range=bad)
        assert "\n" not in str(err.value)
