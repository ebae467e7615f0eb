"""Restricted unpickling, shared by checkpoints and datasets: nothing outside an allow-list is imported or run.

* ``scan_pickle``: a dry run where every global becomes an inert stand-in; it lists the globals a pickle names
  and the tensor storages it declares (their sizes are checked against the bytes present before ``torch.load``
  allocates anything; torch has no such check).
* ``allowed_globals`` / ``numpy_safe_globals``: what ``torch.load(weights_only=True)`` accepts here.
* ``ArrayUnpickler``: builds only numpy arrays/dtypes/scalars, bytes, lists, dicts, numbers and strings (the
  CIFAR python batches).
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["ArrayUnpickler", "BoundedReader", "Inert", "Refused", "STORAGE_DTYPES", "Scan", "ScanUnpickler",
           "StorageRef", "allowed_globals", "as_text", "numpy_safe_globals", "qualname", "scan_pickle"]

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "ByteStorage": torch.uint8, "CharStorage": torch.int8, "ShortStorage": torch.int16,
    "IntStorage": torch.int32, "LongStorage": torch.int64, "HalfStorage": torch.float16,
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

class Inert:
    """Stand-in for whatever a pickle builds from a global: accepts every pickle operation, runs nothing."""

    global_name = "?"
    state: Any = None

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):  # REDUCE on a built object
        return Inert()

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


_INERT_TYPES: dict[str, type] = {}


def inert_type(qualname: str) -> type:
    """A fresh inert class standing for the global ``qualname`` (cached per name)."""
    cls = _INERT_TYPES.get(qualname)
    if cls is None:
        cls = type("Inert", (Inert,), {"global_name": qualname})
        if len(_INERT_TYPES) < 4096:
            _INERT_TYPES[qualname] = cls
    return cls


@dataclass
class StorageRef:
    type_name: str
    key: str
    numel: int

    @property
    def min_bytes(self) -> int:
        """Bytes the storage needs at least (element size 1 for unknown storage types)."""
        dtype = STORAGE_DTYPES.get(self.type_name)
        itemsize = torch.empty((), dtype=dtype).element_size() if dtype is not None else 1
        return self.numel * itemsize


@dataclass
class Scan:
    globals: list[str] = field(default_factory=list)
    storages: dict[str, StorageRef] = field(default_factory=dict)


class ScanUnpickler(pickle.Unpickler):
    """Unpickles into inert objects, recording globals and declared storages."""

    def __init__(self, file, scan: Scan):
        super().__init__(file, encoding="bytes")
        self.scan = scan

    def find_class(self, module: str, name: str):
        qual = qualname(module, name)
        if qual not in self.scan.globals:
            self.scan.globals.append(qual)
        return inert_type(qual)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
            storage_type, key, numel = pid[1], pid[2], pid[4]
            type_name = getattr(storage_type, "global_name", "?").rsplit(".", 1)[-1]
            if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
                raise pickle.UnpicklingError(f"storage {key!r} declares an invalid size {numel!r}")
            key = key.decode("latin1") if isinstance(key, bytes) else str(key)
            self.scan.storages[key] = StorageRef(type_name, key, numel)
        return Inert()


def qualname(module: str, name: str) -> str:
    """``module.name`` with Python 2 names mapped as the standard unpickler does (``__builtin__`` -> ``builtins``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def scan_pickle(file: io.BufferedIOBase, scan: Scan) -> Any:
    """Dry-run one pickle from ``file`` into ``scan``; returns the (inert) object."""
    return ScanUnpickler(file, scan).load()


def allowed_globals() -> set[str]:
    """Globals ``torch.load(weights_only=True)`` accepts here (torch's allow-list plus our numpy scalars)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: fall back to a conservative reading
        allowed = {"collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                   "builtins.complex", "_codecs.encode"}
        allowed |= {f"torch.{n}" for n in STORAGE_DTYPES} | {"torch.Size", "torch.device"}
        allowed |= {f"torch._utils.{n}" for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter")}
    for _, name in numpy_safe_globals():
        allowed.add(name)
    return allowed


def numpy_safe_globals() -> list[tuple[Any, str]]:
    """numpy scalars/arrays/dtypes (plain data, often used for ``best_pgd``), under old and new module names."""
    core = getattr(np, "_core", None) or np.core
    out = [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.multiarray.scalar, f"{mod}.scalar"), (core.multiarray._reconstruct, f"{mod}._reconstruct")]
    for name in dir(getattr(np, "dtypes", object)):
        if name.endswith("DType"):
            out.append((getattr(np.dtypes, name), f"numpy.dtypes.{name}"))
    return out


class BoundedReader:
    """File wrapper whose ``read(n)`` never asks for more than the bytes left, so that a damaged length field in
    a pickle cannot make the reader allocate gigabytes."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.f.tell()
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self.f.readline(1 << 20 if limit is None or limit < 0 else limit)

    def tell(self) -> int:
        return self.f.tell()


def as_text(key: Any) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


class Refused(pickle.UnpicklingError):
    """A global outside the allow-list (as opposed to a damaged pickle)."""


class ArrayUnpickler(pickle.Unpickler):
    """Builds only numpy arrays/dtypes/scalars, bytes, lists, dicts, numbers and strings; other globals raise
    ``Refused``."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(np.core.multiarray if not hasattr(np, "_core") else np._core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise Refused(f"refusing to unpickle {module}.{name} (only arrays, lists and bytes allowed)")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles written by Python 3 store ``bytes``; nothing else is allowed through."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("refusing an unexpected _codecs.encode call")
    return text.encode("latin1")
