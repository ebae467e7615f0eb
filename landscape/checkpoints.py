"""Checkpoints: read weights safely from the common formats; write the official AdvLC dict atomically.

Formats are recognised by content, not by extension (``.pt .pth .tar .ckpt .bin`` are all the same to
the loader; a ``.safetensors`` file must really be one):

* PyTorch zip archives (``torch.save``) and legacy PyTorch pickles: read with
  ``torch.load(weights_only=True)``, which refuses any pickle that would run code. ``trusted=True`` switches
  to full unpickling (``weights_only=False``) — only for files you trust.
* safetensors: never runs code; the header is checked against the file size before anything is allocated.
* TorchScript archives (``torch.jit.save``): by default the tensors are read from the archive by a restricted
  reader that never compiles or runs the TorchScript code in it; ``trusted=True`` uses ``torch.jit.load``.

Before ``torch.load`` sees a pickle, a dry-run scan (every global replaced by an inert stand-in, nothing
imported or called) lists the globals it names and the tensor storages it declares, so that hostile files
are refused with a useful message and declared sizes can be checked against the bytes actually present.

Wrappers are unwrapped (``state_dict``/``model_state_dict``/``model``/``net``, nested), ``module.`` and
``_orig_mod.`` prefixes stripped; scalar entries (``epoch``, ``best_pgd``, ...) are kept as metadata.
"""
from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import io
import json
import math
import os
import pickle
import re
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from ._base import LandscapeError, resolve_device
from ._io import atomic_write
from .models import Normalized, create_model

__all__ = [
    "Checkpoint", "CheckpointError", "TORCH_EXTENSIONS", "WRAPPER_KEYS", "load_checkpoint", "load_model",
    "load_state_dict", "read_epoch", "save_checkpoint", "strip_prefix", "strip_prefixes", "unwrap_state_dict",
]

TORCH_EXTENSIONS = (".pt", ".pth", ".tar", ".ckpt", ".bin")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
"""Keys under which training scripts nest the weights, tried in this order at every level."""
PREFIXES = ("module.", "_orig_mod.")
"""Prefixes added by ``nn.DataParallel``/``DistributedDataParallel`` and ``torch.compile``."""
OFFICIAL_KEYS = ("epoch", "state_dict", "best_acc1", "best_pgd", "best_fgsm", "optimizer")

_TRUST_HINT = "if you trust this file, pass trusted=True (CLI: --trust-checkpoint)"
_MAX_NESTING = 6
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
_MAX_COMPRESSION = 100  # torch.save never compresses; a re-zipped file may, but not by more than this
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "ByteStorage": torch.uint8, "CharStorage": torch.int8, "ShortStorage": torch.int16,
    "IntStorage": torch.int32, "LongStorage": torch.int64, "HalfStorage": torch.float16,
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


class CheckpointError(LandscapeError):
    """A checkpoint that cannot be read safely or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds.

    Attributes:
        path: the file.
        state_dict: ``{name: Tensor}`` on CPU, unwrapped and with ``module.``/``_orig_mod.`` stripped.
        epoch: the ``epoch`` entry (or safetensors metadata), ``None`` when absent.
        meta: the other scalar entries (``best_acc1``, ``best_pgd``, ...), as Python numbers/strings.
        format: ``"torch"`` (zip), ``"torch-legacy"``, ``"safetensors"`` or ``"torchscript"``.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    epoch: int | None
    meta: dict[str, Any]
    format: str


# ----------------------------------------------------------------------------------------------------------
# key rewriting helpers (pure, tested one by one)
# ----------------------------------------------------------------------------------------------------------

def _scalar(value: Any) -> Any | None:
    """A Python scalar for ints/floats/bools/strings/0-d tensors/numpy scalars; None for anything else."""
    if isinstance(value, np.generic):
        return value.item() if isinstance(value, (np.number, np.bool_)) and not np.iscomplexobj(value) else None
    if isinstance(value, (bool, str)) or (isinstance(value, Number) and not isinstance(value, complex)):
        return value
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_meta:
        return value.item()
    return None


def unwrap_state_dict(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find the weights inside a training checkpoint.

    At each level the first of ``WRAPPER_KEYS`` whose value is a mapping (or an ``nn.Module``) is entered,
    e.g. ``{'model': {'state_dict': sd}}`` -> ``sd``; scalar siblings are collected as metadata (outer levels
    win). An ``nn.Module`` (a fully pickled model, trusted files only) gives its ``state_dict()``.

    Args:
        obj: the object ``torch.load`` returned.

    Returns:
        ``(state_dict, meta)``; values of ``state_dict`` are not checked here (see ``require_tensors``).

    Raises:
        ValueError: ``obj`` is not a mapping/module, or wrappers are nested more than 6 deep.
    """
    meta: dict[str, Any] = {}
    for _ in range(_MAX_NESTING):
        if isinstance(obj, nn.Module):
            return dict(obj.state_dict()), meta
        if not isinstance(obj, Mapping):
            raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None)
        if inner is None:
            return dict(obj), meta
        for key, value in obj.items():
            if key != inner and isinstance(key, str) and key not in meta:
                scalar = _scalar(value)
                if scalar is not None:
                    meta[key] = scalar
        obj = obj[inner]
    raise ValueError(f"weights nested more than {_MAX_NESTING} levels deep under {'/'.join(WRAPPER_KEYS)}")


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Remove ``prefix`` from every key when *all* keys carry it (e.g. ``nn.DataParallel``'s ``module.``).

    Args:
        state_dict: ``{name: value}``.
        prefix: the prefix to remove.

    Returns:
        A new dict; unchanged (copied) when some key lacks the prefix or the dict is empty.
    """
    if not state_dict or not all(isinstance(k, str) and k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    return {k[len(prefix):]: v for k, v in state_dict.items()}


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: tuple[str, ...] = PREFIXES) -> dict[str, Any]:
    """Apply ``strip_prefix`` with each of ``prefixes`` until no key changes (``module._orig_mod.x`` -> ``x``)."""
    out = dict(state_dict)
    while True:
        before = list(out)
        for prefix in prefixes:
            out = strip_prefix(out, prefix)
        if list(out) == before:
            return out


def require_tensors(state_dict: Mapping[Any, Any]) -> dict[str, torch.Tensor]:
    """Check that a state dict maps string keys to tensors.

    Raises:
        ValueError: empty, or naming the first offending keys and their types.
    """
    if not state_dict:
        raise ValueError("holds no tensors (empty state dict)")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ValueError(f"state dict entries are not tensors: {', '.join(bad[:3])}{more}")
    return {k: (v.detach() if v.requires_grad else v) for k, v in state_dict.items()}


def read_epoch(meta: Mapping[str, Any]) -> int | None:
    """The integer ``epoch`` entry of ``meta`` (int, integral float or digit string), else ``None``."""
    value = meta.get("epoch")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return int(value) if re.fullmatch(r"[+-]?\d+", value) else None
    if isinstance(value, Number) and not isinstance(value, complex) and math.isfinite(value) \
            and float(value).is_integer():
        return int(value)
    return None


# ----------------------------------------------------------------------------------------------------------
# dry-run pickle scan: nothing is imported, nothing is called
# ----------------------------------------------------------------------------------------------------------

class _Inert:
    """Stand-in for whatever a pickle builds from a global: accepts every pickle operation, runs nothing."""

    _qualname = "?"
    state: Any = None

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):  # REDUCE on a built object
        return _Inert()

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


_INERT_TYPES: dict[str, type] = {}


def _inert_type(qualname: str) -> type:
    """A fresh inert class standing for the global ``qualname`` (cached per name)."""
    cls = _INERT_TYPES.get(qualname)
    if cls is None:
        cls = type("Inert", (_Inert,), {"_qualname": qualname})
        if len(_INERT_TYPES) < 4096:
            _INERT_TYPES[qualname] = cls
    return cls


@dataclass
class _StorageRef:
    type_name: str
    key: str
    numel: int

    @property
    def min_bytes(self) -> int:
        """Bytes the storage needs at least (element size 1 for unknown storage types)."""
        dtype = _STORAGE_DTYPES.get(self.type_name)
        itemsize = torch.empty((), dtype=dtype).element_size() if dtype is not None else 1
        return self.numel * itemsize


@dataclass
class _Scan:
    globals: list[str] = field(default_factory=list)
    storages: dict[str, _StorageRef] = field(default_factory=dict)


class _ScanUnpickler(pickle.Unpickler):
    """Unpickles into inert objects, recording globals and declared storages."""

    def __init__(self, file, scan: _Scan):
        super().__init__(file, encoding="bytes")
        self.scan = scan

    def find_class(self, module: str, name: str):
        qual = _qualname(module, name)
        if qual not in self.scan.globals:
            self.scan.globals.append(qual)
        return _inert_type(qual)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
            storage_type, key, numel = pid[1], pid[2], pid[4]
            type_name = getattr(storage_type, "_qualname", "?").rsplit(".", 1)[-1]
            if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
                raise pickle.UnpicklingError(f"storage {key!r} declares an invalid size {numel!r}")
            key = key.decode("latin1") if isinstance(key, bytes) else str(key)
            self.scan.storages[key] = _StorageRef(type_name, key, numel)
        return _Inert()


def _qualname(module: str, name: str) -> str:
    """``module.name`` with Python 2 names mapped as the standard unpickler does (``__builtin__`` -> ``builtins``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _scan_pickle(file: io.BufferedIOBase, scan: _Scan) -> Any:
    """Dry-run one pickle from ``file`` into ``scan``; returns the (inert) object."""
    return _ScanUnpickler(file, scan).load()


def _allowed_globals() -> set[str]:
    """Globals ``torch.load(weights_only=True)`` accepts here (torch's allow-list plus our numpy scalars)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: fall back to a conservative reading
        allowed = {"collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                   "builtins.complex", "_codecs.encode"}
        allowed |= {f"torch.{n}" for n in _STORAGE_DTYPES} | {"torch.Size", "torch.device"}
        allowed |= {f"torch._utils.{n}" for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter")}
    for _, name in _numpy_safe_globals():
        allowed.add(name)
    return allowed


def _numpy_safe_globals() -> list[tuple[Any, str]]:
    """numpy scalars/arrays/dtypes (plain data, often used for ``best_pgd``), under old and new module names."""
    core = getattr(np, "_core", None) or np.core
    out = [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.multiarray.scalar, f"{mod}.scalar"), (core.multiarray._reconstruct, f"{mod}._reconstruct")]
    for name in dir(getattr(np, "dtypes", object)):
        if name.endswith("DType"):
            out.append((getattr(np.dtypes, name), f"numpy.dtypes.{name}"))
    return out


# ----------------------------------------------------------------------------------------------------------
# file checks and format detection
# ----------------------------------------------------------------------------------------------------------

def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _check_file(path: Path) -> int:
    """Size of ``path`` after checking it is a readable, non-empty regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot access checkpoint: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: checkpoint file is not readable (permission denied)")
    return st.st_size


def _sniff(head: bytes) -> str:
    """``zip``, ``safetensors``, ``pickle`` or ``unknown`` from the first bytes of a file."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]", b"c"):
        return "pickle"
    return "unknown"


# ----------------------------------------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------------------------------------

def _read_safetensors(path: Path, size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Validate the header against the file size, then load with the safetensors library."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (n_header,) = struct.unpack("<Q", head)
        if n_header > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise CheckpointError(f"{path}: safetensors header declares {n_header} bytes but the file has "
                                  f"{size} bytes (truncated or corrupt)")
        raw = f.read(n_header)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_bytes = size - 8 - n_header
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        _check_safetensors_entry(path, name, entry, data_bytes)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: corrupt safetensors metadata (not a JSON object)")
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({_one_line(exc)})") from None
    meta = {str(k): _parse_number(v) for k, v in metadata.items() if k != "format"}
    return tensors, meta


def _check_safetensors_entry(path: Path, name: str, entry: Any, data_bytes: int) -> None:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header entry {name!r}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_ITEMSIZE:
        raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
        raise CheckpointError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise CheckpointError(f"{path}: tensor {name!r} has invalid data offsets {offsets!r}")
    declared = math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype]
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes or end - begin != declared:
        raise CheckpointError(
            f"{path}: tensor {name!r} declares shape {tuple(shape)} ({declared} bytes) at offsets {offsets} but the "
            f"file holds {data_bytes} data bytes (truncated or corrupt)")


def _parse_number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _check_zip(path: Path, size: int) -> zipfile.ZipFile:
    """Open a zip and check its declared sizes against the file before any record is read."""
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, but damaged names or fields raise other types too
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({_one_line(exc)})") from None
    for info in zf.infolist():
        end = info.header_offset + info.compress_size
        ratio_ok = (info.file_size == info.compress_size if info.compress_type == zipfile.ZIP_STORED
                    else info.file_size <= _MAX_COMPRESSION * info.compress_size + 1024)
        if end > size or not ratio_ok:
            zf.close()
            raise CheckpointError(
                f"{path}: zip record {info.filename!r} declares {info.file_size} bytes "
                f"({info.compress_size} stored) beyond what the {size}-byte file can hold (truncated or corrupt)")
    return zf


def _zip_layout(zf: zipfile.ZipFile) -> tuple[str | None, bool]:
    """(``prefix`` of ``prefix/data.pkl`` or None, whether the archive is TorchScript)."""
    names = zf.namelist()
    pkl = next((n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)), None)
    if pkl is None:
        return None, False
    prefix = pkl[: -len("data.pkl")]
    torchscript = f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names)
    return prefix, torchscript


def _scan_zip(path: Path, zf: zipfile.ZipFile, prefix: str) -> _Scan:
    """Dry-run ``data.pkl`` and check every declared storage against its record's size."""
    scan = _Scan()
    try:
        _scan_pickle(io.BytesIO(zf.read(f"{prefix}data.pkl")), scan)
    except Exception as exc:  # any failure to parse a pickle means a damaged file
        raise CheckpointError(f"{path}: corrupt checkpoint: cannot parse data.pkl ({_one_line(exc)})") from None
    names = set(zf.namelist())
    for ref in scan.storages.values():
        record = f"{prefix}data/{ref.key}"
        if record not in names:
            raise CheckpointError(f"{path}: corrupt checkpoint: storage record {record!r} is missing")
        held = zf.getinfo(record).file_size
        if ref.min_bytes > held:
            raise CheckpointError(f"{path}: storage {ref.key!r} declares {ref.numel} elements "
                                  f"({ref.min_bytes} bytes) but its record holds {held} bytes (corrupt)")
    return scan


def _scan_legacy(path: Path, size: int) -> tuple[_Scan, bool]:
    """Dry-run the pickles of a legacy ``torch.save`` file; check declared storage sizes against the file.

    Returns:
        ``(scan, is_torch)``; ``is_torch`` is False for a plain pickle (no torch magic number).
    """
    scan = _Scan()
    with open(path, "rb") as raw:
        f = _BoundedReader(raw, size)
        try:
            magic = _scan_pickle(f, scan)
            if magic != _LEGACY_MAGIC:
                return scan, False
            for _ in range(3):  # protocol version, system info, the object itself
                _scan_pickle(f, scan)
            keys = _scan_pickle(f, scan)
        except Exception as exc:  # any failure to parse a pickle means a damaged file
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_one_line(exc)})") from None
        remaining = size - f.tell()
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: corrupt legacy checkpoint (no storage list)")
    declared = sum(8 + scan.storages[k].min_bytes for k in {_text(k) for k in keys} if k in scan.storages)
    if declared > remaining:
        raise CheckpointError(f"{path}: declares {declared} bytes of tensor data but only {remaining} bytes follow "
                              f"(truncated or corrupt)")
    return scan, True


class _BoundedReader:
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


def _text(key: Any) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_load(path: Path, *, trusted: bool, scan: _Scan | None) -> Any:
    """``torch.load`` on CPU; restricted unless ``trusted``; failures become one-line CheckpointErrors."""
    if not trusted and scan is not None:
        _refuse_unsafe(path, scan)
    try:
        with _quiet(), torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=not trusted)
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to load this checkpoint") from None
    except Exception as exc:  # torch raises many types for damaged files; report them in one line
        text = str(exc)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if not trusted and ("Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError)):
            if match:
                raise CheckpointError(f"{path}: refusing to unpickle: it needs {match.group(1)}, which could run "
                                      f"arbitrary code; {_TRUST_HINT}") from None
        raise CheckpointError(f"{path}: truncated, corrupt or unsupported checkpoint "
                              f"({_one_line(exc, torch_detail=True)})") from None


def _refuse_unsafe(path: Path, scan: _Scan) -> None:
    allowed = _allowed_globals()
    unsafe = [g for g in scan.globals if g not in allowed]
    if unsafe:
        more = f" (+{len(unsafe) - 3} more)" if len(unsafe) > 3 else ""
        raise CheckpointError(f"{path}: refusing to unpickle: it references {', '.join(unsafe[:3])}{more}, "
                              f"which could run arbitrary code; {_TRUST_HINT}")


def _one_line(exc: BaseException, *, torch_detail: bool = False) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if torch_detail:  # torch's weights_only errors put the useful line after a long preamble
        useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue",
                                                            "Check the documentation"))]
        lines = useful or lines
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"^WeightsUnpickler error:\s*", "", text)
    return text if len(text) <= 200 else text[:197] + "..."


class _ScriptUnpickler(_ScanUnpickler):
    """Reads tensors out of a TorchScript ``data.pkl``: module objects stay inert, no code is compiled or run."""

    _KNOWN = re.compile(r"(__torch__\..+|torch\.jit\._pickle\..+|torch\.\w+Storage|collections\.OrderedDict"
                        r"|torch\._utils\._rebuild_(tensor|tensor_v2|parameter))")

    def __init__(self, file, scan: _Scan, zf: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file, scan)
        self.zf, self.prefix, self.path = zf, prefix, path

    def find_class(self, module: str, name: str):
        qual = _qualname(module, name)
        if not self._KNOWN.fullmatch(qual):
            raise CheckpointError(f"{self.path}: refusing to read TorchScript archive: its data.pkl names {qual}, "
                                  f"which a TorchScript module never needs")
        if qual in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"):
            return _rebuild_tensor
        if qual == "torch._utils._rebuild_parameter":
            return _rebuild_parameter
        if qual == "collections.OrderedDict":
            return collections.OrderedDict
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.60}")
        super().persistent_load(pid)  # validates and records the declaration
        ref = self.scan.storages[_text(pid[2])]
        dtype = _STORAGE_DTYPES.get(ref.type_name)
        if dtype is None:
            raise pickle.UnpicklingError(f"unsupported storage type {ref.type_name!r}")
        record = f"{self.prefix}data/{ref.key}"
        try:
            held = self.zf.getinfo(record).file_size
        except KeyError:
            raise pickle.UnpicklingError(f"storage record {record!r} is missing") from None
        if ref.min_bytes > held:
            raise pickle.UnpicklingError(f"storage {ref.key!r} declares {ref.min_bytes} bytes, its record holds {held}")
        buf = bytearray(self.zf.read(record))
        storage = torch.frombuffer(buf, dtype=torch.uint8).untyped_storage() if buf else torch.UntypedStorage(0)
        return (storage, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *args):
    if not (isinstance(storage, tuple) and len(storage) == 2 and isinstance(storage[1], torch.dtype)):
        raise pickle.UnpicklingError("tensor without a storage")
    untyped, dtype = storage
    ints = (storage_offset, *tuple(size), *tuple(stride))
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise pickle.UnpicklingError("tensor with a non-integer size or stride")
    t = torch.empty((0,), dtype=dtype)
    t.set_(untyped, storage_offset, tuple(size), tuple(stride))  # checks the bounds against the storage
    return t


def _rebuild_parameter(data, requires_grad, *args):
    return data


def _read_torchscript(path: Path, zf: zipfile.ZipFile, prefix: str) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript archive, read without compiling or running its code."""
    byteorder = f"{prefix}byteorder"
    scan = _Scan()
    try:
        if byteorder in zf.namelist() and zf.read(byteorder).strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian TorchScript archives are not supported")
        root = _ScriptUnpickler(io.BytesIO(zf.read(f"{prefix}data.pkl")), scan, zf, prefix, path).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt TorchScript archive ({_one_line(exc)})") from None
    out: dict[str, torch.Tensor] = {}
    _collect_module_tensors(root, "", out, set())
    return out


def _collect_module_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if not isinstance(obj, _Inert) or id(obj) in seen or prefix.count(".") > 64:
        return
    seen.add(id(obj))
    state = obj.state
    if not isinstance(state, Mapping):
        return
    for name, value in state.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Inert) and value._qualname.startswith("__torch__."):
            _collect_module_tensors(value, f"{prefix}{name}.", out, seen)


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------

def load_checkpoint(path: str | os.PathLike, *, trusted: bool = False) -> Checkpoint:
    """Read a checkpoint file safely.

    Args:
        path: a ``torch.save`` file (any extension), a ``.safetensors`` file or a TorchScript archive.
        trusted: allow full unpickling (``torch.load(weights_only=False)``, ``torch.jit.load``). This runs
            code stored in the file: only for files you trust. Default False.

    Returns:
        ``Checkpoint(path, state_dict, epoch, meta, format)``; tensors on CPU.

    Raises:
        CheckpointError: missing/empty/truncated/corrupt file, a pickle that needs code to load (with
            ``trusted=False``), declared sizes larger than the file, non-tensor entries. The message names the
            file and fits on one line.
        TypeError: ``path`` is not a path or ``trusted`` not a bool.

    Example:
        >>> ckpt = load_checkpoint("runs/at/epoch_100.pt")   # doctest: +SKIP
        >>> ckpt.epoch, ckpt.meta.get("best_pgd")            # doctest: +SKIP
    """
    path = _as_path(path)
    if not isinstance(trusted, bool):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    kind = _sniff(head)
    if path.suffix.lower() == ".safetensors" and kind == "unknown":
        kind = "safetensors"  # let the safetensors reader say precisely what is wrong
    if path.suffix.lower() == ".safetensors" and kind != "safetensors":
        raise CheckpointError(f"{path}: not a safetensors file (its content looks like {kind}); refusing to load it")

    meta: dict[str, Any] = {}
    if kind == "safetensors":
        raw, meta = _read_safetensors(path, size)
        fmt = "safetensors"
    elif kind == "zip":
        with _check_zip(path, size) as zf:
            prefix, torchscript = _zip_layout(zf)
            if prefix is None:
                raise CheckpointError(f"{path}: zip archive without data.pkl: not a PyTorch checkpoint")
            if torchscript:
                fmt = "torchscript"
                raw = _read_torchscript(path, zf, prefix) if not trusted else None
            else:
                fmt = "torch"
                scan = _scan_zip(path, zf, prefix)
        if fmt == "torchscript" and trusted:
            raw = _jit_state_dict(path)
        elif fmt == "torch":
            raw = _torch_load(path, trusted=trusted, scan=scan)
    elif kind == "pickle":
        fmt = "torch-legacy"
        scan, is_torch = _scan_legacy(path, size)
        if not is_torch:
            if not trusted:
                _refuse_unsafe(path, scan)
            raise CheckpointError(f"{path}: a plain pickle, not a file written by torch.save; re-save it with "
                                  f"torch.save(state_dict, path)")
        raw = _torch_load(path, trusted=trusted, scan=scan)
    else:
        raise CheckpointError(f"{path}: not a recognised checkpoint (expected a torch.save file, safetensors or "
                              f"TorchScript archive; first bytes {head[:8]!r})")

    try:
        state_dict, wrapper_meta = unwrap_state_dict(raw)
        state_dict = require_tensors(strip_prefixes(state_dict))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    meta = {**meta, **wrapper_meta}
    epoch = read_epoch(meta)
    meta.pop("epoch", None)
    return Checkpoint(path=path, state_dict=state_dict, epoch=epoch, meta=meta, format=fmt)


def _jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu")
        return dict(module.state_dict())
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load TorchScript archive ({_one_line(exc)})") from None


def load_state_dict(path: str | os.PathLike, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """``load_checkpoint(path, trusted=trusted).state_dict``: ``{name: Tensor}`` on CPU."""
    return load_checkpoint(path, trusted=trusted).state_dict


def _is_normalized_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Keys ``mean``, ``std`` and ``model.*`` only: saved from a ``Normalized`` model."""
    others = [k for k in state_dict if k not in ("mean", "std")]
    return "mean" in state_dict and "std" in state_dict and bool(others) and all(k.startswith("model.")
                                                                                 for k in others)


def _fmt_keys(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _mismatch_hint(model: nn.Module, mismatched: list[tuple[str, tuple, tuple]]) -> str:
    """A hint for the common mistakes: wrong ``num_classes`` (final layer) or ``in_channels`` (first conv)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for key, got, want in mismatched:
        if linears and key in (f"{linears[-1]}.weight", f"{linears[-1]}.bias") and got[1:] == want[1:]:
            return (f"; hint: the checkpoint has {got[0]} classes, the model {want[0]}: pass num_classes={got[0]} "
                    f"(CLI: --num-classes {got[0]})")
        if convs and key == f"{convs[0]}.weight" and len(got) == 4 and got[0] == want[0] and got[1] != want[1]:
            return f"; hint: the checkpoint expects {got[1]} input channels: pass in_channels={got[1]}"
    return ""


def _load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Strictly load ``state_dict`` into ``model``, or raise one CheckpointError listing what does not fit."""
    target = model.state_dict()
    state_dict = dict(state_dict)
    for key, value in target.items():  # checkpoints from before BatchNorm counted its batches
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(target[k].shape)) for k in target
                  if k in state_dict and state_dict[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_fmt_keys(unexpected)}")
        if mismatched:
            shown = [f"{k} checkpoint {list(g)} vs model {list(w)}" for k, g, w in mismatched]
            parts.append(f"{len(mismatched)} shape mismatches: {_fmt_keys(shown)}")
        raise CheckpointError(f"{path}: checkpoint does not fit {what}: {'; '.join(parts)}"
                              f"{_mismatch_hint(model, mismatched)}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: cannot load weights into {what} ({_one_line(exc)})") from None


def load_model(path: str | os.PathLike | Checkpoint, arch: str, *, trusted: bool = False, mean=None, std=None,
               device: str | torch.device = "cpu", **arch_kwargs) -> nn.Module:
    """Build ``arch`` and load the checkpoint at ``path`` into it.

    Args:
        path: checkpoint file (see ``load_checkpoint``), or a ``Checkpoint`` already loaded (not read again).
        arch: registered architecture name (``landscape.list_models()``).
        trusted: allow full unpickling; see ``load_checkpoint``. Default False.
        mean, std: per-channel normalisation; when given the model is wrapped in ``Normalized`` so that it takes
            inputs in [0,1]. A checkpoint saved from a ``Normalized`` model (keys ``model.*``, ``mean``, ``std``)
            is wrapped automatically with its stored values (given values must then agree with them).
        device: torch device for the returned model. Default ``"cpu"``.
        **arch_kwargs: constructor arguments (``num_classes``, ``in_channels``, ``depth``, ...).

    Returns:
        The model in eval mode on ``device``.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit ``arch`` (the message lists the first missing
            and unexpected keys and shape mismatches, with a hint for a wrong ``num_classes``).
        ValueError: unknown ``arch`` or device, only one of mean/std, mean/std disagreeing with the checkpoint.
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    dev = resolve_device(device)
    model = create_model(arch, **arch_kwargs)  # unknown names fail before the file is read
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path, trusted=trusted)
    args = ", ".join(f"{k}={v!r}" for k, v in arch_kwargs.items())
    what = f"architecture {arch}({args})"
    state_dict = ckpt.state_dict
    if _is_normalized_state_dict(state_dict):
        stored_mean, stored_std = state_dict["mean"].flatten(), state_dict["std"].flatten()
        if mean is not None and not _close(mean, stored_mean) or std is not None and not _close(std, stored_std):
            raise ValueError(f"{ckpt.path}: the checkpoint stores mean={stored_mean.tolist()} std="
                             f"{stored_std.tolist()}, which disagree with the given mean={list(mean)} std={list(std)}")
        _load_into(model, {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")},
                   ckpt.path, what)
        model = Normalized(model, stored_mean.tolist(), stored_std.tolist())
    else:
        _load_into(model, state_dict, ckpt.path, what)
        if mean is not None:
            model = Normalized(model, mean, std)
    return model.to(dev).eval()


def _close(given, stored: torch.Tensor) -> bool:
    given_t = torch.as_tensor(given, dtype=torch.float64).flatten()
    return given_t.shape == stored.shape and torch.allclose(given_t, stored.double(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------------

def _plain(value: Any, where: str) -> Any:
    """``value`` as data that ``torch.load(weights_only=True)`` accepts, or TypeError naming ``where``."""
    if isinstance(value, torch.optim.Optimizer):
        return _plain(value.state_dict(), where)
    if isinstance(value, nn.Module):
        raise TypeError(f"{where}: pass model.state_dict(), not a module")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where} has type {type(value).__name__}; checkpoints hold tensors, numbers, strings, "
                    f"lists and dicts only (so that they load without trusting the file)")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, epoch: int, **extra) -> Path:
    """Write the official AdvLC checkpoint dict atomically (temporary file + rename).

    The file holds ``{'epoch', 'state_dict', 'best_acc1', 'best_pgd', 'best_fgsm', 'optimizer'}`` (``best_*`` and
    ``optimizer`` are ``None`` unless given in ``extra``) plus any other ``extra`` entries. ``state_dict`` is the
    model's own, moved to CPU (a ``Normalized`` model keeps its ``model.*``, ``mean`` and ``std`` keys). With a
    ``.safetensors`` suffix the weights go to a safetensors file and scalar extras to its metadata.

    Args:
        path: destination; parent folders are created.
        model: the network.
        epoch: non-negative epoch number.
        **extra: ``optimizer`` (an optimizer or its state dict), ``best_acc1``, ``best_pgd``, ``best_fgsm`` and any
            other tensors/numbers/strings/lists/dicts.

    Returns:
        The path written.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``epoch`` not an int, an extra of an unsupported type.
        ValueError: negative epoch; non-scalar extras for ``.safetensors``.
    """
    path = _as_path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"epoch must be an int, got {epoch!r}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        writer = _safetensors_writer(state_dict, int(epoch), extra)
    else:
        obj = {"epoch": int(epoch), "state_dict": state_dict}
        for key in OFFICIAL_KEYS[2:]:
            obj[key] = _plain(extra.pop(key, None), key)
        for key, value in extra.items():
            obj[key] = _plain(value, key)
        writer = lambda f: torch.save(obj, f)  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _write_file(tmp, writer), fsync=True)
    return path


def _safetensors_writer(state_dict: dict[str, torch.Tensor], epoch: int, extra: dict):
    from safetensors.torch import save

    metadata = {"epoch": str(epoch), "format": "pt"}
    for key, value in extra.items():
        if value is None:
            continue
        scalar = _scalar(value)
        if scalar is None:
            raise ValueError(f"{key}: only scalar extras fit in safetensors metadata (got {type(value).__name__}); "
                             f"save to a .pt file to keep optimizer state")
        metadata[key] = str(scalar)
    tensors = {k: v.contiguous().clone() for k, v in state_dict.items()}  # no shared storage
    return lambda f: f.write(save(tensors, metadata=metadata))


def _write_file(path: Path, writer) -> None:
    with open(path, "wb") as f:
        writer(f)
