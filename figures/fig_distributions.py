"""Per-sample distributions of input-gradient norm and adversarial curvature, best vs last epoch.

    python figures/fig_distributions.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
"""
from __future__ import annotations

from _recipe import draw, parser, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measure", action="append", default=None, help="measure column (repeatable)")
    p.add_argument("--violin", action="store_true")
    p.add_argument("--log", action="store_true")
    args = p.parse_args(argv)
    fig = draw(args, "distributions", measures=args.measure, violin=args.violin, log=True if args.log else None)
    return save(fig, args, "fig_distributions")


if __name__ == "__main__":
    main()
