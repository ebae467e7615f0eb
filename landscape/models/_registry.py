"""Model registry: architectures found by name, timm-style."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (sorted)."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture by name.

    Args:
        name: registered name, e.g. ``"preact_resnet18"``; ``list_models()`` lists them.
        **kwargs: passed to the constructor (``num_classes``, ``in_channels``, ...).

    Raises:
        ValueError: unknown name (close names are suggested) or bad constructor arguments.
    """
    if not isinstance(name, str) or name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}{hint} (available: {', '.join(list_models())})")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as exc:  # bad keyword argument: name it at the boundary
        raise ValueError(f"bad arguments for architecture {name!r}: {exc}") from None
