"""xaitf.params: one set of validators and one baseline/fill parser, shared by every method.

Every method with a baseline or a fill takes the four forms alike (a scalar, one value per channel,
one image, one image per input); the equivalent forms give the same maps, and a bad form is refused
with one line naming the method, the parameter and the accepted forms.
"""
import numpy as np
import pytest

import xaitf
from xaitf import params
from xaitf.errors import InputError, MethodError

from conftest import make_cnn

# method key -> (owner in messages, parameter, extra keywords: small and fast)
METHODS = {
    "ig": ("IntegratedGradients", "baseline", {"steps": 8}),
    "deeplift": ("DeepLift", "baseline", {}),
    "occlusion": ("Occlusion", "fill", {"window": 3, "stride": 2, "output": "logits"}),
    "shapley": ("ShapleySampling", "baseline", {"samples": 2}),
    "lime": ("Lime", "hide_color", {"num_samples": 48, "segmenter": "grid", "cell": 4,
                                     "mask_output": False}),
    "kernelshap": ("KernelShap", "background", {"nsamples": 48, "segmenter": "grid", "cell": 4}),
}
PER_CHANNEL = [0.1, 0.25, 0.4]


@pytest.fixture(scope="module")
def rgb_model():
    return make_cnn(shape=(8, 8, 3), seed=1, softmax=False)


@pytest.fixture(scope="module")
def data():
    rs = np.random.RandomState(3)
    return rs.rand(3, 8, 8, 3).astype(np.float32), np.array([0, 1, 2])


def _maps(model, key, value, x, t, **kw):
    _, name, extra = METHODS[key]
    return xaitf.create_explainer(key, model, **{**extra, **kw, name: value})(x, t)


# ------------------------------------------------------------------------------------------------
# validators: one wording
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,text", [
    (lambda: params.integer(0, "steps", "IntegratedGradients", low=1),
     "IntegratedGradients needs steps to be an integer >= 1, got 0"),
    (lambda: params.integer(2.5, "samples", "Rise", low=1), "Rise needs samples to be an integer >= 1, got 2.5"),
    (lambda: params.integer(True, "n", "X", low=1), "X needs n to be an integer >= 1, got True"),
    (lambda: params.integer("3", "n", "X", low=1), "X needs n to be an integer >= 1, got '3'"),
    (lambda: params.integer(11, "n", "X", low=1, high=10), "X needs n to be an integer in [1, 10], got 11"),
    (lambda: params.number(0.0, "lr", "MP", 0, low_open=True), "MP needs lr to be a number > 0, got 0.0"),
    (lambda: params.number(float("nan"), "lr", "MP", 0), "MP needs lr to be a number >= 0, got nan"),
    (lambda: params.fraction(1.5, "keep", "The metric"), "The metric needs keep to be a number in (0, 1], got 1.5"),
    (lambda: params.choice("x", "output", "Occlusion", ("probabilities", "logits")),
     "Occlusion needs output to be one of probabilities, logits, got 'x'"),
])
def test_validator_wording(call, text):
    with pytest.raises(MethodError) as e:
        call()
    assert str(e.value) == text


def test_validators_accept():
    assert params.integer(3.0, "n", "X", low=1) == 3 and isinstance(params.integer(np.int64(2), "n", "X"), int)
    assert params.number(np.float32(0.5), "p", "X", 0, 1) == 0.5
    assert params.fraction(1, "keep") == 1.0
    assert params.choice("logits", "output", "X", ("probabilities", "logits")) == "logits"
    assert params.choice(True, "shortcut", "X", (True, False, "dense")) is True


def test_settings_and_methods_share_the_number_parser():
    from xaitf import settings

    assert settings._integral is params._integral and settings._real is params._real


# ------------------------------------------------------------------------------------------------
# parse_baseline
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,shape,out", [
    (0.5, (4, 4, 3), (1, 1, 1, 1)), ([1, 2, 3], (4, 4, 3), (1, 1, 1, 3)),
    (np.zeros((4, 4, 3)), (4, 4, 3), (1, 4, 4, 3)), (np.zeros((4, 4)), (4, 4, 1), (1, 4, 4, 1)),
    (np.zeros((2, 4, 4, 3)), (4, 4, 3), (2, 4, 4, 3)), (np.zeros((5, 5, 3)), (None, None, 3), (1, 5, 5, 3)),
    (np.zeros((1, 1, 1, 3)), (4, 4, 3), (1, 1, 1, 3)),    # idempotent on its own output
])
def test_parse_baseline_forms(value, shape, out):
    b = params.parse_baseline(value, shape, owner="M")
    assert b.shape == out and b.dtype == np.float32
    np.testing.assert_array_equal(np.broadcast_to(b, (len(b),) + tuple(s or 5 for s in shape)),
                                  np.broadcast_to(np.asarray(value, np.float32).reshape(b.shape),
                                                  (len(b),) + tuple(s or 5 for s in shape)))


@pytest.mark.parametrize("value", [[1, 2], np.zeros((4, 3, 3)), np.zeros((4, 4)), "zero", np.zeros((1, 2, 4, 4, 3))])
def test_parse_baseline_refuses_other_forms(value):
    with pytest.raises(MethodError) as e:
        params.parse_baseline(value, (4, 4, 3), name="fill", owner="Occlusion")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Occlusion needs fill to be a scalar, one value per channel (3), "
                                              "an image (4,4,3) or one image per input (N,4,4,3), got")


def test_parse_baseline_counts_and_finite():
    with pytest.raises(InputError, match="3 baselines given for 2 inputs"):
        params.parse_baseline(np.zeros((3, 4, 4, 1)), (4, 4, 1), n=2, owner="M")
    with pytest.raises(MethodError, match="M needs baseline to be finite"):
        params.parse_baseline([0.0, np.inf, 0.0], (4, 4, 3), owner="M")


# ------------------------------------------------------------------------------------------------
# every baseline/fill method x the four forms
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(METHODS))
def test_per_channel_equals_full_image(rgb_model, data, key):
    x, t = data
    full = np.broadcast_to(np.asarray(PER_CHANNEL, np.float32), (8, 8, 3)).copy()
    a = _maps(rgb_model, key, PER_CHANNEL, x, t)
    b = _maps(rgb_model, key, full, x, t)
    c = _maps(rgb_model, key, np.repeat(full[None], len(x), 0), x, t)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


@pytest.mark.parametrize("key", list(METHODS))
def test_scalar_equals_full_image(rgb_model, data, key):
    x, t = data
    a = _maps(rgb_model, key, 0.3, x, t)
    b = _maps(rgb_model, key, np.full((8, 8, 3), 0.3, np.float32), x, t)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("key", list(METHODS))
def test_one_image_per_input(rgb_model, data, key):
    """Input i is explained against row i, whatever the chunking (batch_size=1: a chunk per input)."""
    x, t = data
    per = np.random.RandomState(5).rand(len(x), 8, 8, 3).astype(np.float32)
    together = _maps(rgb_model, key, per, x, t, batch_size=64)
    chunked = _maps(rgb_model, key, per, x, t, batch_size=16) if key != "deeplift" else together
    for i in range(len(x)):
        alone = _maps(rgb_model, key, per[i], x[i:i + 1], t[i:i + 1], batch_size=64)
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)
        np.testing.assert_allclose(chunked[i], alone[0], atol=1e-5)


@pytest.mark.parametrize("key", list(METHODS))
@pytest.mark.parametrize("bad", [[0.1, 0.2], np.zeros((8, 7, 3)), "black"])
def test_bad_form_is_one_line(rgb_model, data, key, bad):
    owner, name, extra = METHODS[key]
    x, t = data
    with pytest.raises(MethodError) as e:
        xaitf.create_explainer(key, rgb_model, **{**extra, name: bad})(x, t)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{owner} needs {name} to be a scalar, one value per channel (3), an image "
                          "(8,8,3) or one image per input (N,8,8,3), got"), msg


@pytest.mark.parametrize("key", list(METHODS))
def test_per_input_count_mismatch(rgb_model, data, key):
    owner, name, extra = METHODS[key]
    x, t = data
    with pytest.raises(InputError) as e:
        xaitf.create_explainer(key, rgb_model, **{**extra, name: np.zeros((2, 8, 8, 3))})(x, t)
    assert "\n" not in str(e.value) and "2" in str(e.value) and "3 inputs" in str(e.value)


def test_metric_fill_takes_the_four_forms():
    from xaitf.metrics._common import fill_image

    x = np.random.RandomState(0).rand(2, 4, 4, 3).astype(np.float32)
    for f in (0.2, [0.1, 0.2, 0.3], np.ones((4, 4, 3)), np.ones((2, 4, 4, 3))):
        np.broadcast_shapes(fill_image(x, f).shape, x.shape)
    gray = np.random.RandomState(1).rand(2, 4, 4, 1).astype(np.float32)
    np.testing.assert_array_equal(fill_image(gray, np.eye(4))[0, ..., 0], np.eye(4))
