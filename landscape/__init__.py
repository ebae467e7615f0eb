"""landscape: input loss-landscape analysis for diagnosing and combating robust overfitting.

The short public API; everything else lives in its module (``landscape.attacks``, ``landscape.measures``,
``landscape.slices``, ``landscape.trajectory``, ``landscape.plotting``, ...). Plotting, report and training
are imported on first use, so ``import landscape`` stays as light as torch.
"""
from __future__ import annotations

import importlib

from ._base import LandscapeError
from .attacks import fgsm, pgd
from .checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .datasets import DataError, load_dataset
from .diagnose import diagnose
from .measures import MEASURES, measure
from .models import Normalized, create_model, list_models
from .slices import slice_1d, slice_2d
from .trajectory import analyse_trajectory
from ._version import __version__

_LAZY = {"train": "landscape.training", "build_report": "landscape.report", "advlc": "landscape.regularizers"}

__all__ = [
    "LandscapeError", "CheckpointError", "DataError", "MEASURES", "Normalized", "__version__",
    "advlc", "analyse_trajectory", "build_report", "create_model", "diagnose", "fgsm", "list_models",
    "load_checkpoint", "load_dataset", "load_model", "measure", "pgd", "save_checkpoint", "slice_1d",
    "slice_2d", "train",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
