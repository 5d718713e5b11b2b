"""Recipe validation: every problem is caught before a model is read, with file:line, pass,
key and the valid choices."""

from __future__ import annotations

import dataclasses

import pytest

from onnxzip.errors import RecipeError
from onnxzip.recipe import load_recipe, parse_recipe, preset_names

GOOD = """\
version: 1
name: demo
description: test recipe
seed: 3
defaults:
  min_params: 64
passes:
  - simplify: {check_n: 0}
  - cast-fp16:
      exclude: ["fc2*"]
      overrides:
        "w1": {skip: true}
gates:
  min_cosine: 0.99
"""


def _err(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as ei:
        parse_recipe(text, "r.yaml")
    return ei.value


def test_good_recipe_parses():
    r = parse_recipe(GOOD, "r.yaml")
    assert r.name == "demo" and r.seed == 3
    assert [s.name for s in r.passes] == ["simplify", "cast-fp16"]
    cast = r.passes[1].config
    assert cast.min_params == 64  # from defaults
    assert cast.exclude == ("fc2*",)
    assert cast.for_names("fc1", "w1") is None  # override skip
    assert r.gates == {"min_cosine": 0.99}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cast.min_params = 1  # type: ignore[misc]


def test_override_changes_value(monkeypatch):
    from dataclasses import dataclass

    from onnxzip.passes import REGISTRY
    from onnxzip.passes.base import Pass, TargetConfig, opt

    @dataclass(frozen=True, kw_only=True)
    class DemoConfig(TargetConfig):
        bits: int = opt(8, "bits", min=2, max=8)

    class DemoPass(Pass):
        name, Config = "demo", DemoConfig

    monkeypatch.setitem(REGISTRY, "demo", DemoPass)
    r = parse_recipe("version: 1\npasses:\n  - demo: {overrides: {'fc*': {bits: 4}}}\n", "r.yaml")
    cfg = r.passes[0].config
    assert cfg.for_names("fc1").bits == 4
    assert cfg.for_names("other").bits == 8
    e = _err("version: 1\npasses:\n  - demo: {overrides: {'fc*': {bits: 9}}}\n")
    assert "override `fc*`: key `bits`: 9 is out of range" in e.message


@pytest.mark.parametrize(
    "text, where, hint",
    [
        ("version: 1\npasses:\n  - simplfy: {}\n", "r.yaml:3: unknown pass `simplfy`", "did you mean `simplify`"),
        ("version: 1\npasses:\n  - simplify:\n      chek_n: 2\n", "r.yaml:4: pass `simplify`: key `chek_n`: unknown key", "did you mean `check_n`"),
        ("version: 1\npasses:\n  - simplify: {check_n: many}\n", "r.yaml:3: pass `simplify`: key `check_n`: expected an integer, got string", "takes an integer"),
        ("version: 1\npasses:\n  - simplify: {check_n: -1}\n", "r.yaml:3: pass `simplify`: key `check_n`: -1 is out of range", "[0, 100]"),
        ("version: 1\npasses:\n  - cast-fp16: {min_params: 1.5}\n", "pass `cast-fp16`: key `min_params`: expected an integer", None),
        ("version: 1\npasses: []\n", "r.yaml:2: the pass list is empty", "valid:"),
        ("version: 1\n", "missing `passes`", None),
        ("passes: [simplify]\n", "missing `version`", "version: 1"),
        ("version: 2\npasses: [simplify]\n", "unsupported recipe version `2`", None),
        ("- a\n- b\n", "a recipe must be a mapping", "onnxzip recipes"),
        ("version: 1\npasses: [simplify]\nextra: 1\n", "r.yaml:3: unknown top-level key `extra`", None),
        ("version: 1\npasses: [simplify]\ndefaults: {opps: [MatMul]}\n", "defaults: unknown key `opps`", "did you mean `ops`"),
        ("version: 1\npasses:\n  - simplify: 3\n", "settings must be a mapping", None),
        ("version: 1\npasses:\n  - {simplify: {}, cast-fp16: {}}\n", "exactly one pass name", None),
        ("version: 1\npasses:\n  - cast-fp16: {overrides: {'x*': {min_parms: 3}}}\n", "key `min_parms` cannot be overridden", "`skip`"),
        ("version: 1\npasses:\n  - cast-fp16: {}\n  - simplify: {}\n  - cast-fp16: {}\n", None, None),
        ("version: 1\nseed: -4\npasses: [simplify]\n", "`seed` must be a non-negative integer", None),
        ("version: 1\npasses: [simplify]\ncalibration: {data: c.npz, samples: 0}\n", "calibration: `samples` must be a positive integer", None),
        ("version: 1\npasses: [simplify]\nversion: 1\n", "key `version` appears twice", None),
    ],
)
def test_bad_recipes(text: str, where: str | None, hint: str | None):
    if where is None:  # a valid corner case (a pass used twice)
        parse_recipe(text, "r.yaml")
        return
    e = _err(text)
    assert where in e.message, e.message
    if hint:
        assert e.hint and hint in e.hint, e.hint


def test_yaml_syntax_error_has_line():
    e = _err("version: 1\npasses:\n  - simplify: {check_n: 1\n")
    assert e.message.startswith("r.yaml:") and "invalid YAML" in e.message


def test_order_rule_is_checked(monkeypatch):
    from onnxzip import passes, recipe

    rule = passes.OrderRule("simplify", "cast-fp16", "test rule")
    monkeypatch.setattr(recipe, "ORDER_RULES", (rule,))
    e = _err("version: 1\npasses:\n  - cast-fp16: {}\n  - simplify: {}\n")
    assert "r.yaml:4: pass `simplify` must come before `cast-fp16`: test rule" in e.message
    assert "move `simplify` above" in e.hint


def test_yaml_is_safe():
    e = _err("version: 1\npasses: !!python/object/apply:os.system ['echo hi']\n")
    assert "invalid YAML" in e.message


def test_every_preset_validates():
    names = preset_names()
    assert "fp16" in names
    for name in names:
        r = load_recipe(name)
        assert r.passes and r.description, name


def test_unknown_preset_suggests():
    with pytest.raises(RecipeError) as ei:
        load_recipe("fp61")
    assert "no recipe file or preset named `fp61`" in ei.value.message
    assert "did you mean `fp16`" in ei.value.hint


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
