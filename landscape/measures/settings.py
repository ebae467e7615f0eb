"""``MeasureSettings``: everything a measure table computes besides the attack, as one frozen value.

It travels whole from the CLI through ``TrajectorySettings`` to every worker, beside
:class:`~landscape.attacks.AttackSettings`, and is validated once, on construction. Each field carries its
command-line flag and help (``dataclasses.field(metadata=...)``), from which ``landscape measure`` and
``landscape trajectory`` build their options: adding an option is one field here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from ._autograd import HVP_METHODS
from .registry import select

__all__ = ["DTYPES", "MeasureSettings"]

DTYPES = ("float16", "bfloat16", "float32", "float64")


def _opt(default: Any, help: str, **cli: Any) -> Any:
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class MeasureSettings:
    """What ``measure`` computes for each sample, beside the attack.

    Attributes:
        measures: measure names (``landscape.measures.MEASURES``) in registry order; None = the defaults.
        batch_size: samples per batch (randomness is seeded per batch, so results depend on it).
        seed: base seed of the attack's random start, random directions and Lanczos start vectors.
        eig_iters: most Lanczos steps for ``eig_top`` on smooth nets (ReLU nets are exact without steps).
        hvp_method: Hessian-vector product method (``auto``, ``double_backprop``, ``func``).
        dtype: compute dtype, ``float32`` or ``float64`` (precise curvature); None = the model's own.
        weight_probe: samples (the table's first ones, with its ``x_adv``) the per-model weight-space
            measures (``w_*``) use; ignored when none is selected.
        weight_layers: glob of the parameter names the weight-space measures perturb/differentiate (e.g.
            ``"fc2.*"``, comma-separated globs allowed); None = every parameter.
    """

    measures: tuple[str, ...] | None = _opt(None, "comma-separated measure names (default: the defaults)",
                                            flag="--measures", kind="list")
    batch_size: int = _opt(128, "samples per batch", flag="--batch-size", kind="positive_int")
    seed: int = _opt(0, "seed of the subset, the attack's random start and random directions", flag="--seed",
                     kind="int")
    eig_iters: int = _opt(20, "most Lanczos steps for eig_top on smooth nets (ReLU nets: exact, no steps)",
                          flag="--eig-iters", kind="positive_int")
    hvp_method: str = _opt("auto", "Hessian-vector product method", flag="--hvp-method", choices=HVP_METHODS)
    dtype: str | None = _opt(None, "compute dtype (float64: precise curvature, slower; default: the model's)",
                             flag="--dtype", choices=DTYPES)
    weight_probe: int = _opt(256, "samples of the per-model weight-space measures (w_*): the first ones measured",
                             flag="--weight-probe", kind="positive_int")
    weight_layers: str | None = _opt(None, "glob of the parameters the w_* measures use, e.g. 'fc2.*' (default: all)",
                                     flag="--weight-layers", kind="str")

    def __post_init__(self) -> None:
        if self.measures is not None:
            if isinstance(self.measures, str):
                names = [m.strip() for m in self.measures.split(",") if m.strip()]
            else:
                names = list(self.measures)
            object.__setattr__(self, "measures", tuple(s.name for s in select(names)))
        for name in ("batch_size", "eig_iters", "weight_probe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.hvp_method not in HVP_METHODS:
            raise ValueError(f"unknown hvp_method {self.hvp_method!r} (allowed: {', '.join(HVP_METHODS)})")
        layers = self.weight_layers
        if layers is not None and (not isinstance(layers, str) or not layers.strip()):
            raise ValueError(f"weight_layers must be a glob of parameter names such as 'fc2.*' or None, got "
                             f"{self.weight_layers!r}")
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", str(self.dtype).replace("torch.", ""))
        if self.dtype is not None and self.dtype not in DTYPES:
            raise TypeError(f"dtype must be a floating dtype ({', '.join(DTYPES)}, e.g. torch.float64) or None, "
                            f"got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return None if self.dtype is None else getattr(torch, self.dtype)

    def names(self) -> list[str]:
        """The selected measure names (the defaults when ``measures`` is None)."""
        return [s.name for s in select(self.measures)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["measures"] = None if self.measures is None else list(self.measures)
        return d

    @classmethod
    def from_loose(cls, given: "MeasureSettings | None", **loose: Any) -> "MeasureSettings":
        """``given`` itself, or one built from loose keyword values; both at once is a ValueError naming the
        loose ones that differ from their defaults."""
        if given is None:
            if isinstance(loose.get("measures"), Iterable) and not isinstance(loose.get("measures"), str):
                loose["measures"] = tuple(loose["measures"])
            unknown = sorted(set(loose) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise TypeError(f"unknown measure option(s) {', '.join(unknown)}")
            return cls(**loose)
        if not isinstance(given, cls):
            raise TypeError(f"options must be a MeasureSettings, got {type(given).__name__}")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        clash = sorted(k for k, v in loose.items() if v != defaults[k])
        if clash:
            raise ValueError(f"give the measure options either as options= or as {', '.join(clash)}, not both")
        return given
