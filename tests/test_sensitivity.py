"""Per-layer sensitivity: grid, recipe rendering, the sweep's JSON, the plot, the CLI."""

from __future__ import annotations

import fnmatch
import json
import math
import xml.dom.minidom
from pathlib import Path

import pytest
from conftest import SAMPLES, assert_one_error, invoke

from onnxzip import model as M
from onnxzip.recipe import load_recipe, parse_recipe
from onnxzip.sensitivity import (
    Workbench,
    build_knobs,
    glob_escape,
    layer_settings,
    parse_candidate_specs,
    render_recipe,
)

CNN = SAMPLES / "digits_cnn"


@pytest.mark.parametrize("name", ["w", "a[0]", "x*y", "what?", "jax2tf/Const:0", "[]"])
def test_glob_escape_matches_exactly_the_name(name: str):
    g = glob_escape(name)
    assert fnmatch.fnmatchcase(name, g)
    assert not fnmatch.fnmatchcase(name + "x", g)
    assert not fnmatch.fnmatchcase("x" + name, g)


def test_default_grid_from_the_recipe_passes():
    r = parse_recipe(
        "version: 1\npasses:\n  - prune: {sparsity: 0.6, scope: global}\n  - quantize: {method: kmeans, bits: 5}\n  - cast-fp16: {}\n"
    )
    knobs = build_knobs(r, 0)
    by = {k.name: k for k in knobs}
    assert [dict(o)["bits"] for o in by["quantize"].options] == [8, 6, 5, 4, 3]
    # the recipe's own sparsity and its neighbours, ranked per layer (a global threshold would couple layers)
    assert [dict(o)["sparsity"] for o in by["prune"].options] == [0.4, 0.6, 0.8]
    assert all(dict(o)["scope"] == "layer" for o in by["prune"].options)
    assert by["cast-fp16"].follower and by["cast-fp16"].options == ((),)


def test_candidates_replace_a_pass_list_and_are_validated():
    r = load_recipe("kmeans-5bit")
    knobs = build_knobs(r, 0, parse_candidate_specs(["quantize.bits=8,4"]))
    assert [dict(o) for o in knobs[0].options] == [{"bits": 8}, {"bits": 4}]
    from onnxzip.errors import UsageError

    with pytest.raises(UsageError, match="out of range"):
        build_knobs(r, 0, parse_candidate_specs(["quantize.bits=9"]))
    with pytest.raises(UsageError, match="no tunable key"):
        build_knobs(r, 0, parse_candidate_specs(["quantize.bitz=4"]))
    with pytest.raises(UsageError, match="does not run"):
        build_knobs(r, 0, parse_candidate_specs(["prune.sparsity=0.5"]))
    with pytest.raises(UsageError, match=r"PASS\.KEY"):
        parse_candidate_specs(["bits=4"])


@pytest.fixture(scope="module")
def cnn_bench(tmp_path_factory) -> Workbench:
    r = load_recipe("kmeans-5bit")
    return Workbench(CNN / "model.onnx", r, CNN / "eval.npz", subset=128, out_dir=tmp_path_factory.mktemp("bench"))


def test_layer_settings_put_off_first_and_skip_every_pass(cnn_bench: Workbench):
    L = cnn_bench.layers[0]
    settings = layer_settings(L, cnn_bench.knob_by_step)
    assert settings[0].off and settings[0].label == "off"
    assert [s.label for s in settings[1:]] == [f"quantize:bits={b}" for b in (8, 6, 5, 4, 3)]


def test_rendered_recipe_gives_one_layer_its_setting_and_skips_the_others(cnn_bench: Workbench, tmp_path: Path):
    layers = cnn_bench.layers
    target = layers[-1]
    s4 = next(s for s in cnn_bench.settings[target.name] if s.label == "quantize:bits=4")
    text = render_recipe(cnn_bench.recipe, layers, {target.name: s4}, out_dir=tmp_path)
    r = parse_recipe(text, str(tmp_path / "t.yaml"))
    cfg = r.passes[0].config
    for L in layers:
        eff = cfg.for_names(L.node, L.name)
        if L is target:
            assert eff is not None and eff.bits == 4
        else:
            assert eff is None  # skip: true
    v = cnn_bench.build({target.name: s4})
    q = {t.name for t in M.iter_tensors(v.model) if t.data_type == 2}  # uint8 codes
    assert len(q) == 1  # only that layer was quantized


def test_sweep_json_structure_and_8bit_is_near_lossless(tmp_path: Path):
    out = tmp_path / "sens.svg"
    code, stdout, stderr = invoke(
        "sensitivity", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit",
        "--subset", "128", "--candidates", "quantize.bits=8,5,3", "--json", "--plot", str(out),
    )
    assert code == 0, stderr
    rep = json.loads(stdout)
    assert rep["kind"] == "sensitivity"
    assert rep["metric"] == {"name": "top1_agreement", "higher_is_better": True}
    assert rep["data"]["measured_on"] == 128 and rep["data"]["samples"] == 360
    assert rep["baseline"]["metric"] == 1.0  # kmeans-5bit does nothing besides the layers
    names = [L["name"] for L in rep["layers"]]
    assert len(names) == 4 and len(set(names)) == 4
    assert sum(L["share"] for L in rep["layers"]) < 1
    assert rep["variants"] == 4 * 4
    for L in rep["layers"]:
        assert L["params"] > 0 and L["bytes"] == 4 * L["params"] and L["complete"]
        labels = [o["setting"] for o in L["options"]]
        assert labels == ["off", "quantize:bits=8", "quantize:bits=5", "quantize:bits=3"]
        off = L["options"][0]
        assert off["bytes_saved"] == 0 and off["metric_lost"] == 0
        eight = L["options"][1]
        assert eight["passes"] == {"quantize": {"bits": 8}}
        assert eight["bytes_saved"] > 0
        # 8-bit k-means (256 shared values) is within a small tolerance of the original
        assert eight["metric"] >= 0.99 and eight["nsr"] < 1e-3
        assert set(eight["metrics"]) >= {"top1_agreement", "cosine", "snr_db"}
        for o in L["options"][1:]:
            assert math.isfinite(o["nsr"]) and 0 <= o["metric"] <= 1
    svg = out.read_text()
    xml.dom.minidom.parseString(svg)  # well-formed
    assert svg.count("<circle") == 16 and names[0] in svg


def test_table_is_the_default_output(tmp_path: Path):
    code, stdout, stderr = invoke(
        "sensitivity", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit",
        "--subset", "64", "--candidates", "quantize.bits=4",
    )
    assert code == 0, stderr
    assert "fc.weight" in stdout and "quantize:bits=4" in stdout and "top1_agreement" in stdout
    assert "sweep" in stderr  # progress on stderr


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--metric", "top1_agreemnt"], "unknown metric"),
        (["--candidates", "quantize.bits=12"], "out of range"),
        (["--candidates", "huffman.segment_size=64"], "no tunable setting"),
        (["--plot", "/nonexistent/dir/p.svg"], "does not exist"),
    ],
)
def test_usage_errors_exit_2(args: list[str], msg: str):
    code, _, stderr = invoke("sensitivity", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit", *args)
    assert code == 2, stderr
    assert msg in stderr
    assert_one_error(stderr)


def test_recipe_without_weight_pass_exit_2():
    code, _, stderr = invoke("sensitivity", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "simplify")
    assert code == 2 and "no weight pass" in stderr
    assert_one_error(stderr)


def test_png_plot_without_matplotlib_is_a_usage_error(tmp_path: Path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        code, _, stderr = invoke(
            "sensitivity", str(CNN / "model.onnx"), "--data", str(CNN / "eval.npz"), "-r", "kmeans-5bit",
            "--subset", "16", "--candidates", "quantize.bits=4", "--plot", str(tmp_path / "p.png"),
        )
        assert code == 2 and "matplotlib" in stderr and "onnxzip[plot]" in stderr
    else:
        pytest.skip("matplotlib installed: the PNG path works")


def test_pass_targets_leave_out_the_output_layers_a_recipe_keeps():
    # tune and sensitivity take their layers from `Pass.targets`: a head that prune keeps
    # dense (`keep_output_layers`) must not become a prune layer there
    from conftest import make_mlp

    from onnxzip.passes import REGISTRY
    from onnxzip.sensitivity import find_layers

    model = make_mlp(k=64, h=128, n=10)
    r = parse_recipe("version: 1\npasses:\n  - prune: {sparsity: 0.5, keep_output_layers: true}\n  - quantize: {method: kmeans, bits: 4}\n")
    skipped: list = []
    assert [n for n, _, _ in REGISTRY["prune"].targets(model, r.passes[0].config, skipped)] == ["w1"]
    assert [(s.name, s.reason) for s in skipped] == [("w2", "output layer kept dense (`keep_output_layers`)")]
    layers = {L.name: L.steps for L in find_layers(model, r, 0, build_knobs(r, 0))}
    assert layers == {"w1": (0, 1), "w2": (1,)}  # the head: quantize only
    # an override can release the head, as it does in the pass itself
    r2 = parse_recipe(
        "version: 1\npasses:\n  - prune: {sparsity: 0.5, keep_output_layers: true, overrides: {fc2: {keep_output_layers: false}}}\n"
    )
    assert [n for n, _, _ in REGISTRY["prune"].targets(model, r2.passes[0].config, [])] == ["w1", "w2"]


def test_a_layer_left_off_stays_float32_under_cast_fp16_all_float(tmp_path: Path):
    # deep-compression casts every float tensor (`all_float`); an `off` layer is kept by its
    # `skip: true` override alone, as `onnxzip compress` reads the rendered recipe
    import dataclasses

    import onnx

    from onnxzip.pipeline import run_pipeline
    from onnxzip.sensitivity import find_layers

    r = load_recipe("deep-compression")
    assert r.passes[0].name == "simplify"
    model = run_pipeline(M.load_model(CNN / "model.onnx"), dataclasses.replace(r, passes=r.passes[:1])).model
    knobs = build_knobs(r, 1)
    layers = find_layers(model, r, 1, knobs)
    first = layers[0]
    others = {L.name: layer_settings(L, {k.step: k for k in knobs})[-1] for L in layers[1:]}
    text = render_recipe(r, layers, others, out_dir=tmp_path)
    assert "exclude" not in text
    rest = parse_recipe(text, str(tmp_path / "t.yaml"))
    # up to huffman: compact-names would hide the names this test looks up
    assert rest.passes[-1].name == "compact-names"
    out = run_pipeline(model, dataclasses.replace(rest, passes=rest.passes[1:-1])).model
    kinds = {t.name: t.data_type for t in M.iter_tensors(out)}
    assert kinds[first.name] == onnx.TensorProto.FLOAT  # off: every pass skipped it
    assert first.name + "_fp16" not in kinds
    assert all(L.name not in kinds or kinds[L.name] != onnx.TensorProto.FLOAT for L in layers[1:])
