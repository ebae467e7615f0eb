"""Learning curves of each run: clean/robust train/test accuracy and loss, best epoch, RO gap.

    python figures/fig_learning_curves.py runs/demo/pgd_at runs/demo/at_advlc --out figures/out
    python figures/fig_learning_curves.py --synthetic --out figures/out
"""
from __future__ import annotations

from _recipe import draw, parser, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--metrics", action="store_true", help="use the training log metrics.csv")
    args = p.parse_args(argv)
    return save(draw(args, "training_curves" if args.metrics else "curves"), args, "fig_learning_curves")


if __name__ == "__main__":
    main()
