"""The tiny shared base of every measure: input validation, eval mode, per-sample loss."""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class LandscapeError(Exception):
    """A user-facing error (bad file, bad input); the CLI prints it on one line and exits 2."""


@contextlib.contextmanager
def set_mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in train (True) or eval (False) mode; restore each one's own mode
    on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``set_mode(model, False)``: eval mode inside, each submodule's own mode restored on exit."""
    return set_mode(model, False)


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. ``(seed, stream, epoch)`` (numpy ``SeedSequence``); each
    part is taken modulo 2**32, so negative seeds work too. Distinct streams never share a seed."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


@contextlib.contextmanager
def frozen_params(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on the parameters so input derivatives leave no ``.grad`` behind."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer (CPU for parameter-free models)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check it exists here: a ValueError, not a CUDA assertion deep inside ``.to()``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"invalid device {device!r} (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA GPU is available here (use 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here (use 'cpu')")
    return dev


def model_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        return t.dtype
    return torch.get_default_dtype()


def check_batch(x: torch.Tensor, y: torch.Tensor | None = None, *, name: str = "x",
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a batch at the public boundary and return it as floating point.

    Args:
        x: (B, ...) inputs in [0,1]; float16/32/64 kept, uint8 scaled by 1/255, other dtypes refused.
        y: optional (B,) integer labels.
        dtype: cast floating ``x`` to this dtype (e.g. the model's).

    Raises:
        TypeError: x is not a tensor or has an unsupported dtype; y not integer.
        ValueError: empty batch, NaN/Inf values, batch sizes that disagree, labels negative.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:  # scale in the target dtype, so float64 models see exact k/255 pixels
        x = x.to(dtype if dtype is not None and dtype.is_floating_point else torch.float32) / 255.0
    elif not x.is_floating_point():
        raise TypeError(f"{name} must be floating point or uint8, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of shape (B, ...), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf values")
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if y is not None:
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"labels y must be an integer tensor, got {y.dtype}")
        y = y.long().reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{name} has {x.shape[0]} samples but y has {y.shape[0]} labels")
        if (y < 0).any():
            raise ValueError("labels y must be non-negative class indices")
    return x, y


def check_model_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *,
                      unit_box: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``check_batch`` for a model's labelled input: x cast to the model's dtype, y (B,) on x's device.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``y`` is missing.
        ValueError: as ``check_batch``; with ``unit_box``, values outside [0,1] pixel space.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = check_batch(x, y, dtype=model_dtype(model))
    if y is None:
        raise TypeError("labels y are required")
    if unit_box:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"x must lie in [0,1] pixel space, got values in [{lo:.4g}, {hi:.4g}]")
    return x, y.to(x.device)


def check_labels_fit(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError when a label is out of range for the model's number of classes."""
    if int(y.max()) >= logits.shape[-1]:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {logits.shape[-1]} classes")


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample: (B, K) logits, (B,) labels -> (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


@contextlib.contextmanager
def isolated_rng(device: torch.device | str = "cpu"):
    """Run a block with the global torch RNG (CPU, and ``device``'s when it is CUDA) saved and restored after."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def correct_predictions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: argmax == label, and False where a logit is NaN (torch's argmax would pick the NaN)."""
    return (logits.argmax(1) == y) & ~torch.isnan(logits).any(1)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the largest other logit: (B, K), (B,) -> (B,); > 0 means correct."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.max(dim=1).values
