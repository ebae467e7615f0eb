"""`landscape slice`: 1D/2D input loss slices around chosen samples of a checkpoint -> Parquet + PNG; with
``--space weights``: filter-normalised weight-space slices of a probe set's loss, or (``--pca``) the PCA plane of
a run's training path with the loss surface on it (``landscape.weight_slices``)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ._common import (add_attack_args, add_data_args, add_model_args, attack_from_args, built_arch, dataset_from_args,
                      eps_text, model_from_args, output_dir, positive_float, positive_int, resolve_eps)
from ._names import DIRECTIONS, NORMALIZATIONS, RANDOM_KINDS
from ._summary import print_summary

HELP = "1D/2D input loss slices around samples, or weight-space slices and the PCA training path (--space weights)"


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


#: ``--space weights``: the directions it takes, and the files it writes in --out (stem -> what).
WEIGHT_DIRECTIONS = ("random", "eigen")
WEIGHT_FILES = {"1d": "weight_slices_1d", "2d": "weight_slices_2d", "pca": "weight_path"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint file (with --space weights --pca: the run folder holding its epochs)")
    add_model_args(p)
    add_data_args(p, default_n=None)
    add_attack_args(p)
    g = p.add_argument_group("slice")
    g.add_argument("--index", default=None,
                   help="samples of the split to slice: 0..15 (inclusive), 3 or 1,4,7 (default 0..15; with "
                        "--space weights the probe set, default 0..255)")
    g.add_argument("--dirs", nargs="+", default=None, choices=DIRECTIONS, metavar="DIR",
                   help=f"directions out of {', '.join(DIRECTIONS)}: two for a 2D plane, any for 1D lines "
                        "(default: adversarial random; with --space weights: random random, out of random and "
                        "eigen)")
    g.add_argument("--kind", choices=["1d", "2d"], default=None,
                   help="2d: a plane spanned by two directions; 1d: one line per direction "
                        "(default: 2d for two directions, else 1d)")
    g.add_argument("--grid", type=positive_int, default=None,
                   help="points per axis (default 51; 21 with --space weights)")
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
    w = p.add_argument_group("weight space (--space weights; see docs/weight_slices.md)")
    w.add_argument("--space", choices=("input", "weights"), default="input",
                   help="input: slices of each sample's input (default); weights: slices of the probe set's mean "
                        "loss in weight space, filter-normalised as Li et al. 2018 (--dirs random and/or eigen)")
    w.add_argument("--loss", choices=("clean", "robust", "both"), default="both",
                   help="weight slices of the clean loss, the robust loss (x_adv attacked at the checkpoint and "
                        "kept) or both (default)")
    w.add_argument("--reattack", action="store_true", help="attack afresh at every weight-grid point")
    w.add_argument("--biasbn", action="store_true",
                   help="also perturb biases and BN parameters (default: they keep their values, as Li et al.)")
    w.add_argument("--weight-norm", choices=("filter", "unit"), default="filter",
                   help="random weight directions: each filter scaled to the weights' filter norm (default) or "
                        "the whole direction to norm 1")
    w.add_argument("--pca", action="store_true",
                   help="CKPT is a run folder: the PCA plane of its epochs' weights and the loss surface on it")
    w.add_argument("--export", nargs="+", choices=("h5", "vtp"), default=[],
                   help="also write the tables as .h5 (needs h5py) and the surface as ParaView .vtp")
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

    if args.space == "weights":
        return _run_weights(args)
    weight_only = [flag for flag, on in (("--reattack", args.reattack), ("--biasbn", args.biasbn),
                                         ("--pca", args.pca), ("--export", args.export)) if on]
    if weight_only:
        raise ValueError(f"{weight_only[0]} needs --space weights")
    args.dirs = args.dirs or ["adversarial", "random"]
    args.grid = args.grid or 51
    kind = args.kind or ("2d" if len(args.dirs) == 2 else "1d")  # 1, 3 or 4 directions: 1D lines
    if kind == "2d" and len(args.dirs) != 2:
        raise ValueError(f"--kind 2d needs exactly two --dirs, got {len(args.dirs)}: {' '.join(args.dirs)}")
    if len(set(args.dirs)) != len(args.dirs):
        raise ValueError(f"--dirs lists a direction twice: {' '.join(args.dirs)}")
    index = parse_index(args.index or "0..15")
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


def _run_weights(args: argparse.Namespace) -> int:
    """``--space weights``: weight-space slices of the probe set ``--index``, or the PCA training path."""
    import pandas as pd  # lazy: start-up (here and below: torch, pandas, matplotlib)

    from landscape import weight_slices as ws  # lazy: start-up
    from landscape.plotting import save_figure  # lazy: start-up
    from landscape.plotting.weight_space import (plot_training_path, plot_weight_contour,  # lazy: start-up
                                                 plot_weight_slice_1d)

    dirs = args.dirs or ["random", "random"]
    bad = [d for d in dirs if d not in WEIGHT_DIRECTIONS]
    if bad:
        raise ValueError(f"--space weights takes --dirs out of {', '.join(WEIGHT_DIRECTIONS)}, got {bad[0]}")
    input_only = [flag for flag, on in (("--clip", args.clip), ("--autocast", args.autocast),
                                        ("--max-batch", args.max_batch)) if on]
    if input_only:
        raise ValueError(f"{input_only[0]} is an input-space option; drop it with --space weights")
    if "h5" in args.export:
        _require_h5py()  # before any work
    kind = args.kind or ("2d" if len(dirs) == 2 else "1d")
    if kind == "2d" and len(dirs) != 2 and not args.pca:
        raise ValueError(f"--kind 2d needs exactly two --dirs, got {len(dirs)}: {' '.join(dirs)}")
    grid, radius = args.grid or 21, args.radius if args.radius is not None else 1.0
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    out = output_dir(args.out)
    x, y = _select(data, parse_index(args.index or "0..255"))
    common = dict(loss=args.loss, attack=attack_from_args(args) if args.loss != "clean" else None,
                  reattack=args.reattack, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
    ignore = None if args.biasbn else "biasbn"
    written, details = [], []
    if args.pca:
        path, model = _training_path(args, ignore, data)
        surface = ws.path_surface(model, x, y, path, n=grid, **common)
        tables = {"weight_path": path.coords, "weight_path_variance": path.variance,
                  "weight_path_surface": surface}
        fig = plot_training_path(surface, path.coords, title=f"{Path(args.checkpoint).name}: training path, "
                                 f"{len(path.coords)} epochs").figure
        ratio = path.variance["ratio"].iloc[:2].sum()
        details.append(f"{len(path.coords)} epochs; the PCA plane explains {100 * ratio:.1f} % of the variance")
    else:
        model = model_from_args(args, args.checkpoint, data=data)
        axis = [radius * (2 * i - (grid - 1)) / max(grid - 1, 1) for i in range(grid)]
        kw = dict(norm=args.weight_norm, ignore=ignore, **common)
        if kind == "2d":
            surface = ws.weight_slice_2d(model, x, y, dirs[0], dirs[1], axis, axis, **kw)
            kinds = list(pd.unique(surface["kind"]))
            fig = _contours(surface, kinds, plot_weight_contour)
        else:
            surface = pd.concat([ws.weight_slice_1d(model, x, y, d, axis, **dict(kw, seed=args.seed + i))
                                 for i, d in enumerate(dirs)], ignore_index=True)
            surface.attrs = {"n": len(x), "norm": args.weight_norm}
            fig = plot_weight_slice_1d(surface, title=f"{Path(args.checkpoint).name}: 1D weight slice, "
                                       f"{len(x)} probe samples").figure
        surface.insert(0, "checkpoint", str(args.checkpoint))
        tables = {WEIGHT_FILES[kind]: surface}
        centre = surface[(surface["alpha"] == 0) & ((surface["beta"] == 0) if "beta" in surface else True)]
        details.append(", ".join(f"{k} loss {v:.4f}" for k, v in centre.groupby("kind", sort=False)["loss"]
                                 .first().items()) + " at the checkpoint")
    stem = "weight_path" if args.pca else WEIGHT_FILES[kind]
    for name, table in tables.items():
        written.append((ws.to_parquet(table, out / f"{name}.parquet"), len(table)))
    if "h5" in args.export:
        written.append(ws.to_h5(tables, out / f"{stem}.h5"))
    if "vtp" in args.export:
        if "beta" not in surface.columns:
            raise ValueError("--export vtp writes a 2D surface: use two --dirs or --pca")
        written += ws.to_vtp(surface, out / f"{stem}.vtp", trajectory=path.coords if args.pca else None)
    written.append(save_figure(fig, out / stem, formats=("png",))[0])
    print_summary("slice", written, details=details + [f"{len(x)} probe samples, {grid} points per axis"
                                                       + ("" if args.loss == "clean" else f"; {eps_text(args)}")])
    return 0


def _require_h5py() -> None:
    if importlib.util.find_spec("h5py") is None:
        raise ValueError("--export h5 needs the h5py package (pip install 'landscape[vtk]')")


def _contours(surface, kinds, plot):
    """One contour panel per loss kind, side by side."""
    from matplotlib.figure import Figure  # lazy: start-up

    fig = Figure(figsize=(4.8 * len(kinds), 3.9), layout="constrained")
    for i, k in enumerate(kinds):
        plot(surface, kind=k, ax=fig.add_subplot(1, len(kinds), i + 1))
    return fig


def _training_path(args, ignore, data):
    """The PCA training path of the run folder CKPT (its epochs as `landscape trajectory` finds them) and the
    final epoch's model."""
    from landscape.trajectory import discover_checkpoints  # lazy: start-up
    from landscape.weight_slices import training_path  # lazy: start-up

    if not Path(args.checkpoint).is_dir():
        raise ValueError(f"--pca needs a run folder holding the epochs' checkpoints, got {args.checkpoint}")
    found = discover_checkpoints(args.checkpoint)
    if len(found.entries) < 3:
        raise ValueError(f"--pca needs at least 3 epoch checkpoints in {args.checkpoint}, found {len(found.entries)}")
    epochs = [e.name_epoch if e.name_epoch is not None else e.position for e in found.entries]
    final = found.entries[max(range(len(epochs)), key=epochs.__getitem__)].path
    models = (model_from_args(args, p, data=data) for p in found.paths)  # one at a time
    path = training_path(models, epochs=epochs, ignore=ignore)
    path.coords["checkpoint"] = [str(found.paths[epochs.index(e)]) for e in path.coords["epoch"]]
    return path, model_from_args(args, final, data=data)
