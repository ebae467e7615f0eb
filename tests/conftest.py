"""Shared test fixtures. Tests run on one torch thread: the CI machine has two cores shared by everyone."""
from __future__ import annotations

import pytest
import torch

from landscape.models import create_model

torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """A seeded MLP, (B, 1, 8, 8) -> (B, 10), 16 softplus hidden units, in eval mode.

    Smooth, so input curvature is non-zero; the global RNG is left untouched.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mlp", input_shape=(1, 8, 8), hidden=(16,), activation="softplus")
    return model.eval()
