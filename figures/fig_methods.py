"""Methods compared over seeds: per-epoch mean over each method's runs with the seeds' min–max band.

    python figures/fig_methods.py runs/demo/pgd_at/s0 runs/demo/pgd_at/s1 runs/demo/at_advlc/s0 --out figures/out
    python figures/fig_methods.py --synthetic --out figures/out --measures

Runs given as ``<method>/<seed>`` folders are grouped by method (the folder above the seed's).
"""
from __future__ import annotations

from _recipe import draw, parser, save


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--measures", action="store_true", help="landscape measures instead of accuracy and loss")
    args = p.parse_args(argv)
    kind = "method_measures" if args.measures else "method_curves"
    return save(draw(args, kind), args, "fig_methods" + ("_measures" if args.measures else ""))


if __name__ == "__main__":
    main()
