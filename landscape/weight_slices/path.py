"""The PCA plane of a run's weights over its epochs (Li et al. 2018) and the loss surface on it.
See :mod:`landscape.weight_slices`."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .directions import IGNORES, Direction, _choice, _unflat, perturbed, restored
from .slicing import weight_slice_2d

__all__ = ["TrainingPath", "path_surface", "training_path"]


class TrainingPath(NamedTuple):
    """The PCA plane of a run's weights (see :func:`training_path`).

    Attributes:
        coords: one row per epoch: ``epoch``, ``checkpoint`` (file or ``#i``), ``pc1``, ``pc2`` (projection of
            ``w_e − w_final`` on the unit components; the final epoch at (0, 0)), ``residual`` (share of
            ‖w_e − w_final‖ outside the plane, 0 for the final epoch).
        variance: one row per component: ``component`` (1, 2, ...), ``variance`` (s²/(m−1) of the centred
            matrix of m rows), ``ratio`` (explained variance ratio), ``cumulative``.
        directions: the two unit components as ``{name: tensor}`` (zero on unperturbed parameters).
        centre: the final epoch's full state dict (parameters and buffers, CPU), the plane's origin.
    """

    coords: pd.DataFrame
    variance: pd.DataFrame
    directions: tuple[Direction, Direction]
    centre: dict


_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin", ".safetensors")


def _folder_files(folder: Path) -> list[Path]:
    """Checkpoint files of a folder (not optimizer states), naturally sorted."""
    def key(p: Path):
        return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]
    files = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_SUFFIXES)
             and not re.match(r"^(opt|optim|optimizer)([_\-.=]|$)", p.name, re.IGNORECASE)]
    return sorted(files, key=key)


def _states(source, model, arch, trusted) -> Iterator[tuple[int | None, str, nn.Module]]:
    """(epoch, label, model with the weights) per entry, lazily (one model at a time)."""
    from ..checkpoints import Checkpoint, load_checkpoint, load_model

    if hasattr(source, "folder") and not isinstance(source, (str, os.PathLike)):
        source = source.folder  # a Run
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder of checkpoints; pass a folder or a list of files")
        items = _folder_files(folder)
        if not items:
            raise ValueError(f"no checkpoint files in {folder}")
    elif isinstance(source, Iterable) and not isinstance(source, Mapping):
        items = source  # may be a generator: one model at a time
    else:
        raise TypeError(f"checkpoints must be a folder, a Run or a sequence, got {type(source).__name__}")
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike, Checkpoint)):
            ckpt = item if isinstance(item, Checkpoint) else load_checkpoint(item, trusted=trusted)
            arch_i = copy.deepcopy(model) if model is not None and arch is None else arch
            yield ckpt.epoch, str(ckpt.path), load_model(ckpt, arch_i, trusted=trusted)
        elif isinstance(item, nn.Module):
            yield None, f"#{i}", item
        elif isinstance(item, Mapping):
            if model is None:
                raise TypeError("state dicts need model= (an nn.Module of the architecture) to load into")
            m = copy.deepcopy(model)
            m.load_state_dict(dict(item), strict=True)
            yield None, f"#{i}", m
        else:
            raise TypeError(f"checkpoint {i} must be a path, Checkpoint, nn.Module or state dict, "
                            f"got {type(item).__name__}")


def training_path(checkpoints, *, model: nn.Module | None = None, arch=None, epochs: Sequence[int] | None = None,
                  ignore: str | None = "biasbn", center: bool = True, trusted: bool = False) -> TrainingPath:
    """The PCA plane of the weights over the epochs of one run, and each epoch's coordinates in it.

    Args:
        checkpoints: a run folder (or ``Run``): its checkpoint files, read with
            :func:`landscape.checkpoints.load_checkpoint` / ``load_model``, ordered by stored epoch, else by
            name; or a sequence (or a generator, to hold one model at a time) of paths, ``Checkpoint``\\ s,
            ``nn.Module``\\ s or state dicts, ordered by their epochs (``epochs``, else the stored ones) when
            all are known, else as given. The last one is the final epoch (the origin).
        model: template architecture for state dicts (and for files, when ``arch`` is None and the files
            record none).
        arch: architecture for the files (see ``load_model``); default: what each file records.
        epochs: epoch of each entry (default: stored epochs, else 0, 1, ...).
        ignore: which parameters enter the PCA (:func:`perturbed`): by default the ≥2-D ones; biases and BN
            stay at the final values on the plane, as directions ignore them.
        center: centre the matrix before the SVD (default True, as scikit-learn's PCA in the reference code).
        trusted: allow full unpickling of the files (see ``load_checkpoint``).

    Memory: the (m, P) float64 matrix of m epochs × P weights (8·m·P bytes) and one model at a time.

    Returns:
        :class:`TrainingPath`.

    Raises:
        ValueError: fewer than 3 checkpoints, models with different parameters, duplicate epochs.
    """
    _choice(ignore, IGNORES, "ignore")
    entries, names, rows, shapes, final, last = [], None, [], None, None, None
    for i, (epoch, label, m) in enumerate(_states(checkpoints, model, arch, trusted)):
        names = names or perturbed(m, ignore)
        params = dict(m.named_parameters())
        if [n for n in params if n in set(names)] != names or (shapes and [params[n].shape for n in names] != shapes):
            raise ValueError(f"{label}: its parameters differ from the first checkpoint's")
        shapes = [params[n].shape for n in names]
        rows.append(torch.cat([params[n].detach().reshape(-1).double().cpu() for n in names]).numpy())
        key = int(epochs[i]) if epochs is not None and i < len(epochs) else epoch
        entries.append((key, label))
        state = (key, {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}, m)
        last = state  # only two models are held: the last one and the latest epoch so far
        if key is not None and (final is None or key > final[0]):
            final = state
    if len(rows) < 3:
        raise ValueError(f"a PCA plane needs at least 3 checkpoints, got {len(rows)}")
    if epochs is not None and len(epochs) != len(rows):
        raise ValueError(f"epochs has {len(epochs)} values for {len(rows)} checkpoints")
    if all(e[0] is not None for e in entries):
        order = sorted(range(len(entries)), key=lambda i: entries[i][0])
        entries, rows = [entries[i] for i in order], [rows[i] for i in order]
    else:
        entries, final = [(i, label) for i, (_, label) in enumerate(entries)], last
    ep = [e[0] for e in entries]
    if len(set(ep)) != len(ep):
        raise ValueError(f"duplicate epochs {sorted({e for e in ep if ep.count(e) > 1})}: pass the files of one "
                         "run, one per epoch (best-model copies excluded), or epochs=")
    W = np.stack(rows)
    D = W[:-1] - W[-1]  # w_e - w_final, the final epoch excluded (its row is zero)
    Dc = D - D.mean(axis=0) if center else D
    _, s, Vt = np.linalg.svd(Dc, full_matrices=False)
    if s.size < 2 or s[1] <= 0:
        raise ValueError("the checkpoints span fewer than 2 dimensions: no PCA plane")
    comps = Vt[:2]
    coords = (W - W[-1]) @ comps.T
    for c in range(2):  # deterministic sign: the first epoch on the negative side
        if coords[0, c] > 0:
            comps[c], coords[:, c] = -comps[c], -coords[:, c]
    disp = np.linalg.norm(W - W[-1], axis=1)
    resid = np.linalg.norm((W - W[-1]) - coords @ comps, axis=1)
    share = np.divide(resid, disp, out=np.zeros_like(resid), where=disp > 0)
    coords_df = pd.DataFrame({"epoch": ep, "checkpoint": [e[1] for e in entries], "pc1": coords[:, 0],
                              "pc2": coords[:, 1], "residual": share})
    var = s ** 2
    variance = pd.DataFrame({"component": np.arange(1, len(s) + 1), "variance": var / max(len(D) - 1, 1),
                             "ratio": var / var.sum(), "cumulative": np.cumsum(var) / var.sum()})
    dirs = tuple(_unflat(torch.from_numpy(comps[c].copy()), final[2], names) for c in range(2))
    dirs = tuple({n: d.cpu() for n, d in dd.items()} for dd in dirs)
    attrs = dict(ignore=ignore, center=center, final_epoch=ep[-1], ratio=[float(r) for r in variance["ratio"][:2]])
    coords_df.attrs.update(attrs)
    variance.attrs.update(attrs)
    return TrainingPath(coords_df, variance, dirs, final[1])


def path_surface(model: nn.Module, x: torch.Tensor, y: torch.Tensor, path: TrainingPath, *, alphas=None,
                 betas=None, n: int = 21, margin: float = 0.25, **kw) -> pd.DataFrame:
    """The loss on the PCA plane of ``path`` around the final weights (a grid covering the path).

    The model gets ``path.centre`` (parameters and buffers of the final epoch) for the evaluation and its own
    state back afterwards. Default grid: ``n`` points per axis over the range of the path's coordinates,
    widened by ``margin`` of the span on each side (an axis spanning less than a tenth of the other is first
    widened to that tenth). ``kw``: ``loss``, ``attack``, ``x_adv``, ``reattack``,
    ``seed``, ``batch_size``, ``progress`` of :func:`weight_slice_2d`.

    Returns:
        The :func:`weight_slice_2d` table (``direction1``/``direction2`` = ``pc1``/``pc2``), its ``attrs`` with
        the explained variance ``ratio`` of the two components, followed by the path itself: one row per epoch
        with ``kind`` = ``"path"``, the columns of ``path.coords`` (``epoch``, ``checkpoint``, ``pc1``, ``pc2``,
        ``residual``) and ``pc1_ratio``/``pc2_ratio`` (NaN ``alpha``/``beta``/``loss``/``acc``), so that one file
        draws the figure (the report combines runs, and ``attrs`` do not survive that). Select
        ``kind != "path"`` for the grid alone.
    """
    if not isinstance(path, TrainingPath):
        raise TypeError(f"path must be a TrainingPath (from training_path), got {type(path).__name__}")
    axes = []
    spans = [float(path.coords[c].max() - path.coords[c].min()) for c in ("pc1", "pc2")]
    for col, given, span in (("pc1", alphas, spans[0]), ("pc2", betas, spans[1])):
        if given is not None:
            axes.append(given)
            continue
        lo, hi = float(path.coords[col].min()), float(path.coords[col].max())
        # an axis the path hardly moves along (e.g. PC2 of 3 checkpoints: centring leaves one dimension) is
        # widened to a tenth of the other's span, so the grid shows the loss around it, not rounding noise
        extra = max(0.1 * max(spans) - span, 0.0) / 2
        pad = margin * max(span, 0.1 * max(spans), 1e-12)
        axes.append(np.linspace(lo - extra - pad, hi + extra + pad, n))
    with restored(model):
        model.load_state_dict({k: v for k, v in path.centre.items()}, strict=True)
        df = weight_slice_2d(model, x, y, path.directions[0], path.directions[1], axes[0], axes[1], **kw)
    df["direction1"], df["direction2"] = "pc1", "pc2"
    ratio = path.coords.attrs.get("ratio")
    attrs = dict(df.attrs, ratio=ratio)
    rows = path.coords.assign(kind="path", direction1="pc1", direction2="pc2")
    for c in range(2):
        rows[f"pc{c + 1}_ratio"] = float(ratio[c]) if ratio else np.nan
    df = pd.concat([df, rows], ignore_index=True)
    df.attrs = attrs
    return df
