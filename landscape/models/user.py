"""Your own architecture by spec: ``path/to/file.py:ClassName`` or ``package.module:ClassName``.

The spec is a plain string, so it travels through settings to process and Ray workers, which import the class
themselves. A file is imported once per process under a module name derived from its absolute path (so two
files both called ``models.py`` do not clash, and pickled instances find their class again).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import torch.nn as nn

__all__ = ["absolute_spec", "import_architecture", "split_spec"]


def split_spec(spec: str) -> tuple[str, str]:
    """``"models/net.py:Net"`` -> ``("models/net.py", "Net")``; the last colon separates the attribute.

    Raises:
        ValueError: no colon, empty module/file part or an attribute that is not a dotted identifier.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"expected an architecture spec path/to/file.py:ClassName or package.module:ClassName, "
                         f"got {spec!r}")
    where, _, attr = spec.rpartition(":")
    if not where or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ValueError(f"bad architecture spec {spec!r}: expected path/to/file.py:ClassName or "
                         f"package.module:ClassName")
    return where, attr


def _is_file_spec(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def absolute_spec(spec: str) -> str:
    """The same spec with a file path made absolute (so workers with another working folder find it)."""
    where, attr = split_spec(spec)
    if _is_file_spec(where):
        return f"{Path(where).expanduser().resolve()}:{attr}"
    return spec


def _module_from_file(path: Path, spec: str):
    if not path.is_file():
        raise ValueError(f"architecture spec {spec!r}: file {path} not found")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"landscape_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"architecture spec {spec!r}: cannot import {path} (not a Python file)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"architecture spec {spec!r}: importing {path} failed ({type(exc).__name__}: {exc})") \
            from None
    return module


def import_architecture(spec: str) -> Callable[..., nn.Module]:
    """The class (or factory function) named by ``spec``.

    Args:
        spec: ``path/to/file.py:ClassName`` (a file, relative to the working folder or absolute) or
            ``package.module:ClassName`` (importable from ``sys.path``); ``ClassName`` may be dotted.

    Returns:
        The callable; calling it with the ``--arch-arg`` keywords builds the model.

    Raises:
        ValueError: the file or module is missing or fails to import, or has no such attribute, or the
            attribute is not callable. The message names the spec.
    """
    where, attr = split_spec(spec)
    if _is_file_spec(where):
        module = _module_from_file(Path(where).expanduser().resolve(), spec)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ValueError(f"architecture spec {spec!r}: cannot import module {where!r} ({type(exc).__name__}: "
                             f"{exc}); is it on PYTHONPATH?") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_") and isinstance(vars(module)[n], type))
            raise ValueError(f"architecture spec {spec!r}: {where} has no {attr!r} (classes there: "
                             f"{', '.join(names) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"architecture spec {spec!r}: {attr} is a {type(obj).__name__}, not a class or function")
    return obj
