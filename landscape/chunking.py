"""Memory planning for batched forward passes over many perturbed inputs (the slices' grid points): bytes
per point from one probed forward pass, the chunk size under a memory budget, and rectangular index blocks."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn as nn

from ._base import eval_mode

__all__ = ["blocks", "bytes_per_point", "chunk_size", "default_max_batch", "default_max_bytes"]

#: Memory budget when ``max_bytes=None`` on CPU (and other non-CUDA devices): 2 GiB.
CPU_MAX_BYTES = 2 * 1024**3
#: Points per forward pass at most when ``max_batch=None``, on CPU and on CUDA devices.
CPU_MAX_BATCH = 4096
CUDA_MAX_BATCH = 65536
#: Copies of one input held per point while a chunk is built (the chunk, an index-selected direction,
#: the scaled direction, slack).
INPUT_COPIES = 4
#: Safety factor on the summed output sizes of the model's leaf modules (covers functional ops such as
#: ``F.relu`` inside ``forward`` that hooks do not see).
ACTIVATION_FACTOR = 2


# --------------------------------------------------------------------------------------------------------
# memory budget


def _tensor_bytes(out) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(_tensor_bytes(o) for o in out)
    if isinstance(out, dict):
        return sum(_tensor_bytes(o) for o in out.values())
    return 0


def _probe(model: nn.Module, x1: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Forward one input (1, ...) with hooks on the leaf modules: (summed output bytes, logits)."""
    total = [0]

    def hook(_module, _inputs, output):
        total[0] += _tensor_bytes(output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            logits = model(x1)
    finally:
        for h in handles:
            h.remove()
    return total[0], logits


def bytes_per_point(model: nn.Module, x: torch.Tensor) -> int:
    """Conservative memory estimate for evaluating one grid point of inputs shaped like ``x[0]``.

    ``INPUT_COPIES × input bytes + ACTIVATION_FACTOR × (summed output bytes of the leaf modules, probed
    with one forward pass) + logits``. The sum over all layers bounds what inference mode keeps alive at once.

    Args:
        model: the classifier (probed in eval mode, its mode restored).
        x: (B, ...) batch; only ``x[:1]`` is used.
    """
    with eval_mode(model):
        acts, logits = _probe(model, x[:1])
    return INPUT_COPIES * x[0].numel() * x.element_size() + ACTIVATION_FACTOR * acts + _tensor_bytes(logits)


def default_max_bytes(device: torch.device | str) -> int:
    """Memory budget used when ``max_bytes=None``: half the free memory on CUDA, ``CPU_MAX_BYTES`` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return CPU_MAX_BYTES


def default_max_batch(device: torch.device | str) -> int:
    """Cap on points per forward pass when ``max_batch=None``: ``CUDA_MAX_BATCH`` on CUDA (large batches keep
    a GPU busy with small models), ``CPU_MAX_BATCH`` elsewhere (larger CPU batches gain nothing)."""
    return CUDA_MAX_BATCH if torch.device(device).type == "cuda" else CPU_MAX_BATCH


def chunk_size(n_points: int, point_bytes: int, *, max_batch: int | None = None, max_bytes: int | None = None,
               device: torch.device | str = "cpu") -> int:
    """Grid points evaluated per forward pass: ``min(n_points, max_batch, max_bytes // point_bytes)``, >= 1.

    ``max_batch=None`` and ``max_bytes=None`` take ``default_max_batch(device)`` and
    ``default_max_bytes(device)``.
    """
    cap = default_max_batch(device) if max_batch is None else max_batch
    budget = default_max_bytes(device) if max_bytes is None else max_bytes
    return max(1, min(int(n_points), int(cap), int(budget // max(1, point_bytes))))


# --------------------------------------------------------------------------------------------------------
# grid evaluation


def blocks(dims: Sequence[int], chunk: int) -> list[tuple[slice, ...]]:
    """Split the index box ``dims`` = (B, n_1, ..., n_k) into rectangular blocks of at most ``chunk`` points.

    A block holds whole trailing sub-grids: with ``T_j = n_j⋯n_k`` the first ``T_j <= chunk``, each block is
    ``m`` consecutive entries of dimension ``j - 1`` (one index of every dimension before it) and all of the
    dimensions after it, with ``m`` balanced so that the blocks are of near-equal size. In row-major order
    every block is a contiguous range of the flattened grid, and the blocks come in that order.

    Args:
        dims: sizes of the dimensions, each >= 1 (samples first).
        chunk: most points per block, >= 1.

    Returns:
        One tuple of ``len(dims)`` slices per block.
    """
    dims = [int(d) for d in dims]
    tails = [math.prod(dims[j:]) for j in range(len(dims) + 1)]
    level = next(j for j in range(1, len(dims) + 1) if tails[j] <= chunk)
    size = dims[level - 1]
    m = max(1, min(size, chunk // tails[level]))
    m = -(-size // -(-size // m))  # balance: ceil(size / number of blocks)
    out = []
    for prefix in itertools.product(*(range(d) for d in dims[:level - 1])):
        head = tuple(slice(i, i + 1) for i in prefix)
        for start in range(0, size, m):
            out.append(head + (slice(start, min(start + m, size)),) + (slice(None),) * (len(dims) - level))
    return out
