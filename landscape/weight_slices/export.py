"""Exports of weight-space tables: Parquet (always), HDF5 (``h5py``) and ParaView XML PolyData (``.vtp``,
written by hand: no dependency). See :mod:`landscape.weight_slices`."""
from __future__ import annotations

import json
import os
import xml.sax.saxutils as xml
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .._base import LandscapeError
from .._io import atomic_write, atomic_write_text
from ..runs import write_file
from .directions import _choice

__all__ = ["H5_HINT", "to_h5", "to_parquet", "to_vtp"]

H5_HINT = "pip install 'landscape[vtk]'"


def to_parquet(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` (with its ``attrs``) to ``path`` (.parquet), atomically."""
    return write_file(Path(path), table, attrs=True)


def _h5py():
    try:
        import h5py
    except ModuleNotFoundError:
        raise LandscapeError(f"writing .h5 files needs the h5py package ({H5_HINT})") from None
    return h5py


def to_h5(tables: Mapping[str, pd.DataFrame] | pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write tables to an HDF5 file: one group per table (``"table"`` for a single one), one dataset per
    column (text as UTF-8 strings), the table's ``attrs`` as the group's JSON attribute ``attrs``. Needs
    ``h5py`` (``pip install 'landscape[vtk]'``); read back with ``h5py`` or ParaView's HDF5 readers."""
    h5py = _h5py()
    tables = {"table": tables} if isinstance(tables, pd.DataFrame) else dict(tables)
    path = Path(path)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, table in tables.items():
                g = f.create_group(name)
                for col in table.columns:
                    values = table[col]
                    if values.dtype.kind in "biuf":
                        g.create_dataset(str(col), data=values.to_numpy())
                    else:
                        g.create_dataset(str(col), data=values.astype(str).to_numpy().astype(object),
                                         dtype=h5py.string_dtype())
                g.attrs["attrs"] = json.dumps(table.attrs, default=str)
                g.attrs["columns"] = json.dumps([str(c) for c in table.columns])

    atomic_write(path, write)
    return path


def _array(name: str, values, kind: str = "Float64", components: int = 1) -> str:
    flat = " ".join(repr(float(v)) if kind.startswith("Float") else str(int(v)) for v in np.ravel(values))
    return (f'<DataArray type="{kind}" Name={xml.quoteattr(name)} NumberOfComponents="{components}" '
            f'format="ascii">{flat}</DataArray>')


def _vtp(points: np.ndarray, data: Mapping[str, np.ndarray], *, polys=None, line: bool = False) -> str:
    n = len(points)
    cells = ""
    if polys is not None:
        cells = (f"<Polys>{_array('connectivity', polys.ravel(), 'Int64')}"
                 f"{_array('offsets', np.arange(1, len(polys) + 1) * polys.shape[1], 'Int64')}</Polys>")
    if line:
        cells = f"<Lines>{_array('connectivity', np.arange(n), 'Int64')}{_array('offsets', [n], 'Int64')}</Lines>"
    arrays = "".join(_array(k, v) for k, v in data.items())
    return ('<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian">\n<PolyData>\n'
            f'<Piece NumberOfPoints="{n}" NumberOfVerts="0" NumberOfLines="{int(line)}" NumberOfStrips="0" '
            f'NumberOfPolys="{0 if polys is None else len(polys)}">\n<PointData Scalars="{next(iter(data))}">'
            f'{arrays}</PointData>\n<Points>{_array("points", points, "Float64", 3)}</Points>\n{cells}\n'
            '</Piece>\n</PolyData>\n</VTKFile>\n')


def to_vtp(surface: pd.DataFrame, path: str | os.PathLike, *, kind: str | None = None,
           trajectory: pd.DataFrame | None = None, z: str = "loss") -> list[Path]:
    """Write a 2D weight slice as ParaView XML PolyData (``.vtp``, ASCII; no dependency).

    The surface: points ``(alpha, beta, z)`` of the grid (``z`` = ``loss`` or ``acc``), quads between
    neighbours, point arrays ``loss`` and ``acc``. With ``trajectory`` (``TrainingPath.coords``) the path goes
    to ``<stem>_trajectory.vtp`` as a polyline at ``(pc1, pc2, z)``, ``z`` interpolated bilinearly from the surface
    (the loss at each epoch's projection on the plane), with an ``epoch`` point array.

    Args:
        surface: a :func:`weight_slice_2d` / :func:`path_surface` table; ``kind`` picks ``clean``/``robust``
            (default: the first kind in the table).

    Returns:
        The paths written.
    """
    _choice(z, ("loss", "acc"), "z")
    kind = kind if kind is not None else str(surface["kind"].iloc[0])
    rows = surface[surface["kind"] == kind]
    if rows.empty:
        raise ValueError(f"no rows of kind {kind!r}; the table has {sorted(surface['kind'].unique())}")
    grid = {v: rows.pivot_table(index="alpha", columns="beta", values=v) for v in ("loss", "acc")}
    A, B = grid[z].index.to_numpy(float), grid[z].columns.to_numpy(float)
    aa, bb = np.meshgrid(A, B, indexing="ij")
    pts = np.column_stack([aa.ravel(), bb.ravel(), grid[z].to_numpy().ravel()])
    idx = np.arange(len(A) * len(B)).reshape(len(A), len(B))
    quads = np.column_stack([idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()])
    path = Path(path)
    atomic_write_text(path, _vtp(pts, {k: g.to_numpy().ravel() for k, g in grid.items()}, polys=quads))
    out = [path]
    if trajectory is not None:
        zs = [_bilinear(A, B, grid[z].to_numpy(), a, b) for a, b in zip(trajectory["pc1"], trajectory["pc2"])]
        line = np.column_stack([trajectory["pc1"], trajectory["pc2"], zs])
        second = path.with_name(path.stem + "_trajectory.vtp")
        atomic_write_text(second, _vtp(line, {"epoch": trajectory["epoch"].to_numpy(float), z: np.asarray(zs)},
                                       line=True))
        out.append(second)
    return out


def _bilinear(A, B, Z, a, b) -> float:
    i = int(np.clip(np.searchsorted(A, a) - 1, 0, len(A) - 2))
    j = int(np.clip(np.searchsorted(B, b) - 1, 0, len(B) - 2))
    ta = np.clip((a - A[i]) / (A[i + 1] - A[i]), 0, 1)
    tb = np.clip((b - B[j]) / (B[j + 1] - B[j]), 0, 1)
    return float((1 - ta) * (1 - tb) * Z[i, j] + ta * (1 - tb) * Z[i + 1, j] + (1 - ta) * tb * Z[i, j + 1]
                 + ta * tb * Z[i + 1, j + 1])
