"""Key rewriting and reading what a checkpoint's layout says: pure functions on the loaded object, tested one by one.

* ``unwrap_state_dict`` / ``strip_prefixes`` / ``require_tensors`` / ``read_epoch``: the weights and metadata.
* ``select_entry``: zoo files holding ``{'last': sd, 'best': sd}``.
* ``layout_of`` / ``arch_record`` / ``find_module``: which training code wrote the file (the AdvLC repo's dict
  and its SWA file, Rice et al.'s ``model_best.pth``, a bare state dict, a whole pickled model, ...) and the
  architecture record the project's own files carry.
* ``split_normalization``: mean/std stored with the weights (``Normalized``'s ``mean``/``std`` + ``model.*``, or
  the ``mu``/``sigma`` buffers of RobustBench / Wong et al. models).
* ``infer_wiring`` / ``merge_kwargs``: the exact registered wiring for a requested family name, from the record,
  layout and keys (and shapes), and the constructor arguments it implies under the caller's own.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..models import ARCH_ATTR, Normalized, family, is_spec, list_models, model_info

__all__ = [
    "ARCH_KEY", "ENTRIES", "OFFICIAL_KEYS", "PREFIXES", "SWA_KEYS", "WRAPPER_KEYS", "Wiring", "arch_record",
    "find_module", "infer_wiring", "layout_of", "merge_kwargs", "module_record", "read_epoch", "require_tensors",
    "scalar", "select_entry", "split_normalization", "strip_prefix", "strip_prefixes", "unwrap_state_dict",
]

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
"""Keys under which training scripts nest the weights, tried in this order at every level."""
PREFIXES = ("module.", "_orig_mod.")
"""Prefixes added by ``nn.DataParallel``/``DistributedDataParallel`` and ``torch.compile``."""
OFFICIAL_KEYS = ("epoch", "state_dict", "best_acc1", "best_pgd", "best_fgsm", "optimizer")
"""The dict the AdvLC repo's training script saves (and the project's own ``train``, plus ``ARCH_KEY``)."""
ARCH_KEY = "arch"
"""Entry holding ``{"name": exact wiring or spec, "kwargs": {...}}``, written by ``save_checkpoint``."""
ENTRIES = ("last", "best")
"""Zoo files (e.g. RobustBench's Andriushchenko2020Understanding) hold both; ``last`` is the default."""
SWA_KEYS = ("state_dict", "num", "best_acc", "best_pgd", "best_fgm")
"""The AdvLC repo's SWA file ``<id>_swa_end`` (and its copy ``<id>_swa_pgd``): ``swa_model.state_dict()`` of the
same network as ``<id>_end`` (a plain model: no ``module.`` prefix, no ``n_averaged``), the number of averaged
models and the SWA model's best accuracies."""
RICE_KEYS = ("state_dict", "test_robust_acc")
"""Rice et al.'s ``model_best.pth`` / ``model_val.pth``: the state dict plus test/validation numbers."""

_MAX_NESTING = 6


def scalar(value: Any) -> Any | None:
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
                value = scalar(value)
                if value is not None:
                    meta[key] = value
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


def select_entry(obj: Any, entry: str | None = None) -> tuple[Any, str | None]:
    """Pick ``obj[entry]`` from a ``{'last': ..., 'best': ...}`` file.

    Args:
        obj: the object ``torch.load`` returned.
        entry: ``"last"``, ``"best"`` or ``None`` (``"last"`` when the file has it, as RobustBench does).

    Returns:
        ``(inner, chosen)``; ``(obj, None)`` when ``obj`` is not such a file and ``entry`` is ``None``.

    Raises:
        ValueError: ``entry`` not one of ``ENTRIES``, or given for a file without that entry.
    """
    if entry is not None and entry not in ENTRIES:
        raise ValueError(f"entry must be one of {', '.join(ENTRIES)}, got {entry!r}")
    present = [k for k in ENTRIES if isinstance(obj, Mapping) and isinstance(obj.get(k), (Mapping, nn.Module))]
    if not present:
        if entry is None:
            return obj, None
        raise ValueError(f"has no {entry!r} entry (it is not a {{'last', 'best'}} file)")
    chosen = entry or ("last" if "last" in present else present[0])
    if chosen not in present:
        raise ValueError(f"has no {chosen!r} entry (it holds {', '.join(present)})")
    return obj[chosen], chosen


def layout_of(obj: Any) -> str:
    """Which training code's layout ``obj`` (what ``torch.load`` returned, after ``select_entry``) has.

    Returns:
        ``"landscape"`` (has an ``ARCH_KEY`` record), ``"advlc"`` (the AdvLC repo's ``OFFICIAL_KEYS`` dict),
        ``"advlc_swa"`` (the AdvLC repo's SWA file, ``SWA_KEYS``), ``"rice"`` (Rice et al.'s ``model_best.pth``),
        ``"module"`` (a whole pickled model, also under a wrapper key such as ``{'model': net}``), ``"bare"``
        (the state dict itself) or ``"wrapped"`` (any other wrapper).
    """
    if find_module(obj) is not None:
        return "module"
    if not isinstance(obj, Mapping):
        return "bare"
    if arch_record(obj) is not None:
        return "landscape"
    keys = set(obj)
    if keys >= set(OFFICIAL_KEYS):
        return "advlc"
    if keys >= set(SWA_KEYS):
        return "advlc_swa"
    if keys >= set(RICE_KEYS):
        return "rice"
    if not any(isinstance(obj.get(k), (Mapping, nn.Module)) for k in WRAPPER_KEYS):
        return "bare"
    return "wrapped"


def find_module(obj: Any, *, types: tuple[type, ...] = (nn.Module,)) -> Any | None:
    """The whole pickled ``nn.Module`` in ``obj`` (itself, or under ``WRAPPER_KEYS`` as ``unwrap_state_dict``
    follows them), else None; ``types`` says what counts as the model (the header reader's inert stand-in)."""
    for _ in range(_MAX_NESTING):
        if isinstance(obj, types):
            return obj
        if not isinstance(obj, Mapping):
            return None
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, *types))), None)
        if inner is None:
            return None
        obj = obj[inner]
    return None


def module_record(module: nn.Module | None) -> dict[str, Any] | None:
    """The architecture record a pickled model built by ``create_model`` carries (``landscape_arch``, on the model
    or inside ``Normalized``), else None."""
    inner = module.model if isinstance(module, Normalized) else module
    return arch_record({ARCH_KEY: getattr(inner, ARCH_ATTR, None)}) if inner is not None else None


def arch_record(obj: Any) -> dict[str, Any] | None:
    """``{"name": str, "kwargs": dict}`` from ``obj[ARCH_KEY]`` (a mapping, or JSON text in safetensors
    metadata); ``None`` when absent or malformed (a file is never refused for its record)."""
    if not isinstance(obj, Mapping):
        return None
    record = obj.get(ARCH_KEY)
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            return None
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        return None
    kwargs = record.get("kwargs") or {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        return None
    return {"name": record["name"], "kwargs": dict(kwargs)}


_NORMALIZATION_KEYS = (("mean", "std"), ("mu", "sigma"))


def split_normalization(state_dict: Mapping[str, torch.Tensor], model_keys: Sequence[str] = ()
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None, str | None]:
    """Separate input normalisation stored with the weights.

    Two layouts: ``Normalized`` (``mean``, ``std`` and every other key under ``model.``) and the
    ``mu``/``sigma`` buffers of RobustBench / Wong et al. models (next to the network's own keys). Keys that the
    target model itself has (``model_keys``) are left alone.

    Returns:
        ``(weights, mean, std, names)``: ``mean``/``std`` flattened to (C,), ``names`` ``"mean/std"`` or
        ``"mu/sigma"``; ``(dict(state_dict), None, None, None)`` when there is none.
    """
    for m_key, s_key in _NORMALIZATION_KEYS:
        if m_key not in state_dict or s_key not in state_dict or m_key in model_keys:
            continue
        mean, std = state_dict[m_key].flatten(), state_dict[s_key].flatten()
        others = {k: v for k, v in state_dict.items() if k not in (m_key, s_key)}
        if not others or mean.shape != std.shape:
            continue
        if m_key == "mean":
            if not all(k.startswith("model.") for k in others):
                continue
            others = {k[len("model."):]: v for k, v in others.items()}
        return others, mean, std, f"{m_key}/{s_key}"
    return dict(state_dict), None, None, None


@dataclass(frozen=True)
class Wiring:
    """The exact wiring chosen for a requested name.

    Attributes:
        name: exact registered name (or the user spec / requested name unchanged).
        kwargs: constructor arguments the file implies (e.g. ``sub_block1=True``, a WRN's ``depth``), below the
            caller's own (``merge_kwargs``).
        note: a line the loader prints on stderr: the keys fit several wirings and a default was taken, or
            the caller's choice contradicts the file's layout; ``None`` when the file decided.
        candidates: when the keys fit several wirings of a family: all of them, ``name`` (the default) first, for a
            decision by evidence; else ``()``.
        family: the family name that was asked for, else None.
    """

    name: str
    kwargs: dict = field(default_factory=dict)
    note: str | None = None
    candidates: tuple[str, ...] = ()
    family: str | None = None


_LAYOUT_TEXT = {"advlc": "the AdvLC repo's checkpoint layout", "advlc_swa": "the AdvLC repo's SWA checkpoint layout",
                "rice": "Rice et al.'s model_best.pth layout"}


def _shapes(keys: Sequence[str] | Mapping[str, Any]) -> dict[str, tuple[int, ...] | None]:
    """``{name: shape}`` from a state dict (tensors or shapes), or ``{name: None}`` from a list of names."""
    if not isinstance(keys, Mapping):
        return {k: None for k in keys}
    return {k: (tuple(v.shape) if hasattr(v, "shape") else (tuple(v) if v is not None else None))
            for k, v in keys.items()}


def merge_kwargs(requested: str, inferred: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments: what the file implies, overridden by what the caller gave (a caller's alias, e.g. the
    AdvLC repo's ``width``, replaces the inferred ``widen_factor``)."""
    fam = None if is_spec(requested) else (family(requested) or (family(model_info(requested).family)
                                                                  if model_info(requested).family else None))
    aliases = fam.aliases if fam is not None else {}
    dropped = {aliases[k] for k in given if k in aliases}
    return {**{k: v for k, v in inferred.items() if k not in dropped}, **given}


def infer_wiring(requested: str, keys: Sequence[str] | Mapping[str, Any], layout: str,
                 record: Mapping[str, Any] | None) -> Wiring:
    """The exact wiring to build for ``requested`` given what the file says.

    Rules, first match wins: a user spec is taken as given (with the record's arguments when the file records
    that spec); an architecture record in the file decides (a
    contradicting exact name is an error); a family asks its ``infer`` rule (keys, shapes and layout), and an
    ambiguous answer yields the default with a note naming the alternative and ``candidates`` listing all wirings
    that fit (the loader may decide among them by evidence); an exact name is taken as asked (with the arguments
    its family's rule reads from the keys when that rule points to it), with a note when the file's layout points
    to another member of its family.

    Args:
        requested: what the caller asked for (registered name, family or spec).
        keys: the state dict (after unwrapping and prefix stripping), ``{name: shape}``, or only its key names
            (then nothing is read from shapes).
        layout: ``layout_of`` the file.
        record: ``arch_record`` of the file, or None.

    Raises:
        ValueError: the file records an architecture that contradicts ``requested``.
    """
    if is_spec(requested):  # a user class: the record's arguments when it records this class
        same = record is not None and record["name"] == requested
        return Wiring(requested, dict(record["kwargs"]) if same else {})
    fam = family(requested)
    info = None if fam else model_info(requested)  # unknown names fail here
    if record is not None and record["name"] in list_models():  # older or user-class records: not binding
        rec = record["name"]
        rec_family = model_info(rec).family
        if rec == requested or (fam is not None and rec_family == fam.name):
            return Wiring(rec, dict(record["kwargs"]))
        raise ValueError(f"the file records architecture {rec}, not {requested}; pass --arch {rec} "
                         f"(or load_model(path, {rec!r}))")
    shapes = _shapes(keys)
    if fam is not None:
        name, extra, answer = fam.infer(shapes, layout)
        others = fam.alternatives(name, answer)
        if others:
            return Wiring(name, dict(extra), f"its keys fit several {fam.name} wirings; using "
                          f"{name} ({model_info(name).source}); {fam.hint}", (name, *others), fam.name)
        return Wiring(name, dict(extra), family=fam.name)
    if info.family is not None:
        member_of = family(info.family)
        inferred, extra, answer = member_of.infer(shapes, layout)
        others = member_of.alternatives(inferred, answer)
        if inferred == requested:
            return Wiring(requested, dict(extra))
        if not others and layout in _LAYOUT_TEXT:
            return Wiring(requested, {}, f"{_LAYOUT_TEXT[layout]} belongs to {inferred}, but "
                          f"{requested} was asked for; using {requested}")
    return Wiring(requested)
