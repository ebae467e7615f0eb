"""What decides a file's wiring (layout, architecture record, key names and shapes), read without its weights.

A run folder can hold hundreds of checkpoints of 50-100 MB each; deciding the run's wiring needs only each file's
structure. ``read_header`` reads the pickle of a ``torch.save`` file (``data.pkl`` of a zip archive, the object
pickle of a legacy file) with every global inert (nothing is imported or run, as in ``safe_pickle.scan_pickle``)
except the few that rebuild containers and tensors, and tensors become their shapes: no storage is read. A
safetensors file gives the same from its JSON header. TorchScript archives are read in full (``load_checkpoint``).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import ARCH_ATTR
from .formats import (
    _LEGACY_MAGIC,
    _check_zip,
    _zip_layout,
    as_path,
    check_file,
    one_line,
    safetensors_header,
    sniff,
)
from .keys import (
    ARCH_KEY,
    arch_record,
    find_module,
    layout_of,
    read_epoch,
    select_entry,
    strip_prefixes,
    unwrap_state_dict,
)
from .record import CheckpointError
from .safe_pickle import (
    BoundedReader,
    Inert,
    Scan,
    ScanUnpickler,
    qualname,
    scan_pickle,
)

__all__ = ["Header", "read_header"]


@dataclass(frozen=True)
class Header:
    """A checkpoint file's structure.

    Attributes:
        path: the file.
        layout: as ``Checkpoint.layout`` (``keys.layout_of``).
        arch: the architecture record the file carries, else None.
        shapes: ``{key: shape}`` of the weights (unwrapped, prefixes stripped); empty for a whole pickled model.
        epoch: the stored epoch, else None.
        module_class: for layout ``"module"``: the pickled model's class (``package.module.Class``), else None.
    """

    path: Path
    layout: str
    arch: dict[str, Any] | None
    shapes: dict[str, tuple[int, ...]] = field(repr=False)
    epoch: int | None = None
    module_class: str | None = None


class _Shape(tuple):
    """A tensor's shape standing for the tensor (``.shape`` like a tensor's)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self)


def _rebuild_tensor(storage, storage_offset, size, *args):
    if not isinstance(size, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in size):
        raise pickle.UnpicklingError("tensor with a non-integer size")
    return _Shape(size)


def _rebuild_parameter(data, *args):
    return data


class _HeaderUnpickler(ScanUnpickler):
    """``ScanUnpickler`` that keeps dictionaries and turns tensors into their shapes."""

    _REAL = {"collections.OrderedDict": collections.OrderedDict,
             "torch._utils._rebuild_tensor_v2": _rebuild_tensor, "torch._utils._rebuild_tensor": _rebuild_tensor,
             "torch._utils._rebuild_parameter": _rebuild_parameter,
             "torch._utils._rebuild_parameter_with_state": _rebuild_parameter}

    def find_class(self, module: str, name: str):
        real = self._REAL.get(qualname(module, name))
        return real if real is not None else super().find_class(module, name)


def _load_pickle(f) -> Any:
    return _HeaderUnpickler(f, Scan()).load()


def _torch_object(path: Path, size: int, kind: str) -> Any | None:
    """The inert object of a ``torch.save`` file; None for a TorchScript archive."""
    if kind == "zip":
        with _check_zip(path, size) as zf:
            prefix, torchscript = _zip_layout(zf)
            if prefix is None:
                raise CheckpointError(f"{path}: zip archive without data.pkl: not a PyTorch checkpoint")
            if torchscript:
                return None
            return _load_pickle(io.BytesIO(zf.read(f"{prefix}data.pkl")))
    with open(path, "rb") as raw:
        f = BoundedReader(raw, size)
        if scan_pickle(f, Scan()) != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: a plain pickle, not a file written by torch.save")
        for _ in range(2):  # protocol version, system info
            scan_pickle(f, Scan())
        return _load_pickle(f)


def _safetensors(path: Path, size: int) -> Header:
    header, meta = safetensors_header(path, size)  # the loader's checked header: nothing allocated unchecked
    shapes = {k: tuple(v["shape"]) for k, v in header.items()}
    return Header(path, layout_of(shapes), arch_record(meta), strip_prefixes(shapes), read_epoch(meta))


def read_header(path: str | os.PathLike, *, trusted: bool = False) -> Header:
    """The layout, record, weight shapes and epoch of a checkpoint file, without reading its weights.

    Args:
        path: a checkpoint file of any format ``load_checkpoint`` reads.
        trusted: only TorchScript archives are read in full, with ``load_checkpoint(trusted=trusted)``.

    Returns:
        ``Header``. A whole pickled model gives layout ``"module"`` and its class name, read without importing it.

    Raises:
        CheckpointError: a file ``load_checkpoint`` would refuse as damaged or unrecognised (one line).
    """
    path = as_path(path)
    size = check_file(path)
    with open(path, "rb") as f:
        kind = sniff(f.read(16))
    try:
        if kind == "safetensors":
            return _safetensors(path, size)
        if kind not in ("zip", "pickle"):
            raise CheckpointError(f"{path}: not a recognised checkpoint")
        obj = _torch_object(path, size, kind)
        if obj is None:
            from .load import load_checkpoint

            ckpt = load_checkpoint(path, trusted=trusted)
            return Header(path, ckpt.layout, ckpt.arch, {k: tuple(v.shape) for k, v in ckpt.state_dict.items()},
                          ckpt.epoch)
        obj, _ = select_entry(obj)
        module = _inert_module(obj)
        if module is not None:
            state = module.state if isinstance(module.state, dict) else {}
            return Header(path, "module", arch_record({ARCH_KEY: state.get(ARCH_ATTR)}), {}, None,
                          module.global_name)
        layout = layout_of(obj)
        record = arch_record(obj)
        state_dict, meta = unwrap_state_dict(obj)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any failure to parse means a file the loader would refuse
        raise CheckpointError(f"{path}: truncated, corrupt or unsupported checkpoint ({one_line(exc)})") from None
    shapes = {k: v.shape for k, v in strip_prefixes(state_dict).items() if isinstance(v, _Shape)}
    if not shapes or len(shapes) != len(state_dict):
        raise CheckpointError(f"{path}: its state dict holds entries that are not tensors")
    return Header(path, layout, record, shapes, read_epoch(meta))


def _inert_module(obj: Any) -> Inert | None:
    """The stand-in of a pickled object (a whole model), itself or under ``WRAPPER_KEYS``."""
    return find_module(obj, types=(Inert,))
