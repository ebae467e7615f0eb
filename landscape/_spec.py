"""``path/to/file.py:name`` / ``package.module:name`` specs: a plain string that names your own class or function.

A spec travels through settings to process and Ray workers, which import it themselves. A file is imported once
per process under a module name derived from its absolute path (so two files both called ``models.py`` do not
clash, and pickled instances find their class again). Used for user architectures and user datasets.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["absolute_spec", "import_spec", "is_spec", "split_spec"]


def is_spec(name: Any) -> bool:
    """True for ``file.py:attr`` / ``pkg.mod:attr`` (any string with a colon)."""
    return isinstance(name, str) and ":" in name


def split_spec(spec: str, what: str = "architecture", example: str = "ClassName") -> tuple[str, str]:
    """``"models/net.py:Net"`` -> ``("models/net.py", "Net")``; the last colon separates the attribute.

    Raises:
        ValueError: no colon, empty module/file part or an attribute that is not a dotted identifier.
    """
    forms = f"path/to/file.py:{example} or package.module:{example}"
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"expected a{'n' if what[0] in 'aeiou' else ''} {what} spec {forms}, got {spec!r}")
    where, _, attr = spec.rpartition(":")
    if not where or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ValueError(f"bad {what} spec {spec!r}: expected {forms}")
    return where, attr


def _is_file_spec(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def absolute_spec(spec: str, what: str = "architecture") -> str:
    """The same spec with a file path made absolute (so workers with another working folder find it)."""
    where, attr = split_spec(spec, what)
    if _is_file_spec(where):
        return f"{Path(where).expanduser().resolve()}:{attr}"
    return spec


def _module_from_file(path: Path, spec: str, what: str):
    if not path.is_file():
        raise ValueError(f"{what} spec {spec!r}: file {path} not found")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"landscape_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{what} spec {spec!r}: cannot import {path} (not a Python file)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"{what} spec {spec!r}: importing {path} failed ({type(exc).__name__}: {exc})") from None
    return module


def import_spec(spec: str, what: str = "architecture", example: str = "ClassName") -> Any:
    """The callable named by ``spec``.

    Args:
        spec: ``path/to/file.py:attr`` (a file, relative to the working folder or absolute) or
            ``package.module:attr`` (importable from ``sys.path``); ``attr`` may be dotted.
        what: what the spec names, for messages (``"architecture"``, ``"dataset"``).
        example: the attribute placeholder in messages (``ClassName``, ``function``).

    Raises:
        ValueError: the file or module is missing or fails to import, has no such attribute, or the attribute
            is not callable. The message names the spec.
    """
    where, attr = split_spec(spec, what, example)
    if _is_file_spec(where):
        module = _module_from_file(Path(where).expanduser().resolve(), spec, what)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ValueError(f"{what} spec {spec!r}: cannot import module {where!r} ({type(exc).__name__}: "
                             f"{exc}); is it on PYTHONPATH?") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            classes = what == "architecture"
            names = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                           and (isinstance(v, type) if classes else callable(v)))
            raise ValueError(f"{what} spec {spec!r}: {where} has no {attr!r} ({'classes' if classes else 'callables'} "
                             f"there: {', '.join(names) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} spec {spec!r}: {attr} is a {type(obj).__name__}, not a class or function")
    return obj
