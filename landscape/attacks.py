"""Adversarial attacks in [0,1] pixel space: FGSM and PGD under the L∞ or L2 norm.

Both attacks share one call shape, ``attack(model, x, y, eps, ...) -> (x_adv, delta)``:

* ``x`` is a (B, ...) batch of inputs in [0,1] (uint8 is scaled by 1/255), ``y`` its (B,) integer labels;
* ``x_adv = clamp(x + delta, 0, 1)`` and the returned ``delta`` is the *effective* perturbation
  ``x_adv - x`` (so ``x_adv == x + delta`` exactly and ``delta`` lies in the eps ball);
* the loss ascended is the per-sample cross-entropy, so each sample is attacked independently (exact in
  eval mode; in ``train_mode`` batch-norm statistics couple the samples, as in AT training loops);
* the caller's train/eval mode is restored and no ``.grad`` is left on the model's parameters;
* randomness (the PGD random start) comes from a ``torch.Generator`` seeded with ``seed`` on the input's
  device, never from the global RNG.

Example:
    >>> import torch
    >>> from landscape import create_model
    >>> from landscape.attacks import pgd
    >>> model = create_model("mlp", hidden=(16,))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv, delta = pgd(model, x, y, eps=8 / 255, steps=5)
    >>> bool(delta.abs().max() <= 8 / 255 + 1e-6)
    True
"""
from __future__ import annotations

import dataclasses
import math
from enum import Enum

import torch
import torch.nn as nn

from ._base import check_labels_fit, check_model_batch, frozen_params, set_mode, per_sample_loss

__all__ = ["ATTACKS", "PGD_STARTS", "AttackSettings", "Norm", "attack_settings", "fgsm", "pgd", "resolve_start",
           "run_attack"]

ATTACKS = ("pgd", "fgsm")
"""Attacks of :class:`AttackSettings` (AutoAttack lives in :mod:`landscape.evaluate`)."""

_TINY = 1e-12


class Norm(str, Enum):
    """Threat-model norm; plain strings ``"linf"`` and ``"l2"`` are accepted everywhere."""

    LINF = "linf"
    L2 = "l2"


def _check_norm(norm: str | Norm) -> Norm:
    try:
        return Norm(norm)
    except ValueError:
        allowed = ", ".join(repr(n.value) for n in Norm)
        raise ValueError(f"unknown norm {norm!r} (allowed: {allowed})") from None


def _check_eps(eps: float, name: str = "eps") -> float:
    """``eps`` as a float in [0, 1] pixel units; a radius above 1 is almost always 0-255 units (8 for 8/255)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    if eps > 1:
        example = "" if eps == 8 else " (e.g. 8/255 = 0.0314)"
        raise ValueError(f"{name}={eps:g} is outside [0, 1]: radii are in [0,1] pixel units, not 0-255; "
                         f"pass {eps:g}/255 = {eps / 255:.4f}{example}")
    return float(eps)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped (B, 1, ..., 1) to broadcast against ``t`` (B, ...)."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) gradient of the summed per-sample cross-entropy with respect to the input ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_labels_fit(logits, y)
        (grad,) = torch.autograd.grad(per_sample_loss(logits, y).sum(), x)
    return grad


def _ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent unit step: sign(g) for L∞, g/‖g‖₂ per sample for L2 (0 where g = 0)."""
    if norm is Norm.LINF:  # sign(NaN) is 0 in torch: keep NaN so a broken gradient is never a silent no-op
        return torch.where(torch.isnan(grad), grad, grad.sign())
    return grad / _flat_norm(grad).clamp_min(_TINY)


def _project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project each sample of ``delta`` (B, ...) onto the eps ball of ``norm``."""
    if norm is Norm.LINF:
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * scale


def _box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Effective perturbation after clamping ``x + delta`` to [0,1]."""
    return (x + delta).clamp(0.0, 1.0) - x


def _result(x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_adv, x_adv - x)`` with ``x_adv = clamp(x + delta, 0, 1)`` exactly inside the box, detached."""
    x_adv = (x + delta).clamp(0.0, 1.0).detach()
    return x_adv, (x_adv - x).detach()


def _random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator) -> torch.Tensor:
    """Uniform sample in the eps ball: per-coordinate U(-eps, eps) for L∞; uniform in the L2 ball."""
    if norm is Norm.LINF:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = g / _flat_norm(g).clamp_min(_TINY)
    dim = x[0].numel()
    r = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / dim)
    return direction * (eps * r).reshape(-1, *([1] * (x.dim() - 1)))


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         norm: str | Norm = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """Fast gradient (sign) method: one full step of size ``eps`` along the loss gradient.

    Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015.

    Args:
        model: classifier returning (B, K) logits; attacked in eval mode.
        x: (B, ...) inputs in [0,1].
        y: (B,) integer labels.
        eps: radius of the perturbation ball in [0,1] pixel units (8/255 = 0.0314, not 8).
        norm: ``"linf"`` (step ``eps·sign(g)``) or ``"l2"`` (step ``eps·g/‖g‖₂``). Default ``"linf"``.

    Returns:
        ``(x_adv, delta)``, both (B, ...) detached, ``x_adv = clamp(x + delta, 0, 1)``.

    Raises:
        ValueError: eps outside [0, 1] or non-finite, unknown norm, x outside [0,1], bad labels.
        TypeError: model not a Module, non-numeric eps, bad tensor dtypes.
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    x, y = check_model_batch(model, x, y, unit_box=True)
    with set_mode(model, False), frozen_params(model):
        grad = _loss_grad(model, x, y)
    return _result(x, eps * _ascent_direction(grad, norm))


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        step_size: float | None = None, norm: str | Norm = "linf", random_start: bool = True, seed: int = 0,
        train_mode: bool = False, start: str | None = None,
        start_grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient descent (ascent on the loss) within an L∞ or L2 ball.

    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018. Each step
    moves ``step_size`` along ``sign(g)`` (L∞) or ``g/‖g‖₂`` (L2), projects onto the eps ball and then
    onto the [0,1] box. No early stopping and no restarts.

    Args:
        model: classifier returning (B, K) logits.
        x: (B, ...) inputs in [0,1].
        y: (B,) integer labels.
        eps: radius of the ball in [0,1] pixel units (8/255 = 0.0314, not 8). ``eps=0`` returns ``x``
            unchanged.
        steps: number of gradient steps, >= 1. Default 10.
        step_size: step length; default ``2.5 * eps / steps``.
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        random_start: start from a uniform sample in the eps ball (per-coordinate U(-eps, eps) for L∞,
            uniform in the ball for L2). Default True.
        seed: seeds the random start (a ``torch.Generator`` on x's device). Default 0.
        train_mode: attack with the model in training mode (batch-norm uses batch statistics and, as in
            the AT training loops of Rice et al. and AdvLC, updates its running statistics); the caller's
            mode is restored afterwards. Default False (eval mode).
        start: where the first step starts (overrides ``random_start`` when given): ``"clean"`` (x),
            ``"random"`` (as ``random_start=True``) or ``"grad"``: ``x + ∇ₓ mean_i CE(f(x_i), y_i)`` — the start
            the official AT/AdvLC training loop actually uses (TreeLLi/Combating-RO-AdvLC passes the clean
            input gradient positionally into the ``pert`` argument of its ``pgd``). That start is neither
            projected nor boxed before the first gradient, which is taken at ``clamp(x + g, 0, 1)``, as
            there. Default None (``random_start`` decides).
        start_grad: (B, ...) the batch-mean input gradient for ``start="grad"`` when the caller already has
            it (the official loop reuses its clean pass); computed here (one more forward pass) when None.

    Returns:
        ``(x_adv, delta)``, both (B, ...) detached, ``x_adv = clamp(x + delta, 0, 1)``, ``delta`` within
        the eps ball.

    Raises:
        ValueError: eps outside [0, 1], negative step size, steps < 1, unknown norm, x outside [0,1], bad labels.
        TypeError: model not a Module, non-numeric eps/step size, non-integer steps, bad tensor dtypes.
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    steps = _check_steps(steps)
    alpha = 2.5 * eps / steps if step_size is None else _check_eps(step_size, "step_size")
    x, y = check_model_batch(model, x, y, unit_box=True)
    start = resolve_start(start, random_start)
    if start == "random":
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
        delta = _box(x, _random_start(x, eps, norm, generator))
    else:
        delta = torch.zeros_like(x)
    with set_mode(model, bool(train_mode)), frozen_params(model):
        first = 0
        if start == "grad":  # the official loop's start: the raw batch-mean gradient, first gradient at the box
            delta = (_loss_grad(model, x, y) / x.shape[0] if start_grad is None else start_grad).detach()
            grad = _loss_grad(model, (x + delta).clamp(0.0, 1.0), y)
            delta = _box(x, _project(delta + alpha * _ascent_direction(grad, norm), eps, norm))
            first = 1
        for _ in range(first, steps):
            grad = _loss_grad(model, x + delta, y)
            delta = _box(x, _project(delta + alpha * _ascent_direction(grad, norm), eps, norm))
    return _result(x, delta)


#: PGD start points (:func:`pgd`'s ``start``).
PGD_STARTS = ("clean", "random", "grad")


def resolve_start(start: str | None, random_start: bool = True) -> str:
    """PGD's start point: ``start`` (one of :data:`PGD_STARTS`), else ``random``/``clean`` by ``random_start``."""
    if start is None:
        return "random" if random_start else "clean"
    if start not in PGD_STARTS:
        raise ValueError(f"unknown PGD start {start!r} (allowed: {', '.join(PGD_STARTS)})")
    return start


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """One attack configuration, passed where the loose ``attack, eps, steps, step_size, norm`` used to go.

    Attributes:
        attack: ``"pgd"`` or ``"fgsm"``.
        eps: radius in [0,1] pixel units (8/255 = 0.0314; a value above 1 is refused).
        steps: PGD steps (FGSM: 1). Default 10.
        step_size: PGD step; None = ``2.5·eps/steps`` (Madry et al.'s rule, the toolkit's default).
        norm: ``"linf"`` or ``"l2"``.
        random_start: PGD starts from a uniform point of the eps ball. Default True.

    Plain strings are accepted for ``attack`` and ``norm``; the values are validated on construction
    (ValueError/TypeError naming the bad value and the allowed ones). :meth:`official` gives the paper's
    evaluation attack.

    Example:
        >>> AttackSettings.official(8 / 255)
        AttackSettings(attack='pgd', eps=0.03137254901960784, steps=10, step_size=0.00784313725490196, norm='linf', random_start=False)
    """

    attack: str = "pgd"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r} (allowed: {', '.join(ATTACKS)})")
        object.__setattr__(self, "norm", _check_norm(self.norm).value)
        object.__setattr__(self, "eps", _check_eps(self.eps))
        object.__setattr__(self, "steps", _check_steps(self.steps))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", _check_eps(self.step_size, "step_size"))
        if not isinstance(self.random_start, bool):
            raise TypeError(f"random_start must be a bool, got {type(self.random_start).__name__}")

    @classmethod
    def official(cls, eps: float = 8 / 255, *, norm: str = "linf") -> "AttackSettings":
        """The evaluation attack of the paper's official code: PGD-10, step eps/4, no random start.

        Li & Spratling (2023) evaluate every epoch (and pick the best checkpoint) with this attack; the
        deterministic start makes accuracies repeatable without a seed.
        """
        return cls("pgd", eps, 10, _check_eps(eps) / 4, norm, False)

    @property
    def effective_step_size(self) -> float:
        """The step actually taken: ``step_size``, else ``2.5·eps/steps``; FGSM steps the whole ``eps``."""
        if self.attack == "fgsm":
            return self.eps
        return 2.5 * self.eps / self.steps if self.step_size is None else self.step_size

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, with the effective step size and 1 step for FGSM."""
        return {"attack": self.attack, "eps": self.eps, "steps": self.steps if self.attack == "pgd" else 1,
                "step_size": self.effective_step_size, "norm": self.norm,
                "random_start": self.random_start if self.attack == "pgd" else False}


def attack_settings(attack: str | AttackSettings = "pgd", *, eps: float = 0.1, steps: int = 10,
                    step_size: float | None = None, norm: str = "linf", random_start: bool = True) -> AttackSettings:
    """``attack`` itself when it is an ``AttackSettings``, else one built from the loose values; ``"official"``
    is the official evaluation attack at ``eps``/``norm`` (PGD-10, step eps/4, no random start)."""
    if isinstance(attack, AttackSettings):
        return attack
    if attack == "official":
        return AttackSettings.official(eps, norm=norm)
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r} (allowed: {', '.join(ATTACKS)}, or official: the official "
                         f"evaluation attack)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    return AttackSettings(attack, float(eps), steps, None if step_size is None else float(step_size), norm,
                          random_start)


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AttackSettings, *,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack ``(x, y)`` as ``settings`` say: ``(x_adv, delta)`` as :func:`pgd` / :func:`fgsm` return them."""
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings, got {type(settings).__name__}")
    if settings.attack == "fgsm":
        return fgsm(model, x, y, settings.eps, norm=settings.norm)
    return pgd(model, x, y, settings.eps, steps=settings.steps, step_size=settings.step_size,
               norm=settings.norm, random_start=settings.random_start, seed=seed)
