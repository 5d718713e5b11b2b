"""User data for evaluation and calibration: ``.npz`` files keyed by input name.

Arrays have the batch on axis 0; an optional ``labels`` array holds class ids. Files are
opened with ``allow_pickle=False`` and checked against the model's input signature before
use: a missing input, a wrong dtype or a shape that contradicts the model is a
:class:`DataError` naming the input, what the model expects and what the file holds.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxzip.errors import DataError

LABELS = "labels"


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype and shape (ints, or str for symbolic dims, None unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name}[{dims}]"


def input_signature(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a caller must feed (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else np.dtype(np.float32)
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        specs.append(InputSpec(v.name, dtype, tuple(dims)))
    return specs


class NpzData:
    """An ``.npz`` data file validated against a model's inputs, read batch by batch."""

    def __init__(self, path: str | Path, *, what: str = "data"):
        self.path = Path(path)
        self.what = what
        if not self.path.exists():
            raise DataError(f"{what} file `{self.path}` not found", hint="give an .npz file with one array per model input (batch on axis 0)")
        if self.path.is_dir():
            raise DataError(f"{what} file `{self.path}` is a directory", hint="give an .npz file")
        if not zipfile.is_zipfile(self.path):
            raise DataError(
                f"{what} file `{self.path}` is not an .npz archive",
                hint="save it with numpy.savez(path, input_name=array, labels=labels)",
            )
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            self.keys = list(self._npz.files)
        except Exception as e:
            raise DataError(f"cannot read {what} file `{self.path}`", causes=[str(e)], hint="the file is damaged; save it again with numpy.savez") from None
        self._cache: dict[str, np.ndarray] = {}
        self._input_names: set[str] = set()

    def array(self, key: str) -> np.ndarray:
        if key not in self._cache:
            try:
                self._cache[key] = self._npz[key]
            except ValueError as e:  # object arrays need pickle: refused
                raise DataError(f"{self.what} file `{self.path}`: array `{key}` cannot be read without pickle", causes=[str(e)], hint="store plain numeric arrays") from None
            except Exception as e:
                raise DataError(f"{self.what} file `{self.path}`: array `{key}` is damaged", causes=[str(e)], hint="save the file again") from None
        return self._cache[key]

    @property
    def labels(self) -> np.ndarray | None:
        """The ``labels`` array, unless the model has an input of that name (then it is data)."""
        if LABELS not in self.keys or LABELS in self._input_names:
            return None
        return self.array(LABELS)

    def validate(self, specs: list[InputSpec]) -> int:
        """Check every model input is present with a compatible dtype and shape; returns the
        number of samples. Extra arrays (other than ``labels``) are an error, since a
        misspelled input name would otherwise be ignored."""
        names = [s.name for s in specs]
        self._input_names = set(names)
        missing = [n for n in names if n not in self.keys]
        if missing:
            raise DataError(
                f"{self.what} file `{self.path}` has no array for input `{missing[0]}`",
                causes=[f"arrays in the file: {', '.join(f'`{k}`' for k in self.keys) or 'none'}"],
                hint=f"the model's inputs are {', '.join(f'`{n}`' for n in names)}; save one array per input under its name",
            )
        extra = [k for k in self.keys if k not in names and k != LABELS]
        if extra:
            raise DataError(
                f"{self.what} file `{self.path}` has array `{extra[0]}`, which is not a model input",
                hint=f"the model's inputs are {', '.join(f'`{n}`' for n in names)} (plus optional `labels`)",
            )
        count = None
        for s in specs:
            a = self.array(s.name)
            found = f"{a.dtype.name}[{'x'.join(map(str, a.shape))}]"
            if a.dtype != s.dtype:
                raise DataError(
                    f"{self.what} input `{s.name}` has dtype {a.dtype.name}, the model expects {s.dtype.name}",
                    causes=[f"expected {s.describe()}, found {found}"],
                    hint=f"convert it: array.astype(numpy.{s.dtype.name})",
                )
            # A fixed batch dim takes batches of exactly that size: the file needs at least one.
            if a.ndim != len(s.shape) or any(isinstance(d, int) and d != n for d, n in zip(s.shape[1:], a.shape[1:], strict=False)) or (
                a.ndim and isinstance(s.shape[0], int) and a.shape[0] < s.shape[0]
            ):
                raise DataError(
                    f"{self.what} input `{s.name}` has shape {found}, the model expects {s.describe()}",
                    causes=[f"expected {s.describe()}, found {found}"],
                    hint="the batch goes on axis 0; other dims must match the model's input",
                )
            if count is None:
                count = a.shape[0] if a.ndim else 1
            elif a.ndim and a.shape[0] != count:
                raise DataError(f"{self.what} inputs disagree on the sample count ({count} vs {a.shape[0]} for `{s.name}`)", hint="every array needs the same length on axis 0")
        count = count or 0
        if count == 0:
            raise DataError(f"{self.what} file `{self.path}` holds no samples", hint="save at least one sample per input")
        labels = self.labels
        if labels is not None and (labels.ndim == 0 or labels.shape[0] != count):
            raise DataError(
                f"{self.what} `labels` has {labels.shape[0] if labels.ndim else 0} entries for {count} samples",
                causes=[f"expected {count} labels on axis 0, found {labels.dtype.name}[{'x'.join(map(str, labels.shape)) or 'scalar'}]"],
                hint="give one label per sample, on axis 0",
            )
        if labels is not None and labels.dtype.kind not in "iu":
            raise DataError(
                f"{self.what} `labels` has dtype {labels.dtype.name}, expected integer class ids",
                causes=[f"expected int64[{count}], found {labels.dtype.name}[{'x'.join(map(str, labels.shape))}]"],
                hint="convert it: labels.astype(numpy.int64)",
            )
        return count

    def batches(self, specs: list[InputSpec], batch: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``batch`` samples, the first ``limit`` samples in file order.

        A model with a fixed batch dimension gets batches of exactly that size."""
        count = self.validate(specs)
        if limit is not None:
            count = min(count, limit)
        fixed = specs[0].shape[0] if specs and specs[0].shape and isinstance(specs[0].shape[0], int) else None
        step = fixed or max(1, batch)
        for i in range(0, count, step):
            j = min(i + step, count)
            if fixed and j - i != fixed:
                break
            yield {s.name: self.array(s.name)[i:j] if self.array(s.name).ndim else self.array(s.name) for s in specs}

    def labeled_batches(self, specs: list[InputSpec], batch: int, limit: int | None = None) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """:meth:`batches` with the matching slice of ``labels`` (None without labels)."""
        start = 0
        for feed in self.batches(specs, batch, limit):
            labels = self.labels
            first = next(iter(feed.values())) if feed else None
            n = first.shape[0] if first is not None and first.ndim else 1
            yield feed, (labels[start : start + n] if labels is not None else None)
            start += n

    def close(self) -> None:
        self._npz.close()
        self._cache.clear()


@dataclass
class CalibrationSource:
    """Calibration data as a data-aware pass sees it: the file, the sample limit, the batch."""

    data: NpzData
    samples: int = 128
    batch: int = 16

    def batches(self, specs: list[InputSpec]) -> Iterator[dict[str, np.ndarray]]:
        return self.data.batches(specs, self.batch, self.samples)
