"""Graph-rewriting passes and the one registry table that names them.

The recipe loader, ``onnxzip recipes`` and the docs all read :data:`REGISTRY`; a pass
exists for users exactly when it has a line here (no registration by import side effect).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxzip.passes.base import (
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    Skip,
    TargetConfig,
    TensorStat,
)
from onnxzip.passes.cast_fp16 import CastFp16Pass
from onnxzip.passes.compact_names import CompactNamesPass
from onnxzip.passes.factorize import FactorizePass
from onnxzip.passes.huffman import HuffmanPass
from onnxzip.passes.prune import PrunePass
from onnxzip.passes.quantize import QuantizePass
from onnxzip.passes.simplify import SimplifyPass

# recipe name -> pass class (its Config and summary ride on the class). One line a pass.
REGISTRY: dict[str, type[Pass]] = {
    "simplify": SimplifyPass,
    "cast-fp16": CastFp16Pass,
    "factorize": FactorizePass,
    "huffman": HuffmanPass,
    "prune": PrunePass,
    "quantize": QuantizePass,
    "compact-names": CompactNamesPass,
}


@dataclass(frozen=True)
class OrderRule:
    """When both passes appear in a recipe, every ``first`` must come before every ``then``."""

    first: str
    then: str
    why: str


# Order constraints are data: the recipe validator checks them, no pass re-checks.
ORDER_RULES: tuple[OrderRule, ...] = (
    OrderRule("prune", "quantize", "quantization keeps pruned zeros exact only when it sees them"),
    OrderRule("factorize", "quantize", "a quantized weight cannot be factorized"),
    OrderRule("prune", "factorize", "factorizing first would hide the weights pruning ranks"),
    OrderRule("quantize", "cast-fp16", "quantize reads float32 weights"),
    OrderRule("prune", "huffman", "huffman must be the last weight-changing pass"),
    OrderRule("factorize", "huffman", "huffman must be the last weight-changing pass"),
    OrderRule("quantize", "huffman", "huffman codes the integer streams quantize writes"),
    OrderRule("cast-fp16", "huffman", "huffman must be the last weight-changing pass"),
    OrderRule("simplify", "huffman", "onnxsim cannot fold through ai.onnxzip nodes"),
    *(
        OrderRule(p, "compact-names", "the passes' include/exclude/overrides name the tensors compact-names renames")
        for p in ("simplify", "prune", "factorize", "quantize", "cast-fp16", "huffman")
    ),
)

__all__ = [
    "ORDER_RULES",
    "REGISTRY",
    "OrderRule",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassResult",
    "Skip",
    "TargetConfig",
    "TensorStat",
]
