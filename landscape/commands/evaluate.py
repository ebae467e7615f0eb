"""`landscape evaluate`: clean, PGD-10 and AutoAttack accuracy of checkpoints -> one row per checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from landscape._io import atomic_write
from ._common import add_data_args, add_model_args, eps_value, positive_int, table_out

HELP = "robust accuracy of checkpoints: clean, PGD-10 (official settings) and AutoAttack (pyautoattack)"

FORMATS = (".csv", ".parquet")


def add_eval_attack_args(g) -> None:
    """The PGD evaluation attack; defaults follow the official code (PGD-10, step eps/4, no random start)."""
    g.add_argument("--pgd-steps", type=positive_int, default=10, help="PGD steps (default 10, as the official code)")
    g.add_argument("--pgd-step-size", type=float, default=None, help="PGD step (default eps/4, as the official code)")
    g.add_argument("--pgd-random-start", action="store_true",
                   help="start PGD from a random point of the ball (the official evaluation does not)")
    g.add_argument("--aa-version", default="standard", choices=["standard", "plus", "rand"],
                   help="AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, Square)")


def pgd_settings(args: argparse.Namespace, eps: float, norm: str):
    from landscape.attacks import AttackSettings

    step = eps / 4 if args.pgd_step_size is None else args.pgd_step_size
    return AttackSettings("pgd", eps, args.pgd_steps, step, norm, bool(args.pgd_random_start))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files")
    add_model_args(p)
    add_data_args(p, default_n=None)
    g = p.add_argument_group("evaluation")
    g.add_argument("--attack", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd: clean + PGD accuracy; autoattack: also AutoAttack (slow)")
    g.add_argument("--eps", type=eps_value, default=None,
                   help="radius in [0,1] pixel units (default: the dataset's: 8/255 for CIFAR, SVHN, Tiny-ImageNet "
                        "and image folders, 0.1 for digits)")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])
    add_eval_attack_args(g)
    g.add_argument("--out", required=True, help="output table: .csv or .parquet")



def loader(args: argparse.Namespace, data=None):
    """``path -> (model, stored epoch)`` with the command's model options (each file read once); ``data`` is the
    evaluated dataset (its facts and first batch go to the model loader)."""
    from landscape.checkpoints import load_checkpoint

    from ._common import load_model_from_args

    def load(path: str):
        ckpt = load_checkpoint(path, trusted=args.trust_checkpoint, entry=getattr(args, "checkpoint_entry", None))
        return load_model_from_args(args, ckpt, data=data), ckpt.epoch

    return load


def run(args: argparse.Namespace) -> int:
    from landscape.evaluate import evaluate_checkpoints

    from ._common import dataset_from_args, eps_text, resolve_eps

    out = table_out(args.out, FORMATS)
    for path in args.checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such checkpoint file: {path}")
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    table = evaluate_checkpoints(args.checkpoints, loader(args, data), data, None, progress=not args.quiet,
                                 attack=args.attack, eps=args.eps, norm=args.norm,
                                 pgd=pgd_settings(args, args.eps, args.norm), version=args.aa_version,
                                 batch_size=args.batch_size, seed=args.seed)
    table.insert(2, "data", args.data)
    table.insert(3, "split", args.split)
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    else:
        atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    shown = [c for c in ("epoch", "acc_clean", "acc_pgd", "acc_autoattack") if c in table.columns]
    for rec in table.to_dict("records"):
        print(f"{Path(rec['checkpoint']).name}: " + ", ".join(
            f"{c} {rec[c]}" if c == "epoch" else f"{c} {100 * rec[c]:.1f}%" for c in shown))
    print(f"wrote {out} ({len(data)} samples of {args.data} {args.split}, {eps_text(args)})")
    return 0


# ---------------------------------------------------------------------- `landscape trajectory --final-eval`

def add_final_eval_args(p: argparse.ArgumentParser) -> None:
    """Options of the trajectory command's final evaluation of its best and last checkpoints."""
    g = p.add_argument_group("final evaluation (best and last checkpoints)")
    g.add_argument("--final-eval", default="none", choices=["none", "pgd", "autoattack"],
                   help="evaluate the best and last checkpoints on the test set into final_eval.csv")
    g.add_argument("--final-eval-n", type=positive_int, default=None,
                   help="test samples for the final evaluation (default: the whole test set)")
    add_eval_attack_args(g)


def run_final_eval(args: argparse.Namespace, table, out_dir) -> None:
    """Run the final evaluation when asked (``--final-eval``); prints the rows and where they went."""
    if getattr(args, "final_eval", "none") == "none":
        return
    from landscape.diagnose import read_training_log
    from landscape.evaluate import final_eval

    from ._common import dataset_from_args

    data = dataset_from_args(args, "test", n=args.final_eval_n or "all")
    result = final_eval(table, out_dir, loader(args, data), data, None, log=read_training_log(table=table),
                        attack=args.final_eval, eps=args.eps, norm=args.norm,
                        pgd=pgd_settings(args, args.eps, args.norm), version=args.aa_version,
                        batch_size=args.batch_size, seed=args.seed)
    for rec in result.to_dict("records"):
        if rec.get("error"):
            print(f"final eval {rec['which']} (epoch {rec['epoch']}): {rec['error']}")
            continue
        accs = ", ".join(f"{c} {100 * rec[c]:.1f}%" for c in ("acc_clean", "acc_pgd", "acc_autoattack") if c in rec)
        print(f"final eval {rec['which']} (epoch {rec['epoch']}): {accs}")
    print(f"wrote {result.attrs['path']}")
