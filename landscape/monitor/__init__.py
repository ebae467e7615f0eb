"""Training-time monitor and online early warning of robust overfitting (``docs/monitor.md``).

:class:`Monitor` measures a probe set between epochs, writes a live run folder that ``landscape diagnose`` and
``landscape report`` read, and warns when robust overfitting begins (:mod:`landscape.monitor.rules`), without
changing training by a single bit (:mod:`landscape.monitor.isolation`).
"""
from __future__ import annotations

from .core import DEFAULT_MEASURES, DEFAULT_PROBE_N, Monitor, StopTraining
from .rules import DEFAULT_RULE, LandscapeRule, OverfitEvent, PatienceRule, replay

__all__ = [
           "DEFAULT_MEASURES",
           "DEFAULT_PROBE_N",
           "DEFAULT_RULE",
           "LandscapeRule",
           "Monitor",
           "OverfitEvent",
           "PatienceRule",
           "StopTraining",
           "replay",
]
