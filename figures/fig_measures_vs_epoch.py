"""Input-gradient norm, adversarial curvature, Taylor gap and logit variation against epoch, runs overlaid.

    python figures/fig_measures_vs_epoch.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
"""
from __future__ import annotations

from _recipe import draw, parser, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measure", action="append", default=None, help="measure name (repeatable)")
    p.add_argument("--split", action="append", default=None, choices=["test", "train"])
    args = p.parse_args(argv)
    fig = draw(args, "measures", measures=args.measure, splits=args.split or ("test", "train"))
    return save(fig, args, "fig_measures_vs_epoch")


if __name__ == "__main__":
    main()
