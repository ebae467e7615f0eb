"""Checkpoint file formats, recognised by content (not by extension), each read without running code.

* PyTorch zip archives (``torch.save``) and legacy PyTorch pickles: read with ``torch.load(weights_only=True)``,
  which refuses any pickle that would run code; ``trusted=True`` switches to full unpickling. Before
  ``torch.load`` sees a file, its globals are listed (``torch.serialization.get_unsafe_globals_in_checkpoint``
  for zip archives, the dry-run scan of ``safe_pickle`` for legacy files) so hostile files are refused with a
  useful message, and declared storage sizes are checked against the bytes present (torch does not check).
* safetensors: never runs code; the header is checked against the file size before anything is allocated.
* TorchScript archives (``torch.jit.save``): tensors are read by a restricted reader that never compiles or runs
  the code in the archive; ``trusted=True`` uses ``torch.jit.load``.
"""
from __future__ import annotations

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
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .record import CheckpointError
from .safe_pickle import (STORAGE_DTYPES, BoundedReader, Inert, Scan, ScanUnpickler, allowed_globals, as_text,
                          numpy_safe_globals, qualname, scan_pickle)

__all__ = ["TORCH_EXTENSIONS", "TRUST_HINT", "as_path", "check_file", "one_line", "read_file", "safetensors_header",
           "sniff"]

TORCH_EXTENSIONS = (".pt", ".pth", ".tar", ".ckpt", ".bin")
TRUST_HINT = "if you trust this file, pass trusted=True (CLI: --trust-checkpoint)"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
_MAX_COMPRESSION = 100  # torch.save never compresses; a re-zipped file may, but not by more than this
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}



# file checks and format detection
# ----------------------------------------------------------------------------------------------------------

def as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def check_file(path: Path) -> int:
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


def sniff(head: bytes) -> str:
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

def safetensors_header(path: Path, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({tensor name: entry}, metadata)`` of a safetensors file, each entry checked against the file size
    before anything is allocated; metadata values parsed as numbers where they are (``format`` left out)."""
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
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: corrupt safetensors metadata (not a JSON object)")
    data_bytes = size - 8 - n_header
    for name, entry in header.items():
        _check_safetensors_entry(path, name, entry, data_bytes)
    return header, {str(k): _parse_number(v) for k, v in metadata.items() if k != "format"}


def _read_safetensors(path: Path, size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Validate the header against the file size, then load with the safetensors library."""
    _, meta = safetensors_header(path, size)
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({one_line(exc)})") from None
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
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({one_line(exc)})") from None
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


def _scan_zip(path: Path, zf: zipfile.ZipFile, prefix: str) -> Scan:
    """Dry-run ``data.pkl`` and check every declared storage against its record's size."""
    scan = Scan()
    try:
        scan_pickle(io.BytesIO(zf.read(f"{prefix}data.pkl")), scan)
    except Exception as exc:  # any failure to parse a pickle means a damaged file
        raise CheckpointError(f"{path}: corrupt checkpoint: cannot parse data.pkl ({one_line(exc)})") from None
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


def _scan_legacy(path: Path, size: int) -> tuple[Scan, bool]:
    """Dry-run the pickles of a legacy ``torch.save`` file; check declared storage sizes against the file.

    Returns:
        ``(scan, is_torch)``; ``is_torch`` is False for a plain pickle (no torch magic number).
    """
    scan = Scan()
    with open(path, "rb") as raw:
        f = BoundedReader(raw, size)
        try:
            magic = scan_pickle(f, scan)
            if magic != _LEGACY_MAGIC:
                return scan, False
            for _ in range(3):  # protocol version, system info, the object itself
                scan_pickle(f, scan)
            keys = scan_pickle(f, scan)
        except Exception as exc:  # any failure to parse a pickle means a damaged file
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({one_line(exc)})") from None
        remaining = size - f.tell()
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: corrupt legacy checkpoint (no storage list)")
    declared = sum(8 + scan.storages[k].min_bytes for k in {as_text(k) for k in keys} if k in scan.storages)
    if declared > remaining:
        raise CheckpointError(f"{path}: declares {declared} bytes of tensor data but only {remaining} bytes follow "
                              f"(truncated or corrupt)")
    return scan, True



@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _torch_load(path: Path, *, trusted: bool) -> Any:
    """``torch.load`` on CPU; restricted unless ``trusted``; failures become one-line CheckpointErrors."""
    try:
        with _quiet(), torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=not trusted)
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to load this checkpoint") from None
    except Exception as exc:  # torch raises many types for damaged files; report them in one line
        text = str(exc)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if not trusted and ("Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError)):
            if match:
                raise CheckpointError(f"{path}: refusing to unpickle: it needs {match.group(1)}, which could run "
                                      f"arbitrary code; {TRUST_HINT}") from None
        if trusted and isinstance(exc, (ModuleNotFoundError, AttributeError)) and _is_missing_class(exc):
            raise CheckpointError(f"{path}: the pickled model's class cannot be imported ({one_line(exc)}); make "
                                  f"it importable (run from the folder holding its module or add that folder to "
                                  f"PYTHONPATH; a class defined in a training script's __main__ must move into a "
                                  f"module), or load the weights into your class instead: --arch "
                                  f"path/to/file.py:ClassName (Python: load_model(path, YourClass))") from None
        raise CheckpointError(f"{path}: truncated, corrupt or unsupported checkpoint "
                              f"({one_line(exc, torch_detail=True)})") from None


def _is_missing_class(exc: Exception) -> bool:
    """True for the errors unpickling raises when a pickled object's module or class cannot be found."""
    return isinstance(exc, ModuleNotFoundError) or "Can't get attribute" in str(exc)


def _refuse_unsafe(path: Path, unsafe: list[str]) -> None:
    if unsafe:
        more = f" (+{len(unsafe) - 3} more)" if len(unsafe) > 3 else ""
        raise CheckpointError(f"{path}: refusing to unpickle: it references {', '.join(unsafe[:3])}{more}, "
                              f"which could run arbitrary code; {TRUST_HINT}")


def one_line(exc: BaseException, *, torch_detail: bool = False) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if torch_detail:  # torch's weights_only errors put the useful line after a long preamble
        useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue",
                                                            "Check the documentation"))]
        lines = useful or lines
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"^WeightsUnpickler error:\s*", "", text)
    return text if len(text) <= 200 else text[:197] + "..."


class _ScriptUnpickler(ScanUnpickler):
    """Reads tensors out of a TorchScript ``data.pkl``: module objects stay inert, no code is compiled or run."""

    _KNOWN = re.compile(r"(__torch__\..+|torch\.jit\._pickle\..+|torch\.\w+Storage|collections\.OrderedDict"
                        r"|torch\._utils\._rebuild_(tensor|tensor_v2|parameter))")

    def __init__(self, file, scan: Scan, zf: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file, scan)
        self.zf, self.prefix, self.path = zf, prefix, path

    def find_class(self, module: str, name: str):
        qual = qualname(module, name)
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
        ref = self.scan.storages[as_text(pid[2])]
        dtype = STORAGE_DTYPES.get(ref.type_name)
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
    scan = Scan()
    try:
        if byteorder in zf.namelist() and zf.read(byteorder).strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian TorchScript archives are not supported")
        root = _ScriptUnpickler(io.BytesIO(zf.read(f"{prefix}data.pkl")), scan, zf, prefix, path).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt TorchScript archive ({one_line(exc)})") from None
    out: dict[str, torch.Tensor] = {}
    _collect_module_tensors(root, "", out, set())
    return out


def _collect_module_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if not isinstance(obj, Inert) or id(obj) in seen or prefix.count(".") > 64:
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
        elif isinstance(value, Inert) and value.global_name.startswith("__torch__."):
            _collect_module_tensors(value, f"{prefix}{name}.", out, seen)


def read_file(path: Path, *, trusted: bool) -> tuple[Any, dict[str, Any], str]:
    """Read ``path`` in whichever format it is.

    Returns:
        ``(obj, meta, format)``: what ``torch.load`` (or the safetensors / TorchScript reader) gave, the
        safetensors metadata (else ``{}``), and ``"torch"``, ``"torch-legacy"``, ``"safetensors"`` or
        ``"torchscript"``.

    Raises:
        CheckpointError: one line naming the file (missing, empty, truncated, corrupt, unsafe, unknown format).
    """
    size = check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    kind = sniff(head)
    if path.suffix.lower() == ".safetensors" and kind == "unknown":
        kind = "safetensors"  # let the safetensors reader say precisely what is wrong
    if path.suffix.lower() == ".safetensors" and kind != "safetensors":
        raise CheckpointError(f"{path}: not a safetensors file (its content looks like {kind}); refusing to load it")
    if kind == "safetensors":
        raw, meta = _read_safetensors(path, size)
        return raw, meta, "safetensors"
    if kind == "zip":
        with _check_zip(path, size) as zf:
            prefix, torchscript = _zip_layout(zf)
            if prefix is None:
                raise CheckpointError(f"{path}: zip archive without data.pkl: not a PyTorch checkpoint")
            if torchscript and not trusted:
                return _read_torchscript(path, zf, prefix), {}, "torchscript"
            scan = None if torchscript else _scan_zip(path, zf, prefix)
        if torchscript:
            return _jit_state_dict(path), {}, "torchscript"
        if not trusted:
            _refuse_unsafe(path, _unsafe_zip_globals(path, scan))
        return _torch_load(path, trusted=trusted), {}, "torch"
    if kind == "pickle":
        scan, is_torch = _scan_legacy(path, size)
        if not trusted:
            allowed = allowed_globals()
            _refuse_unsafe(path, [g for g in scan.globals if g not in allowed])
        if not is_torch:
            raise CheckpointError(f"{path}: a plain pickle, not a file written by torch.save; re-save it with "
                                  f"torch.save(state_dict, path)")
        return _torch_load(path, trusted=trusted), {}, "torch-legacy"
    raise CheckpointError(f"{path}: not a recognised checkpoint (expected a torch.save file, safetensors or "
                          f"TorchScript archive; first bytes {head[:8]!r})")


def _unsafe_zip_globals(path: Path, scan: Scan) -> list[str]:
    """Globals of a zip checkpoint outside what ``torch.load(weights_only=True)`` accepts, in file order.

    torch's own static lister decides; for pickles with opcodes it does not read, the dry run's list is
    checked against the same allow-list.
    """
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001  (any parse failure: fall back to the dry run's list)
        allowed = allowed_globals()
        return [g for g in scan.globals if g not in allowed]
    ordered = [g for g in scan.globals if g in unsafe]
    return ordered + sorted(unsafe - set(ordered))


def _jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu")
        return dict(module.state_dict())
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load TorchScript archive ({one_line(exc)})") from None
