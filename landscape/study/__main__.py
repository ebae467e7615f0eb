"""``python -m landscape.study``: the digits study (:func:`landscape.study.experiments.main`)."""
import sys

from .experiments import main

sys.exit(main())
