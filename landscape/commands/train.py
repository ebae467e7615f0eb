"""`landscape train`: train a model with standard training, PGD-AT, AT+AdvLC or AT+gradient regularisation."""
from __future__ import annotations

import argparse

from ._common import (add_attack_args, add_data_args, add_model_args, model_kwargs, non_negative_float, normalization,
                      output_dir, positive_int)

HELP = "train standard / pgd_at / at_advlc / at_gradreg, saving a checkpoint every epoch (resumable)"


def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, e.g. 0.5,0.75, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from landscape.training import METHODS

    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.csv, settings.json); "
                                                "re-running the same command resumes")
    add_model_args(p)
    add_data_args(p, default_n=None)
    add_attack_args(p, default_eps=0.1)
    for action in p._actions:  # shared options whose meaning is specific here
        if action.dest == "split":
            action.help = argparse.SUPPRESS  # training always uses the train split, evaluation both
        elif action.dest == "n":
            action.help = "evaluate on a fixed random subset of this many samples per split (default: all)"
        elif action.dest == "steps":
            action.help = "PGD steps of the training attack (default 7)"
        elif action.dest == "batch_size":
            action.help = "training batch size (default 64)"
        elif action.dest == "attack":
            action.help = "training/evaluation attack (pgd only)"
    p.set_defaults(steps=7, batch_size=64)
    g = p.add_argument_group("training")
    g.add_argument("--method", default="pgd_at", choices=list(METHODS))
    g.add_argument("--epochs", type=positive_int, default=150)
    g.add_argument("--train-n", type=positive_int, default=None,
                   help="train on a stratified subset of this many training samples (default: all)")
    g.add_argument("--label-noise", type=non_negative_float, default=0.0,
                   help="fraction of training labels flipped to another class (symmetric, seeded)")
    g.add_argument("--lam", type=non_negative_float, default=None,
                   help="regularisation weight (default 0.3 for at_advlc, 0.1 for at_gradreg)")
    g.add_argument("--lam-warmup", type=int, default=0, help="epochs of linear ramp of --lam (default 0)")
    g.add_argument("--grad-norm", default="l1", choices=["l1", "l2sq"], help="at_gradreg penalty (default l1)")
    g.add_argument("--lr", type=non_negative_float, default=0.1)
    g.add_argument("--lr-milestones", type=_fraction_list, default=(0.5, 0.75), metavar="F1,F2",
                   help="fractions of --epochs after which the rate drops x0.1 (default 0.5,0.75)")
    g.add_argument("--momentum", type=non_negative_float, default=0.9)
    g.add_argument("--weight-decay", type=non_negative_float, default=5e-4)
    g.add_argument("--eval-every", type=positive_int, default=1, help="evaluate every this many epochs")
    g.add_argument("--eval-steps", type=positive_int, default=10, help="PGD steps of the evaluation attack")


def run(args: argparse.Namespace) -> int:
    from landscape.data import load_dataset
    from landscape.diagnose import diagnose
    from landscape.models import Normalized
    from landscape.training import seeded_model, train

    if args.attack != "pgd":
        raise ValueError(f"training supports --attack pgd only, got {args.attack!r}")
    if args.trust_checkpoint:
        raise ValueError("--trust-checkpoint does not apply to training (checkpoints are written, not read)")
    if args.checkpoint_entry is not None:
        raise ValueError("--checkpoint-entry does not apply to training (checkpoints are written, not read)")
    out = output_dir(args.out)
    kwargs = model_kwargs(args)
    model = seeded_model(args.arch, args.seed, **kwargs)
    mean, std = normalization(args)
    if mean is not None:
        model = Normalized(model, mean, std)
    from landscape._base import resolve_device

    model = model.to(resolve_device(args.device))
    data = (load_dataset(args.data, "train", root=args.data_root, n=args.train_n, seed=args.seed),
            load_dataset(args.data, "test", root=args.data_root, seed=args.seed))
    metrics = train(
        model, data, method=args.method, eps=args.eps, steps=args.steps, step_size=args.step_size,
        norm=args.norm, lam=args.lam, lam_warmup=args.lam_warmup, grad_norm=args.grad_norm, epochs=args.epochs,
        lr=args.lr, lr_milestones=args.lr_milestones, momentum=args.momentum, weight_decay=args.weight_decay,
        batch_size=args.batch_size, label_noise=args.label_noise, seed=args.seed, out_dir=out,
        eval_every=args.eval_every, eval_n=args.n, eval_steps=args.eval_steps, arch=args.arch,
        arch_kwargs=kwargs, dataset=args.data, normalize=args.normalize, progress=not args.quiet)
    print(f"train: {args.method} for {args.epochs} epochs -> {out} (model_eNNN.pt, metrics.csv, settings.json)")
    print(diagnose(metrics, log=metrics).summary())  # the training log is its own best-epoch source
    return 0
