"""Number formats shared by the reports every part prints (eval, export, label, bench)."""

from __future__ import annotations


def pct(v: float | None, digits: int = 1, width: int = 0, missing: str = "n/a", suffix: str = "") -> str:
    """A fraction as a percentage: ``pct(0.4567)`` -> ``"45.7"``; ``None`` -> ``missing``.

    ``digits`` after the point, right-aligned to ``width`` characters (``missing`` too), then
    ``suffix`` (e.g. ``"%"``)."""
    text = missing if v is None else f"{100 * v:.{digits}f}{suffix}"
    return text.rjust(width)
