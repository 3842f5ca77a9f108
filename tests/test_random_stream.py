"""One counter-based random stream for the stochastic native methods (xaitf.methods._random).

For every stochastic native method: an input's map is the same explained alone and inside a batch
of 4 at another position with another batch_size (its randomness is keyed by the seed, the sample
and the element only, never by the input's position or the batch split), up to float32 rounding
(1e-5 of the map's scale: the CPU's kernels round a batch of 5 and one of 64 differently, and PDA's
log-odds differences amplify it); the same seed gives the same maps and another seed different ones."""
import numpy as np
import pytest

import xaitf
from conftest import make_cnn
from xaitf.keras_bridge import tfk

SHAPE = (8, 8, 3)
DATA = np.random.RandomState(7).rand(16, *SHAPE).astype(np.float32)

# (registry name, settings, whether the seed matters for these settings)
METHODS = [
    ("sg", dict(samples=4, postprocess="none"), True),
    ("vargrad", dict(samples=4), True),
    ("squaregrad", dict(samples=4), True),
    ("shapley", dict(samples=3), True),
    ("rise", dict(masks=32), True),
    ("lime", dict(num_samples=64), True),
    ("kernelshap", dict(nsamples=64), True),
    ("mp", dict(max_iterations=4), True),
    ("pda", dict(window=2, stride=2, values=4), False),              # the value grid: no draws
    ("pda", dict(window=2, stride=2, data=DATA, samples=3), True),  # data-based marginal draws
    ("pda", dict(window=2, stride=2, data=DATA, samples=3, sampling="conditional"), True),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(METHODS)]


@pytest.fixture(scope="module")
def model():
    return make_cnn(shape=SHAPE, classes=5, seed=1)


@pytest.fixture(scope="module")
def inputs():
    return np.random.RandomState(0).rand(4, *SHAPE).astype(np.float32), np.array([0, 1, 2, 3])


def _explain(name, model, x, t, batch_size, seed=0, **kw):
    return xaitf.create_explainer(name, model, progress=False, batch_size=batch_size, seed=seed,
                                  **kw)(x, t)


@pytest.mark.parametrize("name,kw,seeded", METHODS, ids=IDS)
def test_map_independent_of_batch_and_position(model, inputs, name, kw, seeded):
    x, t = inputs
    batch = _explain(name, model, x, t, 64, **kw)
    for i, bs in ((2, 5), (3, 7)):
        alone = _explain(name, model, x[i:i + 1], t[i:i + 1], bs, **kw)[0]
        scale = max(np.abs(batch[i]).max(), 1e-12)
        np.testing.assert_allclose(alone, batch[i], rtol=0, atol=1e-5 * scale, err_msg=f"input {i}")
    # the same input at another position, next to other inputs
    perm = np.array([2, 0, 3, 1])
    moved = _explain(name, model, x[perm], t[perm], 3, **kw)
    scale = max(np.abs(batch).max(), 1e-12)
    np.testing.assert_allclose(moved, batch[perm], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name,kw,seeded", METHODS, ids=IDS)
def test_seed_drives_the_maps(model, inputs, name, kw, seeded):
    x, t = inputs
    a = _explain(name, model, x[:2], t[:2], 16, seed=1, **kw)
    np.testing.assert_array_equal(a, _explain(name, model, x[:2], t[:2], 16, seed=1, **kw))
    b = _explain(name, model, x[:2], t[:2], 16, seed=2, **kw)
    if seeded:
        assert not np.allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
    else:
        np.testing.assert_array_equal(a, b)


def test_smoothgrad_noise_is_shared_and_keyed_by_sample():
    """SmoothGrad's noise of sample j is hashed_normal(j): the same for every input, and a prefix of
    a longer run's samples is the same draw (the sample index is the counter)."""
    import tensorflow as tf

    from xaitf.methods._random import hashed_normal

    seed = tf.constant(5, tf.int64)
    z = hashed_normal(tf.range(6, dtype=tf.int64), seed, (4, 4, 3)).numpy()
    np.testing.assert_array_equal(hashed_normal(tf.constant([3, 4], tf.int64), seed, (4, 4, 3)).numpy(),
                                  z[3:5])
    assert not np.allclose(z[0], z[1])


def test_linear_smoothgrad_is_its_weights():
    """For a linear model every noisy gradient is the weight map, so SmoothGrad ("none") equals the
    weights whatever the noise (the expectation, exactly) and VarGrad is 0."""
    w = np.random.RandomState(3).randn(int(np.prod(SHAPE)), 2).astype(np.float32)
    m = tfk.Sequential([tfk.Input(SHAPE), tfk.layers.Flatten(), tfk.layers.Dense(2, use_bias=False)])
    m.layers[-1].set_weights([w])
    x = np.random.RandomState(4).rand(3, *SHAPE).astype(np.float32)
    got = xaitf.create_explainer("sg", m, samples=64, postprocess="none", noise_scale=0.5,
                                 channel_reduce="none", progress=False)(x, [1, 1, 1])
    np.testing.assert_allclose(got, np.broadcast_to(w[:, 1].reshape(SHAPE), got.shape), rtol=1e-5, atol=1e-6)
    var = xaitf.create_explainer("vargrad", m, samples=64, noise_scale=0.5, channel_reduce="none",
                                 progress=False)(x, [1, 1, 1])
    assert np.abs(var).max() < 1e-10


def test_metric_noise_is_keyed_by_input_and_sample():
    """The metrics' device noise (infidelity_noise, road_noise) is a function of (seed, input,
    sample / percentage) only: a longer run's first samples are the shorter run's, an input's
    draws do not depend on which other inputs are asked for, inputs and seeds differ, and the two
    metrics' streams differ. (Equal up to float32 rounding: the integer hashes are exact, the
    vectorised log / sin / cos of Box-Muller may round the last bit differently with the array's
    length.)"""
    import xaitf.metrics as M

    def _same(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    long = M.infidelity_noise([0, 3], 10, (5, 4), std=1.0, seed=2)
    _same(M.infidelity_noise([0, 3], 4, (5, 4), std=1.0, seed=2), long[:, :4])
    _same(M.infidelity_noise([3], 10, (5, 4), std=1.0, seed=2)[0], long[1])
    assert not np.allclose(long[0], long[1])
    assert not np.allclose(M.infidelity_noise([0], 10, (5, 4), std=1.0, seed=3)[0], long[0])
    road = M.road_noise([0, 3, 3], [1, 1, 2], (5, 4, 1), seed=2)
    _same(M.road_noise([3], [1], (5, 4, 1), seed=2)[0], road[1])
    assert not np.allclose(road[1], road[2])
    assert not np.allclose(road[0][..., 0], long[0, 1])          # ROAD's stream is not infidelity's
