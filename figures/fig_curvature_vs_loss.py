"""Adversarial-direction curvature (or another measure) against robust test loss across epochs, Spearman ρ.

ρ is computed from each run's best epoch on (the robust-overfitting phase, as in ``landscape diagnose``);
``--all-epochs`` uses every epoch.

    python figures/fig_curvature_vs_loss.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
"""
from __future__ import annotations

from _recipe import draw, load, parser, save

from landscape.diagnose import best_last_epochs


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measure", default="curv_adv")
    p.add_argument("--measure-split", default="test", choices=["test", "train"])
    p.add_argument("--all-epochs", action="store_true", help="rho over all epochs (default: from the best on)")
    args = p.parse_args(argv)
    table = load(args, "trajectory")
    since = None if args.all_epochs else {r: e["best"] for r, e in best_last_epochs(table).items()}
    if since is not None and "run" not in table.columns:
        since = next(iter(since.values()), None)
    fig = draw(args, "scatter", measures=[args.measure], split=args.measure_split, since=since)
    return save(fig, args, "fig_curvature_vs_loss")


if __name__ == "__main__":
    main()
