"""Errors that carry an exit code, a cause chain and a hint.

Every error a user can cause (bad model, bad recipe, bad data, bad flags) is an
``OnnxzipError``; the CLI prints it as::

    error: <message>
    caused by: <cause>
    hint: <hint>

and exits with ``exit_code``. Anything else that escapes is a bug (exit 101).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 101


class OnnxzipError(Exception):
    """A user-facing error: one line of message, optional causes, an optional hint."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None, causes: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.causes = list(causes or [])

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        lines += [f"caused by: {c}" for c in self.causes]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UsageError(OnnxzipError):
    """Bad command-line usage or paths."""


class ModelError(OnnxzipError):
    """The ONNX model cannot be read or is invalid."""


class RecipeError(OnnxzipError):
    """The recipe is not valid (syntax, unknown pass or key, type, range, order)."""


class DataError(OnnxzipError):
    """Evaluation or calibration data is missing or does not match the model."""


class PassFailure(OnnxzipError):
    """A pass produced an invalid graph or crashed: a bug in onnxzip, not the user's fault."""

    exit_code = EXIT_INTERNAL
