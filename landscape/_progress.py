"""Progress bars: tqdm, quiet when stderr is not a terminal (no ``\\r`` clutter in log files).

Every bar of the package comes from :func:`bar` (also importable as ``tqdm``, so a call site reads as it did).
Set ``LANDSCAPE_PROGRESS=1`` to ask for bars when stderr is not a terminal (e.g. under ``tee``).
"""
from __future__ import annotations

import os
import sys

__all__ = ["bar", "tqdm", "wanted"]

#: Environment variable that asks for bars even when stderr is not a terminal.
FORCE_ENV = "LANDSCAPE_PROGRESS"


def wanted(disable: bool = False) -> bool:
    """Whether a bar shows: not ``disable``, and stderr a terminal unless ``LANDSCAPE_PROGRESS=1``."""
    if disable:
        return False
    if os.environ.get(FORCE_ENV, "").strip().lower() in ("1", "true", "yes", "always"):
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def bar(*args, disable: bool = False, **kwargs):
    """``tqdm.auto.tqdm(*args, **kwargs)``, disabled when ``disable`` (e.g. ``not progress``) or when stderr is
    not a terminal (see :func:`wanted`)."""
    from tqdm.auto import tqdm as _tqdm

    return _tqdm(*args, disable=not wanted(disable), **kwargs)


tqdm = bar
