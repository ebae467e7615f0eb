"""Leave a training run exactly as it was: every RNG, the model's modes, its buffers and its ``.grad``.

(The parameters' values need no copy: :func:`landscape.measures.measure` never changes them.)

:func:`isolated` wraps whatever the monitor does between two training steps. On exit it puts back the torch CPU
RNG, every CUDA device's RNG (when CUDA is initialised), numpy's and python's global RNGs, each submodule's
train/eval flag, every buffer (BN running statistics, ``num_batches_tracked``) bit for bit, and each parameter's
``.grad`` (the very tensor object the caller had, or None), so that training with a monitor is bit-identical to
training without it.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["isolated", "rng_state", "set_rng_state"]


def rng_state() -> dict:
    """The global RNG states this process's training may draw from: torch CPU, torch CUDA (every device, when
    CUDA is initialised), numpy and python ``random``."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "cuda": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` and the global RNGs restored afterwards, whatever happens inside.

    Restored: the RNGs of :func:`rng_state`, each submodule's ``training`` flag, every buffer's values (copied
    back in place, so tensors the optimizer or the caller hold stay the same objects), every parameter's values
    and ``requires_grad`` flag, and every parameter's ``.grad`` (the same tensor object, or None).
    """
    rng = rng_state()
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    with torch.no_grad():
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                if not torch.equal(b, saved):
                    b.copy_(saved)
        for p, g, flag in zip(params, grads, flags):
            p.grad = g
            p.requires_grad_(flag)
        for m, was_training in modes:
            m.training = was_training
        set_rng_state(rng)
