"""What a measure is to the table: :class:`MeasureSpec` (name, columns, function, label, unit, and what it
needs) and the :class:`BatchContext` its function reads.

A measure function takes one :class:`BatchContext` (a batch already attacked, with its clean loss, logits
and input gradient) and returns ``{column: tensor}``: a (B,) tensor per sample, or a 0-d tensor for a
per-batch quantity (``per_batch=True``; the table repeats it on every row of its batch). Everything a
measure needs that is costly (the gradient at ``x_adv``, the batch's Hessian operator) is computed once per
batch on first use and shared. The spec *declares* those needs (``point``, ``hessian``, ``per_batch``,
``counters``) and the table reads the declarations, never the names. The registry of specs is
:mod:`landscape.measures.registry`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import torch
import torch.nn as nn

from .._base import derive_seed
from ..attacks import AttackSettings
from ._autograd import loss_logits_grad

__all__ = ["BatchContext", "MeasureSpec", "at_adv", "POINTS", "SCOPES", "STREAM_ATTACK", "STREAM_RAND", "STREAM_EIG",
           "STREAM_WEIGHT"]

POINTS = ("clean", "adv")
"""The points a measure can be evaluated at: the clean inputs or the adversarial ones."""

SCOPES = ("sample", "model")
"""What a measure describes: each sample (or batch) of the table, or the model as a whole (weight space)."""

# independent random streams of one batch (see BatchContext.seed_for); fixed so tables stay reproducible
STREAM_ATTACK, STREAM_RAND, STREAM_EIG = 0, 1, 2
STREAM_WEIGHT = 3  # the per-model (weight-space) measures' stream, drawn once per table


@dataclasses.dataclass
class BatchContext:
    """One attacked batch, as a measure function sees it (the model in eval mode with frozen parameters).

    Attributes:
        model: the classifier.
        x: (B, ...) the point the measure is evaluated at (clean inputs, or ``x_adv`` under :func:`at_adv`).
        y: (B,) labels.
        loss, logits, grad: (B,), (B, K), (B, ...) cross-entropy, logits and input gradient at ``x``.
        x_adv, delta: (B, ...) the adversarial inputs and ``delta = x_adv − x_clean``.
        loss_adv, logits_adv: (B,), (B, K) at ``x_adv``.
        settings: the :class:`landscape.attacks.AttackSettings` that made ``x_adv``.
        seed, batch: base seed and batch index; :meth:`seed_for` derives a stream's seed from them.
        eig_iters: most Lanczos steps for eigenvalue measures (smooth nets; see measures.gauss_newton).
        state: shared, mutable: ``hvp_method`` (the HVP method in use; measures update it after a
            fallback), ``eig_unconverged`` (count), and a cache of derived tensors.
        point: ``"clean"`` or ``"adv"`` (the point ``x`` stands for).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor | None
    x_adv: torch.Tensor
    delta: torch.Tensor
    loss_adv: torch.Tensor
    logits_adv: torch.Tensor
    settings: AttackSettings
    seed: int
    batch: int
    eig_iters: int
    state: dict
    point: str = "clean"

    def seed_for(self, stream: int) -> int:
        """Seed of an independent random stream of this batch (the same at the clean and the adversarial point)."""
        return derive_seed(self.seed, self.batch, stream)

    def at(self, point: str) -> "BatchContext":
        """This batch seen from ``point`` (``"clean"``: as built; ``"adv"``: :meth:`at_adv`)."""
        return self.at_adv() if point == "adv" else self

    def at_adv(self) -> "BatchContext":
        """This batch seen from ``x_adv``: ``x``, ``loss``, ``logits``, ``grad`` are those at the adversarial
        point (the gradient computed once per batch and cached); ``delta`` keeps the attack direction."""
        if self.point == "adv":
            return self
        cached = self.state.setdefault("cache", {})
        if "grad_adv" not in cached:
            cached["grad_adv"] = loss_logits_grad(self.model, self.x_adv, self.y)[2]
        return dataclasses.replace(self, x=self.x_adv, loss=self.loss_adv, logits=self.logits_adv,
                                   grad=cached["grad_adv"], point="adv")


MeasureFn = Callable[[BatchContext], Mapping[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class MeasureSpec:
    """One selectable measure: what it is, and what it needs from the table.

    Attributes:
        name: the name users select (``--measures NAME``).
        columns: the table columns it writes, in order.
        fn: ``BatchContext -> {column: tensor}`` ((B,) per sample or 0-d per batch).
        label: axis label, one string for every column or one per column.
        unit: unit for axis labels, one string or one per column.
        per_batch: the value is one number per batch, repeated on each of its rows.
        undefined_ok: NaN is a documented value (e.g. an undefined ratio), not a numerical failure, so it
            is left out of the ``nonfinite`` count.
        paper: the paper's quantity it corresponds to (shown in docs), or "" for the toolkit's own.
        default: part of the default selection (``measures=None``).
        point: where it is evaluated, ``"clean"`` (x) or ``"adv"`` (x_adv): the table hands ``fn`` the batch
            seen from that point (:meth:`BatchContext.at`); :func:`at_adv` sets it.
        hessian: it takes Hessian-vector products at its point, through the batch's shared operator
            (:func:`landscape.measures._autograd.shared_operator`). The table then reports the method used
            (``df.attrs["hvp_method"]``), and when one such measure is at the clean point it builds that
            operator first and takes the clean loss, logits and gradient from its kept first backward (one
            input gradient saved).
        counters: names of table-wide counts the measure adds to in ``ctx.state`` (e.g. ``eig_unconverged``);
            ``df.attrs`` reports each (0 when nothing was added) when a selected measure declares it, else
            None.
        scope: ``"sample"`` (default): ``fn`` takes a :class:`BatchContext` per batch; ``"model"``: a
            per-model (weight-space) measure, ``fn`` takes a
            :class:`~landscape.measures.weight_space.ProbeContext` and returns 0-d values, computed once per
            table on its first ``weight_probe`` samples and written on every row (``point``, ``hessian``,
            ``per_batch`` and ``counters`` do not apply).
    """

    name: str
    columns: tuple[str, ...]
    fn: MeasureFn
    label: str | tuple[str, ...]
    unit: str | tuple[str, ...]
    per_batch: bool = False
    undefined_ok: bool = False
    paper: str = ""
    default: bool = False
    point: str = "clean"
    hessian: bool = False
    counters: tuple[str, ...] = ()
    scope: str = "sample"

    def __post_init__(self) -> None:
        if not self.name or not self.columns:
            raise ValueError(f"a measure needs a name and at least one column, got {self.name!r}, {self.columns!r}")
        if self.point not in POINTS:
            raise ValueError(f"measure {self.name!r}: point must be one of {POINTS}, got {self.point!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"measure {self.name!r}: scope must be one of {SCOPES}, got {self.scope!r}")
        if isinstance(self.counters, str):
            raise TypeError(f"measure {self.name!r}: counters must be a tuple of names, got {self.counters!r}")
        for field in ("label", "unit"):
            value = getattr(self, field)
            if not isinstance(value, str) and len(value) != len(self.columns):
                raise ValueError(f"measure {self.name!r}: {field} must be one string or one per column "
                                 f"({len(self.columns)}), got {value!r}")

    def _per_column(self, value: str | tuple[str, ...]) -> dict[str, str]:
        values = [value] * len(self.columns) if isinstance(value, str) else list(value)
        return dict(zip(self.columns, values))

    @property
    def labels(self) -> dict[str, str]:
        """``{column: label}``."""
        return self._per_column(self.label)

    @property
    def units(self) -> dict[str, str]:
        """``{column: unit}``."""
        return self._per_column(self.unit)


def at_adv(spec: MeasureSpec, *, default: bool = False) -> MeasureSpec:
    """The same measure evaluated at the adversarial point ``x_adv``: name and columns get ``_at_adv``,
    ``point`` is ``"adv"``, the other needs are ``spec``'s.

    The derived function calls ``spec.fn`` on :meth:`BatchContext.at_adv`, so a measure of the clean point's
    gradient or Hessian becomes the same quantity at ``x_adv`` (directions such as ``delta`` and the random
    streams are unchanged).
    """
    if spec.scope != "sample":
        raise ValueError(f"measure {spec.name!r} describes the model (scope {spec.scope!r}); it has no x_adv variant")

    def fn(ctx: BatchContext) -> dict[str, torch.Tensor]:
        return {f"{k}_at_adv": v for k, v in spec.fn(ctx.at_adv()).items()}

    label = (spec.label + " at x_adv" if isinstance(spec.label, str)
             else tuple(f"{lab} at x_adv" for lab in spec.label))
    paper = f"{spec.paper}, evaluated at x_adv" if spec.paper else ""
    return MeasureSpec(f"{spec.name}_at_adv", tuple(f"{c}_at_adv" for c in spec.columns), fn, label, spec.unit,
                       per_batch=spec.per_batch, undefined_ok=spec.undefined_ok, paper=paper, default=default,
                       point="adv", hessian=spec.hessian, counters=spec.counters)
