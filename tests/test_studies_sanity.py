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
            assert r["keeps"][key][name] == (s["spearman"][-1] >= r["settings"]["keep_threshold"])
    # the gradient of the CIFAR VGG loses its map once every kernel is random
    assert r["scores"]["cifar_vgg"]["grad"]["spearman"][-1] < 0.5


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
