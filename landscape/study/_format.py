"""The one number formatter of the study's tables: ``mean ± spread`` (findings, claims, README blocks)."""
from __future__ import annotations

import math

__all__ = ["pm"]


def _num(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def pm(mean: float, spread: float = math.nan, digits: int = 1, *, missing: str = "–", label: str = "") -> str:
    """``mean ± spread`` with ``digits`` decimals (``-0.0`` shown as ``0.0``).

    Args:
        mean: the value; ``missing`` when it is not finite.
        spread: sd or standard error; left out when it is not finite (one seed, or no spread given).
        digits: decimals of both numbers.
        missing: the text for a non-finite ``mean``.
        label: what the spread is, appended in parentheses (``"se"`` gives ``1.0 ± 0.5 (se)``).

    Examples:
        >>> pm(2.345, 0.5), pm(-0.01, float("nan"), 1), pm(float("nan"), 1.0)
        ('2.3 ± 0.5', '0.0', '–')
    """
    if not math.isfinite(mean):
        return missing
    if not math.isfinite(spread):
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(spread, digits)}" + (f" ({label})" if label else "")
