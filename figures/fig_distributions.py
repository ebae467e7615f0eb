"""Per-sample distributions of input-gradient norm and adversarial curvature, best vs last epoch.

    python figures/fig_distributions.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
"""
from __future__ import annotations

from _recipe import load, parser, save

from landscape.plotting import plot_distributions


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measure", action="append", default=None, help="measure column (repeatable)")
    p.add_argument("--violin", action="store_true")
    p.add_argument("--log", action="store_true")
    args = p.parse_args(argv)
    table = load(args, "samples", best_last=True)
    fig = plot_distributions(table, args.measure or ["grad_l1", "curv_adv"],
                             kind="violin" if args.violin else "hist", log=args.log)
    return save(fig, args, "fig_distributions")


if __name__ == "__main__":
    main()
