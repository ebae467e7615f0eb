"""Robust overfitting on the bundled 8x8 digits: a thin caller of :mod:`landscape.study.experiments`.

``python analyses/digits_robust_overfitting.py --out runs/demo`` is ``landscape demo --out runs/demo``
(and ``make demo``); every option is documented in ``python -m landscape.study --help``.
"""
import sys

from landscape.study.experiments import main

if __name__ == "__main__":
    sys.exit(main())
