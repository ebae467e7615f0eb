"""House style for every figure: seaborn theme, colour-blind-safe palette, readable sizes, and saving.

Plotting functions build figures with :class:`matplotlib.figure.Figure` directly (no pyplot state, nothing
shown, nothing saved); only :func:`save_figure` writes files, and the CLI/report are its only callers.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib as mpl
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Colour-blind-safe palette (seaborn "colorblind", i.e. Okabe–Ito-like); runs/groups cycle through it.
PALETTE: list[tuple[float, float, float]] = list(sns.color_palette("colorblind", 10))
#: Sequential colour map for surfaces and epoch colouring (perceptually uniform, colour-blind safe).
CMAP = "viridis"
#: Line style per data split.
SPLIT_STYLES = {"test": "-", "train": "--"}

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 11,
    "lines.linewidth": 1.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embed TrueType so PDF text stays editable/selectable
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the house style (seaborn ``whitegrid`` + readable font sizes) for the figures built inside.

    Scoped with ``rc_context``: the caller's global matplotlib settings are left untouched.
    """
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(_RC)
    with mpl.rc_context(rc):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = (3.6, 2.8),
               sharex: bool | str = False, sharey: bool | str = False, squeeze: bool = False,
               **subplot_kw) -> tuple[Figure, object]:
    """A constrained-layout figure of ``nrows x ncols`` panels each about ``panel`` inches (w, h)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze,
                        subplot_kw=subplot_kw or None)
    return fig, axes


def new_axes(ax: Axes | None, *, size: tuple[float, float] = (4.8, 3.6), **subplot_kw) -> Axes:
    """Return ``ax`` unchanged, or a fresh single axes on a new constrained-layout figure."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    fig = Figure(figsize=size, layout="constrained")
    return fig.add_subplot(**subplot_kw)


def colors_for(keys: Sequence) -> dict:
    """Map each key to a palette colour, in order (cycling after 10)."""
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def save_figure(fig: Figure | Axes, path_stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 160) -> list[Path]:
    """Write ``fig`` as ``<path_stem>.<fmt>`` for each format; parent folders are created.

    Args:
        fig: a Figure (or an Axes, whose figure is saved).
        path_stem: output path without extension, e.g. ``out/learning_curves``.
        formats: any of ``png``, ``pdf``, ``svg``, ``jpg``.
        dpi: raster resolution, at least 72 (figures are designed for 150+).

    Returns:
        The written paths, in the order of ``formats``.
    """
    if isinstance(fig, Axes):
        fig = fig.figure
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure or Axes, got {type(fig).__name__}")
    if isinstance(formats, str):
        formats = (formats,)
    bad = [f for f in formats if str(f).lower().lstrip(".") not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unsupported figure format(s) {bad or list(formats)}; allowed: {', '.join(FORMATS)}")
    if not isinstance(dpi, int) or dpi < 72:
        raise ValueError(f"dpi must be an integer >= 72, got {dpi!r}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        path = stem.parent / f"{stem.name}.{fmt}"
        tmp = path.parent / f".{path.name}.tmp"
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.05)
        os.replace(tmp, path)
        paths.append(path)
    return paths
