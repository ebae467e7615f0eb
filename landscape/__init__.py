"""landscape: input loss-landscape analysis for diagnosing and combating robust overfitting.

The short public API; everything else lives in its module (``landscape.attacks``, ``landscape.measures``,
``landscape.slices``, ``landscape.trajectory``, ``landscape.plotting``, ...). Every name is imported on first
use (module ``__getattr__``), so ``import landscape`` loads no torch, pandas or matplotlib: the command line
imports this package first and its ``--help`` stays fast (tests/test_cli_startup.py).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:  # the names below, for type checkers and editors
    from ._base import LandscapeError
    from .attacks import fgsm, pgd
    from .checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
    from .datasets import DataError, load_dataset
    from .attribution import attribute
    from .diagnose import diagnose
    from .monitor import Monitor
    from .ranking import rank_measures
    from .measures import MEASURES, measure
    from .models import Normalized, create_model, list_models
    from .regularizers import advlc
    from .report import build_report
    from .slices import slice_1d, slice_2d
    from .trajectory import analyse_trajectory
    from .training import train

#: public name -> the module defining it, imported when the name is first used
_LAZY = {
    "LandscapeError": "landscape._base",
    "fgsm": "landscape.attacks", "pgd": "landscape.attacks",
    "CheckpointError": "landscape.checkpoints", "load_checkpoint": "landscape.checkpoints",
    "load_model": "landscape.checkpoints", "save_checkpoint": "landscape.checkpoints",
    "DataError": "landscape.datasets", "load_dataset": "landscape.datasets",
    "diagnose": "landscape.diagnose", "Monitor": "landscape.monitor", "attribute": "landscape.attribution",
    "rank_measures": "landscape.ranking",
    "MEASURES": "landscape.measures", "measure": "landscape.measures",
    "Normalized": "landscape.models", "create_model": "landscape.models", "list_models": "landscape.models",
    "slice_1d": "landscape.slices", "slice_2d": "landscape.slices",
    "analyse_trajectory": "landscape.trajectory",
    "train": "landscape.training", "build_report": "landscape.report", "advlc": "landscape.regularizers",
}

__all__ = [
    "LandscapeError", "CheckpointError", "DataError", "MEASURES", "Monitor", "Normalized", "__version__",
    "advlc", "analyse_trajectory", "attribute", "build_report", "create_model", "diagnose", "fgsm", "list_models",
    "load_checkpoint", "load_dataset", "load_model", "measure", "pgd", "rank_measures", "save_checkpoint", "slice_1d",
    "slice_2d", "train",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # next time a plain attribute
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, as when the root imported them all
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing a submodule binds it on its package under its own name; where that name is also a public
    function (``landscape.diagnose``, the function of the module ``landscape.diagnose``), the function keeps
    the name, as it did when this package imported everything up front."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
