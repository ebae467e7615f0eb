"""1D loss slices along the adversarial and a random direction, best vs last epoch of each run.

    python figures/fig_slices_best_vs_last.py runs/demo/pgd_at --out figures/out
"""
from __future__ import annotations

from _recipe import draw, parser, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--band", default="quantile", choices=["quantile", "std"],
                   help="q10–q90 around the median (default) or mean ± std")
    args = p.parse_args(argv)
    fig = draw(args, "slices1d", band=args.band)
    return save(fig, args, "fig_slices_best_vs_last")


if __name__ == "__main__":
    main()
