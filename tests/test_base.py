"""landscape._base: mode handling, seeds, devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

from landscape._base import derive_seed, eval_mode, resolve_device, set_mode


def test_set_mode_restores_each_submodule_own_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # a frozen batch norm inside a training model
    with set_mode(model, False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    with eval_mode(model), pytest.raises(RuntimeError):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_derive_seed_matches_seed_sequence_and_separates_streams():
    ref = int(np.random.SeedSequence([3, 1, 4]).generate_state(2, np.uint64)[0] >> np.uint64(1))
    assert derive_seed(3, 1, 4) == ref
    seeds = {derive_seed(0, stream, epoch) for stream in range(5) for epoch in range(100)}
    assert len(seeds) == 500
    assert 0 <= derive_seed(-1, 0) < 2**63 and derive_seed(-1, 0) == derive_seed(2**32 - 1, 0)


def test_resolve_device_names_the_bad_device():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="cuda:99"):
        resolve_device("cuda:99")
