"""House style for every figure: seaborn theme, colour-blind-safe palette, readable sizes, and saving.

Plotting functions build figures with :class:`matplotlib.figure.Figure` directly (no pyplot state, nothing
shown, nothing saved); only :func:`save_figure` writes files, and the CLI/report are its only callers.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

import matplotlib as mpl
import numpy as np
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
    """Map each key to a distinct colour, in order: the palette for up to 10 keys, else evenly spaced hues."""
    keys = list(keys)
    colors = PALETTE if len(keys) <= len(PALETTE) else list(sns.color_palette("husl", len(keys)))
    return {k: colors[i] for i, k in enumerate(keys)}


#: Markers told apart in scatter plots; the seeds of a method get them in order.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


#: Palette order for methods: blue, orange, green, pink, grey, yellow, ... (the first six as far apart as the palette
#: allows, so six methods never get three look-alike oranges: orange, vermillion and brown come apart).
_GROUP_ORDER = (0, 1, 2, 4, 7, 8, 9, 3, 5, 6)


class RunStyle(NamedTuple):
    """How one run is drawn: ``color``; ``marker``; ``group`` (its method) and ``member`` (its index within
    the group, e.g. the seed's position)."""

    color: tuple
    marker: str
    group: str | None
    member: int


def run_group(run) -> str | None:
    """The method part of a run name: what comes before the last ``/`` (``pgd_at/s0`` -> ``pgd_at``)."""
    return None if run is None or "/" not in str(run) else str(run).rsplit("/", 1)[0]


def run_styles(runs: Sequence) -> dict:
    """Distinct styles for runs, with the runs of one method sharing its colour.

    When run names such as ``pgd_at/s0``, ``pgd_at/s1``, ``at_advlc/s0`` form at least two methods (the name
    before the last ``/``, see :func:`run_group`) and some method has several runs, each method gets one
    colour and its runs get shades of it (dark to light, in order) and markers in :data:`MARKERS` order
    (methods take blue, orange, green, pink, ... of :data:`PALETTE`, more than 10 evenly spaced hues).
    Otherwise every run gets its own colour (:func:`colors_for`, never repeated) and marker.
    """
    runs = list(runs)
    groups: dict = {}
    for r in runs:
        groups.setdefault(run_group(r), []).append(r)
    grouped = None not in groups and len(groups) >= 2 and any(len(v) > 1 for v in groups.values())
    if not grouped:
        colors = colors_for(runs)
        return {r: RunStyle(colors[r], MARKERS[i % len(MARKERS)], None, i) for i, r in enumerate(runs)}
    order = [PALETTE[i] for i in _GROUP_ORDER]  # orange and vermillion, alike when shaded, not side by side
    base = {g: order[i] for i, g in enumerate(groups)} if len(groups) <= len(order) else colors_for(list(groups))
    out = {}
    for g, members in groups.items():
        for i, r in enumerate(members):
            out[r] = RunStyle(shade(base[g], i, len(members)), MARKERS[i % len(MARKERS)], g, i)
    return out


def shade(color, i: int, n: int) -> tuple:
    """The ``i``-th of ``n`` shades of ``color``, from darker (mixed with up to 40 % black) to lighter (up to
    45 % white); ``color`` itself when ``n == 1``."""
    rgb = mpl.colors.to_rgb(color)
    if n <= 1:
        return rgb
    t = -0.4 + 0.85 * i / (n - 1)
    if t < 0:
        return tuple(c * (1 + t) for c in rgb)
    return tuple(c + (1 - c) * t for c in rgb)


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


def best_epoch_lines(best: Mapping, styles: Mapping) -> list[tuple[float, tuple]]:
    """``(epoch, colour)`` per method: the median over its runs' best epochs, in the colour of its first run
    (a run without a method is a method of its own)."""
    groups: dict = {}
    for run, epoch in best.items():
        if epoch is not None:
            key = styles[run].group if styles[run].group is not None else ("run", run)
            groups.setdefault(key, []).append((epoch, styles[run].color))
    return [(float(np.median([e for e, _ in v])), v[0][1]) for v in groups.values()]
