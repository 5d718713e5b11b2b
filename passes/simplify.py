"""`simplify`: onnxsim's constant folding and dead-node removal, with its numeric check.

Rewrites: folds constant subgraphs, removes identity/dead nodes, fuses what onnxsim
fuses. Preserves: the model's inputs, outputs and numerics (onnxsim compares outputs on
random inputs when ``check_n`` > 0). Skips: a model onnxsim cannot handle (unsupported
op, failed check, over 2 GB) is passed through unchanged with the reason recorded.
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
        try:
            with _silenced():
                out, ok = onnxsim.simplify(
                    model,
                    check_n=cfg.check_n,
                    skip_fuse_bn=cfg.skip_fuse_bn,
                    mutable_initializer=False,
                )
        except Exception as e:  # onnxsim raises bare RuntimeErrors from C++
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return PassResult(model, False, skipped=[Skip("model", f"onnxsim could not simplify: {msg}")])
        if not ok:
            return PassResult(model, False, skipped=[Skip("model", "onnxsim's numeric check failed; model kept")])
        M.name_nodes(out)
        nodes_after = sum(1 for _ in M.iter_nodes(out))
        note = f"nodes {nodes_before} -> {nodes_after}, bytes {before} -> {out.ByteSize()}"
        modified = M.serialize(out) != M.serialize(model)
        return PassResult(out, modified, notes=[note])


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
