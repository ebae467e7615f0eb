"""Hostile checkpoints: code-running pickles, size bombs, damaged and odd files.

The loader must refuse every code-running pickle (whatever the wrapper, extension or pickle flavour) without
running it, accept it only with ``trusted=True``, refuse declared sizes the file cannot hold *before*
``torch.load`` allocates anything, and turn every damaged file into a one-line ``CheckpointError``.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shlex
import struct
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landscape.checkpoints import CheckpointError, load_checkpoint, load_model

PAYLOADS = ["os.system", "exec", "open", "function"]
EXTENSIONS = [".pt", ".pth", ".tar", ".ckpt", ".bin"]
FLAVOURS = ["zip", "legacy", "pickle2", "pickle4"]  # torch.save (new, old) and plain pickle.dump


def write_marker(path: str) -> torch.Tensor:
    """A module-level function a pickle can call by reference: leaves a marker, returns a tensor."""
    Path(path).write_text("ran")
    return torch.zeros(1)


class Payload:
    """Unpickling this runs code that creates ``marker``."""

    def __init__(self, kind: str, marker: Path):
        self.kind, self.marker = kind, str(marker)

    def __reduce__(self):
        if self.kind == "os.system":
            return os.system, (f"touch {shlex.quote(self.marker)}",)
        if self.kind == "exec":
            return builtins.exec, (f"open({self.marker!r}, 'w').close()",)
        if self.kind == "open":
            return builtins.open, (self.marker, "w")
        return write_marker, (self.marker,)


def _state_dict() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(4.0), "b": torch.ones(2)}


WRAPPERS = {
    "bare": lambda p: {**_state_dict(), "evil": p},
    "state_dict": lambda p: {"state_dict": _state_dict(), "evil": p},
    "model/state_dict": lambda p: {"model": {"state_dict": {**_state_dict(), "evil": p}}},
    "net+epoch": lambda p: {"net": _state_dict(), "epoch": p},
    "module.": lambda p: {"state_dict": {"module.w": torch.ones(1), "module.evil": p}},
    "advlc-optimizer": lambda p: {"epoch": 1, "state_dict": _state_dict(), "best_acc1": 0.1, "best_pgd": 0.1,
                                  "best_fgsm": 0.1, "optimizer": {"state": {}, "param_groups": [{"lr": p}]}},
}


def _write(obj, path: Path, flavour: str) -> Path:
    if flavour in ("zip", "legacy"):
        torch.save(obj, path, _use_new_zipfile_serialization=flavour == "zip")
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2 if flavour == "pickle2" else 4))
    return path


@pytest.fixture
def no_torch_load(monkeypatch):
    """Fail if torch.load is reached: the file must be refused by the checks that come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a file that should have been refused before")

    monkeypatch.setattr(torch, "load", refuse)


# ---------------------------------------------------------------------------------------------- code in pickles

@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("kind", PAYLOADS)
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, kind, wrapper, ext, flavour):
    marker = tmp_path / "MARKER"
    path = _write(WRAPPERS[wrapper](Payload(kind, marker)), tmp_path / f"evil{ext}", flavour)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: refusing to unpickle") and "\n" not in msg
    assert "trusted=True" in msg and "--trust-checkpoint" in msg
    expected = {"os.system": "posix.system", "exec": "builtins.exec", "open": "io.open",  # builtins.open is io.open
                "function": "write_marker"}[kind]
    assert expected in msg
    with pytest.raises(CheckpointError):
        load_model(path, "mlp")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_zip_pickles_of_every_protocol_are_refused(tmp_path, kind, protocol, monkeypatch):
    """torch's static globals lister reads the opcodes torch.save's default protocol uses; files written with a
    newer protocol (FRAME, STACK_GLOBAL, ...) fall back to the dry-run scan and are refused just the same."""
    calls = []
    real = torch.serialization.get_unsafe_globals_in_checkpoint

    def spy(f):
        calls.append(f)
        return real(f)

    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint", spy)
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save(WRAPPERS["state_dict"](Payload(kind, marker)), path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle: it references .*which could run"):
        load_checkpoint(path)
    assert calls and not marker.exists()  # torch's public lister was consulted, nothing ran
    if protocol == 2:  # torch's weights_only unpickler itself reads only the default protocol
        torch.save(_state_dict(), path, pickle_protocol=protocol)
        assert torch.equal(load_checkpoint(path).state_dict["w"], torch.arange(4.0))  # clean files still load


@pytest.mark.parametrize("flavour", ["zip", "legacy"])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_trusted_is_the_only_way_through(tmp_path, kind, flavour):
    marker = tmp_path / "MARKER"
    path = _write(WRAPPERS["state_dict"](Payload(kind, marker)), tmp_path / "evil.pt", flavour)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    ckpt = load_checkpoint(path, trusted=True)
    assert torch.equal(ckpt.state_dict["w"], torch.arange(4.0))
    assert marker.exists()  # the payload is live: proof that the refusal above was not vacuous


@pytest.mark.parametrize("flavour", ["pickle2", "pickle4"])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_plain_pickles_are_not_unpickled_even_when_trusted(tmp_path, kind, flavour):
    marker = tmp_path / "MARKER"
    path = _write(WRAPPERS["state_dict"](Payload(kind, marker)), tmp_path / "evil.pt", flavour)
    with pytest.raises(CheckpointError, match=r"evil\.pt: a plain pickle, not a file written by torch\.save"):
        load_checkpoint(path, trusted=True)
    assert not marker.exists()
    # even a harmless-looking one: pickled tensors rebuild through torch.storage._load_from_bytes, which
    # calls torch.load(weights_only=False) on embedded bytes
    harmless = _write({"w": torch.ones(2)}, tmp_path / "plain.pt", flavour)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle: it references torch\.storage\._load_from_bytes"):
        load_checkpoint(harmless)
    with pytest.raises(CheckpointError, match="plain pickle"):
        load_checkpoint(harmless, trusted=True)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pickle_named_safetensors_is_never_unpickled(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = _write(WRAPPERS["state_dict"](Payload(kind, marker)), tmp_path / "evil.safetensors", "zip")
    for trusted in (False, True):
        with pytest.raises(CheckpointError, match=r"evil\.safetensors: not a safetensors file"):
            load_checkpoint(path, trusted=trusted)
    assert not marker.exists()


def _torchscript_like(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", data_pkl)
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("evil/code/__torch__/m.py", "def forward(self):\n  return None\n")
        zf.writestr("evil/version", "3\n")
    return path


@pytest.mark.parametrize("kind", PAYLOADS)
def test_hostile_torchscript_archive_is_refused(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = _torchscript_like(tmp_path / "ts.pt", pickle.dumps({"weight": Payload(kind, marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"ts\.pt: refusing to read TorchScript archive: .*names"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"ts\.pt: "):
        load_checkpoint(path, trusted=True)  # torch.jit.load's own unpickler refuses it too
    assert not marker.exists()


def test_full_model_pickle_needs_trust(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(CheckpointError, match=r"references torch\.nn\.modules\.container\.Sequential"):
        load_checkpoint(path)
    sd = load_checkpoint(path, trusted=True).state_dict
    assert torch.equal(sd["0.weight"], model[0].weight.detach())


# ---------------------------------------------------------------------------------------------- size bombs

def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_declaring_a_huge_tensor_is_refused(tmp_path, no_torch_load):
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(_safetensors_bytes({"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}},
                                        b"\0" * 16))
    with pytest.raises(CheckpointError, match=r"bomb\.safetensors: tensor 'w' declares shape \(1000000000000,\)"):
        load_checkpoint(path)
    path.write_bytes(_safetensors_bytes({"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 16]}},
                                        b"\0" * 16))
    with pytest.raises(CheckpointError, match="4000000000000 bytes"):
        load_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(CheckpointError, match=r"header declares 4611686018427387904 bytes"):
        load_checkpoint(path)


@pytest.mark.parametrize("header, match", [
    ("[1, 2]", "not a JSON object"),
    ('{"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
    ('{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "invalid shape"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}', "declares shape"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": "x"}}', "invalid data offsets"),
    ('{"w": {"dtype": "F32"', "corrupt safetensors header"),
])
def test_malformed_safetensors_headers(tmp_path, header, match):
    path = tmp_path / "bad.safetensors"
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_legacy_file_declaring_a_huge_storage_is_refused_before_allocation(tmp_path, no_torch_load):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    at = data.index(b"X\x03\x00\x00\x00cpu") + 10  # the storage's element count follows its location
    assert data[at:at + 2] == b"K\x03"  # BININT1 3
    bomb = data[:at] + b"\x8a\x06\x00\x00\x00\x00\x00\x01" + data[at + 2:]  # LONG1 2**40 elements
    path.write_bytes(bomb)
    with pytest.raises(CheckpointError, match=r"legacy\.pt: declares 4398046511112 bytes of tensor data"):
        load_checkpoint(path)


def test_zip_storage_declaring_more_than_its_record_is_refused(tmp_path, no_torch_load):
    path = tmp_path / "big.pt"
    torch.save({"w": torch.ones(3)}, path)
    with zipfile.ZipFile(path) as zf:
        records = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    pkl = next(k for k in records if k.endswith("data.pkl"))
    assert b"K\x03t" in records[pkl]
    records[pkl] = records[pkl].replace(b"K\x03t", b"J\x00\x00\x00\x40t")  # 2**30 float elements
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError,
                       match=r"big\.pt: storage '0' declares 1073741824 elements \(4294967296 bytes\)"):
        load_checkpoint(path)


def test_zip_with_huge_declared_record_sizes_is_refused(tmp_path, no_torch_load):
    path = tmp_path / "huge.pt"
    torch.save({"w": torch.ones(3)}, path)
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")
    while i != -1:  # central directory entries: make every record claim ~4 GiB
        struct.pack_into("<II", data, i + 20, 0xFFFFFFF0, 0xFFFFFFF0)
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"huge\.pt: (zip record .* declares 4294967280 bytes|truncated)"):
        load_checkpoint(path)


def test_zip_bomb_record_is_refused(tmp_path, no_torch_load):
    path = tmp_path / "zipbomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        zf.writestr("archive/data/0", b"\0" * (20 << 20))  # 20 MiB of zeros deflate ~1000x
    with pytest.raises(CheckpointError, match=r"zipbomb\.pt: zip record 'archive/data/0' declares 20971520 bytes"):
        load_checkpoint(path)


def test_tensor_view_beyond_its_storage_is_refused(tmp_path):
    path = tmp_path / "view.pt"
    torch.save({"w": torch.ones(3)}, path)
    with zipfile.ZipFile(path) as zf:
        records = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    pkl = next(k for k in records if k.endswith("data.pkl"))
    # the tensor's size (3,) -> (300,) while its storage keeps 3 elements
    records[pkl] = records[pkl].replace(b"K\x00K\x03\x85", b"K\x00M,\x01\x85")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"view\.pt: truncated, corrupt or unsupported checkpoint"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------- odd files

def _load_in_thread(path: Path, seconds: float = 10.0) -> BaseException | None:
    """Run load_checkpoint in a thread; fail the test if it blocks (e.g. reading a FIFO or /dev/zero)."""
    result: list[BaseException | None] = []

    def target():
        try:
            load_checkpoint(path)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_checkpoint({path}) blocked"
    return result[0]


def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    exc = _load_in_thread(fifo)
    assert isinstance(exc, CheckpointError) and "not a regular file" in str(exc)
    link = tmp_path / "zero.pt"
    link.symlink_to("/dev/zero")
    exc = _load_in_thread(link)
    assert isinstance(exc, CheckpointError) and "zero.pt: not a regular file" in str(exc)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"other\.pt: zip archive without data\.pkl"):
        load_checkpoint(path)


def test_every_truncation_of_a_checkpoint_is_a_checkpoint_error(tmp_path):
    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    buffers = {}
    for flavour in ("zip", "legacy"):
        f = io.BytesIO()
        torch.save({"state_dict": sd, "epoch": 1}, f, _use_new_zipfile_serialization=flavour == "zip")
        buffers[flavour] = f.getvalue()
    from safetensors.torch import save

    buffers["safetensors"] = save(sd, metadata={"epoch": "1"})
    for flavour, data in buffers.items():
        path = tmp_path / ("t.safetensors" if flavour == "safetensors" else "t.pt")
        step = max(1, len(data) // 150)
        for keep in range(1, len(data), step):
            path.write_bytes(data[:keep])
            with pytest.raises(CheckpointError, match=r"t\.(pt|safetensors): "):
                load_checkpoint(path)


_FUZZ_SOURCES: dict[str, bytes] = {}


def _fuzz_source(flavour: str) -> bytes:
    if flavour not in _FUZZ_SOURCES:
        sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
        if flavour == "safetensors":
            from safetensors.torch import save

            _FUZZ_SOURCES[flavour] = save(sd)
        else:
            f = io.BytesIO()
            torch.save({"state_dict": sd, "epoch": 1}, f, _use_new_zipfile_serialization=flavour == "zip")
            _FUZZ_SOURCES[flavour] = f.getvalue()
    return _FUZZ_SOURCES[flavour]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flavour=st.sampled_from(["zip", "legacy", "safetensors"]),
       flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=4))
def test_damaged_bytes_never_escape_as_other_errors(tmp_path, flavour, flips):
    data = bytearray(_fuzz_source(flavour))
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    path = tmp_path / ("f.safetensors" if flavour == "safetensors" else "f.pt")
    path.write_bytes(bytes(data))
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
    else:  # some flips land in tensor data or padding: still a well-formed checkpoint
        assert ckpt.state_dict and all(isinstance(v, torch.Tensor) for v in ckpt.state_dict.values())
