"""Training-time data augmentation on tensors: random crop with zero padding and horizontal flip.

The official CIFAR-10 protocol of AT/AdvLC (torchvision ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``) on (B, C, H, W) batches in [0,1], drawn from an explicit ``torch.Generator``
so training stays reproducible and resumable. Modes:

* ``"none"``      — the batch unchanged;
* ``"crop_flip"`` — shift by up to ``pad`` pixels (zero fill) and flip left-right with probability 1/2:
  the official CIFAR augmentation with ``pad=4``;
* ``"crop"``      — the shift only: the equivalent for digits, whose left-right mirror images are not
  digits of the same class (``pad=1`` on 8×8 digits, i.e. 4 pixels of 32 scaled to 8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "augment", "check_augmentation"]

AUGMENTATIONS = ("none", "crop", "crop_flip")


def check_augmentation(mode: str, pad: int) -> None:
    """ValueError/TypeError naming a bad ``mode`` or ``pad``."""
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r} (allowed: {', '.join(AUGMENTATIONS)})")
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise TypeError(f"crop padding must be an int, got {type(pad).__name__}")
    if pad < 0:
        raise ValueError(f"crop padding must be >= 0, got {pad}")


def augment(x: torch.Tensor, mode: str = "crop_flip", *, pad: int = 4,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly shifted (and flipped) copy of a batch.

    Args:
        x: (B, C, H, W) images.
        mode: ``"none"``, ``"crop"`` or ``"crop_flip"`` (see the module docstring). Default ``"crop_flip"``.
        pad: zero padding on each side before the random H×W crop, i.e. the largest shift. Default 4.
        generator: source of the crop offsets (uniform in 0..2·pad per sample and axis) and of the flips
            (probability 1/2 per sample); on x's device or the CPU.

    Returns:
        (B, C, H, W) tensor of x's dtype; ``out[i] = flip?(pad(x[i])[:, oy:oy+H, ox:ox+W])``.
    """
    check_augmentation(mode, pad)
    if x.dim() != 4:
        raise ValueError(f"augmentation needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    if mode == "none":
        return x
    b, _, h, w = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=gen_device).to(x.device)
    flips = torch.rand(b, generator=generator, device=gen_device).to(x.device) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    if mode == "crop_flip":
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out
