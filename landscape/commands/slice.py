"""`landscape slice`: 1D/2D input loss slices around chosen samples of a checkpoint -> Parquet + PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

from landscape._io import atomic_write
from ._common import add_attack_args, add_data_args, add_model_args, positive_float, positive_int

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
    from landscape.slices import DIRECTIONS, NORMALIZATIONS, RANDOM_KINDS

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
    g.add_argument("--out", required=True, help="output folder (slice_1d|slice_2d .parquet and .png)")


def _select(x, y, index: list[int]):
    if index[-1] >= len(y):
        raise ValueError(f"--index {index[-1]} is out of range: the {len(y)} loaded samples are 0..{len(y) - 1}")
    return x[index], y[index]


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from landscape import slices
    from landscape.plotting import plot_slices_1d, plot_surface, save_figure

    from ._common import built_arch, load_data_from_args, load_model_from_args, output_dir

    kind = args.kind or ("2d" if len(args.dirs) == 2 else "1d")  # 1, 3 or 4 directions: 1D lines
    if kind == "2d" and len(args.dirs) != 2:
        raise ValueError(f"--kind 2d needs exactly two --dirs, got {len(args.dirs)}: {' '.join(args.dirs)}")
    if len(set(args.dirs)) != len(args.dirs):
        raise ValueError(f"--dirs lists a direction twice: {' '.join(args.dirs)}")
    index = parse_index(args.index)
    radius = args.radius if args.radius is not None else args.eps
    if not radius > 0:
        raise ValueError("--radius must be > 0 (or give --eps > 0 to use as the radius)")
    out = output_dir(args.out)
    model = load_model_from_args(args, args.checkpoint)
    x, y = _select(*load_data_from_args(args), index)
    coords = slices.grid(radius, args.grid)
    common = dict(normalization=args.normalization, clip=args.clip, eps=args.eps, attack=args.attack,
                  steps=args.steps, step_size=args.step_size, norm=args.norm, kind=args.random_kind, seed=args.seed,
                  max_batch=args.max_batch, progress=not args.quiet)
    if kind == "2d":
        df = slices.slice_2d(model, x, y, args.dirs[0], args.dirs[1], coords, coords, **common)
    else:
        parts = [slices.slice_1d(model, x, y, d, coords, **common) for d in args.dirs]
        attrs = dict(parts[0].attrs, eps=args.eps if "adversarial" in args.dirs else None)
        df = pd.concat(parts, ignore_index=True)
        df.attrs = attrs
    df.insert(1, "index", [index[s] for s in df["sample"]])
    df.attrs.update(checkpoint=str(args.checkpoint), arch=built_arch(model, args), data=args.data, split=args.split,
                    directions=list(args.dirs), grid=args.grid)
    stem = Path(out) / f"slice_{kind}"
    atomic_write(stem.with_suffix(".parquet"), lambda tmp: df.to_parquet(tmp, index=False))
    if kind == "2d":
        fig = plot_surface(df, sample="mean", kind="both", title=f"{Path(args.checkpoint).name}: "
                           f"{args.dirs[0]} × {args.dirs[1]} plane, {len(index)} samples")
    else:
        fig = plot_slices_1d(df, title=f"{Path(args.checkpoint).name}: loss along 1D slices, {len(index)} samples")
    save_figure(fig, stem, formats=("png",))
    centre = df[(df["a"] == 0) & ((df["b"] == 0) if "b" in df.columns else True)]["loss"].mean()
    print(f"{len(df)} points ({len(index)} samples, {args.grid} per axis, radius {radius:g}); "
          f"mean loss at the centre {centre:.4f}, max {df['loss'].max():.4f}")
    print(f"wrote {stem.with_suffix('.parquet')} and {stem.with_suffix('.png')}")
    return 0
