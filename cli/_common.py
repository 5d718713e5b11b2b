"""Shared pieces of the commands: consoles (diagnostics on stderr, data on stdout), error
rendering, progress lines."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from onnxzip.errors import OnnxzipError


def err_console() -> Console:
    # rich honours NO_COLOR itself; highlight off so numbers are not recoloured at random.
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def out_console() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


def print_error(e: OnnxzipError) -> None:
    sys.stderr.write(e.render() + "\n")
    sys.stderr.flush()


def say(msg: str, *, quiet: bool = False) -> None:
    """A progress or status line on stderr (plain text, reads the same without colour)."""
    if not quiet:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def debug_enabled() -> bool:
    return os.environ.get("ONNXZIP_DEBUG", "") not in ("", "0")
