"""`simplify`: onnxsim's constant folding and dead-node removal, with its numeric check.

Rewrites: folds constant subgraphs, removes identity/dead nodes, fuses what onnxsim
fuses (BatchNormalization into the Conv before it); adds no metadata and no shape
annotations (value_info) the input did not have. Preserves: the model's inputs (dynamic
dims stay dynamic), outputs and numerics (onnxsim compares outputs on random inputs when
``check_n`` > 0). onnxsim needs a concrete shape for that check: for inputs with dynamic
dims it takes the calibration data's shape at batch 1 (``--calib``), and without
calibration data it simplifies unchecked and says so in a note (the pipeline still checks
that onnxruntime loads the result). Skips: a model onnxsim cannot handle (unsupported op,
failed check, over 2 GB) is passed through unchanged with the reason recorded.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import onnx

from onnxzip import model as M
from onnxzip.data import input_signature
from onnxzip.errors import DataError
from onnxzip.passes.base import Pass, PassConfig, PassResult, Skip, opt


@dataclass(frozen=True, kw_only=True)
class SimplifyConfig(PassConfig):
    check_n: int = opt(1, "random-input runs onnxsim uses to verify the simplified model (0: none)", min=0, max=100)
    skip_fuse_bn: bool = opt(False, "keep BatchNormalization nodes unfused (structured pruning needs them)")


class SimplifyPass(Pass):
    name = "simplify"
    summary = "fold constants and remove dead nodes with onnxsim (checked numerically)"
    Config = SimplifyConfig

    def call(self, model: onnx.ModelProto) -> PassResult:
        cfg: SimplifyConfig = self.config  # type: ignore[assignment]
        if M._data_bytes(model) >= M.EXTERNAL_THRESHOLD:
            return PassResult(model, False, skipped=[Skip("model", "onnxsim cannot simplify models over 2 GB")])
        try:
            import onnxsim
        except ImportError as e:  # pragma: no cover - onnxsim is a dependency
            return PassResult(model, False, skipped=[Skip("model", f"onnxsim not importable: {e}")])
        before = model.ByteSize()
        nodes_before = sum(1 for _ in M.iter_nodes(model))
        check_n, shapes, notes = self._check_shapes(model, cfg.check_n)
        try:
            with _silenced():
                out, ok = onnxsim.simplify(
                    model,
                    check_n=check_n,
                    test_input_shapes=shapes,
                    skip_fuse_bn=cfg.skip_fuse_bn,
                    mutable_initializer=False,
                )
        except Exception as e:  # onnxsim raises bare RuntimeErrors from C++
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return PassResult(model, False, skipped=[Skip("model", f"onnxsim could not simplify: {msg}")])
        if not ok:
            return PassResult(model, False, skipped=[Skip("model", "onnxsim's numeric check failed; model kept")])
        # This onnxsim build records its options and every node it touched as metadata, and
        # annotates every intermediate tensor with its inferred shape (value_info): kilobytes
        # on a real model, dead weight in a compressed file (onnxruntime infers shapes itself).
        # Keep the input's own metadata, and value_info only for names the input annotated.
        own = [(e.key, e.value) for e in model.metadata_props]
        del out.metadata_props[:]
        for k, v in own:
            out.metadata_props.add(key=k, value=v)
        annotated = {v.name for v in model.graph.value_info}
        keep = [v for v in out.graph.value_info if v.name in annotated]
        del out.graph.value_info[:]
        out.graph.value_info.extend(keep)
        M.name_nodes(out)
        nodes_after = sum(1 for _ in M.iter_nodes(out))
        notes.insert(0, f"nodes {nodes_before} -> {nodes_after}, bytes {before} -> {out.ByteSize()}")
        modified = M.serialize(out) != M.serialize(model)
        return PassResult(out, modified, notes=notes)

    def _check_shapes(self, model: onnx.ModelProto, check_n: int) -> tuple[int, dict[str, list[int]] | None, list[str]]:
        """onnxsim's check runs the model on random inputs of a concrete shape: for dynamic
        dims, the calibration data's shape at batch 1; without it, no check."""
        dynamic = [s for s in input_signature(model) if not all(isinstance(d, int) for d in s.shape)]
        if not check_n or not dynamic:
            return check_n, None, []
        cal = self.context.calibration
        if cal is not None:
            try:
                shapes = {s.name: [1, *cal.data.array(s.name).shape[1:]] for s in dynamic}
            except DataError:
                shapes = None
            if shapes is not None:
                dims = ", ".join(f"`{k}` {'x'.join(map(str, v))}" for k, v in shapes.items())
                return check_n, shapes, [f"numeric check on the calibration data's shapes: {dims}"]
        names = ", ".join(f"`{s.name}` {s.describe()}" for s in dynamic)
        return 0, None, [f"numeric check skipped: input {names} has dynamic dims (give --calib to check on its shapes)"]


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Keep onnxsim's progress chatter (Python prints and C++ writes) off our stdout,
    which carries only data (`--json`)."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = None
    saved = os.dup(fd) if fd is not None else None
    try:
        if fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
