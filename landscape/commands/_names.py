"""The registry names the subcommands offer as choices and in their help, as plain tuples.

The registries that own them (measures, slices, training, plotting, ...) import torch or matplotlib, which
``landscape CMD --help`` must not (tests/test_cli_startup.py times and checks that). This module imports
nothing; tests/test_cli_startup.py checks every tuple against its registry, so a name added there fails the
test until it is added here too.
"""
from __future__ import annotations

#: landscape.measures.MEASURES and DEFAULT_MEASURES
MEASURES = ("grad", "curv_adv", "curv_rand", "eig_top", "taylor_gap", "logit_var", "grad_at_adv", "curv_adv_at_adv",
            "curv_rand_at_adv", "eig_top_at_adv", "fo_share", "hs", "hs_at_adv", "logit_margin",
            "w_eig_top", "w_trace", "w_density", "w_flat_avg", "w_flat_worst", "w_awp")
DEFAULT_MEASURES = ("grad", "curv_adv", "curv_rand", "taylor_gap", "logit_var")

#: landscape.slices.DIRECTIONS, NORMALIZATIONS and RANDOM_KINDS
DIRECTIONS = ("adversarial", "gradient", "random", "eigen")
NORMALIZATIONS = ("unit", "linf")
RANDOM_KINDS = ("rademacher", "gaussian")

#: landscape.training.METHODS and PRESETS, landscape.augmentation.AUGMENTATIONS
METHODS = ("standard", "standard_gradreg", "pgd_at", "at_decomposed", "at_advlc", "at_gradreg", "trades", "mart",
           "awp_at", "awp_trades", "cure", "llr")
PRESETS = ("official_cifar10", "official_cifar10_swa")
AUGMENTATIONS = ("none", "crop", "crop_flip")

#: landscape.trajectory.executors.EXECUTORS
EXECUTORS = ("serial", "process", "ray")

#: landscape.study.experiments.VARIANTS and DEFAULT_VARIANTS
VARIANTS = ("standard", "standard_gradreg", "pgd_at", "at_clean_half", "at_advlc", "at_gradreg", "at_excess")
DEFAULT_VARIANTS = ("standard", "standard_gradreg", "pgd_at", "at_clean_half", "at_advlc", "at_gradreg")

#: landscape.study.experiments.STUDIES
STUDIES = ("methods", "attribution")

#: landscape.plotting.FIGURES
FIGURES = ("method_curves", "method_measures", "method_slices1d", "method_distributions", "contours", "scatter",
           "first_order_share", "weight_slices1d", "weight_path", "curves", "training_curves", "measures", "slices1d", "distributions", "surface")

#: landscape.datasets.list_datasets(), in the order the --data help names them
DATASETS = ("digits", "cifar10", "cifar100", "svhn", "tiny-imagenet", "imagefolder", "npz")
