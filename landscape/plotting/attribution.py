"""The attribution figure: the top-ranked training samples, their images, labels and histories.

``plot_attribution(ranked, history, images=...)`` draws one cell per sample of ``ranked`` (the output of
:func:`landscape.attribution.attribute`, best first): the input image when the inputs are images (8×8 digits
stored flat or as (1, 8, 8), generic (C, H, W) with C = 1 or 3, (H, W)), the label it was trained on and whether
the last epoch classifies x and x_adv as that label, and its ``loss_adv`` (left axis) and ``curv_adv`` (right
axis) over the analysed epochs with the best epoch dotted. Tables in, Figure out; nothing is saved.
:func:`attribution_section` returns what a report section needs (the top-k table and this figure).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._style import PALETTE, style

__all__ = ["attribution_section", "as_image", "plot_attribution"]


def as_image(x) -> np.ndarray | None:
    """One input as an (H, W) or (H, W, 3) array in [0, 1] for ``imshow``, or None when it is no image
    (a flat vector whose length is not a square, or a shape with a channel count other than 1 or 3)."""
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=float)
    if a.ndim == 1:
        side = math.isqrt(a.size)
        return a.reshape(side, side) if side > 1 and side * side == a.size else None
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[0] in (1, 3):
        return a[0] if a.shape[0] == 1 else np.clip(np.moveaxis(a, 0, -1), 0, 1)
    if a.ndim == 3 and a.shape[-1] == 3:
        return np.clip(a, 0, 1)
    return None


def _last_row(history: pd.DataFrame, sid: int) -> pd.Series | None:
    rows = history[history["sample_id"] == sid]
    return None if rows.empty else rows.loc[rows["epoch"].idxmax()]


def plot_attribution(ranked: pd.DataFrame, history: pd.DataFrame, *, images=None, top: int = 8, per_row: int = 4,
                     true_labels: Mapping[int, int] | Sequence[int] | None = None, best_epoch: int | None = None,
                     title: str | None = None) -> Figure:
    """Grid of the ``top`` first samples of ``ranked`` with their images and loss/curvature histories.

    Args:
        ranked: :func:`landscape.attribution.attribute`'s table (``rank, sample_id, label, ...``), best first.
        history: the per-sample history (``sample_id, epoch, loss_adv, correct_clean, correct_adv`` and
            optionally ``curv_adv``) of the same split.
        images: inputs indexed by ``sample_id`` (array/tensor (N, ...) or a mapping id -> input); None or
            non-image inputs: curves only.
        top: samples shown (at most ``len(ranked)``). per_row: samples per row of the grid.
        true_labels: the original labels by ``sample_id`` (e.g. before label noise), shown when they differ.
        best_epoch: dotted line; default ``ranked.attrs["best_epoch_used"]`` when present.
        title: figure title; default names the ranking.

    Returns:
        The Figure (nothing saved).

    Raises:
        ValueError: ``top`` or ``per_row`` < 1, or missing columns.
    """
    for name, v in (("top", top), ("per_row", per_row)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for cols, what in ((("sample_id", "label"), "ranked"), (("sample_id", "epoch", "loss_adv"), "history")):
        table = ranked if what == "ranked" else history
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"{what} lacks column(s) {', '.join(missing)}")
    shown = ranked.head(int(top))
    best = best_epoch if best_epoch is not None else ranked.attrs.get("best_epoch_used")
    pics = [as_image(images[int(s)]) if images is not None else None for s in shown["sample_id"]]
    with_images = any(p is not None for p in pics)
    n = max(len(shown), 1)
    cols = min(int(per_row), n)
    rows = math.ceil(n / cols)
    with style():
        fig = Figure(figsize=((4.4 if with_images else 3.6) * cols, 2.6 * rows + 0.4), layout="constrained")
        ratios = [1, 2.6] * cols if with_images else [1] * cols
        grid = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
        step = 2 if with_images else 1
        for i, (_, r) in enumerate(shown.iterrows()):
            sid = int(r["sample_id"])
            row, col = divmod(i, cols)
            ax = fig.add_subplot(grid[row, step * col + step - 1])
            h = history[history["sample_id"] == sid].sort_values("epoch")
            ax.plot(h["epoch"], h["loss_adv"], color=PALETTE[0], lw=1.2, label="loss at x_adv")
            ax.set_ylabel("loss_adv", color=PALETTE[0])
            ax.set_xlabel("epoch")
            if "curv_adv" in h.columns:
                twin = ax.twinx()
                twin.plot(h["epoch"], h["curv_adv"], color=PALETTE[1], lw=1.0, label="curv_adv")
                twin.set_ylabel("curv_adv", color=PALETTE[1])
                twin.grid(False)
            if best is not None:
                ax.axvline(best, color="0.4", ls=":", lw=1)
            last = _last_row(history, sid)
            ok = "" if last is None else (f"\nlast: clean {'✓' if bool(last['correct_clean']) else '✗'}"
                                          f" adv {'✓' if bool(last['correct_adv']) else '✗'}")
            orig = ""
            if true_labels is not None:
                t = int(true_labels[sid])
                orig = f" (orig {t})" if t != int(r["label"]) else ""
            text = f"#{int(r.get('rank', i + 1))}  id {sid}\ny={int(r['label'])}{orig}{ok}"
            if with_images:
                iax = fig.add_subplot(grid[row, step * col])
                if pics[i] is not None:
                    iax.imshow(pics[i], cmap="gray_r" if pics[i].ndim == 2 else None, interpolation="nearest")
                iax.set_xticks([])
                iax.set_yticks([])
                iax.grid(False)
                iax.set_xlabel(text, fontsize=8)
            else:
                ax.set_title(text.replace("\n", "  "), fontsize=8, loc="left")
        if len(shown):
            by = ranked.attrs.get("by", "combined")
            fig.suptitle(title or f"Top {len(shown)} training samples by {by}\nblue: loss at x_adv · orange: "
                                  "curvature along the adversarial direction · dotted: best epoch")
    return fig


def attribution_section(run_dir: str | os.PathLike, *, top: int = 8, images=None, true_labels=None,
                        by: str = "combined", best_epoch: int | None = None) -> tuple[pd.DataFrame, Figure]:
    """What the report's attribution section needs: the top-``top`` table and the figure of a run folder
    (``landscape trajectory`` output with train histories), its history read once; ``best_epoch``: the run's,
    when the caller has diagnosed it already (default: :func:`landscape.attribution.best_epoch_of`)."""
    from ..attribution import attribute, best_epoch_of
    from ..trajectory.histories import read_histories

    history = read_histories(run_dir)
    ranked = attribute(history, best_epoch=best_epoch_of(run_dir) if best_epoch is None else best_epoch, by=by)
    table = ranked.head(int(top)).reset_index(drop=True)
    table.attrs = dict(ranked.attrs)
    return table, plot_attribution(ranked, history, images=images, top=top, true_labels=true_labels)
