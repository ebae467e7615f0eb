"""Writing checkpoints: the AdvLC repo's dict plus an architecture record, atomically; or safetensors."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .._io import atomic_write
from ..models import ARCH_ATTR, Normalized
from .formats import as_path
from .keys import ARCH_KEY, OFFICIAL_KEYS, scalar

__all__ = ["save_checkpoint"]


def _plain(value: Any, where: str) -> Any:
    """``value`` as data that ``torch.load(weights_only=True)`` accepts, or TypeError naming ``where``."""
    if isinstance(value, torch.optim.Optimizer):
        return _plain(value.state_dict(), where)
    if isinstance(value, nn.Module):
        raise TypeError(f"{where}: pass model.state_dict(), not a module")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where} has type {type(value).__name__}; checkpoints hold tensors, numbers, strings, "
                    f"lists and dicts only (so that they load without trusting the file)")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, epoch: int,
                    arch: str | Mapping[str, Any] | None = None, **extra) -> Path:
    """Write the official AdvLC checkpoint dict atomically (temporary file + rename), with an architecture record.

    The file holds ``{'epoch', 'state_dict', 'best_acc1', 'best_pgd', 'best_fgsm', 'optimizer'}`` (``best_*`` and
    ``optimizer`` are ``None`` unless given in ``extra``), ``'arch': {'name', 'kwargs'}`` (so that loading builds
    the same wiring; the AdvLC repo's own loader ignores it) and any other ``extra`` entries. ``state_dict`` is the
    model's own, moved to CPU (a ``Normalized`` model keeps its ``model.*``, ``mean`` and ``std`` keys). With a
    ``.safetensors`` suffix the weights go to a safetensors file and scalar extras to its metadata.

    Args:
        path: destination; parent folders are created.
        model: the network.
        epoch: non-negative epoch number.
        arch: the architecture record: a registered name / spec, or ``{"name", "kwargs"}``. Default: what
            ``create_model`` recorded on ``model`` (or on ``model.model`` for a ``Normalized`` model); none for
            other models.
        **extra: ``optimizer`` (an optimizer or its state dict), ``best_acc1``, ``best_pgd``, ``best_fgsm`` and any
            other tensors/numbers/strings/lists/dicts.

    Returns:
        The path written.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``epoch`` not an int, an extra of an unsupported type.
        ValueError: negative epoch; non-scalar extras for ``.safetensors``.
    """
    path = as_path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"epoch must be an int, got {epoch!r}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    record = _arch_record(model, arch)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        if record is not None:
            extra[ARCH_KEY] = json.dumps(record)
        writer = _safetensors_writer(state_dict, int(epoch), extra)
    else:
        obj = {"epoch": int(epoch), "state_dict": state_dict}
        for key in OFFICIAL_KEYS[2:]:
            obj[key] = _plain(extra.pop(key, None), key)
        if record is not None:
            obj[ARCH_KEY] = _plain(record, ARCH_KEY)
        for key, value in extra.items():
            obj[key] = _plain(value, key)
        writer = lambda f: torch.save(obj, f)  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _write_file(tmp, writer), fsync=True)
    return path


def _arch_record(model: nn.Module, arch: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"name", "kwargs"}`` from ``arch`` or from the record ``create_model`` left on the model."""
    if arch is None:
        inner = model.model if isinstance(model, Normalized) else model
        arch = getattr(inner, ARCH_ATTR, None)
        if arch is None:
            return None
    if isinstance(arch, str):
        arch = {"name": arch, "kwargs": {}}
    if not isinstance(arch, Mapping) or not isinstance(arch.get("name"), str):
        raise TypeError(f"arch must be a name or {{'name': str, 'kwargs': dict}}, got {arch!r}")
    kwargs = {str(k): list(v) if isinstance(v, tuple) else v for k, v in dict(arch.get("kwargs") or {}).items()}
    try:
        json.dumps(kwargs)
    except TypeError:
        raise TypeError(f"arch kwargs must be plain numbers, strings, lists and dicts, got {kwargs!r}") from None
    return {"name": arch["name"], "kwargs": kwargs}


def _safetensors_writer(state_dict: dict[str, torch.Tensor], epoch: int, extra: dict):
    from safetensors.torch import save

    metadata = {"epoch": str(epoch), "format": "pt"}
    for key, value in extra.items():
        if value is None:
            continue
        plain = scalar(value)
        if plain is None:
            raise ValueError(f"{key}: only scalar extras fit in safetensors metadata (got {type(value).__name__}); "
                             f"save to a .pt file to keep optimizer state")
        metadata[key] = str(plain)
    tensors = {k: v.contiguous().clone() for k, v in state_dict.items()}  # no shared storage
    return lambda f: f.write(save(tensors, metadata=metadata))


def _write_file(path: Path, writer) -> None:
    with open(path, "wb") as f:
        writer(f)
