"""`compact-names`: give every internal tensor a short name.

Exported models carry long tensor names (``jax2tf_get_logits_/pjit_get_logits_/MagikaV2/
Conv_0/transpose_3:0``, ``conv2d_59.tmp_0``), each stored once per producer and once per
consumer, and the passes before this one add suffixes (``_codes``, ``_codebook_fp16``). Once
the weights are coded, those strings are a large share of a small file: 25 KB of magika's
270 KB deep-compression output, 37 KB of ocr_det's 383 KB.

Rewrites: every tensor name (node inputs and outputs, initializers, value_info, subgraph
inputs and outputs, quantization annotations) becomes a short base-36 id, given in the order
the names first appear in a depth-first walk of the graphs, so the result is deterministic.
One mapping covers all graphs, so names that If/Loop/Scan bodies take from the enclosing
scope stay bound. Preserves: the model's input and output names (its interface), node names
(so ``--per-layer`` still matches each weight and activation through the node that uses
it), empty optional-input names, functions' local names, and the numerics (only names
change). Later passes see the short names, so their include/exclude/overrides would not
match: the recipe validator requires this pass to come after every weight pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxzip import model as M
from onnxzip.passes.base import Pass, PassConfig, PassResult, opt

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(i: int) -> str:
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = _DIGITS[r] + out
        if i == 0:
            return out


def _names_in_order(model: onnx.ModelProto) -> list[str]:
    """Every tensor name of the model's graphs, first appearance first."""
    seen: dict[str, None] = {}
    for scope in M.walk(model):
        g = scope.graph
        for v in g.input:
            seen.setdefault(v.name)
        for t in g.initializer:
            seen.setdefault(t.name)
        for st in g.sparse_initializer:
            seen.setdefault(st.values.name)
        for n in g.node:
            for x in (*n.input, *n.output):
                if x:
                    seen.setdefault(x)
        for v in (*g.output, *g.value_info):
            seen.setdefault(v.name)
    return list(seen)


def _rename_graph(g: onnx.GraphProto, new: dict[str, str]) -> None:
    def r(x: str) -> str:
        return new.get(x, x) if x else x

    for v in (*g.input, *g.output, *g.value_info):
        v.name = r(v.name)
    for t in g.initializer:
        t.name = r(t.name)
    for st in g.sparse_initializer:
        st.values.name = r(st.values.name)
        st.indices.name = r(st.indices.name)
    for n in g.node:
        n.input[:] = [r(x) for x in n.input]
        n.output[:] = [r(x) for x in n.output]
    for qa in g.quantization_annotation:
        qa.tensor_name = r(qa.tensor_name)


@dataclass(frozen=True, kw_only=True)
class CompactNamesConfig(PassConfig):
    min_length: int = opt(
        4, "names this short or shorter stay as they are (a short id would save nothing)", min=1, max=64
    )


class CompactNamesPass(Pass):
    name = "compact-names"
    summary = "replace internal tensor names by short ids (the model's inputs, outputs and node names stay)"
    Config = CompactNamesConfig

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: CompactNamesConfig = self.config  # type: ignore[assignment]
        keep = {v.name for v in (*model.graph.input, *model.graph.output)}
        names = _names_in_order(model)
        taken = keep | {n for n in names if len(n) <= cfg.min_length}
        new: dict[str, str] = {}
        i = 0
        for name in names:
            if name in taken:
                continue
            while (short := _base36(i)) in taken:
                i += 1
            i += 1
            if len(short) < len(name):
                new[name] = short
                taken.add(short)
        if not new:
            return PassResult(model, False, notes=["no tensor name is longer than its short id"])
        before = model.ByteSize()
        for scope in M.walk(model):
            _rename_graph(scope.graph, new)
        saved = before - model.ByteSize()
        return PassResult(
            model, True,
            notes=[f"renamed {len(new)} of {len(names)} tensors; the graph is {saved:,} bytes smaller"],
        )
