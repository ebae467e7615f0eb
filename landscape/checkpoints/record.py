"""What a checkpoint file holds (``Checkpoint``) and the error every reader raises (``CheckpointError``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._base import LandscapeError

__all__ = ["Checkpoint", "CheckpointError"]


class CheckpointError(LandscapeError):
    """A checkpoint that cannot be read safely or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds.

    Attributes:
        path: the file.
        state_dict: ``{name: Tensor}`` on CPU, unwrapped and with ``module.``/``_orig_mod.`` stripped.
        epoch: the ``epoch`` entry (or safetensors metadata), ``None`` when absent.
        meta: the other scalar entries (``best_acc1``, ``best_pgd``, ...), as Python numbers/strings.
        format: ``"torch"`` (zip), ``"torch-legacy"``, ``"safetensors"`` or ``"torchscript"``.
        layout: which training code's layout the file has (``keys.layout_of``): ``"landscape"``, ``"advlc"``,
            ``"rice"``, ``"module"``, ``"bare"`` or ``"wrapped"``.
        arch: the architecture record ``{"name", "kwargs"}`` the file carries, else ``None``.
        entry: ``"last"`` or ``"best"`` for a ``{'last', 'best'}`` file (which one was read), else ``None``.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    epoch: int | None
    meta: dict[str, Any]
    format: str
    layout: str = "bare"
    arch: dict[str, Any] | None = None
    entry: str | None = None
