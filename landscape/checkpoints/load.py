"""Loading: a file into a ``Checkpoint``, and a checkpoint into the exact architecture it was trained with.

Notes on stderr (``landscape: note: ...``, once per process and key) that ``load_model`` has to say are held back
until the model has loaded: an error stands alone on its line, without notes it makes moot.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn

from .._base import resolve_device
from ..models import (ARCH_ATTR, Normalized, create_model, import_architecture, is_spec, kwargs_text, list_models,
                      model_info)
from .evidence import accuracy_text, check_evidence, correct, pick
from .formats import as_path, one_line, read_file
from .keys import (ARCH_KEY, Wiring, arch_record, find_module, infer_wiring, layout_of, merge_kwargs, module_record,
                   read_epoch, require_tensors, select_entry, split_normalization, strip_prefixes, unwrap_state_dict)
from .record import Checkpoint, CheckpointError

__all__ = ["load_checkpoint", "load_model", "load_state_dict"]

_NOTES_SHOWN: set[str] = set()
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("landscape_held_notes", default=None)


def load_checkpoint(path: str | os.PathLike, *, trusted: bool = False, entry: str | None = None) -> Checkpoint:
    """Read a checkpoint file safely.

    Args:
        path: a ``torch.save`` file (any extension), a ``.safetensors`` file or a TorchScript archive.
        trusted: allow full unpickling (``torch.load(weights_only=False)``, ``torch.jit.load``). This runs
            code stored in the file: only for files you trust. Default False.
        entry: for files holding ``{'last': ..., 'best': ...}``: which to read. Default ``None``: ``"last"``
            (RobustBench's choice), named in ``Checkpoint.entry`` and in a stderr note.

    Returns:
        ``Checkpoint(path, state_dict, epoch, meta, format, layout, arch, entry, module)``; tensors on CPU. A whole
        pickled ``nn.Module`` (``trusted=True`` only) is kept as ``module`` (layout ``"module"``).

    Raises:
        CheckpointError: missing/empty/truncated/corrupt file, a pickle that needs code to load (with
            ``trusted=False``), declared sizes larger than the file, non-tensor entries, a missing ``entry``.
            The message names the file and fits on one line.
        TypeError: ``path`` is not a path or ``trusted`` not a bool.

    Example:
        >>> ckpt = load_checkpoint("runs/at/model_e100.pt")   # doctest: +SKIP
        >>> ckpt.epoch, ckpt.meta.get("best_pgd"), ckpt.layout  # doctest: +SKIP
    """
    path = as_path(path)
    if not isinstance(trusted, bool):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    raw, meta, fmt = read_file(path, trusted=trusted)
    try:
        raw, chosen = select_entry(raw, entry)
        layout = layout_of(raw)
        module = find_module(raw)
        record = arch_record(raw) or arch_record(meta) or module_record(module)
        state_dict, wrapper_meta = unwrap_state_dict(raw)
        state_dict = require_tensors(strip_prefixes(state_dict))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if chosen is not None and entry is None:
        _note(f"{path}: holds 'last' and 'best' weights; using {chosen!r} (choose with --checkpoint-entry / "
              f"entry='best')", key=f"entry:{path.parent}")
    meta = {k: v for k, v in {**meta, **wrapper_meta}.items() if k != ARCH_KEY}
    epoch = read_epoch(meta)
    meta.pop("epoch", None)
    return Checkpoint(path=path, state_dict=state_dict, epoch=epoch, meta=meta, format=fmt, layout=layout,
                      arch=record, entry=chosen, module=module)


def load_state_dict(path: str | os.PathLike, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """``load_checkpoint(path, trusted=trusted).state_dict``: ``{name: Tensor}`` on CPU."""
    return load_checkpoint(path, trusted=trusted).state_dict


def _note(text: str, *, key: str) -> None:
    """Print ``landscape: note: text`` on stderr once per process and ``key`` (held back inside ``_held_notes``)."""
    held = _HELD.get()
    if held is not None:
        held.append((text, key))
        return
    if key in _NOTES_SHOWN:
        return
    _NOTES_SHOWN.add(key)
    print(f"landscape: note: {text}", file=sys.stderr)


@contextlib.contextmanager
def _held_notes() -> Iterator[None]:
    """Hold the notes said inside; print them when the block succeeds, drop them when it raises."""
    outer = _HELD.get() is not None
    token = _HELD.set([] if not outer else _HELD.get())
    try:
        yield
    except BaseException:
        if not outer:
            _HELD.reset(token)
        raise
    if outer:
        return
    held = _HELD.get()
    _HELD.reset(token)
    for text, key in held:
        _note(text, key=key)


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


def _misfit(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path, what: str,
            subject: str = "checkpoint") -> None:
    """Raise one CheckpointError listing the keys of ``state_dict`` missing from, extra to or shaped unlike
    ``model``'s (``num_batches_tracked`` that older files lack is added to ``state_dict``); nothing when all fit."""
    target = model.state_dict()
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
        raise CheckpointError(f"{path}: {subject} does not fit {what}: {'; '.join(parts)}"
                              f"{_mismatch_hint(model, mismatched)}")


def _load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Strictly load ``state_dict`` into ``model``, or raise one CheckpointError listing what does not fit."""
    state_dict = dict(state_dict)
    _misfit(model, state_dict, path, what)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: cannot load weights into {what} ({one_line(exc)})") from None


def load_model(path: str | os.PathLike | Checkpoint, arch: str | nn.Module | Callable[..., nn.Module] | None = None,
               *, trusted: bool = False, mean=None, std=None, device: str | torch.device = "cpu",
               entry: str | None = None, evidence=None, **arch_kwargs) -> nn.Module:
    """Build the architecture and load the checkpoint at ``path`` into it, with the wiring the file was trained with.

    Args:
        path: checkpoint file (see ``load_checkpoint``), or a ``Checkpoint`` already loaded (not read again).
        arch: one of

            * a registered name (``landscape.list_models()``). A family name (``preact_resnet18``,
              ``wide_resnet``) lets the file pick the exact wiring: its architecture record (files written by
              ``save_checkpoint`` / ``landscape train``), else its layout (the AdvLC repo's dict and its SWA file
              get ``*_advlc``), else its keys and shapes (a WRN's depth and width too); when the keys fit several
              wirings, ``evidence`` decides if one is clearly better on it, else the family default is used, and a
              note on stderr names the wiring used, the alternative (and the accuracies). An exact name
              (``preact_resnet18_advlc``) is used as given, and contradicting the file's record is an error.
            * your own class: ``"path/to/file.py:ClassName"`` / ``"package.module:ClassName"``, a class or a
              zero-argument factory (called with ``arch_kwargs``), or an ``nn.Module`` instance (loaded in place).
            * ``None`` (default): the architecture the file records (its ``arch`` record), or, for a trusted whole
              pickled model, the model itself. A file with neither is an error.

            A whole pickled ``nn.Module`` (``torch.save(model)``, read with ``trusted=True``) is always returned as
            itself (the same object, in eval mode on ``device``): an ``arch`` given beside it is only checked
            against it (its keys and shapes must fit that architecture, else CheckpointError; a note says when
            the architecture's class differs from the pickled one, which is the one used).
        trusted: allow full unpickling; see ``load_checkpoint``. Default False.
        mean, std: per-channel normalisation; when given the model is wrapped in ``Normalized`` so that it takes
            inputs in [0,1]. Normalisation stored in the file (``Normalized``'s ``mean``/``std``, or
            ``mu``/``sigma`` buffers) is applied the same way automatically (given values must then agree).
        device: torch device for the returned model. Default ``"cpu"``.
        entry: ``"last"``/``"best"`` for ``{'last', 'best'}`` files; see ``load_checkpoint``.
        evidence: ``(x, y)``, a small labelled batch with inputs in [0,1] (e.g. 128 test samples), used only when
            the keys fit several wirings of the family asked for: each candidate's clean accuracy on it is
            measured (eval mode, no grad, after ``Normalized`` when normalising) and one that is clearly better
            than every other is taken (``landscape.checkpoints.evidence``: >= 10 points, >= 3 samples and McNemar
            p <= 0.01); otherwise the default, as without evidence. Checked (and read) only when used; a
            zero-argument callable returning ``(x, y)`` is called only then (so callers decode nothing for files
            that decide their wiring themselves).
        **arch_kwargs: constructor arguments (``num_classes``, ``in_channels``, ``depth``, ...); for a registered
            name they go over the file's recorded or inferred ones.

    Returns:
        The model in eval mode on ``device``; ``model.landscape_arch`` names the wiring that was built (a whole
        pickled model keeps what it carries).

    Raises:
        CheckpointError: unreadable file, weights that do not fit (the message lists the first missing and
            unexpected keys and shape mismatches, with a hint for a wrong ``num_classes``; for a family it names
            the family and the wiring tried), a file that records another architecture, ``arch=None`` for a file
            that records none.
        ValueError: unknown ``arch`` or device, only one of mean/std, mean/std disagreeing with the checkpoint,
            ``evidence`` that is not ``(x in [0,1], integer labels)`` when it is needed.
        TypeError: ``arch`` is none of the above.
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    dev = resolve_device(device)
    if isinstance(arch, str) and is_spec(arch):  # unknown names and unimportable classes fail before reading
        import_architecture(arch)
    elif isinstance(arch, str):
        model_info(arch)
    elif isinstance(arch, nn.Module) and arch_kwargs:
        raise TypeError(f"constructor arguments {sorted(arch_kwargs)} given with an already built "
                        f"{type(arch).__name__}; pass the class instead, or no arguments")
    elif arch is not None and not (isinstance(arch, nn.Module) or callable(arch)):
        raise TypeError(f"arch must be a registered name, 'file.py:Class', a class, a factory, an nn.Module or "
                        f"None, got {type(arch).__name__}")
    with _held_notes():
        ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path, trusted=trusted, entry=entry)
        if ckpt.module is not None:
            return _whole_module(ckpt, arch, mean, std, arch_kwargs).to(dev).eval()
        if arch is None:
            arch = _recorded_arch(ckpt)
        if not isinstance(arch, str) or is_spec(arch):
            model, what = _build(arch, ckpt, arch_kwargs)
            return _with_weights(model, ckpt, what, mean, std).to(dev).eval()
        return _registered(ckpt, arch, mean, std, dev, evidence, arch_kwargs).to(dev).eval()


def _recorded_arch(ckpt: Checkpoint) -> str:
    """``arch=None``: the architecture the file records."""
    if ckpt.arch is None:
        raise CheckpointError(f"{ckpt.path}: the file records no architecture; pass arch=... (CLI: --arch)")
    name = ckpt.arch["name"]
    if not is_spec(name) and name not in list_models():
        raise CheckpointError(f"{ckpt.path}: the file records architecture {name!r}, which is not registered here; "
                              f"pass arch=... (CLI: --arch)")
    return name


def _with_weights(model: nn.Module, ckpt: Checkpoint, what: str, mean, std, *, say_inputs: bool = True
                  ) -> nn.Module:
    """``model`` with the checkpoint's weights, wrapped in ``Normalized`` for given or stored mean/std."""
    weights, stored_mean, stored_std, names = split_normalization(ckpt.state_dict, list(model.state_dict()))
    if say_inputs:
        _note_inputs(model, ckpt, given=mean is not None, stored=names is not None)
    _load_into(model, weights, ckpt.path, what)
    if names is not None:
        if mean is not None and not (_close(mean, stored_mean) and _close(std, stored_std)):
            raise ValueError(f"{ckpt.path}: the checkpoint stores mean={stored_mean.tolist()} std="
                             f"{stored_std.tolist()} ({names}), which disagree with the given mean={list(mean)} "
                             f"std={list(std)}")
        return Normalized(model, stored_mean.tolist(), stored_std.tolist())
    return Normalized(model, mean, std) if mean is not None else model


def _wiring(arch: str, ckpt: Checkpoint) -> Wiring:
    try:
        return infer_wiring(arch, ckpt.state_dict, ckpt.layout, ckpt.arch)
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from None


def _described(wiring, name: str, kwargs: Mapping[str, Any]) -> str:
    """What a file was loaded into, for messages: the family and the wiring tried, or the exact architecture."""
    built = f"{name}({kwargs_text(kwargs)})"
    return f"family {wiring.family} (tried {built})" if wiring.family is not None else f"architecture {built}"


def _registered(ckpt: Checkpoint, arch: str, mean, std, dev: torch.device, evidence,
                arch_kwargs: Mapping[str, Any]) -> nn.Module:
    """A registered name: the wiring the file implies (decided by evidence among candidates when given)."""
    wiring = _wiring(arch, ckpt)
    kwargs = merge_kwargs(arch, wiring.kwargs, arch_kwargs)
    key = f"wiring:{ckpt.path.parent}:{arch}"
    names = wiring.candidates if (wiring.candidates and evidence is not None) else (wiring.name,)
    models = {}
    for name in names:  # the candidates share keys and shapes: the first fits if any does
        what = _described(wiring, name, kwargs)
        # the extra candidates weigh up evidence only: building them must not move the caller's RNG
        with contextlib.nullcontext() if name == names[0] else torch.random.fork_rng(devices=[]):
            models[name] = _with_weights(create_model(name, **kwargs), ckpt, what, mean, std, say_inputs=False)
    chosen = wiring.name
    if len(models) == 1:
        if wiring.note:
            _note(f"{ckpt.path}: {wiring.note}", key=f"{key}:{chosen}")
    else:
        # checked only where used: a file that decides itself never needs it (nor has it decoded)
        x, y = check_evidence(evidence() if callable(evidence) else evidence)
        results = {name: correct(model.to(dev), x, y) for name, model in models.items()}
        chosen = pick(results) or ""
        if not chosen:
            chosen = wiring.name
            _note(f"{ckpt.path}: {wiring.note}; on {len(y)} evidence samples {accuracy_text(results)}: neither is "
                  f"clearly better", key=f"{key}:{chosen}")
        else:
            _note(f"{ckpt.path}: its keys fit several {wiring.family} wirings ({', '.join(names)}); on {len(y)} "
                  f"evidence samples {accuracy_text(results)}: using {chosen} ({model_info(chosen).source})",
                  key=f"{key}:{chosen}:evidence")
    model = models[chosen]
    inner = model.model if isinstance(model, Normalized) else model
    stored = split_normalization(ckpt.state_dict, list(inner.state_dict()))[3] is not None
    _note_inputs(inner, ckpt, given=mean is not None, stored=stored)
    return model


def _whole_module(ckpt: Checkpoint, arch, mean, std, arch_kwargs: Mapping[str, Any]) -> nn.Module:
    """The trusted pickled model itself; ``arch``, when given, is checked against it."""
    module = ckpt.module
    inner = module.model if isinstance(module, Normalized) else module
    _, stored_mean, stored_std, names = split_normalization(ckpt.state_dict)
    if arch is not None:
        if isinstance(arch, str) and not is_spec(arch):
            wiring = _wiring(arch, ckpt)
            kwargs = merge_kwargs(arch, wiring.kwargs, arch_kwargs)
            reference = create_model(wiring.name, **kwargs)
            what = _described(wiring, wiring.name, kwargs)
        else:
            reference, what = _build(arch, ckpt, arch_kwargs)
        weights = split_normalization(ckpt.state_dict, list(reference.state_dict()))[0]
        _misfit(reference, weights, ckpt.path, what, subject=f"the pickled {_qualname(inner)}")
        if not _same_class(reference, inner):
            _note(f"{ckpt.path}: a whole pickled model: using it as itself ({_qualname(inner)}); its weights fit "
                  f"{what}, whose class {_qualname(reference)} is not used", key=f"module:{ckpt.path}")
    if names is not None:  # the model normalises its inputs itself
        if mean is not None and not (_close(mean, stored_mean) and _close(std, stored_std)):
            raise ValueError(f"{ckpt.path}: the pickled model stores mean={stored_mean.tolist()} std="
                             f"{stored_std.tolist()} ({names}), which disagree with the given mean={list(mean)} "
                             f"std={list(std)}")
        return module
    return Normalized(module, mean, std) if mean is not None else module


def _same_class(a: nn.Module, b: nn.Module) -> bool:
    """The same class, or one class defined in the same source file imported twice under two module names."""
    if type(a) is type(b):
        return True
    try:
        return (type(a).__qualname__ == type(b).__qualname__
                and os.path.samefile(inspect.getsourcefile(type(a)), inspect.getsourcefile(type(b))))
    except (TypeError, OSError):
        return False


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _note_inputs(model: nn.Module, ckpt: Checkpoint, *, given: bool, stored: bool) -> None:
    """Say when the normalisation chosen disagrees with what the published code of this wiring feeds it.

    Files with an architecture record (this project's own) and user classes know their own inputs: no note.
    """
    name = (getattr(model, ARCH_ATTR, None) or {}).get("name", "")
    if ckpt.arch is not None or name not in list_models():
        return
    info = model_info(name)
    if info.family is None or stored:
        return
    if info.inputs == "[0,1]" and given:
        _note(f"{ckpt.path}: {name}'s published training code feeds raw [0,1] images, but mean/std were given "
              f"(CLI: --normalize); drop them unless your script normalised its inputs", key=f"in:{ckpt.path.parent}")
    elif info.inputs == "normalized" and not given:
        _note(f"{ckpt.path}: {name}'s published training code normalises its inputs with the dataset mean/std; "
              f"if this file comes from it, pass mean/std (CLI: --normalize DATASET, e.g. cifar10)",
              key=f"in:{ckpt.path.parent}")


def _build(arch, ckpt: Checkpoint, arch_kwargs: Mapping[str, Any]) -> tuple[nn.Module, str]:
    """The model of a user class / factory / instance / spec, and its description for messages."""
    if isinstance(arch, nn.Module):
        return arch, f"the given {type(arch).__name__}"
    if isinstance(arch, str):  # a spec: the record's arguments when it records this class
        kwargs = merge_kwargs(arch, _wiring(arch, ckpt).kwargs, arch_kwargs)
        return create_model(arch, **kwargs), f"architecture {arch}({kwargs_text(kwargs)})"
    try:
        model = arch(**arch_kwargs)
    except TypeError as exc:
        raise ValueError(f"cannot build {getattr(arch, '__name__', arch)!r}({kwargs_text(arch_kwargs)}): "
                         f"{exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"{getattr(arch, '__name__', arch)!r} built a {type(model).__name__}, not an nn.Module")
    return model, f"{getattr(arch, '__name__', type(model).__name__)}({kwargs_text(arch_kwargs)})"


def _close(given, stored: torch.Tensor) -> bool:
    given_t = torch.as_tensor(given, dtype=torch.float64).flatten()
    return given_t.shape == stored.shape and torch.allclose(given_t, stored.double(), rtol=1e-5, atol=1e-7)
