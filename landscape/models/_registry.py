"""Model registry: architectures found by name, timm-style, with per-architecture facts.

Three kinds of names are accepted wherever an architecture is asked for:

* an exact wiring, e.g. ``preact_resnet18_advlc`` (one published forward function);
* a family, e.g. ``preact_resnet18``: it builds the family's default wiring, and when loading a checkpoint the
  file decides the wiring (see ``landscape.checkpoints.keys.infer_wiring`` and each family's ``infer`` rule);
* a user class, ``path/to/file.py:ClassName`` or ``package.module:ClassName`` (see ``user.py``).
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch.nn as nn

ARCH_ATTR = "landscape_arch"
"""Attribute set on every model built by ``create_model``: ``{"name": exact wiring or spec, "kwargs": {...}}``.
``save_checkpoint`` writes it into the file, so that loading picks the same wiring."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one exact wiring.

    Attributes:
        name: registered name.
        fn: constructor.
        family: the family name it belongs to (``None`` for stand-alone models).
        source: where the wiring comes from (paper / repository), for messages and docs.
        inputs: the inputs the published code feeds it: ``"[0,1]"`` (raw pixels), ``"normalized"`` (the
            training script subtracts the dataset mean and divides by its std before the model: load with
            ``mean``/``std``, CLI ``--normalize DATASET``) or ``"either"`` (the codes using it differ).
    """

    name: str
    fn: Callable[..., nn.Module] = field(repr=False)
    family: str | None = None
    source: str = ""
    inputs: str = "[0,1]"


@dataclass(frozen=True)
class Family:
    """Several exact wirings that share a name (and often identical state-dict keys).

    ``infer(shapes, layout)`` reads the checkpoint's keys (``shapes``: ``{name: shape tuple}``, or
    ``{name: None}`` where only the names are known) and layout (see ``Checkpoint.layout``) and returns
    ``(wiring, extra_kwargs, alternatives)``. ``extra_kwargs`` are constructor arguments the keys imply (e.g. a
    WRN's ``depth`` and ``widen_factor`` from its shapes). ``alternatives`` names the other wirings the keys fit
    just as well (``True``: every other member; ``False``/empty: none): the loader then decides by evidence when
    it has some, else takes ``wiring`` and says so on stderr together with ``hint``.
    ``aliases`` maps a caller's argument to the inferred one it replaces (``{"width": "widen_factor"}``).
    """

    name: str
    default: str
    members: tuple[str, ...]
    infer: Callable[[Mapping[str, Any], str], tuple[str, dict, Any]] = field(repr=False)
    hint: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)

    def alternatives(self, chosen: str, answer: Any) -> tuple[str, ...]:
        """The other wirings an ``infer`` answer's third element names (see above), in member order."""
        if answer is True:
            return tuple(m for m in self.members if m != chosen)
        if not answer:
            return ()
        names = (answer,) if isinstance(answer, str) else tuple(answer)
        unknown = [n for n in names if n not in self.members]
        if unknown:
            raise ValueError(f"family {self.name!r}: infer named {unknown}, which are not its members")
        return tuple(m for m in self.members if m in names and m != chosen)


INPUTS = ("[0,1]", "normalized", "either")
_MODELS: dict[str, ModelInfo] = {}
_FAMILIES: dict[str, Family] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, family: str | None = None, source: str = "",
                   inputs: str = "[0,1]"):
    """Decorator: register a model constructor under its function name (``@register_model`` or with options)."""
    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if f.__name__ in _MODELS or f.__name__ in _FAMILIES:
            raise ValueError(f"model {f.__name__!r} is already registered")
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        _MODELS[f.__name__] = ModelInfo(f.__name__, f, family, source, inputs)
        return f

    return wrap(fn) if fn is not None else wrap


def register_family(name: str, *, default: str, infer, hint: str = "",
                    aliases: Mapping[str, str] | None = None) -> None:
    """Register ``name`` as a family of the already registered models whose ``family`` is ``name``."""
    members = tuple(n for n, info in _MODELS.items() if info.family == name)
    if default not in members:
        raise ValueError(f"family {name!r}: default {default!r} is not one of its members {members}")
    if name in _MODELS or name in _FAMILIES:
        raise ValueError(f"model {name!r} is already registered")
    _FAMILIES[name] = Family(name, default, members, infer, hint, dict(aliases or {}))


def unregister(name: str) -> None:
    """Remove a family and its members, or one model (tests register throw-away families)."""
    fam = _FAMILIES.pop(name, None)
    for member in (fam.members if fam else (name,)):
        _MODELS.pop(member, None)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names (families and exact wirings) matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in (*_MODELS, *_FAMILIES) if fnmatch.fnmatch(n, pattern))


def is_spec(name: Any) -> bool:
    """True for a user-class spec ``file.py:Class`` / ``pkg.mod:Class`` (anything with a colon)."""
    return isinstance(name, str) and ":" in name


def family(name: str) -> Family | None:
    """The ``Family`` registered as ``name``, else ``None``."""
    return _FAMILIES.get(name)


def model_info(name: str) -> ModelInfo:
    """``ModelInfo`` of an exact wiring; a family gives its default's. Raises ValueError for unknown names."""
    _check_name(name)
    fam = _FAMILIES.get(name)
    return _MODELS[fam.default if fam else name]


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"architecture must be a registered name, 'file.py:Class' or 'package.module:Class', "
                        f"got {type(name).__name__}")
    if name in _MODELS or name in _FAMILIES:
        return
    known = list_models()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    close += [n for n in known if name and name.lower() in n and n not in close][:3]
    hint = f"; did you mean {', '.join(close[:4])}?" if close else ""
    raise ValueError(f"unknown architecture {name!r}{hint} (available: {', '.join(known)}; or give your own class "
                     f"as path/to/file.py:ClassName or package.module:ClassName)")


def constructor(name: str) -> Callable[..., nn.Module]:
    """The callable ``create_model(name, ...)`` would call (a user class is imported)."""
    if is_spec(name):
        from .user import import_architecture

        return import_architecture(name)
    return model_info(name).fn


def create_model(name: str, **kwargs) -> nn.Module:
    """Build an architecture by name.

    Args:
        name: registered name (``list_models()``; a family builds its default wiring), or your own class as
            ``path/to/file.py:ClassName`` / ``package.module:ClassName``.
        **kwargs: passed to the constructor (``num_classes``, ``in_channels``, ...).

    Returns:
        The model; its ``landscape_arch`` attribute records the exact wiring and the arguments.

    Raises:
        ValueError: unknown name (close names are suggested), a spec that cannot be imported, or bad
            constructor arguments.
    """
    if is_spec(name):
        fn, exact = constructor(name), name
    else:
        info = model_info(name)
        fn, exact = info.fn, info.name
    try:
        model = fn(**kwargs)
    except TypeError as exc:  # bad keyword argument: name it at the boundary
        raise ValueError(f"bad arguments for architecture {name!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"architecture {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    setattr(model, ARCH_ATTR, {"name": exact, "kwargs": dict(kwargs)})
    return model


_DATA_KWARGS = ("num_classes", "in_channels", "input_size", "input_shape")


def data_kwargs(name: str | Callable[..., Any], *, input_shape: Sequence[int], num_classes: int) -> dict:
    """Constructor arguments that follow from the data, for the ones ``name``'s constructor takes.

    The convention every registered model follows (and a user class may): ``num_classes`` (K),
    ``in_channels`` (C), ``input_size`` (H = W) and ``input_shape`` ((C, H, W)). Only parameters present in the
    constructor's signature are returned, so nothing here is specific to one architecture.

    Args:
        name: registered name, user spec or the constructor itself.
        input_shape: (C, H, W) of one sample.
        num_classes: number of classes.

    Returns:
        e.g. ``{"num_classes": 10, "in_channels": 3}`` for ``preact_resnet18``.
    """
    fn = constructor(name) if isinstance(name, str) else name
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C extensions: no signature to read
        return {}
    c, h = int(input_shape[0]), int(input_shape[-1])
    values = {"num_classes": int(num_classes), "in_channels": c, "input_size": h,
              "input_shape": tuple(int(d) for d in input_shape)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    return {k: values[k] for k in _DATA_KWARGS if k in params or (takes_any and k == "num_classes")}


def kwargs_text(kwargs: Mapping[str, Any]) -> str:
    """``depth=34, widen_factor=10``."""
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
