"""`landscape slice`: 1D/2D input loss slices around chosen samples of a checkpoint -> Parquet + PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_attack_args, add_data_args, add_model_args, attack_from_args, built_arch, dataset_from_args,
                      eps_text, model_from_args, output_dir, positive_float, positive_int, resolve_eps)
from ._names import DIRECTIONS, NORMALIZATIONS, RANDOM_KINDS
from ._summary import print_summary

HELP = "1D/2D input loss slices (adversarial, random, gradient, eigen directions) around samples"


MAX_INDEX_RANGE = 1_000_000


def parse_index(text: str) -> list[int]:
    """``"0..15"`` (inclusive range), ``"3"``, ``"1,4,7"`` or a mix such as ``"0..3,8"`` -> sorted unique ints.

    Raises:
        ValueError: empty, negative, non-integer or reversed ranges.
    """
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            if ".." in part:
                lo_text, hi_text = part.split("..", 1)
                lo, hi = int(lo_text), int(hi_text)
                if hi < lo:
                    raise ValueError
                values = range(lo, hi + 1)
            else:
                values = [int(part)]
        except ValueError:
            raise ValueError(f"bad --index {text!r}: expected e.g. 0..15, 3 or 1,4,7 (ranges inclusive)") from None
        if len(values) and values[0] < 0:
            raise ValueError(f"bad --index {text!r}: indices must be >= 0")
        if len(values) > MAX_INDEX_RANGE:
            raise ValueError(f"bad --index {text!r}: more than {MAX_INDEX_RANGE} samples in one range")
        out.update(values)
    return sorted(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file")
    add_model_args(p)
    add_data_args(p, default_n=None)
    add_attack_args(p)
    g = p.add_argument_group("slice")
    g.add_argument("--index", default="0..15",
                   help="samples of the split to slice: 0..15 (inclusive), 3 or 1,4,7 (default 0..15)")
    g.add_argument("--dirs", nargs="+", default=["adversarial", "random"], choices=DIRECTIONS, metavar="DIR",
                   help=f"directions out of {', '.join(DIRECTIONS)}: two for a 2D plane, any for 1D lines "
                        "(default: adversarial random)")
    g.add_argument("--kind", choices=["1d", "2d"], default=None,
                   help="2d: a plane spanned by two directions; 1d: one line per direction "
                        "(default: 2d for two directions, else 1d)")
    g.add_argument("--grid", type=positive_int, default=51, help="points per axis (default 51)")
    g.add_argument("--radius", type=positive_float, default=None,
                   help="grid half-width, in L∞ pixel units with --normalization linf (default: --eps)")
    g.add_argument("--normalization", choices=NORMALIZATIONS, default="linf",
                   help="per-sample direction scaling: linf (‖d‖∞ = 1, default) or unit (‖d‖₂ = 1)")
    g.add_argument("--clip", action="store_true", help="clamp grid points to [0,1] (default: exact geometry)")
    g.add_argument("--random-kind", choices=RANDOM_KINDS, default="rademacher")
    g.add_argument("--max-batch", type=positive_int, default=None,
                   help="most grid points per forward pass (default: 4096 on CPU, 65536 on CUDA)")
    g.add_argument("--autocast", choices=("bf16", "fp16"), default=None,
                   help="evaluate slice losses in reduced precision (GPU option; default float32)")
    g.add_argument("--epoch", type=int, default=None,
                   help="epoch of the checkpoint, written in the table's epoch column (default: from the file "
                        "name, else the epoch stored in the checkpoint)")
    g.add_argument("--out", required=True,
                   help="output folder, e.g. the run folder: slices_1d|slices_2d .parquet and .png, the names "
                        "`landscape report` reads; rows of other checkpoints already there are kept")


def _select(data, index: list[int]):
    """The samples ``index`` of ``data`` (a dataset subset) as tensors; only those are decoded."""
    from landscape.datasets import Subset, materialize  # lazy: start-up (torch)

    if index[-1] >= len(data):
        raise ValueError(f"--index {index[-1]} is out of range: the {len(data)} loaded samples are "
                         f"0..{len(data) - 1}")
    return materialize(Subset(data, index), workers=0)


def _epoch(args) -> int | None:
    """--epoch, else the epoch in the checkpoint's file name, else the one stored in it (None if neither)."""
    if args.epoch is not None:
        return args.epoch
    from landscape.trajectory import parse_epoch  # lazy: start-up (torch, pandas)

    epoch = parse_epoch(args.checkpoint)
    if epoch is None:
        from landscape.checkpoints import load_checkpoint  # lazy: start-up

        epoch = load_checkpoint(args.checkpoint, trusted=args.trust_checkpoint).epoch
    return epoch


def _merge(path: Path, new, kind: str):
    """``new`` appended to the slice table already at ``path``, minus the rows it recomputes (same checkpoint
    and direction(s)); returns (table, rows kept from the old one). A table written without the
    ``checkpoint`` column (older versions) is replaced."""
    import pandas as pd  # lazy: start-up

    from landscape.runs import read_table_file  # lazy: start-up

    if not path.is_file():
        return new, 0
    old = read_table_file(path)
    keys = ["checkpoint", "direction"] if kind == "1d" else ["checkpoint", "direction1", "direction2"]
    if not set(keys) <= set(old.columns):
        return new, 0
    redo = pd.MultiIndex.from_frame(new[keys].astype(str).drop_duplicates())
    keep = old[~pd.MultiIndex.from_frame(old[keys].astype(str)).isin(redo)]
    if keep.empty:
        return new, 0
    table = pd.concat([keep, new], ignore_index=True)
    table.attrs = dict(new.attrs)
    return table, len(keep)


def run(args: argparse.Namespace) -> int:
    import pandas as pd  # lazy: start-up (here and below: torch, pandas, matplotlib)

    from landscape import slices  # lazy: start-up
    from landscape.plotting import plot_slices_1d, plot_surface, save_figure  # lazy: start-up
    from landscape.runs import run_file, write_file  # lazy: start-up

    kind = args.kind or ("2d" if len(args.dirs) == 2 else "1d")  # 1, 3 or 4 directions: 1D lines
    if kind == "2d" and len(args.dirs) != 2:
        raise ValueError(f"--kind 2d needs exactly two --dirs, got {len(args.dirs)}: {' '.join(args.dirs)}")
    if len(set(args.dirs)) != len(args.dirs):
        raise ValueError(f"--dirs lists a direction twice: {' '.join(args.dirs)}")
    index = parse_index(args.index)
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    radius = args.radius if args.radius is not None else args.eps
    if not radius > 0:
        raise ValueError("--radius must be > 0 (or give --eps > 0 to use as the radius)")
    out = output_dir(args.out)
    model = model_from_args(args, args.checkpoint, data=data)
    x, y = _select(data, index)
    coords = slices.grid(radius, args.grid)
    common = dict(normalization=args.normalization, clip=args.clip, eps=args.eps, attack=attack_from_args(args),
                  norm=args.norm, kind=args.random_kind, seed=args.seed,
                  max_batch=args.max_batch, progress=not args.quiet, autocast=args.autocast)
    if kind == "2d":
        df = slices.slice_2d(model, x, y, args.dirs[0], args.dirs[1], coords, coords, **common)
    else:
        parts = [slices.slice_1d(model, x, y, d, coords, **common) for d in args.dirs]
        attrs = dict(parts[0].attrs, eps=args.eps if "adversarial" in args.dirs else None)
        df = pd.concat(parts, ignore_index=True)
        df.attrs = attrs
    df.insert(1, "index", [index[s] for s in df["sample"]])
    df.insert(0, "epoch", pd.array([_epoch(args)] * len(df), dtype="Int64"))
    df.insert(1, "checkpoint", str(args.checkpoint))
    df.attrs.update(checkpoint=str(args.checkpoint), arch=built_arch(model, args), data=args.data, split=args.split,
                    directions=list(args.dirs), grid=args.grid)
    key = f"slices_{kind}"
    path = Path(out) / run_file(key)
    table, kept = _merge(path, df, kind)
    write_file(path, table, attrs=True)
    epochs = table["epoch"].nunique()
    shown = table if table["epoch"].notna().all() else table.drop(columns="epoch")  # groups need epochs
    if kind == "2d":
        fig = plot_surface(shown, sample="mean", kind="both", title=f"{Path(args.checkpoint).name}: "
                           f"{args.dirs[0]} × {args.dirs[1]} plane, {len(index)} samples")
    else:
        fig = plot_slices_1d(shown, title=f"loss along 1D slices, {len(index)} samples"
                             + (f", {epochs} checkpoints" if epochs > 1 else f": {Path(args.checkpoint).name}"))
    png = save_figure(fig, path.with_suffix(""), formats=("png",))[0]
    centre = df[(df["a"] == 0) & ((df["b"] == 0) if "b" in df.columns else True)]["loss"].mean()
    print_summary("slice", [(path, len(table)), png], details=[
        f"{len(df):,} new points ({len(index)} samples, {args.grid} per axis, radius {radius:g}, epoch "
        f"{df['epoch'].iloc[0] if pd.notna(df['epoch'].iloc[0]) else 'unknown'}); mean loss at the centre "
        f"{centre:.4f}, max {df['loss'].max():.4f}", eps_text(args)] + ([f"kept {kept:,} rows of other checkpoints in {path.name}"]
                                                       if kept else []))
    return 0
