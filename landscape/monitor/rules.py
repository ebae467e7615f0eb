"""Online early-warning rules: from the probe's per-epoch curve seen so far, is robust overfitting under way?

A rule is a frozen dataclass with ``check(curve) -> OverfitEvent | None``, where ``curve`` holds one row per
monitored epoch so far (sorted, the probe's test split: ``epoch, acc_adv, loss_adv, acc_clean, loss_clean`` and
the measure summaries ``<m>_mean``/``<m>_median``, as in ``trajectory.parquet``). A rule sees nothing after the
current epoch, so replaying it on a finished run's monitor table (:func:`replay`) gives exactly the decisions the
live monitor took. The rules and their defaults are chosen and evaluated in ``docs/monitor.md``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..diagnose import best_index

__all__ = ["DEFAULT_RULE", "LandscapeRule", "OverfitEvent", "PatienceRule", "Rule", "replay", "smooth"]


@dataclasses.dataclass(frozen=True)
class OverfitEvent:
    """The early warning: robust overfitting has begun.

    Attributes:
        epoch: the epoch at which the warning fired.
        best_epoch: the rule's estimate of the best epoch so far (the checkpoint to keep).
        best_acc_adv: the probe's robust accuracy at ``best_epoch`` (fraction).
        rule: the rule's name and parameters.
        reason: one line saying what fired.
        signals: the values the rule looked at, at ``epoch``.
        checkpoint: the kept best checkpoint (``keep_best=True``), else None.
    """

    epoch: int
    best_epoch: int
    best_acc_adv: float
    rule: str
    reason: str
    signals: dict = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Rule(Protocol):
    def check(self, curve: pd.DataFrame) -> OverfitEvent | None: ...


def smooth(values, window: int) -> np.ndarray:
    """Trailing (causal) median over the last ``window`` finite values at each index (NaN until one is seen)."""
    v = np.asarray(values, dtype=float)
    out = np.full(v.shape, np.nan)
    finite = [x if math.isfinite(x) else None for x in v.tolist()]
    for i in range(len(finite)):  # plain Python on <= window floats: np.median's per-call cost dominated here
        part = sorted(x for x in finite[max(0, i - window + 1):i + 1] if x is not None)
        m = len(part)
        if m:  # np.median's value exactly: the middle one, or the mean of the two middle ones ((a + b) / 2)
            out[i] = part[m // 2] if m % 2 else (part[m // 2 - 1] + part[m // 2]) / 2
    return out


def _latest_best(acc: np.ndarray) -> int:
    """:func:`landscape.diagnose.best_index` (the official rule), 0 when no value is finite yet."""
    return best_index(acc) if np.isfinite(acc).any() else 0


def _col(curve: pd.DataFrame, name: str) -> np.ndarray:
    return curve[name].to_numpy(dtype=float) if name in curve.columns else np.full(len(curve), np.nan)


def _rule_name(rule) -> str:
    fields = ", ".join(f"{f.name}={getattr(rule, f.name)!r}" for f in dataclasses.fields(rule))
    return f"{type(rule).__name__}({fields})"


@dataclasses.dataclass(frozen=True)
class PatienceRule:
    """The plain rule: warn when the probe's robust accuracy has not improved for ``patience`` epochs.

    The best epoch is the probe's (official rule: highest, latest on ties). ``patience`` counts monitored
    epochs (rows), so with ``every=k`` it spans ``k·patience`` training epochs.
    """

    patience: int = 10

    def __post_init__(self):
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {self.patience!r}")

    def check(self, curve: pd.DataFrame) -> OverfitEvent | None:
        acc = _col(curve, "acc_adv")
        if len(acc) == 0:
            return None
        best = _latest_best(acc)
        if len(acc) - 1 - best < self.patience:
            return None
        epochs = curve["epoch"].to_numpy()
        return OverfitEvent(int(epochs[-1]), int(epochs[best]), float(acc[best]), _rule_name(self),
                            f"probe robust accuracy not improved for {self.patience} monitored epochs",
                            {"acc_adv": float(acc[-1])})

    def first(self, curve: pd.DataFrame) -> OverfitEvent | None:
        """The first warning on a whole (sorted) curve, in one pass (see :func:`replay`)."""
        acc = _col(curve, "acc_adv")
        best, best_v = 0, -np.inf
        for t in range(len(acc)):
            if np.isfinite(acc[t]) and acc[t] >= best_v:
                best, best_v = t, acc[t]
            if t - best >= self.patience:
                return self.check(curve.iloc[:t + 1])
        return None


@dataclasses.dataclass(frozen=True)
class LandscapeRule:
    """Warn when the smoothed probe robust loss has risen from its minimum and the landscape agrees.

    At each monitored epoch t (``window``-epoch trailing medians of every signal):

    1. ``loss_adv`` (probe test robust loss) lies at least ``rise`` nats above its running minimum, reached at
       least ``hold`` monitored epochs ago;
    2. the landscape confirms (``confirm``): the adversarial curvature (``curv_adv_mean``) has grown by at least
       the factor ``curv_growth`` since that minimum, or (when ``fo_drop`` is not None) the first-order share
       (``fo_share_median``) has fallen by at least ``fo_drop``; ``confirm=False`` skips this step (the loss
       alone).

    The defaults were chosen by :func:`landscape.study.monitor.tune_rule` on the demo runs of seeds 0–2 (probe
    of 128 held-out samples, ``every=1``) and then frozen; seeds 3–5 score them (``docs/monitor.md``). The
    first-order share added nothing there, so it is off by default. ``window``, ``hold`` and ``min_epochs``
    count monitored epochs: with ``every=k`` they span k times as many training epochs (not evaluated).

    The best epoch estimate is the official rule (highest, latest on ties) on the probe's robust accuracy up to
    the current epoch: the checkpoint ``Monitor(keep_best=True)`` holds.
    """

    window: int = 5
    rise: float = 0.12
    hold: int = 5
    confirm: bool = True
    curv_growth: float = 1.3
    fo_drop: float | None = None
    min_epochs: int = 5

    def __post_init__(self):
        for name in ("window", "hold", "min_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("rise", "curv_growth", "fo_drop"):
            v = getattr(self, name)
            if v is None and name == "fo_drop":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0{' or None' if name == 'fo_drop' else ''}, "
                                 f"got {v!r}")

    def check(self, curve: pd.DataFrame) -> OverfitEvent | None:
        n = len(curve)
        if n < self.min_epochs:
            return None
        loss = smooth(_col(curve, "loss_adv"), self.window)
        if not np.isfinite(loss).any():
            return None
        low = int(np.nanargmin(loss))
        if n - 1 - low < self.hold or not loss[-1] - loss[low] >= self.rise:
            return None
        signals = {"loss_adv": float(loss[-1]), "loss_adv_min": float(loss[low])}
        reason = f"probe robust loss {loss[-1]:.3f} > its minimum {loss[low]:.3f} + {self.rise}"
        if self.confirm:
            curv = smooth(_col(curve, "curv_adv_mean"), self.window)
            fo = smooth(_col(curve, "fo_share_median"), self.window)
            grew = curv[-1] >= self.curv_growth * curv[low] if np.isfinite(curv[[low, -1]]).all() else False
            fell = self.fo_drop is not None and bool(np.isfinite(fo[[low, -1]]).all()) and \
                fo[-1] <= fo[low] - self.fo_drop
            signals.update(curv_adv=float(curv[-1]), curv_adv_at_min=float(curv[low]), fo_share=float(fo[-1]),
                           fo_share_at_min=float(fo[low]))
            if not (grew or fell):
                return None
            reason += "; " + " and ".join(t for t, ok in (("curvature rose", grew),
                                                          ("first-order share fell", fell)) if ok)
        acc = _col(curve, "acc_adv")
        best = _latest_best(acc)
        epochs = curve["epoch"].to_numpy()
        return OverfitEvent(int(epochs[-1]), int(epochs[best]), float(acc[best]), _rule_name(self), reason,
                            signals)


    def first(self, curve: pd.DataFrame) -> OverfitEvent | None:
        """The first warning on a whole (sorted) curve: :func:`replay` in one pass (every signal is causal, so a
        prefix's smoothed values are the whole curve's)."""
        n = len(curve)
        loss = smooth(_col(curve, "loss_adv"), self.window)
        curv = smooth(_col(curve, "curv_adv_mean"), self.window) if self.confirm else None
        fo = smooth(_col(curve, "fo_share_median"), self.window) if self.confirm else None
        low, low_v = -1, np.inf
        for t in range(n):
            if np.isfinite(loss[t]) and loss[t] < low_v:
                low, low_v = t, loss[t]
            if t + 1 < self.min_epochs or low < 0 or t - low < self.hold or not loss[t] - low_v >= self.rise:
                continue
            if self.confirm:
                grew = np.isfinite(curv[[low, t]]).all() and curv[t] >= self.curv_growth * curv[low]
                fell = self.fo_drop is not None and np.isfinite(fo[[low, t]]).all() and \
                    fo[t] <= fo[low] - self.fo_drop
                if not (grew or fell):
                    continue
            return self.check(curve.iloc[:t + 1])
        return None


DEFAULT_RULE = LandscapeRule()


def replay(curve: pd.DataFrame, rule: Rule) -> OverfitEvent | None:
    """The first warning ``rule`` gives on a finished curve, checked epoch by epoch as the monitor does (a rule's
    one-pass ``first(curve)`` when it has one: the same answer, faster)."""
    curve = curve.sort_values("epoch").reset_index(drop=True)
    if callable(getattr(rule, "first", None)):
        return rule.first(curve)
    for i in range(1, len(curve) + 1):
        event = rule.check(curve.iloc[:i])
        if event is not None:
            return event
    return None
