"""The training protocol: the official configurations as presets, and validation of the hyper-parameters.

:data:`PRESETS` holds the official AT/AdvLC configurations on CIFAR-10, read from the structure of the
official code (TreeLLi/Combating-RO-AdvLC); :func:`preset` returns one as keyword arguments of
:func:`landscape.training.train`. :func:`check_settings` validates a settings dict at the public boundary.
"""
from __future__ import annotations

import math

from .attacks import PGD_STARTS
from .augmentation import check_augmentation
from .objectives import ADVERSARIAL_METHODS, METHODS
from .regularizers import GRADIENT_NORMS


__all__ = ["PRESETS", "LATER_DEFAULTS", "preset", "check_settings"]

#: The official training configurations of AT/AdvLC on CIFAR-10 (TreeLLi/Combating-RO-AdvLC:
#: ``src/config/train.py``, ``src/config/config.py``, ``src/utils/train.py``, ``src/data/factory.py``):
#: PGD-10, eps 8/255, step 2/255, started at x + ∇ₓ(batch-mean CE) (``pgd_start="grad"``: the official loop
#: passes the clean input gradient positionally into ``pgd(..., max_iter, pert=None, ig=None)``'s ``pert``, so its
#: "no random start" PGD starts there — the repo's behaviour; the paper's text says no random start; pass
#: ``pgd_start="clean"`` for that), the clean forward pass first, random crop (padding 4)
#: + horizontal flip, SGD lr 0.1 momentum 0.9 weight decay 1e-4 (the code's default), batch 100 with the
#: last partial batch dropped, 200 epochs, lr ×0.1 at epochs 100 and 150. ``_swa``: the README's AdvLC+SWA
#: command (``--reg_lam 0.4 --swa 50 n 500``): equal-weight averaging from the 51st epoch, every 500th batch.
PRESETS = {
    "official_cifar10": dict(eps=8 / 255, steps=10, step_size=2 / 255, random_start=False, pgd_start="grad",
                             clean_first=True,
                             augment="crop_flip", crop_pad=4, epochs=200, lr=0.1, lr_milestones=(0.5, 0.75),
                             momentum=0.9, weight_decay=1e-4, batch_size=100, drop_last=True, eval_steps=10),
}
PRESETS["official_cifar10_swa"] = dict(PRESETS["official_cifar10"], lam=0.4, swa_start=51, swa_every=500)

# Settings added after runs were first written, with the value that reproduces those runs.
LATER_DEFAULTS = dict(clean_weight=1.0, excess_weight=1.0, random_start=True, clean_first=False, augment="none",
                       crop_pad=4, drop_last=False, small_eps=None, swa_start=None, swa_every=None,
                       save_every=None, pgd_start=None, awp_gamma=None, cure_h=None, llr_mu=None)


def preset(name: str) -> dict:
    """Keyword arguments of :func:`train` for a named configuration (a copy of ``PRESETS[name]``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (allowed: {', '.join(PRESETS)})")
    return dict(PRESETS[name])


def _is_int(v, low: int) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= low


def check_settings(s: dict) -> None:
    """Validate the hyper-parameters at the public boundary (ValueError/TypeError naming the value)."""
    if s["method"] not in METHODS:
        raise ValueError(f"unknown method {s['method']!r} (allowed: {', '.join(METHODS)})")
    if s["norm"] not in ("linf", "l2"):
        raise ValueError(f"unknown norm {s['norm']!r} (allowed: linf, l2)")
    if s["grad_norm"] not in GRADIENT_NORMS:
        raise ValueError(f"unknown grad_norm {s['grad_norm']!r} (allowed: {', '.join(GRADIENT_NORMS)})")
    check_augmentation(s["augment"], s["crop_pad"])
    if s.get("pgd_start") is not None and s["pgd_start"] not in PGD_STARTS:
        raise ValueError(f"unknown pgd_start {s['pgd_start']!r} (allowed: {', '.join(PGD_STARTS)}, or None)")
    for key in ("awp_gamma", "cure_h", "llr_mu"):
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not (math.isfinite(v) and v >= 0)):
            raise ValueError(f"{key} must be a finite number >= 0 or None, got {v!r}")
    for key in ("epochs", "steps", "batch_size", "eval_every", "eval_steps"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{key} must be an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{key} must be >= 1, got {v}")
    for key in ("eval_n", "swa_start", "swa_every", "save_every"):
        if s[key] is not None and not _is_int(s[key], 1):
            raise ValueError(f"{key} must be a positive int or None, got {s[key]!r}")
    if not _is_int(s["lam_warmup"], 0):
        raise ValueError(f"lam_warmup must be an int >= 0 (epochs), got {s['lam_warmup']!r}")
    for key in ("random_start", "clean_first", "drop_last"):
        if not isinstance(s[key], bool):
            raise TypeError(f"{key} must be True or False, got {s[key]!r}")
    for key in ("eps", "lam", "lr", "momentum", "weight_decay", "label_noise", "top", "clean_weight",
                "excess_weight"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{key} must be a number, got {type(v).__name__}")
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {v}")
    for key in ("step_size", "small_eps"):
        v = s[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not (math.isfinite(v) and v > 0)):
            raise ValueError(f"{key} must be a finite number > 0 or None, got {v!r}")
    if s["lr"] <= 0:
        raise ValueError(f"lr must be > 0, got {s['lr']}")
    if s["label_noise"] >= 1:
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {s['label_noise']}")
    if not 0 < s["top"] <= 1:
        raise ValueError(f"top must be a fraction in (0, 1], got {s['top']}")
    if s["method"] in ADVERSARIAL_METHODS and s["eps"] <= 0:
        raise ValueError(f"method {s['method']!r} needs eps > 0, got {s['eps']}")
    if s["swa_start"] is not None and s["swa_start"] > s["epochs"]:
        raise ValueError(f"swa_start must be an epoch in 1..{s['epochs']}, got {s['swa_start']}")
    ms = s["lr_milestones"]
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in ms) \
            or list(ms) != sorted(ms):
        raise ValueError(f"lr_milestones must be increasing fractions in (0, 1], got {list(ms)}")
