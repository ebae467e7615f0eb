"""Adversarial-direction curvature (or another measure) against robust test loss across epochs, Spearman ρ.

    python figures/fig_curvature_vs_loss.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
"""
from __future__ import annotations

from _recipe import load, parser, save

from landscape.plotting import plot_measure_vs_loss


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measure", default="curv_adv")
    p.add_argument("--measure-split", default="test", choices=["test", "train"])
    args = p.parse_args(argv)
    ax = plot_measure_vs_loss(load(args, "trajectory"), args.measure, measure_split=args.measure_split)
    return save(ax, args, "fig_curvature_vs_loss")


if __name__ == "__main__":
    main()
