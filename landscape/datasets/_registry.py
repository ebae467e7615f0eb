"""Dataset registry, in the manner of the model registry: name -> opener, facts, the layouts it reads.

Wherever data is asked for, four kinds of value are accepted (:func:`open_dataset`):

* a registered name (``list_datasets()``; close names are suggested), read from local files only;
* your own function as ``path/to/file.py:fn`` or ``package.module:fn`` (keyword arguments from ``--data-arg``),
  returning ``(x, y)`` tensors or a ``torch.utils.data.Dataset``;
* ``(x, y)`` tensors or arrays;
* a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs.
"""
from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .._spec import import_spec, is_spec
from ._base import LabelledDataset, DatasetInfo, data_root
from .wrap import from_arrays, from_torch_dataset, is_pair

__all__ = ["DatasetEntry", "dataset_info", "list_datasets", "open_dataset", "register_dataset"]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    Attributes:
        name: the canonical name.
        open: ``open(split, root, **options) -> LabelledDataset``; ``root`` is a ``Path`` or None (no files).
        info: static facts, or ``None`` when they come from the files (``imagefolder``, ``npz``).
        layouts: the file layouts it reads, for docs and not-found messages.
        aliases: other accepted spellings.
        needs_root: reads local files (the root folder is required or defaulted).
    """

    name: str
    open: Callable[..., LabelledDataset] = field(repr=False)
    info: DatasetInfo | None = None
    layouts: str = ""
    aliases: tuple[str, ...] = ()
    needs_root: bool = True


_DATASETS: dict[str, DatasetEntry] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(name: str, open: Callable[..., LabelledDataset], *, info: DatasetInfo | None = None,
                     layouts: str = "", aliases: tuple[str, ...] = (), needs_root: bool = True) -> None:
    """Register a dataset opener under ``name`` (and ``aliases``)."""
    for key in (name, *aliases):
        if key in _DATASETS or key in _ALIASES:
            raise ValueError(f"dataset {key!r} is already registered")
    _DATASETS[name] = DatasetEntry(name, open, info, layouts, tuple(aliases), needs_root)
    for alias in aliases:
        _ALIASES[alias] = name


def list_datasets() -> list[str]:
    """Registered dataset names (``open_dataset`` also takes ``file.py:fn``, tensors and ``Dataset`` objects)."""
    return sorted(_DATASETS)


def entry(name: Any) -> DatasetEntry:
    """The registered entry for ``name`` (case-insensitive, ``_``/``-`` alike); ValueError with close names."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower()
    for cand in (key, key.replace("_", "-"), key.replace("-", "_")):
        if cand in _DATASETS:
            return _DATASETS[cand]
        if cand in _ALIASES:
            return _DATASETS[_ALIASES[cand]]
    known = sorted([*_DATASETS, *_ALIASES])
    close = difflib.get_close_matches(key, known, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint} (available: {', '.join(list_datasets())}; or your own "
                     f"function as path/to/file.py:fn or package.module:fn)")


def dataset_info(name: str) -> DatasetInfo:
    """``DatasetInfo`` of a registered dataset whose facts are fixed (``digits``, ``cifar10``, ``svhn``, ...).

    Raises:
        ValueError: unknown name (close names are suggested), or a dataset whose facts come from its files
            (``imagefolder``, ``npz``, user functions): open it and read ``.info``.
    """
    e = entry(name)
    if e.info is None:
        raise ValueError(f"dataset {e.name!r} learns its classes and image size from its files: use "
                         f"open_dataset({e.name!r}, root=...).info")
    return e.info


def _call_with_options(fn: Callable, what: str, options: Mapping[str, Any], fixed: Mapping[str, Any]) -> Any:
    """``fn(**fixed_it_takes, **options)``; an option it does not take is a ValueError naming the ones it does."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and n not in fixed]
    unknown = [k for k in options if k not in accepted and not takes_any]
    if unknown:
        raise ValueError(f"unknown --data-arg {', '.join(unknown)} for {what} (it takes: "
                         f"{', '.join(accepted) or 'no arguments'})")
    kwargs = {k: v for k, v in fixed.items() if k in params or takes_any}
    return fn(**kwargs, **options)


def open_dataset(data: Any, split: str = "test", *, root: str | os.PathLike | None = None,
                 **options: Any) -> LabelledDataset:
    """The split ``split`` of ``data`` as a :class:`LabelledDataset` (nothing decoded yet).

    Args:
        data: a registered name (``list_datasets()``), ``"path/to/file.py:fn"`` / ``"package.module:fn"``,
            ``(x, y)`` tensors or arrays ((N, C, H, W) or (N, H, W, C), uint8 or float in [0,1]), a
            ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, or a :class:`LabelledDataset`.
        split: ``"train"`` or ``"test"`` (a dataset may name others, e.g. SVHN's ``"extra"``). Ignored for
            tensors and ``Dataset`` objects.
        root: the folder (or file) holding the dataset; default ``$LANDSCAPE_DATA`` or
            ``~/.cache/landscape/data``. Passed to a user function that takes ``root``.
        **options: dataset options (CLI ``--data-arg KEY=VALUE``), e.g. ``size=32`` for ``imagefolder``.

    Raises:
        DataError: files missing (the message names the layouts looked for) or malformed.
        ValueError: unknown name or split, unknown option; a user function that raises (named, with its error).
        TypeError: ``data`` is none of the above.
    """
    if isinstance(data, LabelledDataset):
        return data
    if is_pair(data):
        return from_arrays(data[0], data[1])
    if isinstance(data, str) and is_spec(data):
        fn = import_spec(data, "dataset", "function")
        name = getattr(fn, "__name__", data)
        try:
            out = _call_with_options(fn, f"dataset function {data!r}", options,
                                     {"split": split, **({"root": os.fspath(root)} if root is not None else {})})
        except ValueError as exc:
            if str(exc).startswith("unknown --data-arg"):
                raise
            raise ValueError(f"dataset function {data!r} raised ValueError: {exc}") from None
        except Exception as exc:  # the user's code: any error, named with the function
            raise ValueError(f"dataset function {data!r} raised {type(exc).__name__}: {exc}") from None
        return _wrap_user(out, data, name)
    if isinstance(data, str):
        e = entry(data)
        allowed = e.info.splits if e.info is not None else None
        if allowed is not None and split not in allowed:
            raise ValueError(f"split must be one of {', '.join(allowed)}, got {split!r} (dataset {e.name})")
        return _call_with_options(e.open, f"dataset {e.name!r}", options,
                                  {"split": split, "root": data_root(root) if e.needs_root else None})
    from torch.utils.data import Dataset

    if isinstance(data, Dataset):
        return from_torch_dataset(data)
    raise TypeError(f"data must be a dataset name, 'file.py:fn', (x, y) tensors or a torch Dataset, got "
                    f"{type(data).__name__}")


def _wrap_user(out: Any, spec: str, name: str) -> LabelledDataset:
    from torch.utils.data import Dataset

    if isinstance(out, LabelledDataset):
        return out
    if is_pair(out):
        return from_arrays(out[0], out[1], name=name, source=spec)
    if isinstance(out, Dataset):
        return from_torch_dataset(out, name=name, source=spec)
    raise ValueError(f"dataset function {spec!r} returned a {type(out).__name__}; expected (x, y) tensors or a "
                     f"torch.utils.data.Dataset")
