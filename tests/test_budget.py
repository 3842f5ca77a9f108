"""Cost estimates and the budget check (xaitf.budget), scaled window defaults, and progress lines
in logs (xaitf.explainer.progress): fast, offline."""
import types
import warnings

import numpy as np
import pytest

import xaitf
from conftest import make_cnn, run_heatmap
from xaitf import budget
from xaitf.errors import InputError

TIMING = {"forward": 0.01, "forward_1": 0.012, "trace": 0.5,
          "backward": 0.03, "backward_1": 0.035, "trace_backward": 1.0}


def test_bench_costs_is_the_same_table():
    from bench import costs

    assert costs.COSTS is budget.COSTS and costs.cost is budget.cost
    assert costs.floor_chunk is budget.floor_chunk and costs.SEQUENTIAL is budget.SEQUENTIAL


def test_evaluation_counts_and_seconds(tiny_rgb_cnn):
    ex = xaitf.create_explainer("occlusion", tiny_rgb_cnn, window=2, stride=2)
    evals, backward, note = budget.cost("occlusion", ex)
    assert (evals, backward) == (4 * 4 + 1, False) and "16 windows" in note
    s, _, _ = budget.seconds("occlusion", ex, 3, TIMING)
    assert s == pytest.approx(0.5 + budget.MARGIN * 2.0 * 3 * 17 * 0.01)   # occlusion: x2
    ig = xaitf.create_explainer("ig", tiny_rgb_cnn, steps=10)
    assert budget.seconds("ig", ig, 2, TIMING)[0] == pytest.approx(1.0 + budget.MARGIN * 2 * 10 * 0.03)
    mp = xaitf.create_explainer("mp", tiny_rgb_cnn, max_iterations=7, blur_size=3)
    assert budget.seconds("mp", mp, 1, TIMING)[0] == pytest.approx(1.0 + budget.MARGIN * 7 * 0.035)   # sequential
    shap = xaitf.create_explainer("shapley", tiny_rgb_cnn, samples=3, segments={"name": "grid", "cell": 4})
    assert budget.cost("shapley", shap)[0] == 3 * (4 + 1)                # 4 grid cells, not 64 px


def test_repeated_calls_trace_once_and_traced_calls_not_at_all(tiny_rgb_cnn):
    """``calls`` calls of one explainer: one trace (``traced``: none; ``calls=0``: the trace
    alone) and the evaluations and segmentation per call."""
    ig = xaitf.create_explainer("ig", tiny_rgb_cnn, steps=10)
    one = budget.MARGIN * 2 * 10 * 0.03
    assert budget.seconds("ig", ig, 2, TIMING, calls=5)[0] == pytest.approx(1.0 + 5 * one)
    assert budget.seconds("ig", ig, 2, TIMING, calls=5, traced=True)[0] == pytest.approx(5 * one)
    assert budget.seconds("ig", ig, 2, TIMING, calls=0)[0] == pytest.approx(1.0)
    lime = xaitf.create_explainer("lime", tiny_rgb_cnn, num_samples=16, segmenter="slic")
    timing = {**TIMING, "segment": {"lime": 0.7}}
    assert budget.seconds("lime", lime, 3, timing, calls=4, traced=True)[0] == pytest.approx(
        4 * budget.seconds("lime", lime, 3, timing, traced=True)[0])


def test_randomisation_state_seconds_time_the_similarities_and_the_fingerprints(tiny_rgb_cnn, monkeypatch):
    """Per randomised state: the similarities of n maps shaped like the image with a reference
    prepared once (one map timed, x n) and one weights fingerprint (the check of an explainer that
    keeps copies of the weights)."""
    from xaitf import keras_bridge
    from xaitf.metrics import randomisation

    seen = []

    class Reference:
        def __init__(self, a, how):
            seen.append(("reference", a.shape, how))

        def compare(self, b):
            seen.append(b.shape)

    monkeypatch.setattr(randomisation, "Reference", Reference)
    monkeypatch.setattr(keras_bridge, "weights_fingerprint", lambda m: seen.append(m is tiny_rgb_cnn))
    clock = iter([10.0, 10.5, 11.0])        # 0.5 s for the similarities, 0.5 s for one fingerprint
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    parts = budget.randomisation_state_seconds(tiny_rgb_cnn, np.zeros((8, 6, 3)), 4, ("ssim",))
    assert parts == pytest.approx((4 * 0.5, 0.5))
    assert seen == [("reference", (1, 8, 6), ("ssim",))] + [(1, 8, 6), True] * 2    # untimed, timed
    # the fingerprint only for explainers that take it on each call
    assert budget.state_seconds(parts, xaitf.create_explainer("grad", tiny_rgb_cnn)) == pytest.approx(2.0)
    assert budget.state_seconds(parts, xaitf.create_explainer("gb", tiny_rgb_cnn)) == pytest.approx(2.5)


def test_segmentation_time_is_added_per_image(tiny_rgb_cnn, monkeypatch):
    """LIME's segmenter is timed once on the image and added per input; gradient methods get none."""
    lime = xaitf.create_explainer("lime", tiny_rgb_cnn, num_samples=16, segmenter="slic")
    grad = xaitf.create_explainer("grad", tiny_rgb_cnn)
    calls = []
    monkeypatch.setattr(type(lime), "segments", lambda self, x: calls.append(x.shape) or np.zeros(x.shape[:3]))
    timing = budget.measure_segmentation([lime, grad], np.zeros((8, 8, 3), np.float32), dict(TIMING))
    assert calls == [(1, 8, 8, 3)] and set(timing["segment"]) == {"lime"}
    timing["segment"]["lime"] = 0.7
    base = budget.seconds("lime", lime, 3, TIMING)[0]
    assert budget.seconds("lime", lime, 3, timing)[0] == pytest.approx(base + 3 * 0.7)
    assert budget.seconds("grad", grad, 3, timing)[0] == budget.seconds("grad", grad, 3, TIMING)[0]


def test_native_lrp_is_estimated_by_its_costliest_rule(tiny_rgb_cnn):
    """alpha-beta with beta != 0 runs two linear maps each way (x3 of a gradient), beta = 0 / z^B
    one and a half (x1.8), z and epsilon one plus elementwise passes (x1.5)."""
    seconds = {}
    for name, factor in (("lrp.z", 1.5), ("lrp.epsilon", 1.5), ("lrp.alpha_1_beta_0", 1.8),
                         ("lrp.alpha_2_beta_1", 3.0), ("deep_taylor.bounded", 1.8)):
        ex = xaitf.create_explainer(name, tiny_rgb_cnn)
        assert budget.lrp_factor(ex)[0] == factor and f"x{factor:g} of a gradient" in budget.cost(name, ex)[2]
        seconds[name] = budget.seconds(name, ex, 4, TIMING)[0] - TIMING["trace_backward"]
    assert seconds["lrp.alpha_2_beta_1"] == pytest.approx(2 * seconds["lrp.z"])
    own = xaitf.create_explainer("lrp.composite", tiny_rgb_cnn, composite={"conv": "alpha_beta", "dense": "epsilon"},
                                 alpha=1.0, beta=0.0)
    assert budget.lrp_factor(own) == (1.8, "alpha_beta(beta=0)")


def test_center_pixel_model_is_recognised(center_pixel_small, tiny_rgb_cnn):
    assert budget.is_center_pixel(center_pixel_small) and not budget.is_center_pixel(tiny_rgb_cnn)


def test_scaled_defaults_rule():
    assert budget.default_window(224, 224) == 16 and budget.default_window(32, 32) == 2
    assert budget.default_window(8, 8) == 1 and budget.default_window(227, 300) == 16
    assert budget.scaled_defaults("occlusion", (224, 224, 3)) == {"window": 16, "stride": 16}
    assert budget.scaled_defaults("pda", (224, 224, 3)) == {"window": 16, "stride": 16, "values": 16}
    assert budget.scaled_defaults("tfx.occlusion", (64, 64, 3)) == {"patch_size": 5}
    assert budget.scaled_defaults("ig", (224, 224, 3)) == {}
    assert budget.unset_scaled_defaults("pda", (224, 224, 3), {("pda", "values")}) == {"window": 16, "stride": 16}
    assert budget.scaled_defaults("shapley", (224, 224, 3)) == {"segments": {"name": "grid", "cell": 16},
                                                                "samples": 25}
    assert budget.unset_scaled_defaults("shapley", (224, 224, 3), {("shapley", "features")}) == {}


def test_window_methods_warn_when_their_settings_are_costly_for_the_input(monkeypatch):
    """Python's create_explainer keeps the signature's window 1; where that takes more than
    COSTLY_EVALUATIONS evaluations per input, one warning gives the input-scaled settings (the
    ones the command lines use). Cheap settings, other methods and study 1's model: silent."""
    from xaitf.zoo import build_center_pixel

    model = make_cnn(shape=(104, 104, 1), classes=3)
    with pytest.warns(UserWarning) as caught:
        xaitf.create_explainer("occlusion", model)
    assert [str(w.message) for w in caught] == [
        "occlusion: 10,817 model evaluations per input on 104x104 inputs (10816 windows (1 stride 1) + 1); the "
        "command lines scale its settings to the input size, about a 14 x 14 grid: "
        "create_explainer('occlusion', model, window=7, stride=7)"]
    assert caught[0].filename == __file__                  # points at the caller's line
    with pytest.warns(UserWarning, match=r"^shapley: 1,081,700 model evaluations .* samples=25\)$"):
        xaitf.create_explainer("shapley", model)
    monkeypatch.setattr(budget, "COSTLY_EVALUATIONS", 20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xaitf.create_explainer("occlusion", model)            # 10,817 <= 20,000
        xaitf.create_explainer("occlusion", model, window=7, stride=7)
        xaitf.create_explainer("grad", model)
        monkeypatch.setattr(budget, "COSTLY_EVALUATIONS", 100)
        xaitf.create_explainer("occlusion", build_center_pixel(image_size=15))   # study 1: window 1 by design


def test_parse_budget_and_duration():
    assert budget.parse_budget("none") is None
    assert budget.parse_budget("600") == 600 and budget.parse_budget("10m") == 600
    assert budget.parse_budget("90s") == 90 and budget.parse_budget("1.5h") == 5400
    for bad in ("0", "-3", "ten", "nan", "5d"):
        with pytest.raises(ValueError, match="expected 'none' or a duration"):
            budget.parse_budget(bad)
    assert budget.duration(40.2) == "~40 s" and budget.duration(600) == "~10 min"
    assert budget.duration(3 * 3600) == "~3 h" and budget.duration(5400) == "~1.5 h"


def test_check_names_the_setting_and_what_it_would_cost(tiny_rgb_cnn, monkeypatch):
    monkeypatch.setattr(budget, "MARGIN", 1.0)
    monkeypatch.setattr(budget, "FACTOR", {})
    ex = xaitf.create_explainer("occlusion", tiny_rgb_cnn)          # window 1: 64 windows
    slow = dict(TIMING, forward=1.0, trace=0.0)
    s, _, _ = budget.seconds("occlusion", ex, 1, slow)
    assert s == 65.0
    with pytest.raises(InputError) as e:
        budget.check([("occlusion", ex, s)], 30.0, 1, slow)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("occlusion: ~65 s with window 1 stride 1; --set occlusion.window=2 "
                          "--set occlusion.stride=2 would take ~17 s"), msg
    assert msg.endswith("above --budget 30 s (--budget none runs it anyway)")
    assert budget.check([("occlusion", ex, s)], None, 1, slow) == 65.0
    rise = xaitf.create_explainer("rise", tiny_rgb_cnn, masks=4000)
    s = budget.seconds("rise", rise, 1, slow)[0]
    with pytest.raises(InputError, match=r"rise: ~67 min with masks=4000; --set rise.masks=500 "
                                         r"would take ~8 min"):
        budget.check([("rise", rise, s)], 600.0, 1, slow)


# -- the command line stops before any explainer runs ------------------------------------------
def run_main(capsys, *args):
    return run_heatmap(capsys, *args)


@pytest.fixture
def recorded(monkeypatch):
    """Every explainer call recorded (and passed through); budget.measure returns TIMING x 100
    (1 s per forward, 3 s per forward + backward), no tracing time."""
    from xaitf.explainer import Explainer

    calls = []
    real = Explainer.__call__

    def call(self, x, targets=None):
        calls.append(self.name)
        return real(self, x, targets)

    monkeypatch.setattr(Explainer, "__call__", call)
    monkeypatch.setattr(budget, "MARGIN", 1.0)
    monkeypatch.setattr(budget, "FACTOR", {})
    monkeypatch.setattr(budget, "measure", lambda model, backward=False, batch=8:
                        {k: 0.0 if k.startswith("trace") else v * 100 for k, v in TIMING.items()})
    return calls


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("budget")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_cnn(shape=(28, 28, 3), classes=4, seed=2).save(d / "cnn.h5")
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (28, 28, 3)).astype(np.uint8)).save(d / "p.png")
    return d


def test_over_budget_exits_before_any_explainer_runs(model_file, tmp_path, capsys, recorded,
                                                      restore_settings):
    args = ("-ip", model_file / "p.png", "-mp", model_file / "cnn.h5", "-op", tmp_path / "res")
    code, out, err = run_main(capsys, *args, "-hm", "grad", "occlusion", "--set", "occlusion.window=1",
                              "--set", "occlusion.stride=1", "--budget", "5m")
    assert code == 1 and recorded == []                                 # nothing explained
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: occlusion: ~13 min with window 1 stride 1; --set "
                               "occlusion.window=2 --set occlusion.stride=2 would take ~3 min; the other "
                               "methods ~3 s: the estimate ~13 min is above --budget 5 min")
    assert "occlusion: ~13 min (785 evaluations per image" in out        # the printed estimate
    assert not (tmp_path / "res").exists()
    # the scaled default (28x28 -> window 2) fits: it runs, and --set is what made it refuse above
    code, out, err = run_main(capsys, *args, "-hm", "grad", "occlusion", "--budget", "5m")
    assert code == 0, err
    assert recorded == ["grad", "occlusion"]
    assert "window defaults scaled to the 28x28 input" in out and "occlusion window=2 stride=2" in out
    assert "occlusion: ~3 min (197 evaluations per image: 196 windows (2 stride 2) + 1)" in out


# -- progress lines in logs ---------------------------------------------------------------------
class Clock:
    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


def test_progress_lines_with_eta_when_not_a_terminal(monkeypatch, capsys):
    import time

    from xaitf.explainer import progress

    monkeypatch.setattr(time, "monotonic", Clock(1.0))
    got = list(progress(range(20), desc="occlusion"))
    assert got == list(range(20))
    lines = capsys.readouterr().err.strip().splitlines()
    # every 10% (2 pieces), once 2 s have passed; then a last line
    assert lines[0] == "occlusion: 2/20 (10%), 2 s elapsed, ETA 18 s"
    assert lines[-2] == "occlusion: 18/20 (90%), 18 s elapsed, ETA 2 s"
    assert lines[-1] == "occlusion: 20/20 done in 20 s" and len(lines) == 10
    # slow pieces: at least one line every 30 s even between 10% steps
    monkeypatch.setattr(time, "monotonic", Clock(20.0))
    list(progress(range(100), desc="rise"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "rise: 2/100 (2%), 40 s elapsed, ETA 32.7 min"      # 40 s since the start
    assert lines[1].startswith("rise: 4/100 (4%), 80 s elapsed")           # 40 s since the last
    # short work prints nothing; disabled or one piece returns the items as they are
    monkeypatch.setattr(time, "monotonic", Clock(0.01))
    list(progress(range(50), desc="grad"))
    assert capsys.readouterr().err == ""
    assert progress([1, 2], enabled=False) == [1, 2] and progress([3]) == [3]


def test_dense_first_shortcut_is_estimated_cheaper(center_pixel_small, tiny_rgb_cnn):
    """Study 1's Flatten -> Dense model: occlusion / PDA take the first-layer shortcut, a window
    costs a small fraction of a forward pass (window 1 stays affordable); a CNN gets x2."""
    occ = xaitf.create_explainer("occlusion", center_pixel_small)
    s = budget.seconds("occlusion", occ, 1, TIMING)[0]
    assert s == pytest.approx(0.5 + budget.MARGIN * 0.05 * (15 * 15 + 1) * 0.01)
    pda = xaitf.create_explainer("pda", center_pixel_small)
    s = budget.seconds("pda", pda, 1, TIMING)[0]
    assert s == pytest.approx(0.5 + budget.MARGIN * 0.005 * (225 * 256 + 1) * 0.01)
    cnn = xaitf.create_explainer("occlusion", tiny_rgb_cnn)
    assert budget._factor("occlusion", cnn) == 2.0


def test_road_imputation_is_timed_and_added_per_pair(tiny_rgb_cnn, monkeypatch):
    """ROAD's imputation runs besides the model: timed once on copies of the image (uncompiled for a
    short run, XLA for a long one, as road decides), nothing for a numeric fill, the sparse solver
    for solver="sparse"; the estimate adds it per (image, percentage) pair."""
    from xaitf.evaluation_cli import estimate
    from xaitf.metrics import imputation as I

    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    calls = []
    real = I.linear_impute_batch

    def spy(images, removed, tol=1e-5, max_iter=None, jit=None):
        calls.append((images.shape, int(removed[0].sum()), jit))
        return real(images, removed, tol, max_iter, jit=False)

    monkeypatch.setattr(I, "linear_impute_batch", spy)
    assert budget.measure_imputation(image, {"imputation": 0.5}) == 0.0 and calls == []
    assert budget.measure_imputation(image, {"percentages": (0.1, 0.25, 0.9)}, n=2) > 0
    assert calls == [((64, 8, 8, 3), 16, False)] * 2      # 25 % of 64 px: a 4x4 hole; 64 copies; traced, timed
    calls.clear()
    big = (I.JIT_MIN_VALUES // (3 * image.size)) + 1       # 3 percentages x big images: compiled
    budget.measure_imputation(image, {"percentages": (0.1, 0.25, 0.9)}, n=big)
    assert [c[2] for c in calls] == [True, True]          # one untimed call that compiles, one timed
    sparse = []
    monkeypatch.setattr(I, "noisy_linear_impute", lambda im, g, noise: sparse.append(g.sum()) or im)
    assert budget.measure_imputation(image, {"solver": "sparse"}) >= 0 and sparse == [36]   # 50 %: 6x6
    # the estimate: ROAD's line counts the imputations and its seconds include them
    monkeypatch.setattr(budget, "measure_imputation", lambda image, kwargs, n: 0.5)
    grad = xaitf.create_explainer("grad", tiny_rgb_cnn)
    total, lines, _ = estimate(tiny_rgb_cnn, {"grad": grad}, ["road"], {}, (8, 8, 3), 4, image)
    assert "road" in lines[1] and "9 imputations of 500 ms" in lines[1]
    assert total > 4 * 9 * 0.5 * budget.MARGIN


def test_irof_counts_its_segments_and_times_the_segmentation(tiny_rgb_cnn, monkeypatch):
    """IROF removes one segment per step: SLIC's n_segments (100 by default) + 1 evaluations, or the
    labels of given maps + 1; its segmentation is timed once on the image and added per image."""
    from xaitf.evaluation import metric_cost
    from xaitf.evaluation_cli import estimate
    from xaitf.metrics import curves

    assert metric_cost("irof", {}, (8, 8, 3)) == (101, 0)
    assert metric_cost("irof", {"segment_params": {"n_segments": 20}}, (8, 8, 3)) == (21, 0)
    labels = np.zeros((2, 8, 8), np.int32)
    labels[0, :4], labels[1, :2], labels[1, 2:5] = 1, 1, 2
    assert metric_cost("irof", {"segments": labels}, (8, 8, 3)) == (4, 0)
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    got = []
    real = curves.irof_segments
    monkeypatch.setattr(curves, "irof_segments", lambda x, s, p: got.append((x.shape, s, p)) or real(x, s, p))
    seconds, words = budget.metric_host_seconds("irof", {"segment_params": {"n_segments": 4}}, image, 3)
    assert got == [((1, 8, 8, 3), None, {"n_segments": 4})] * 2 and seconds > 0   # untimed, timed
    assert words.startswith("segmentation ")
    assert budget.metric_host_seconds("sparseness", {}, image, 3) == (0.0, None)
    monkeypatch.setattr(budget, "metric_host_seconds", lambda m, kw, image, n: (0.25, "segmentation 250 ms"))
    grad = xaitf.create_explainer("grad", tiny_rgb_cnn)
    total, lines, _ = estimate(tiny_rgb_cnn, {"grad": grad}, ["irof"], {}, (8, 8, 3), 4, image)
    assert "irof" in lines[1] and "(101 evaluations, segmentation 250 ms per image)" in lines[1]
    assert total > 4 * 0.25 * budget.MARGIN
