"""1D loss slices along the adversarial and a random direction, best vs last epoch of each run.

    python figures/fig_slices_best_vs_last.py runs/demo/pgd_at --out figures/out
"""
from __future__ import annotations

from _recipe import load, parser, save

from landscape.plotting import plot_slices_1d


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--band", default="std", choices=["std", "quantile"])
    args = p.parse_args(argv)
    fig = plot_slices_1d(load(args, "slices_1d", best_last=True), band=args.band)
    return save(fig, args, "fig_slices_best_vs_last")


if __name__ == "__main__":
    main()
