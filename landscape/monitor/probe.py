"""The monitor's per-step hot path: the probe's measure columns and the trajectory file, without per-call setup.

:func:`landscape.measures.measure` validates its arguments, checks the inputs, resolves a working model and
builds a pandas table on every call: about 6 ms on the demo's probe, a fixed cost per monitor step as large as
the compute of a small probe. The probe, the model's dtype/device and the settings do not change between steps,
so :func:`measure_columns` runs the very same per-batch computation as ``measure`` (:func:`landscape.measures.table.measure_batch`:
the same batches, seeds, eval mode and frozen parameters, hence the same numbers bit for bit, see
``tests/test_monitor.py``) and returns the columns as numpy arrays; the probe is checked once, when it is put on
the model's device (:func:`checked_probe`). Per-model measures (``scope="model"``, the ``w_*``) and the
per-sample table (``samples=True``) still go through ``measure`` itself.

:func:`arrow_table` builds the trajectory file's Arrow table straight from the columns, with the schema (pandas
metadata included) that ``pyarrow.Table.from_pandas`` gives the same table, computed once per column-type
combination instead of converting a DataFrame on every step.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._base import check_model_batch, eval_mode, frozen_params
from ..attacks import AttackSettings
from ..measures.registry import counters, select
from ..measures.settings import MeasureSettings
from ..measures.table import BOOL_COLUMNS, measure_batch, columns

__all__ = ["arrow_table", "checked_probe", "fast_path", "measure_columns"]

_DEFAULTS = MeasureSettings()


def fast_path(measures: Sequence[str]) -> bool:
    """True when every measure is per-sample or per-batch (the per-model ``w_*`` need ``measure`` itself)."""
    return all(s.scope != "model" for s in select(list(measures)))


def checked_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe on ``device``, checked and cast as ``measure`` checks it on each call (in [0, 1], labels)."""
    return check_model_batch(model, x.to(device), y.to(device), unit_box=True)


def measure_columns(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: AttackSettings,
                    measures: Sequence[str], batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """``{column: values}`` of ``measure(model, x, y, settings=..., measures=..., batch_size=..., seed=...)``
    (the same columns, dtypes and numbers) for a probe from :func:`checked_probe`."""
    specs = select(list(measures))
    state: dict = {"hvp_method": _DEFAULTS.hvp_method, **{c: 0 for c in counters(specs)}}
    parts: list[dict[str, np.ndarray]] = []
    with eval_mode(model), frozen_params(model):
        for batch, start in enumerate(range(0, x.shape[0], batch_size)):
            xb, yb = x[start:start + batch_size].contiguous(), y[start:start + batch_size]
            cols, _ = measure_batch(model, xb, yb, batch=batch, specs=specs, settings=settings, seed=seed,
                                     eig_iters=_DEFAULTS.eig_iters, state=state)
            parts.append({k: v.detach().cpu().numpy() for k, v in cols.items()})
    names = columns([s.name for s in specs])
    out: dict[str, np.ndarray] = {"sample": np.arange(x.shape[0], dtype=np.int64)}
    for c in names[1:]:
        v = np.concatenate([p[c] for p in parts]) if len(parts) > 1 else parts[0][c]
        out[c] = v.astype(np.int64) if c == "label" else v if c in BOOL_COLUMNS else v.astype(np.float64)
    return out


_SCHEMAS: dict[tuple, Any] = {}


def arrow_table(data: Mapping[str, Any]):
    """The Arrow table that ``pa.Table.from_pandas(pd.DataFrame(data), preserve_index=False)`` gives (``data``:
    numpy arrays and object ``pd.array`` values of equal length, as :meth:`Monitor._columns` builds them)."""
    import pyarrow as pa

    arrays = [pa.array(np.asarray(v), from_pandas=True) for v in data.values()]
    key = (tuple(data), tuple(a.type for a in arrays))
    schema = _SCHEMAS.get(key)
    if schema is None:
        schema = _SCHEMAS[key] = pa.Schema.from_pandas(pd.DataFrame(dict(data)), preserve_index=False)
    # pandas may type the text columns large_string where pa.array infers string: cast to the schema's types
    arrays = [a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)
