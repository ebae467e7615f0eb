"""`landscape evaluate`: clean, FGSM, PGD-10 and AutoAttack accuracy of checkpoints, with sanity flags against
gradient masking -> one row per checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (add_data_args, add_eval_attack_args, add_model_args, checkpoint_loader, dataset_from_args,
                      eps_text, eps_value, pgd_settings, positive_int, resolve_eps, table_out)

HELP = ("robust accuracy of checkpoints: clean, FGSM, PGD-10 (official settings) and AutoAttack (pyautoattack), "
        "with sanity flags against gradient masking")

FORMATS = (".csv", ".parquet")
AA_ATTACKS = ("apgd-ce", "apgd-t", "apgd-dlr", "fab", "fab-t", "square")


def _aa_attacks(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in AA_ATTACKS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(AA_ATTACKS)}, got {text!r}")
    return names


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files")
    add_model_args(p)
    add_data_args(p, default_n=None)
    g = p.add_argument_group("evaluation")
    g.add_argument("--attack", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd: clean + FGSM + PGD accuracy; autoattack: also AutoAttack (slow)")
    g.add_argument("--eps", type=eps_value, default=None,
                   help="radius in [0,1] pixel units, a number or a fraction such as 8/255 (default: the dataset's: "
                        "8/255 for CIFAR, SVHN, Tiny-ImageNet and image folders, 0.1 for digits)")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])
    add_eval_attack_args(g)
    g.add_argument("--aa-attacks", type=_aa_attacks, default=None, metavar="A,B",
                   help="a cheaper AutoAttack: run only these of its attacks (the package's custom version), e.g. "
                        "apgd-ce,apgd-t; overrides --aa-version")
    g.add_argument("--out", required=True, help="output table: .csv or .parquet")
    c = p.add_argument_group("sanity flags (docs/evaluation.md)")
    c.add_argument("--no-checks", action="store_true",
                   help="skip the sanity flags (zero/NaN gradients, randomised outputs, probability outputs, "
                        "Square beating the white-box attacks, landscape signature of gradient masking)")
    c.add_argument("--check-n", type=positive_int, default=200, help="samples the flags are computed on (default 200)")
    c.add_argument("--square-n", type=_non_negative_int, default=100,
                   help="samples attacked by Square for its flag (default 100; 0 skips Square)")
    c.add_argument("--square-queries", type=positive_int, default=1000,
                   help="Square queries per sample (default 1000; AutoAttack's standard run uses 5000)")


def run(args: argparse.Namespace) -> int:
    from landscape.runs import write_file  # lazy: start-up (pandas)
    from landscape.evaluate import evaluate_checkpoints  # lazy: start-up (torch, pandas)
    from landscape.masking import flag_lines  # lazy: start-up (torch, pandas)

    out = table_out(args.out, FORMATS)
    for path in args.checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such checkpoint file: {path}")
    data = dataset_from_args(args)
    resolve_eps(args, data.info)
    version = "custom" if args.aa_attacks else args.aa_version
    table = evaluate_checkpoints(args.checkpoints, checkpoint_loader(args, data), data, None, progress=not args.quiet,
                                 attack=args.attack, eps=args.eps, norm=args.norm,
                                 pgd=pgd_settings(args, args.eps, args.norm), version=version,
                                 aa_attacks=args.aa_attacks, batch_size=args.batch_size, seed=args.seed,
                                 checks=not args.no_checks, check_n=args.check_n, square_n=args.square_n,
                                 square_queries=args.square_queries)
    table.insert(2, "data", args.data)
    table.insert(3, "split", args.split)
    write_file(out, table, attrs=True)  # the table names its settings when it travels alone
    shown = [c for c in ("epoch", "acc_clean", "acc_fgsm", "acc_pgd", "acc_autoattack") if c in table.columns]
    for rec in table.to_dict("records"):
        print(f"{Path(rec['checkpoint']).name}: " + ", ".join(
            f"{c} {rec[c]}" if c == "epoch" else f"{c} {100 * rec[c]:.1f}%" for c in shown))
        if "flagged" in rec:
            print(f"  sanity flags on {rec['check_n']} samples: "
                  + ("SOME FLAGGED — the accuracies above may overstate robustness" if rec["flagged"] else "none"))
            for line in flag_lines(rec):
                print("  " + line)
    print(f"wrote {out} ({len(data)} samples of {args.data} {args.split}, {eps_text(args)})")
    return 0
