"""Accuracy metrics: how far a compressed model's outputs are from the original's.

Built in, per output (``original`` is the reference, ``compressed`` the candidate):

``top1_agreement``
    fraction of positions where ``argmax`` over the last axis is the same; only for outputs
    that look like class scores (:func:`looks_like_scores`: float, last dim > 1).
``top1_accuracy``
    fraction of ``argmax == labels`` (original and compressed), when the data has labels whose
    shape is the output's without its last axis.
``cosine``
    cosine similarity of each sample's output (flattened), averaged over samples.
``snr_db``
    ``10 log10(sum(original^2) / sum((original - compressed)^2))`` over the whole set;
    ``inf`` when the outputs are identical.
``max_abs_error`` / ``mean_abs_error``
    largest and mean ``|original - compressed|``.

:class:`OutputStats` accumulates all of them batch by batch, so an evaluation set of any size
streams through in constant memory.

Task metrics are user code: ``file.py:function`` in ``evaluate.metrics`` (a path relative to
the recipe). The function receives the whole evaluation set at once::

    def box_f1(original: dict[str, np.ndarray], compressed: dict[str, np.ndarray],
               labels: np.ndarray | None) -> dict[str, float]: ...

and returns named numbers that gates can test (``gates: {box_f1: ">= 0.95"}``). A recipe that
names such a file runs it: review it as you would any code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from onnxzip.errors import RecipeError

BUILTIN_METRICS = ("top1_agreement", "top1_accuracy", "cosine", "snr_db", "max_abs_error", "mean_abs_error")

MetricFn = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], "np.ndarray | None"], Mapping[str, float]]


# --------------------------------------------------------------------------- single-shot metrics


def looks_like_scores(a: np.ndarray) -> bool:
    """Whether an output reads as class scores: floating point with a last dim over 1."""
    return a.dtype.kind == "f" and a.ndim >= 1 and a.shape[-1] > 1


def _as_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64, copy=False) if a.dtype != np.float64 else a


def top1_agreement(original: np.ndarray, compressed: np.ndarray) -> float:
    """Fraction of positions whose argmax over the last axis agrees."""
    a, b = np.argmax(original, axis=-1), np.argmax(compressed, axis=-1)
    return float(np.mean(a == b)) if a.size else float("nan")


def labels_fit(scores: np.ndarray, labels: np.ndarray | None) -> bool:
    """Whether ``labels`` hold one class id per position of ``scores`` (shape minus last axis)."""
    if labels is None or not looks_like_scores(scores):
        return False
    lab = _squeeze_labels(labels)
    return lab.shape == scores.shape[:-1]


def _squeeze_labels(labels: np.ndarray) -> np.ndarray:
    return labels[..., 0] if labels.ndim >= 2 and labels.shape[-1] == 1 else labels


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of positions where ``argmax(scores, -1) == labels``."""
    lab = _squeeze_labels(labels)
    pred = np.argmax(scores, axis=-1)
    return float(np.mean(pred == lab)) if pred.size else float("nan")


def _per_sample(a: np.ndarray) -> np.ndarray:
    a = _as_float(a)
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(a.shape[0], -1)


def _cosines(original: np.ndarray, compressed: np.ndarray) -> np.ndarray:
    a, b = _per_sample(original), _per_sample(compressed)
    dot = np.einsum("ij,ij->i", a, b)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    # Two all-zero vectors are the same output; one zero and one not share nothing.
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, np.where((na == 0) ^ (nb == 0), 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def cosine(original: np.ndarray, compressed: np.ndarray) -> float:
    """Mean over samples (axis 0) of the cosine similarity of the flattened outputs."""
    c = _cosines(original, compressed)
    return float(np.mean(c)) if c.size else float("nan")


def snr_db(original: np.ndarray, compressed: np.ndarray) -> float:
    """Signal-to-noise ratio of ``compressed`` against ``original``, in dB (inf when equal)."""
    a, b = _as_float(original), _as_float(compressed)
    return _snr(float(np.sum(a * a)), float(np.sum((a - b) ** 2)))


def _snr(signal: float, noise: float) -> float:
    if math.isnan(noise) or math.isnan(signal):
        return float("nan")
    if noise == 0:
        return float("inf")
    ratio = signal / noise
    if ratio == 0:  # no signal, or infinite noise
        return float("-inf")
    if math.isinf(ratio):
        return float("inf")
    return 10.0 * math.log10(ratio)


def max_abs_error(original: np.ndarray, compressed: np.ndarray) -> float:
    d = np.abs(_as_float(original) - _as_float(compressed))
    return float(np.max(d)) if d.size else 0.0


def mean_abs_error(original: np.ndarray, compressed: np.ndarray) -> float:
    d = np.abs(_as_float(original) - _as_float(compressed))
    return float(np.mean(d)) if d.size else 0.0


def relative_error(original: np.ndarray, compressed: np.ndarray) -> float:
    """``||original - compressed|| / ||original||`` (L2; 0 for two zero tensors, inf for
    a zero reference against a non-zero tensor)."""
    a, b = _as_float(original), _as_float(compressed)
    num = float(np.linalg.norm((a - b).ravel()))
    den = float(np.linalg.norm(a.ravel()))
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


# --------------------------------------------------------------------------- streaming


@dataclass
class OutputStats:
    """Running comparison of one output over the batches of an evaluation set."""

    name: str
    samples: int = 0
    elements: int = 0
    scores: bool | None = None
    shape: tuple[int, ...] | None = None  # one sample's shape, from the first batch
    dtype: str = ""
    mismatch: str | None = None
    _agree: int = 0
    _positions: int = 0
    _labeled: int = 0
    _correct_a: int = 0
    _correct_b: int = 0
    _cos_sum: float = 0.0
    _cos_n: int = 0
    _signal: float = 0.0
    _noise: float = 0.0
    _abs_sum: float = 0.0
    _abs_max: float = 0.0
    _nonfinite: int = 0

    def update(self, original: np.ndarray, compressed: np.ndarray | None, labels: np.ndarray | None = None) -> None:
        original = np.asarray(original)
        if self.shape is None:
            self.shape = tuple(original.shape[1:]) if original.ndim else ()
            self.dtype = original.dtype.name
            self.scores = looks_like_scores(original)
        n = original.shape[0] if original.ndim else 1
        self.samples += n
        if self.scores and labels is not None and labels_fit(original, labels):
            self._labeled += int(np.prod(original.shape[:-1]))
            self._correct_a += int(np.sum(np.argmax(original, -1) == _squeeze_labels(labels)))
            if compressed is not None and np.shape(compressed) == original.shape:
                self._correct_b += int(np.sum(np.argmax(compressed, -1) == _squeeze_labels(labels)))
        if compressed is None:
            return
        compressed = np.asarray(compressed)
        if compressed.shape != original.shape:
            self.mismatch = self.mismatch or f"shape {list(compressed.shape)} differs from the original's {list(original.shape)}"
            return
        if original.dtype.kind not in "fiub" or compressed.dtype.kind not in "fiub":
            self.mismatch = self.mismatch or f"dtype {compressed.dtype.name} cannot be compared numerically"
            return
        a, b = _as_float(original), _as_float(compressed)
        self.elements += a.size
        if self.scores:
            self._agree += int(np.sum(np.argmax(a, -1) == np.argmax(b, -1)))
            self._positions += int(np.prod(a.shape[:-1]))
        c = _cosines(a, b)
        self._cos_sum += float(np.sum(c))
        self._cos_n += c.size
        d = a - b
        self._signal += float(np.sum(a * a))
        self._noise += float(np.sum(d * d))
        ad = np.abs(d)
        if ad.size:
            self._abs_sum += float(np.sum(ad))
            self._abs_max = max(self._abs_max, float(np.max(ad)))  # NaN stays NaN
            if np.isnan(ad).any():
                self._abs_max = float("nan")
        self._nonfinite += int(np.sum(~np.isfinite(b) & np.isfinite(a)))

    @property
    def compared(self) -> bool:
        return self.elements > 0 and self.mismatch is None

    def result(self) -> dict[str, Any]:
        """The metrics of this output, in a fixed key order (absent metrics omitted)."""
        out: dict[str, Any] = {
            "shape": list(self.shape or ()),
            "dtype": self.dtype,
            "samples": self.samples,
            "class_scores": bool(self.scores),
        }
        nan = float("nan")
        if self.mismatch:
            out["mismatch"] = self.mismatch
            # A changed output is not "not measured": it compares as infinitely wrong.
            out.update({"cosine": nan, "snr_db": nan, "max_abs_error": nan, "mean_abs_error": nan})
            if self.scores:
                out["top1_agreement"] = nan
        elif self.elements:
            if self.scores:
                out["top1_agreement"] = self._agree / self._positions if self._positions else nan
            out["cosine"] = self._cos_sum / self._cos_n if self._cos_n else nan
            out["snr_db"] = _snr(self._signal, self._noise)
            out["max_abs_error"] = self._abs_max
            out["mean_abs_error"] = self._abs_sum / self.elements
            out["nonfinite"] = self._nonfinite
        if self._labeled:
            out["top1_accuracy_original"] = self._correct_a / self._labeled
            if self.elements and not self.mismatch:
                out["top1_accuracy"] = self._correct_b / self._labeled
                out["accuracy_drop"] = out["top1_accuracy_original"] - out["top1_accuracy"]
        return out


# --------------------------------------------------------------------------- task metrics


@dataclass(frozen=True)
class TaskMetric:
    """A user metric function loaded from ``file.py:function``."""

    ref: str
    path: Path
    function: str
    fn: MetricFn = field(compare=False, repr=False)


def split_ref(ref: str) -> tuple[str, str]:
    """``"dir/file.py:func"`` -> (``"dir/file.py"``, ``"func"``); ValueError when malformed."""
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"`{ref}` is not `file.py:function`")
    path, func = ref.rsplit(":", 1)
    if not path.endswith(".py"):
        raise ValueError(f"`{ref}`: `{path}` is not a .py file")
    if not func.isidentifier():
        raise ValueError(f"`{ref}`: `{func}` is not a Python function name")
    return path, func


def resolve_ref(ref: str, base_dir: Path | None) -> Path:
    path, _ = split_ref(ref)
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def load_metric(ref: str, base_dir: Path | None = None) -> TaskMetric:
    """Import ``file.py`` (relative to ``base_dir``) and return its ``function``.

    Raises :class:`RecipeError` when the file is missing, fails to import, or lacks the
    function."""
    try:
        _, func = split_ref(ref)
    except ValueError as e:
        raise RecipeError(f"metric {e}", hint="write metrics as `path/to/file.py:function_name`") from None
    path = resolve_ref(ref, base_dir)
    if not path.is_file():
        raise RecipeError(f"metric `{ref}`: file `{path}` not found", hint="the path is relative to the recipe file")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"onnxzip_user_metrics_{path.stem}_{digest}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always get a spec
            raise RecipeError(f"metric `{ref}`: cannot import `{path}`", hint="give a Python source file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise RecipeError(
                f"metric `{ref}`: importing `{path}` failed",
                causes=[f"{type(e).__name__}: {e}"],
                hint="fix the metric file; it must import without side effects",
            ) from e
        sys.modules[mod_name] = module
    fn = getattr(module, func, None)
    if fn is None or not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and inspect.isfunction(v)]
        from onnxzip.recipe import did_you_mean

        raise RecipeError(f"metric `{ref}`: `{path.name}` has no function `{func}`", hint=did_you_mean(func, names) if names else "define the function in the file")
    return TaskMetric(ref, path, func, fn)


def run_metric(metric: TaskMetric, original: dict[str, np.ndarray], compressed: dict[str, np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
    """Call a task metric on the whole evaluation set and check what it returns."""
    try:
        got = metric.fn(original, compressed, labels)
    except Exception as e:
        raise RecipeError(
            f"metric `{metric.ref}` raised {type(e).__name__}",
            causes=[str(e) or type(e).__name__],
            hint="the function gets (original_outputs, compressed_outputs, labels or None); outputs are dicts of arrays keyed by output name",
        ) from e
    if not isinstance(got, Mapping):
        raise RecipeError(f"metric `{metric.ref}` returned {type(got).__name__}, not a dict", hint="return a dict of metric name -> number, e.g. {'box_f1': 0.97}")
    out: dict[str, float] = {}
    for k, v in got.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise RecipeError(f"metric `{metric.ref}` returned the name `{k}`, which is not an identifier", hint="name metrics like Python variables, e.g. `box_f1`")
        if k in BUILTIN_METRICS:
            raise RecipeError(f"metric `{metric.ref}` returned `{k}`, the name of a built-in metric", hint="choose another name so gates stay unambiguous")
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise RecipeError(f"metric `{metric.ref}` returned `{k}` = {v!r}, not a number", hint="return plain floats") from None
    return dict(sorted(out.items()))


__all__ = [
    "BUILTIN_METRICS",
    "OutputStats",
    "TaskMetric",
    "cosine",
    "load_metric",
    "looks_like_scores",
    "max_abs_error",
    "mean_abs_error",
    "relative_error",
    "run_metric",
    "snr_db",
    "top1_accuracy",
    "top1_agreement",
]
