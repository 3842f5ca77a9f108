"""The synthetic notMNIST generator (xaitf.data.synthetic_notmnist) and the real-file switch."""
import numpy as np
import pytest

import xaitf  # noqa: F401
from xaitf.data import synthetic_notmnist as N
from xaitf.errors import DataError


def test_generator_shapes_range_and_classes():
    x, y, fonts = N.make_synthetic_notmnist(60, seed=0)
    assert x.shape == (60, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    assert np.all(np.bincount(y) == 6)                          # balanced A-J
    assert len(fonts) == 60 and set(fonts) <= set(N.FONT_FILES)
    ink = (x > 0.3).mean((1, 2))
    assert np.all(ink > 0.03) and np.all(ink < 0.8)             # a letter on a dark background
    assert np.all(x[:, [0, -1], :].mean((1, 2)) < 0.5)           # border mostly dark


def test_generator_is_deterministic_per_seed():
    a = N.make_synthetic_notmnist(30, seed=3)
    b = N.make_synthetic_notmnist(30, seed=3)
    c = N.make_synthetic_notmnist(30, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_generator_uses_several_fonts():
    _, _, fonts = N.make_synthetic_notmnist(200, seed=0)
    assert len(set(fonts.tolist())) >= 8


def test_bad_count():
    with pytest.raises(Exception, match="n >= 1"):
        N.make_synthetic_notmnist(0)


def test_synthetic_is_labelled_and_the_real_file_wins(tmp_path):
    d = N.notmnist_images(20, data_dir=tmp_path, source="auto", seed=0)
    assert d["synthetic"] and d["title"] == "synthetic notMNIST" and "NOT notMNIST" in d["source"]
    with pytest.raises(DataError, match="notmnist.npz"):
        N.notmnist_images(20, data_dir=tmp_path, source="real")
    x = (np.random.default_rng(0).random((12, 28, 28, 1)) * 255).astype(np.uint8)
    np.savez(tmp_path / N.FILE_NAME, x=x, y=np.arange(12) % 10)
    d = N.notmnist_images(5, data_dir=tmp_path, source="auto")
    assert not d["synthetic"] and d["title"] == "notMNIST" and d["x"].shape == (5, 28, 28)
    np.testing.assert_allclose(d["x"], x[:5, ..., 0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(d["y"], np.arange(5))
    assert N.notmnist_images(5, data_dir=tmp_path, source="synthetic")["synthetic"]      # forced


def test_bad_real_file(tmp_path):
    np.savez(tmp_path / N.FILE_NAME, images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no array 'x'"):
        N.load_notmnist_file(tmp_path / N.FILE_NAME)
    np.savez(tmp_path / N.FILE_NAME, x=np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"\(N,28,28\)"):
        N.load_notmnist_file(tmp_path / N.FILE_NAME)
