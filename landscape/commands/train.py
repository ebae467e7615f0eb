"""`landscape train`: train a model with one of the objectives of `landscape.objectives`."""
from __future__ import annotations

import argparse

from ._common import (add_attack_args, add_data_args, add_model_args, data_info, eps_text, model_kwargs,
                      non_negative_float, normalization, output_dir, positive_float, positive_int, resolve_eps)
from ._names import AUGMENTATIONS, METHODS, PRESETS
from ._summary import print_summary

HELP = ("train standard / standard_gradreg / pgd_at / at_decomposed / at_advlc / at_gradreg / trades / mart / "
        "awp_at / awp_trades / cure / llr, saving checkpoints every epoch (resumable)")

# options whose default comes from train() or from --preset (None here means "not given")
_TRAIN_OPTIONS = ("eps", "steps", "step_size", "norm", "lam", "lam_warmup", "grad_norm", "clean_weight",
                  "excess_weight", "random_start", "pgd_start", "clean_first", "awp_gamma", "cure_h", "llr_mu", "augment", "crop_pad", "epochs", "lr",
                  "lr_milestones", "momentum", "weight_decay", "batch_size", "drop_last", "swa_start", "swa_every",
                  "label_noise", "eval_every", "eval_steps", "small_eps", "save_every")


def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, e.g. 0.5,0.75, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.csv, settings.json); "
                                                "re-running the same command resumes")
    add_model_args(p)
    # shared options whose meaning is specific here; training always uses the train split, evaluation both
    add_data_args(p, default_n=None, helps={
        "split": argparse.SUPPRESS,
        "n": "evaluate on a fixed random subset of this many samples per split (default: all)",
        "batch_size": "training batch size (default 64)"})
    add_attack_args(p, helps={
        "eps": "radius in [0,1] pixel units of training and evaluation attacks (default: --preset's, else the "
               "dataset's: 0.1 for digits, 8/255 for image sets)",
        "steps": "PGD steps of the training attack (default 7)",
        "attack": "training/evaluation attack (pgd only)",
        "random_start": "training PGD from a random point of the eps ball (default yes; official: no)"})
    p.set_defaults(steps=None, batch_size=None, norm=None)  # None: train()'s or --preset's default
    g = p.add_argument_group("training (defaults: those of landscape.training.train, or of --preset)")
    g.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="the official CIFAR-10 protocol (official_cifar10; _swa: AdvLC+SWA); options given "
                        "explicitly win")
    g.add_argument("--method", default="pgd_at", choices=list(METHODS))
    g.add_argument("--epochs", type=positive_int, default=None, help="default 150")
    g.add_argument("--train-n", type=positive_int, default=None,
                   help="train on a stratified subset of this many training samples (default: all)")
    g.add_argument("--label-noise", type=non_negative_float, default=None,
                   help="fraction of training labels flipped to another class (symmetric, seeded)")
    g.add_argument("--lam", type=non_negative_float, default=None,
                   help="regularisation weight (default: the method's published one — 0.3 at_advlc, 0.1 "
                        "gradient penalties, beta 6 trades/mart/awp_trades, 4 cure/llr)")
    g.add_argument("--pgd-start", choices=["clean", "random", "grad"], default=None,
                   help="start of the training PGD: clean x, random in the ball, or grad = x + grad_x(mean CE), "
                        "the official AdvLC loop's actual start (default: from --random-start; "
                        "official_cifar10: grad)")
    g.add_argument("--awp-gamma", type=non_negative_float, default=None,
                   help="awp_at/awp_trades: relative weight perturbation gamma (default 5e-3)")
    g.add_argument("--cure-h", type=positive_float, default=None,
                   help="cure: finite-difference step h in [0,1] pixel units (default 1.5/255)")
    g.add_argument("--llr-mu", type=non_negative_float, default=None,
                   help="llr: weight mu of the gradient-alignment term (default 3)")
    g.add_argument("--lam-warmup", type=int, default=None, help="epochs of linear ramp of --lam (default 0)")
    g.add_argument("--grad-norm", default=None, choices=["l1", "l2sq"], help="gradient penalty (default l1)")
    g.add_argument("--clean-weight", type=non_negative_float, default=None,
                   help="at_decomposed: weight of the clean term L(x) (default 1)")
    g.add_argument("--excess-weight", type=non_negative_float, default=None,
                   help="at_decomposed: weight of the adversarial excess L(x_adv) - L(x) (default 1)")
    g.add_argument("--clean-first", action=argparse.BooleanOptionalAction, default=None,
                   help="clean forward pass before the attack, as the official code (default no)")
    g.add_argument("--augment", choices=list(AUGMENTATIONS), default=None,
                   help="training augmentation (default none; official CIFAR: crop_flip)")
    g.add_argument("--crop-pad", type=int, default=None, help="padding of the random crop (default 4)")
    g.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=None,
                   help="skip the last partial batch of each epoch (default no; official: yes)")
    g.add_argument("--swa-start", type=positive_int, default=None,
                   help="stochastic weight averaging from this epoch on (default: no SWA)")
    g.add_argument("--swa-every", type=positive_int, default=None,
                   help="average after every this-many batches of an epoch (default: after its last batch)")
    g.add_argument("--lr", type=non_negative_float, default=None, help="default 0.1 (> 0)")
    g.add_argument("--lr-milestones", type=_fraction_list, default=None, metavar="F1,F2",
                   help="fractions of --epochs after which the rate drops x0.1 (default 0.5,0.75)")
    g.add_argument("--momentum", type=non_negative_float, default=None, help="default 0.9")
    g.add_argument("--weight-decay", type=non_negative_float, default=None, help="default 5e-4")
    g.add_argument("--eval-every", type=positive_int, default=None, help="evaluate every this many epochs")
    g.add_argument("--eval-steps", type=positive_int, default=None, help="PGD steps of the evaluation attack")
    g.add_argument("--small-eps", type=positive_float, default=None,
                   help="also evaluate at this smaller radius (acc_adv_small, loss_adv_small)")
    g.add_argument("--save-every", type=positive_int, default=None,
                   help="keep checkpoints of epoch 1, every k-th, the best and the last (default: every epoch)")


def train_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`landscape.training.train`: the preset, overridden by explicit options."""
    from landscape.training import preset  # lazy: start-up (torch)

    kw = preset(args.preset) if args.preset else {}
    if getattr(args, "random_start", None) is not None and getattr(args, "pgd_start", None) is None:
        kw.pop("pgd_start", None)  # an explicit --random-start/--no-random-start wins over the preset's start
    kw.update({k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k, None) is not None})
    return kw


def run(args: argparse.Namespace) -> int:
    from landscape._base import resolve_device  # lazy: start-up (here and below: torch, pandas)
    from landscape.datasets import load_dataset  # lazy: start-up
    from landscape.diagnose import diagnose  # lazy: start-up
    from landscape.models import Normalized  # lazy: start-up
    from landscape.runs import run_file  # lazy: start-up
    from landscape.training import seeded_model, train  # lazy: start-up

    if args.attack != "pgd":
        raise ValueError(f"training supports --attack pgd only, got {args.attack!r}")
    if args.trust_checkpoint:
        raise ValueError("--trust-checkpoint does not apply to training (checkpoints are written, not read)")
    if args.checkpoint_entry is not None:
        raise ValueError("--checkpoint-entry does not apply to training (checkpoints are written, not read)")
    if args.arch is None:
        raise ValueError("landscape train needs --arch (a registered name, or path/to/file.py:ClassName)")
    out = output_dir(args.out)
    info = data_info(args)
    kwargs = model_kwargs(args, info)
    model = seeded_model(args.arch, args.seed, **kwargs)
    mean, std = normalization(args)
    if mean is not None:
        model = Normalized(model, mean, std)
    model = model.to(resolve_device(args.device))
    options = dict(args.data_arg)
    data = (load_dataset(args.data, "train", root=args.data_root, n=args.train_n, seed=args.seed, **options),
            load_dataset(args.data, "test", root=args.data_root, seed=args.seed, **options))
    kw = train_kwargs(args)
    if "eps" not in kw:
        kw["eps"] = resolve_eps(args, info)
    metrics = train(model, data, method=args.method, seed=args.seed, out_dir=out, eval_n=args.n, arch=args.arch,
                    arch_kwargs=kwargs, dataset=args.data, normalize=args.normalize, progress=not args.quiet, **kw)
    print(f"train: {args.method} for {kw.get('epochs', 150)} epochs -> {out} (model_eNNN.pt, metrics.csv, "
          "settings.json)")
    print(diagnose(metrics, log=metrics).summary())  # the training log is its own best-epoch source
    print_summary("train", [(out / run_file("metrics"), len(metrics)), out / run_file("settings")],
                  details=[f"{len(list(out.glob('model_e*.pt')))} checkpoint(s) model_eNNN.pt in {out}",
                           eps_text(args) if getattr(args, "eps_from", None) else f"eps {kw['eps']:.6g}"])
    return 0
