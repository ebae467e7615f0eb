"""Shared by the compatibility tests: once-per-process notes made fresh for each test, and one input batch."""
from __future__ import annotations

import pytest
import torch

from landscape.checkpoints import load as load_module


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    """Each test sees the once-per-process notes as a new process would."""
    monkeypatch.setattr(load_module, "_NOTES_SHOWN", set())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """Two 3×32×32 inputs in [0, 1]."""
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
