"""onnxzip: compress ONNX models with a recipe (pruning, quantization, low-rank
factorization, Huffman weight coding) and measure the result on onnxruntime."""

__version__ = "0.1.0"

from onnxzip.compress import CompressResult, compress  # noqa: E402
from onnxzip.errors import OnnxzipError  # noqa: E402
from onnxzip.model import load_model, save_model  # noqa: E402
from onnxzip.pipeline import run_pipeline  # noqa: E402
from onnxzip.recipe import Recipe, load_recipe, parse_recipe  # noqa: E402
from onnxzip.runtime import InferenceSession  # noqa: E402

__all__ = [
    "__version__",
    "compress",
    "CompressResult",
    "load_model",
    "save_model",
    "load_recipe",
    "parse_recipe",
    "Recipe",
    "run_pipeline",
    "InferenceSession",
    "OnnxzipError",
]
