"""Render every recipe and write small PNG thumbnails to figures/thumbnails/ (for figures/README.md).

    python figures/make_thumbnails.py              # synthetic tables (no runs needed)
    python figures/make_thumbnails.py runs/demo/pgd_at runs/demo/at_advlc
"""
from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path

from PIL import Image

RECIPES = ["fig_learning_curves", "fig_methods", "fig_measures_vs_epoch", "fig_slices_best_vs_last", "fig_surface",
           "fig_distributions", "fig_curvature_vs_loss"]
HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run directories (default: synthetic tables)")
    p.add_argument("--out", default=str(HERE / "thumbnails"))
    p.add_argument("--width", type=int, default=520, help="thumbnail width in pixels")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = [str(r) for r in args.runs]
        if not source:  # one set of synthetic runs shared by every recipe
            from _recipe import SYNTHETIC_RUNS

            from landscape.testing import write_synthetic_run

            source = [str(write_synthetic_run(Path(tmp) / "runs" / name, ro=ro, seed=i))
                      for i, (name, ro) in enumerate(SYNTHETIC_RUNS)]
        for name in RECIPES:
            recipe = importlib.import_module(name)
            png = recipe.main([*source, "--out", tmp, "--format", "png", "--dpi", "110"])[0]
            with Image.open(png) as im:
                im = im.convert("RGB")
                im.thumbnail((args.width, args.width * 4), Image.Resampling.LANCZOS)
                im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out / f"{name}.png", optimize=True)
            print(out / f"{name}.png")


if __name__ == "__main__":
    main()
