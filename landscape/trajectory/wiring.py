"""One wiring per run: the exact architecture every checkpoint of a trajectory is loaded into.

When ``arch`` is a family (``preact_resnet18``, ``wide_resnet``), the checkpoints of a run share the wiring that
the files able to decide it point to: an architecture record, a layout (the AdvLC repo's ``<id>_end`` and its SWA
file ``<id>_swa_end``, Rice et al.'s ``model_best.pth``) or keys and shapes that only one wiring has. Best-model
copies (markers) count too. Files are read with ``checkpoints.header.read_header`` (structure only, no weights).
Files whose keys fit several wirings take the decided one; when no file decides, the last checkpoint (the most
trained) is loaded once with evidence (``worker.evidence_batch``: labelled samples of the evaluated data) and
the wiring clearly better on it is taken, else the family default (with the loader's note either way). Files
that point to different wirings are a ``WiringError`` naming them.

With ``arch=None`` (the files record their architecture) the records decide the same way, and records that name
different architectures are a ``WiringError``.

The run then goes on with ``settings.arch`` replaced by the exact name (and the arguments the files imply, under
the caller's own), so every row of the trajectory table is measured in the same wiring; ``checkpoint_wirings``
labels the rows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..checkpoints import CheckpointError, load_model
from ..checkpoints.header import Header, read_header
from ..checkpoints.keys import Wiring, infer_wiring, merge_kwargs
from ..checkpoints.record import WiringError
from ..models import ARCH_ATTR, Normalized, family, is_spec
from .discover import Discovery
from .settings import TrajectorySettings

__all__ = ["RunWiring", "checkpoint_wirings", "read_headers", "resolve_run_wiring"]


@dataclasses.dataclass(frozen=True)
class RunWiring:
    """The run's wiring.

    Attributes:
        settings: the settings to measure with: ``arch`` the exact wiring, ``arch_kwargs`` what the files imply
            under the caller's own; unchanged when ``arch`` is not a family or nothing could be read.
        decided_by: how: ``"as given"`` (not a family), ``"files"`` (records, layouts or keys), ``"evidence"``
            (no file decides: the loader's evidence rule, which keeps the default when no wiring is clearly better;
            its note on stderr says which) or ``"undecided"`` (no file could be read or loaded).
        files: the files that decided (``"files"``) or the one loaded with evidence (``"evidence"``).
    """

    settings: TrajectorySettings
    decided_by: str
    files: tuple[str, ...] = ()


def _names(paths: list[Path], n: int = 3) -> str:
    more = f" +{len(paths) - n} more" if len(paths) > n else ""
    return ", ".join(p.name for p in paths[:n]) + more


def read_headers(discovery: Discovery, trusted: bool) -> dict[str, Header]:
    """``{path: Header}`` of the checkpoints and best-model copies, each file read once (structure only);
    unreadable files are left out, to fail on their own row."""
    out = {}
    for path in [*discovery.paths, *(Path(p) for p in discovery.markers)]:
        try:
            out[str(path)] = read_header(path, trusted=trusted)
        except CheckpointError:
            continue
    return out


def _decided(requested: str | None, headers: list[Header]) -> tuple[dict[str, list[tuple[Header, Wiring]]],
                                                                    list[tuple[Header, Wiring]]]:
    """``({wiring: [(header, Wiring)]}, [(header, Wiring) whose keys fit several wirings]})``; with
    ``requested=None`` the files' records."""
    decided: dict[str, list[tuple[Header, Wiring]]] = {}
    open_: list[tuple[Header, Wiring]] = []
    for h in headers:
        if h.layout == "module":  # a whole pickled model is used as itself
            continue
        if requested is None:
            if h.arch is not None:
                decided.setdefault(h.arch["name"], []).append((h, Wiring(h.arch["name"], dict(h.arch["kwargs"]))))
            continue
        try:
            w = infer_wiring(requested, h.shapes, h.layout, h.arch)
        except ValueError:  # e.g. a record of another family: the file's own row says so
            continue
        if w.candidates:
            open_.append((h, w))
        else:
            decided.setdefault(w.name, []).append((h, w))
    return decided, open_


def _shared_kwargs(name: str, found: list[tuple[Header, Wiring]], where: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for h, w in found:
        for k, v in w.kwargs.items():
            if k in kwargs and kwargs[k] != v:
                raise WiringError(f"{where}: the checkpoints of one run need different {name} arguments: "
                                  f"{k}={kwargs[k]!r} and {k}={v!r} ({h.path.name}); analyse them as separate runs")
            kwargs[k] = v
    return kwargs


def resolve_run_wiring(discovery: Discovery, settings: TrajectorySettings,
                       headers: dict[str, Header] | None = None) -> RunWiring:
    """Decide the one wiring a run's checkpoints are measured in (see the module docstring); ``headers`` are the
    files' :func:`read_headers` when the caller has them (else they are read here).

    Raises:
        WiringError: files that point to different wirings (or different arguments of one), named in one line.
    """
    requested = settings.arch
    if requested is not None and (is_spec(requested) or family(requested) is None):
        return RunWiring(settings, "as given")
    where = str(Path(discovery.paths[0]).parent) if discovery.paths else "the run"
    if headers is None:
        headers = read_headers(discovery, settings.trusted)
    wanted = {*map(str, discovery.paths), *discovery.markers}  # a header map may hold files since dropped
    decided, open_ = _decided(requested, [h for p, h in headers.items() if p in wanted])
    if len(decided) > 1:
        text = "; ".join(f"{name}: {_names([h.path for h, _ in found])}" for name, found in sorted(decided.items()))
        raise WiringError(f"{where}: the checkpoints of one run need different wirings ({text}); analyse them as "
                          f"separate runs, or pass an exact --arch to load them all in one")
    if decided:
        (name, found), = decided.items()
        misfits = [h.path for h, w in open_ if name not in w.candidates]
        if misfits:
            raise WiringError(f"{where}: {_names([h.path for h, _ in found])} need {name}, which the keys of "
                              f"{_names(misfits)} do not fit; analyse them as separate runs")
        kwargs = _shared_kwargs(name, found + [(h, w) for h, w in open_], where)
        return _resolved(settings, name, kwargs, "files", [h.path for h, _ in found])
    if not open_:
        return RunWiring(settings, "undecided")
    return _by_evidence(settings, [h.path for h, _ in open_ if h.path in set(discovery.paths)]
                        or [h.path for h, _ in open_])


def _by_evidence(settings: TrajectorySettings, paths: list[Path]) -> RunWiring:
    """Load the last loadable checkpoint of ``paths`` with evidence; its wiring becomes the run's."""
    from .worker import evidence_batch

    x, y = evidence_batch(settings)
    for path in reversed(paths):  # the last checkpoint is the most trained: the clearest evidence
        try:
            model = load_model(path, settings.arch, trusted=settings.trusted, mean=settings.mean, std=settings.std,
                               evidence=(x, y), **dict(settings.arch_kwargs))
        except Exception:  # noqa: BLE001 -- a file that does not load fails on its own row; try the one before
            continue
        inner = model.model if isinstance(model, Normalized) else model
        record = getattr(inner, ARCH_ATTR, None) or {}
        if "name" not in record:
            continue
        return _resolved(settings, record["name"], record.get("kwargs") or {}, "evidence", [path])
    return RunWiring(settings, "undecided")


def _resolved(settings: TrajectorySettings, name: str, kwargs: dict, how: str, paths: list[Path]) -> RunWiring:
    merged = merge_kwargs(settings.arch or name, kwargs, dict(settings.arch_kwargs))
    new = dataclasses.replace(settings, arch=name, arch_kwargs=tuple(sorted(merged.items())))
    return RunWiring(new, how, tuple(str(p) for p in paths))


def checkpoint_wirings(discovery: Discovery, settings: TrajectorySettings) -> dict[str, str | None]:
    """``{checkpoint path: wiring}`` for the trajectory table's ``arch`` column: ``settings.arch`` (resolved by
    ``resolve_run_wiring``), or ``pickled <class>`` for a trusted whole pickled model, which is used as itself
    (None where nothing names the wiring: ``arch=None`` and files that record none fail on their rows)."""
    labels: dict[str, str | None] = {str(p): settings.arch for p in discovery.paths}
    if settings.trusted:  # only trusted files can hold a whole model that loads
        for path in discovery.paths:
            try:
                header = read_header(path, trusted=True)
            except CheckpointError:
                continue
            if header.layout == "module":
                labels[str(path)] = f"pickled {header.module_class}"
    return labels
