"""The registry of measures: one :class:`~landscape.measures.spec.MeasureSpec` per selectable name.

It drives the measure table (which columns, computed by which function, with which needs), the CLI's
``--measures`` choices and the plot labels and units. **Adding a measure** = one new file under
``landscape/measures/`` defining ``fn(ctx: BatchContext) -> {column: tensor}`` and a ``MeasureSpec`` that
declares what it needs (``point``, ``hessian``, ``per_batch``, ``counters``; the table reads these, never
the names), plus one line in :data:`SPECS` below (worked example: ``docs/measures.md``, "Adding a measure").
``at_adv(spec)`` registers the same measure evaluated at the adversarial point.

The order of :data:`SPECS` is the column order of the table. :func:`get`, :func:`select` and the column
helpers read :data:`SPECS` when called; :data:`MEASURES` and :data:`DEFAULT_MEASURES` are its names at import.
"""
from __future__ import annotations

from typing import Iterable

from . import curvature, first_order, gradients, margin, taylor, weight_space
from .spec import MeasureSpec, at_adv

__all__ = ["SPECS", "MEASURES", "DEFAULT_MEASURES", "get", "select", "column_labels", "column_units", "counters"]

SPECS: tuple[MeasureSpec, ...] = (
    gradients.GRAD,
    curvature.CURV_ADV,
    curvature.CURV_RAND,
    curvature.EIG_TOP,
    taylor.TAYLOR_GAP,
    taylor.LOGIT_VAR,
    at_adv(gradients.GRAD),
    at_adv(curvature.CURV_ADV),
    at_adv(curvature.CURV_RAND),
    at_adv(curvature.EIG_TOP),
    first_order.FO_SHARE,
    curvature.HS,
    at_adv(curvature.HS),
    margin.MARGIN,
    # per-model weight-space measures (scope "model"): computed once per table, opt-in
    weight_space.W_EIG_TOP,
    weight_space.W_TRACE,
    weight_space.W_DENSITY,
    weight_space.W_FLAT_AVG,
    weight_space.W_FLAT_WORST,
    weight_space.W_AWP,
)


def _by_name() -> dict[str, MeasureSpec]:
    by_name = {s.name: s for s in SPECS}
    if len(by_name) != len(SPECS):
        raise RuntimeError("two registered measures share a name")
    return by_name


MEASURES: tuple[str, ...] = tuple(_by_name())
"""Every selectable measure name, in column order."""

DEFAULT_MEASURES: tuple[str, ...] = tuple(s.name for s in SPECS if s.default)
"""The selection used when none is given: the measures whose cost keeps the table within 2x the PGD-10
floor (``benchmarks/bench_units.py``); ``eig_top``, ``hs``, the weight-space ``w_*`` and the rest are opt-in."""


def get(name: str) -> MeasureSpec:
    """The spec registered as ``name`` (ValueError naming the allowed names otherwise)."""
    by_name = _by_name()
    try:
        return by_name[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown measure {name!r} (allowed: {', '.join(by_name)})") from None


def select(measures: str | Iterable[str] | None) -> tuple[MeasureSpec, ...]:
    """Specs for ``measures`` (None = :data:`DEFAULT_MEASURES`, a comma-separated string or names), in
    registry order.

    Raises:
        ValueError: unknown names (all of them named, with the allowed ones).
    """
    if measures is None:
        names = list(DEFAULT_MEASURES)
    elif isinstance(measures, str):
        names = [m.strip() for m in measures.split(",") if m.strip()]
    else:
        names = list(measures)
    by_name = _by_name()
    unknown = [m for m in names if m not in by_name]
    if unknown:
        raise ValueError(f"unknown measure(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(by_name)})")
    return tuple(s for s in SPECS if s.name in names)


def column_labels() -> dict[str, str]:
    """``{column: axis label}`` of every registered column."""
    return {c: lab for s in SPECS for c, lab in s.labels.items()}


def column_units() -> dict[str, str]:
    """``{column: unit}`` of every registered column."""
    return {c: u for s in SPECS for c, u in s.units.items()}


def counters(specs=None) -> tuple[str, ...]:
    """Every counter the measures ``specs`` declare (``MeasureSpec.counters``; default every registered one), in
    order: with the default, the ``df.attrs`` keys the table always writes (None where no selected measure
    declares them)."""
    return tuple(dict.fromkeys(c for s in (SPECS if specs is None else specs) for c in s.counters))
