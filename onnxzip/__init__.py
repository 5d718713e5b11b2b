"""onnxzip: compress ONNX models with a recipe (pruning, quantization, low-rank
factorization, Huffman weight coding) and measure the result on onnxruntime."""

__version__ = "0.1.0"

from onnxzip.batch import compress_dir
from onnxzip.compress import CompressResult, compress
from onnxzip.errors import OnnxzipError
from onnxzip.evaluate import EvalOptions, evaluate_files
from onnxzip.model import load_model, save_model
from onnxzip.pipeline import run_pipeline
from onnxzip.recipe import Recipe, load_recipe, parse_recipe
from onnxzip.runtime import InferenceSession

__all__ = [
    "CompressResult",
    "EvalOptions",
    "InferenceSession",
    "OnnxzipError",
    "Recipe",
    "__version__",
    "compress",
    "compress_dir",
    "evaluate_files",
    "load_model",
    "load_recipe",
    "parse_recipe",
    "run_pipeline",
    "save_model",
]
