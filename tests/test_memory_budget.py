"""Chunk sizes capped by the activations' memory (memory_budget_mb): same maps, fewer inputs per chunk."""
import numpy as np
import pytest

import xaitf
from xaitf.errors import MethodError
from xaitf.keras_bridge import activation_bytes, keras3, tfk


def _cnn(k):
    L = k.layers
    inp = k.Input((32, 32, 3))
    h = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    return k.Model(inp, L.Dense(4)(L.GlobalAveragePooling2D()(h)))


# input 32*32*3, conv 32*32*16, pooled 16, logits 4: float32 bytes per input
PER_INPUT = 4 * (32 * 32 * 3 + 32 * 32 * 16 + 16 + 4)


@pytest.mark.parametrize("k", ["tf-keras", "keras3"])
def test_activation_bytes_counts_every_layer_output(k):
    model = _cnn(tfk if k == "tf-keras" else keras3())
    assert activation_bytes(model) == PER_INPUT


@pytest.mark.parametrize("name,kw", [("occlusion", {"window": 8, "stride": 8}), ("rise", {"masks": 64}),
                                     ("ig", {"steps": 32})])
def test_a_small_budget_caps_chunks_and_keeps_the_maps(name, kw):
    model = _cnn(tfk)
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    full = xaitf.create_explainer(name, model, progress=False, **kw)
    small = xaitf.create_explainer(name, model, progress=False, memory_budget_mb=1, **kw)
    assert full.batch_size == 256 and full.batch_note is None
    assert small.batch_size == 2 ** 20 // PER_INPUT == 13
    assert "256 -> 13" in small.batch_note and "memory_budget_mb=1" in small.batch_note
    np.testing.assert_allclose(small(x, [0, 1, 2]), full(x, [0, 1, 2]), rtol=1e-5, atol=1e-6)


def test_budget_must_be_a_positive_integer():
    with pytest.raises(MethodError, match="memory_budget_mb") as err:
        xaitf.create_explainer("occlusion", _cnn(tfk), memory_budget_mb=0)
    assert "\n" not in str(err.value)
