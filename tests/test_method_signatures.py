"""[API] item 1: parameters in signatures, settings as presets, and the "Adding a method" example."""
import inspect
import pydoc
import re

import numpy as np
import pytest

import xaitf
from conftest import ROOT, make_cnn
from xaitf import registry
from xaitf import settings as S
from xaitf.errors import MethodError
from xaitf.explainer import COMMON

MODEL = make_cnn(shape=(8, 8, 3), classes=5, seed=3)
X = np.random.RandomState(0).rand(3, 8, 8, 3).astype(np.float32)
NAMES = [n for n in registry.list_methods() if n != "interventional"]


@pytest.mark.parametrize("name", registry.list_methods())
def test_every_method_declares_its_parameters_and_accepts_its_presets(name):
    cls = registry.get_method(name)
    accepted = cls.parameters()
    assert set(COMMON) <= set(accepted)
    sig = inspect.signature(cls.__init__)
    doc = inspect.getdoc(cls) or ""
    for param in (p for p in sig.parameters.values()
                  if p.kind is p.KEYWORD_ONLY and p.name not in COMMON and p.name != "params"):
        assert param.default is not inspect.Parameter.empty, f"{name}: {param.name} has no default"
        assert re.search(rf"\b{param.name}\b", doc), f"{name}: {param.name} is not in the docstring"
    section = registry.preset_section(name)
    fixed = registry._METHODS[registry.canonical(name)][2]
    for key in S.section(section) if section else ():
        if key in S.STUDY_SWITCHES.get(section, ()):
            assert key not in accepted, f"{key} is a study switch and a parameter of {cls.__name__}"
            continue
        assert key in accepted or key in fixed, f"settings.{section}.{key} is no parameter of {cls.__name__}"


@pytest.mark.parametrize("name", ["ig", "occlusion", "lime", "sg", "rise"])
def test_signature_defaults_are_the_presets_and_help_shows_them(name):
    cls = registry.get_method(name)
    accepted = cls.parameters()
    fixed = registry._METHODS[name][2]
    for key, value in S.section(registry.preset_section(name)).items():
        if key not in fixed:
            assert repr(accepted[key]) == repr(value), (name, key)
    text = pydoc.render_doc(cls)
    first = next(k for k in accepted if k not in COMMON)
    assert f"{first}=" in text


def test_unknown_keyword_lists_the_signatures_parameters():
    with pytest.raises(MethodError, match=r"IntegratedGradients got unknown parameter\(s\) stepz; "
                                          r"valid: steps, baseline, rule"):
        xaitf.create_explainer("ig", MODEL, stepz=3)
    with pytest.raises(MethodError, match=r"Gradient got unknown parameter\(s\) steps; valid: none "
                                          r"\(plus batch_size, channel_reduce, seed, progress, output, memory_budget_mb\)"):
        xaitf.create_explainer("grad", MODEL, steps=3)


def test_settings_changed_after_an_explainer_is_made_do_not_change_it(restore_settings):
    made = {n: registry.create_from_presets(n, MODEL, progress=False) for n in ("ig", "sg", "occlusion", "rise")}
    before = {n: e(X, [0, 1, 2]) for n, e in made.items()}
    S.apply_overrides(["ig.steps=2", "sg.samples=1", "occlusion.window=4", "rise.masks=2",
                       "global.batch_size=1", "global.seed=7", "global.channel_reduce=max_abs"])
    for n, e in made.items():
        np.testing.assert_array_equal(e(X, [0, 1, 2]), before[n], err_msg=n)
    # the plain API never reads the settings; the command lines' presets do, when they build
    assert xaitf.create_explainer("ig", MODEL).params["steps"] == 64
    ig = registry.create_from_presets("ig", MODEL)
    assert ig.params["steps"] == 2 and ig.batch_size == 1 and ig.seed == 7


def test_presets_keep_what_the_name_fixes(restore_settings):
    S.apply_overrides(["sg.postprocess=none"])
    assert registry.create_from_presets("vargrad", MODEL).params["postprocess"] == "variance"
    assert registry.create_from_presets("sg", MODEL).params["postprocess"] == "none"


def _docs_example():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_adding_a_method_example_runs_and_is_short():
    code = _docs_example()
    assert len(code.strip().splitlines()) <= 40
    scope = {"model": MODEL, "x": X}
    try:
        exec(compile(code, "docs/architecture.md", "exec"), scope)
        maps = scope["maps"]
        grads = xaitf.create_explainer("grad", MODEL, channel_reduce="none")(X)
        np.testing.assert_allclose(maps, (grads ** 2).sum(-1), rtol=1e-5, atol=1e-7)
        # the output contract reaches a user's method through self.forward / self.select
        probs = xaitf.create_explainer("absgrad", MODEL, power=2.0, output="probabilities")(X)
        g = xaitf.create_explainer("grad", MODEL, channel_reduce="none", output="probabilities")(X)
        np.testing.assert_allclose(probs, (g ** 2).sum(-1), rtol=1e-5, atol=1e-9)
        assert not np.allclose(probs, maps)
        assert registry.title("absgrad") == "|Gradient|"
        with pytest.raises(MethodError, match="AbsGradient needs power to be a number > 0"):
            xaitf.create_explainer("absgrad", MODEL, power=0)
        with pytest.raises(MethodError, match="built in"):
            registry.register("grad", scope["AbsGradient"])
    finally:
        registry._METHODS.pop("absgrad", None)


def test_presets_pass_only_the_common_globals_and_respect_a_methods_own_default(restore_settings):
    pda = registry.create_from_presets("pda", MODEL)
    # GLOBAL's num_classes (study 1's 256 classes) is no PDA preset; batch_size stays "from
    # windows_per_batch" (11 windows x 256 values) unless the preset was changed
    assert pda.params["num_classes"] is None and pda.batch_size == 11 * 256
    S.apply_overrides(["global.batch_size=100"])
    assert registry.create_from_presets("pda", MODEL).batch_size == 100


NATIVE = [n for n in registry.list_methods()
          if not n.startswith(("inn.", "tfx.", "shap.", "lime.lib")) and n not in ("interventional", "lrp.composite")]


@pytest.mark.parametrize("name", NATIVE)
def test_an_explainer_rebuilds_from_its_own_params(name):
    """``explainer.params`` holds the method's own parameters (what ``parameters()`` accepts), so
    the same method can be built again from them, as MPRT does on each randomised copy of the model.
    (FeatureAblation once kept Occlusion's window/stride/fill there and could not be rebuilt.)"""
    e = xaitf.create_explainer(name, MODEL, progress=False)
    assert set(e.params) <= set(type(e).parameters()), name
    again = xaitf.create_explainer(e.name, MODEL, **{**e.params, "progress": False})
    assert type(again) is type(e) and again.params == e.params
