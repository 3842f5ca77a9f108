"""The sanity-check study (``python -m xaitf.studies sanity --quick``, in-process): cascading
randomisation of the MNIST CNN and the CIFAR-10 VGG for each method, tables, figures, report."""
from html.parser import HTMLParser

import pytest

from conftest import run_quick_study
from xaitf.studies import STUDIES
from xaitf.studies import sanity


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    return run_quick_study("sanity", tmp_path_factory.mktemp("studies"), data_dir)


def test_registered_and_full_method_list():
    assert STUDIES["sanity"] == "xaitf.studies.sanity"
    full = sanity.methods_to_run({"methods": None})
    assert {"grad", "gb", "deconvnet", "ig", "lrp.epsilon", "occlusion", "lime"} <= set(full)
    assert not [m for m in full if m.startswith(("inn.", "tfx.", "shap.")) or m in ("lime.lib", "interventional")]


def test_scores_per_layer_and_the_keep_rule(study):
    r, _ = study
    assert set(r["models"]) == {"mnist_cnn", "cifar_vgg"}
    for key, info in r["models"].items():
        assert info["layers"] and info["images"] == sanity.QUICK["images"]
        assert set(r["scores"][key]) | set(r["skipped"][key]) == set(sanity.QUICK_METHODS)
        for name, s in r["scores"][key].items():
            assert len(s["spearman"]) == len(info["layers"])
            empty = r["empty_maps"][key][name]
            if empty == info["images"]:
                assert r["keeps"][key][name] is None               # every trained map all 0: no verdict
            elif not empty:
                assert r["keeps"][key][name] == (s["spearman"][-1] >= r["settings"]["keep_threshold"])
    # the gradient of the CIFAR VGG loses its map once every kernel is random
    assert r["scores"]["cifar_vgg"]["grad"]["spearman"][-1] < 0.5


def test_all_zero_trained_maps_give_no_verdict():
    """An all-0 trained map stays all 0 when the weights are randomised (similarity 1): such images
    are left out of the verdict, and with no other image there is none."""
    import numpy as np
    from types import SimpleNamespace

    original = np.zeros((3, 4, 4))
    original[1, 2, 2] = 1.0
    res = SimpleNamespace(original=original, scores={"spearman": np.array([[1.0, 0.1, 1.0]])})
    assert sanity.keep_verdict(res, 0.5) == (False, 2)          # only image 1 decides: 0.1
    res.scores["spearman"][0, 1] = 0.9
    assert sanity.keep_verdict(res, 0.5) == (True, 2)
    assert sanity.keep_verdict(SimpleNamespace(original=np.zeros((2, 4, 4)),
                                               scores={"spearman": np.ones((1, 2))}), 0.5) == (None, 2)


def test_report_links_exist(study):
    r, folder = study

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.src = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.src.append(a["src"])

    p = Links()
    p.feed((folder / "report.html").read_text())
    assert {"sanity_mnist_cnn.png", "sanity_cifar_vgg.png", "sanity_curves.png"} <= set(p.src)
    assert all((folder / s).is_file() for s in p.src)
    assert "Which methods keep their maps" in (folder / "report.md").read_text()


def test_ctrl_c_keeps_the_finished_methods(tmp_path, data_dir, monkeypatch):
    """Ctrl-C during the third method: the two finished ones are written as a complete run, the
    interrupted one and the rest (and the second model) are listed as not run."""
    from conftest import run_quick_study
    from xaitf.metrics import randomisation

    real, calls = randomisation.model_parameter_randomisation, []

    def stopped(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(randomisation, "model_parameter_randomisation", stopped)
    r, folder = run_quick_study("sanity", tmp_path, data_dir)
    first, second = sanity.QUICK_METHODS[:2], sanity.QUICK_METHODS[2]
    assert r["interrupted"] == f"mnist_cnn/{second}"
    assert list(r["scores"]["mnist_cnn"]) == list(first) and list(r["models"]) == ["mnist_cnn"]
    assert r["skipped"]["mnist_cnn"][second].startswith("interrupted")
    assert all(r["skipped"]["mnist_cnn"][m].startswith("not run") for m in sanity.QUICK_METHODS[3:])
    assert "not run" in r["skipped"]["cifar_vgg"]["all"]
    assert "INTERRUPTED (Ctrl-C) at mnist_cnn/" in (folder / "report.md").read_text()
    assert (folder / "sanity_mnist_cnn.png").is_file() and (folder / "sanity_curves.png").is_file()


def test_estimate_line_names_the_costliest_methods():
    import numpy as np
    from conftest import make_cnn

    model = make_cnn(shape=(8, 8, 1), classes=3)
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    line = sanity.estimate_line(model, (8, 8, 1), ["grad", "rise", "no_such_method"], x)
    assert "estimate: ~" in line and "for 2 methods x 5 models x 2 images" in line
    assert "(costliest: rise ~" in line and line.index("rise") < line.index("grad")
    assert line.endswith("; no estimate for no_such_method")
