"""xaitf.plotting (study 1's figure) and the atomic writes of xaitf.cli."""
import os

import numpy as np
import pytest

from xaitf import cli, plotting as P
from xaitf import settings as S


# -- numbers ----------------------------------------------------------------------------------
def test_zscore_formula():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    z = P.zscore(a)
    std = np.sqrt(1.25)                       # population std of 1..4
    np.testing.assert_allclose(z, (a - 2.5) / (std + 1e-15))
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=1e-12)


def test_zscore_constant_map_is_zero_not_nan():
    z = P.zscore(np.full((3, 3), 7.0))
    assert np.all(z == 0)


def test_zscore_ignores_non_finite_in_statistics():
    a = np.array([1.0, 3.0, np.nan])
    z = P.zscore(a)
    np.testing.assert_allclose(z[:2], [-1.0, 1.0])
    assert np.isnan(z[2])


def test_symmetric_limits():
    assert P.symmetric_limits(np.array([-3.0, 1.0, 2.0])) == (-3.0, 3.0)
    assert P.symmetric_limits(np.array([0.5, 2.0])) == (-2.0, 2.0)       # one-signed map still symmetric
    assert P.symmetric_limits(np.array([-0.25, np.nan, np.inf])) == (-0.25, 0.25)
    assert P.symmetric_limits(np.zeros((4, 4))) == (-1.0, 1.0)            # all-zero map: a valid range


def test_centre_crop_of_center_pixel_image():
    from xaitf.zoo import center_index

    assert P.centre((227, 227)) == (113, 113) == center_index(227)
    rows, cols = P.crop_slices((227, 227))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (111, 116, 111, 116)   # [c-2:c+3]
    a = np.zeros((227, 227))
    a[113, 113] = 5.0
    crop = P.centre_crop(a)
    assert crop.shape == (5, 5) and crop[2, 2] == 5.0 and crop.sum() == 5.0


def test_centre_crop_even_and_small_images():
    assert P.centre((28, 28)) == (14, 14)
    rows, cols = P.crop_slices((28, 32))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (12, 17, 14, 19)
    rows, cols = P.crop_slices((3, 3))                                     # clipped, never negative
    assert (rows.start, rows.stop) == (0, 3)


def test_which_maps_are_zscored(monkeypatch):
    assert P.should_zscore("Gradient") and P.should_zscore("LRP-Z")
    assert not any(P.should_zscore(t) for t in ("Input", "LIME", "Kernel SHAP"))
    monkeypatch.setitem(S.GLOBAL, "zscore", False)
    assert not P.should_zscore("Gradient")
    assert P.should_zscore("LIME", {"LIME"}) and not P.should_zscore("Gradient", {"LIME"})


# -- the figure ----------------------------------------------------------------------------------
def _info():
    return {"true": 3, "predicted": 3, "target": 2, "probability": 0.25,
            "top5": [(3, 0.5), (2, 0.25), (1, 0.15), (0, 0.05), (4, 0.05)]}


def test_figure_panels_limits_titles_and_crop():
    rs = np.random.RandomState(0)
    img = rs.rand(11, 11)
    g = rs.randn(11, 11)
    g[5, 5] = 9.0
    lime = (rs.rand(11, 11) > 0.5).astype(float)
    fig = P.heatmap_figure(img, {"Gradient": g, "LIME": lime}, _info(), crop=True)
    images = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.images}
    assert {"Input", "Gradient", "LIME"} <= set(images)

    grad_ax = images["Gradient"]
    z = P.zscore(g)
    m = np.abs(z).max()
    np.testing.assert_allclose(grad_ax.images[0].get_array(), z)              # z-scored
    np.testing.assert_allclose(grad_ax.images[0].get_clim(), (-m, m))         # symmetric
    assert grad_ax.get_title() == f"Gradient\nmax {z.max():.4g} / min {z.min():.4g}"
    lime_ax = images["LIME"]
    np.testing.assert_allclose(lime_ax.images[0].get_array(), lime)           # not z-scored
    assert lime_ax.images[0].get_clim() == (-1.0, 1.0)

    # colour bars: ticks at -M, 0, M
    cbar_ticks = [tuple(np.round(ax.get_yticks(), 6)) for ax in fig.axes if not ax.images and ax.collections]
    assert (round(-m, 6), 0.0, round(m, 6)) in cbar_ticks

    # crop row: the centre 5x5 of the z-scored map with the full map's limits
    crops = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape[:2] == (5, 5)]
    assert len(crops) == 3
    grad_crop = [ax for ax in crops if np.allclose(ax.images[0].get_array(), z[3:8, 3:8])]
    assert grad_crop and np.allclose(grad_crop[0].images[0].get_clim(), (-m, m))
    assert grad_crop[0].images[0].get_array()[2, 2] == z.max()                # the centre pixel

    texts = " ".join(t.get_text() for t in fig.texts)
    assert "true label" in texts and "explained neuron" in texts and "0.25" in texts
    assert "top-5" in texts and all(str(c) in texts for c, _ in _info()["top5"])


def test_figure_without_crop_and_rgb_input():
    rs = np.random.RandomState(1)
    fig = P.heatmap_figure(rs.rand(8, 8, 3), {"Gradient": rs.randn(8, 8, 3)}, _info(), crop=False)
    arrays = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(arrays) == 2                                                   # no crop row
    assert arrays[0].shape == (8, 8, 3)                                       # input in colour
    assert arrays[1].shape == (8, 8)                                          # channels summed


def test_save_figure_is_atomic_and_never_overwrites(tmp_path):
    fig = P.heatmap_figure(np.zeros((6, 6)), {"Gradient": np.eye(6)}, _info())
    first = P.save_figure(fig, tmp_path / "a" / "heatmap.png")
    second = P.save_figure(fig, tmp_path / "a" / "heatmap.png")
    assert first.name == "heatmap.png" and second.name == "heatmap_1.png"
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "a")) == ["heatmap.png", "heatmap_1.png"]   # no temp files


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cli.atomic_write(tmp_path / "out.txt", broken)
    assert os.listdir(tmp_path) == []
    (tmp_path / "keep.txt").write_text("old")
    cli.atomic_write(tmp_path / "keep.txt", lambda t: open(t, "w").write("new"), overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "new"
    p = cli.atomic_write(tmp_path / "keep.txt", lambda t: open(t, "w").write("newer"), overwrite=False)
    assert p.name == "keep_1.txt" and (tmp_path / "keep.txt").read_text() == "new"


def test_randomisation_figure_shows_at_most_max_steps_evenly_spaced():
    """A ResNet50's 53 cascading steps in one row were 54 unreadable panels (6710x266 px): at most
    ``max_steps`` evenly spaced steps are drawn, the first and last included, each titled with its
    step number and labelled with its own similarity; the title says how many are shown."""
    from xaitf.metrics.randomisation import Randomisation

    assert P.randomisation_steps(5, 15) == [0, 1, 2, 3, 4]
    steps = P.randomisation_steps(53, 15)
    assert len(steps) == 15 and steps[0] == 0 and steps[-1] == 52 and np.all(np.diff(steps) >= 3)
    rng = np.random.default_rng(0)
    layers = [f"layer{i}" for i in range(53)]
    scores = {"spearman": np.repeat(np.arange(53, dtype=float)[:, None] / 100, 2, axis=1)}
    res = Randomisation(layers, scores, rng.random((53, 2, 6, 6)), rng.random((2, 6, 6)))
    fig = P.randomisation_figure({"grad": res, "ig": res}, max_steps=15)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2 * 16                                   # original + 15 steps, two methods
    titles = [ax.get_title() for ax in panels[:16]]
    assert titles[0] == "original" and titles[1] == "1: + layer0" and titles[-1] == "53: + layer52"
    assert panels[2].get_xlabel() == f"ρ {steps[1] / 100:.2f}"
    assert "15 of the 53 steps shown" in fig.get_suptitle()
    few = P.randomisation_figure({"grad": Randomisation(layers[:3], {"spearman": scores["spearman"][:3]},
                                                        res.maps[:3], res.original)})
    assert len([ax for ax in few.axes if ax.get_images()]) == 4 and "shown" not in few.get_suptitle()
