"""Shared formatters for bytes, ratios, percentages and durations."""

from __future__ import annotations


def fmt_bytes(n: float | int | None) -> str:
    """Human-readable byte count (binary units): ``1536 -> '1.5 KiB'``."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable, keeps type checkers quiet


def fmt_ratio(r: float | None) -> str:
    """A compression or speed ratio: ``3.21x``."""
    if r is None or r != r:
        return "-"
    return f"{r:.2f}x"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.5 -> '50.0%'``."""
    if x is None or x != x:
        return "-"
    return f"{100 * x:.{digits}f}%"


def fmt_duration(seconds: float | None) -> str:
    """Seconds, milliseconds or microseconds, whichever reads best."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_float(x: float | None, digits: int = 4) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}"
