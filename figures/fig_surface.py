"""2D loss surface around one sample (adversarial x random plane), best vs last epoch: contour and 3D.

    python figures/fig_surface.py runs/demo/pgd_at --out figures/out --sample 0
"""
from __future__ import annotations

from _recipe import draw, parser, run_paths, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sample", default="0", help="sample id or 'mean'")
    p.add_argument("--kind", default="both", choices=["both", "contour", "3d"])
    args = p.parse_args(argv)
    sample = args.sample if args.sample == "mean" else int(args.sample)
    args._paths = run_paths(args)[:1]  # one run per figure
    return save(draw(args, "surface", sample=sample, surface=args.kind), args, "fig_surface")


if __name__ == "__main__":
    main()
