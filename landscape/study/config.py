"""The digits study's settings (variants, measures, hyper-parameters) and how one of its runs is trained: one place,
read by the demo (:mod:`landscape.study.experiments`) and the monitor, methods and attribution studies."""
from __future__ import annotations

from pathlib import Path

from .findings import run_dir

__all__ = ["VARIANTS", "DEFAULT_VARIANTS", "SMALL_EPS_VARIANTS", "STUDY_MEASURES", "STUDY_WEIGHT_MEASURES", "SLICED",
           "study_config", "train_one"]

#: study variants: name -> keyword arguments of :func:`landscape.training.train`.
VARIANTS = {
    "standard": dict(method="standard"),
    "standard_gradreg": dict(method="standard_gradreg", lam=0.1),
    "pgd_at": dict(method="pgd_at"),
    "at_clean_half": dict(method="at_decomposed", clean_weight=0.5, excess_weight=1.0),
    "at_advlc": dict(method="at_advlc", lam=0.3),
    "at_gradreg": dict(method="at_gradreg", lam=0.1),
    # not in the default study: on digits the excess alone drives the model to a constant (chance) output
    "at_excess": dict(method="at_decomposed", clean_weight=0.0, excess_weight=1.0),
}
#: the variants `landscape demo` trains by default.
DEFAULT_VARIANTS = ("standard", "standard_gradreg", "pgd_at", "at_clean_half", "at_advlc", "at_gradreg")
#: variants evaluated at the small eps too (RO of standard training shows there).
SMALL_EPS_VARIANTS = ("standard", "standard_gradreg")
#: landscape measures (names of :data:`landscape.measures.MEASURES`) computed along each trajectory.
STUDY_MEASURES = ("grad", "curv_adv", "taylor_gap", "logit_var")
#: weight-space measures of the study: the two that cost little beside the input measures on 2 cores
#: (w_eig_top/w_trace/w_flat_worst would add about a minute to `make demo`; `landscape trajectory` offers them)
STUDY_WEIGHT_MEASURES = ("w_flat_avg", "w_awp")
#: variants whose loss slices (first seed only) go into the report.
SLICED = ("pgd_at", "at_advlc")


def study_config(*, quick: bool = False, epochs: int | None = None, every: int | None = None,
                 clean: bool = False) -> dict:
    """Hyper-parameters of every run (the same for each variant and seed)."""
    return dict(
        epochs=epochs or (6 if quick else 150),
        train_n=60 if quick else 300,
        label_noise=0.0 if clean else 0.2,
        eps=0.1, small_eps=0.02, steps=2 if quick else 7, eval_steps=2 if quick else 10,
        eval_n=60 if quick else 300,  # per split, every epoch; the whole 896-image test split overruns 5 min
        lr=0.1, lr_milestones=(0.5, 0.75), momentum=0.9, weight_decay=5e-4, batch_size=32 if quick else 64,
        hidden=(32,) if quick else (256, 256),
        analysis_n=20 if quick else 300, analysis_steps=2 if quick else 10,
        every=every or (3 if quick else 10),
        slice_n=4 if quick else 32, slice_grid=9 if quick else 41,
        # weight space (slice_one): 1D slice points over ±radius (filter-normalised), PCA-plane grid per axis
        weight_slice_grid=5 if quick else 21, weight_slice_radius=1.0, weight_path_grid=5 if quick else 15,
        measures=_available(["grad", "curv_adv", "fo_share", "w_flat_avg"] if quick
                            else [*STUDY_MEASURES, "fo_share", *STUDY_WEIGHT_MEASURES]),
    )


def _available(measures: list[str]) -> list[str]:
    """``measures`` less those this version of :mod:`landscape.measures` does not have (``fo_share`` is new)."""
    from ..measures import MEASURES as known

    return [m for m in measures if m in known]


def train_one(out: Path, variant: str, seed: int, cfg: dict, *, progress: bool, on_epoch=None, variants=None,
              save_every: int | None = None) -> Path:
    """Train (or finish training) one variant/seed into ``out/<variant>/s<seed>`` (``on_epoch``: see
    :func:`landscape.training.train`, e.g. a monitor's callback, whose ``close()``, if it has one, is called when
    training ends; ``variants``: the name -> training keyword map,
    default :data:`VARIANTS`; ``save_every``: default ``cfg["every"]``)."""
    from ..datasets import load_dataset
    from ..training import seeded_model, train

    arch_kwargs = dict(hidden=tuple(cfg["hidden"]))
    data = (load_dataset("digits", "train", n=cfg["train_n"], seed=seed), load_dataset("digits", "test"))
    folder = run_dir(out, variant, seed)
    try:
        train(seeded_model("mlp", seed, **arch_kwargs), data, **(VARIANTS if variants is None else variants)[variant],
              eps=cfg["eps"],
              steps=cfg["steps"], epochs=cfg["epochs"], lr=cfg["lr"], lr_milestones=cfg["lr_milestones"],
              momentum=cfg["momentum"], weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"],
              label_noise=cfg["label_noise"], seed=seed, eval_n=cfg["eval_n"], eval_steps=cfg["eval_steps"],
              small_eps=cfg["small_eps"] if variant in SMALL_EPS_VARIANTS else None,
              save_every=cfg["every"] if save_every is None else save_every, out_dir=folder, arch="mlp",
              arch_kwargs=arch_kwargs, dataset="digits", progress=progress, on_epoch=on_epoch)
    finally:
        close = getattr(on_epoch, "close", None)  # e.g. a monitor's (landscape.study.monitor.monitor_for)
        if close is not None:
            close()
    return folder
