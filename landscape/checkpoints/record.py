"""What a checkpoint file holds (``Checkpoint``) and the errors every reader raises (``CheckpointError``,
``WiringError``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._base import LandscapeError

__all__ = ["Checkpoint", "CheckpointError", "WiringError"]


class CheckpointError(LandscapeError):
    """A checkpoint that cannot be read safely or does not fit the model; the message names the file."""


class WiringError(CheckpointError):
    """Checkpoints that must share one wiring (one run) need different ones; the message names them."""


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
            ``"advlc_swa"``, ``"rice"``, ``"module"``, ``"bare"`` or ``"wrapped"``.
        arch: the architecture record ``{"name", "kwargs"}`` the file carries (for a whole model built by
            ``create_model``: the record it carries), else ``None``.
        entry: ``"last"`` or ``"best"`` for a ``{'last', 'best'}`` file (which one was read), else ``None``.
        module: for layout ``"module"`` (a whole pickled ``nn.Module``, read with ``trusted=True``): that object,
            which ``load_model`` returns as itself; else ``None``. ``state_dict`` is its state dict.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    epoch: int | None
    meta: dict[str, Any]
    format: str
    layout: str = "bare"
    arch: dict[str, Any] | None = None
    entry: str | None = None
    module: nn.Module | None = field(default=None, repr=False, compare=False)
