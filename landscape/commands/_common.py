"""Option groups and loaders shared by the subcommands, so each option is spelled once.

Imports of the library sit inside the functions that use them: they load torch (and pandas), which building
the parser for ``--help`` must not (tests/test_cli_startup.py). Each is marked ``# lazy: start-up``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import sys
from pathlib import Path

from landscape._spec import absolute_spec, is_spec

from ._names import DATASETS, DEFAULT_MEASURES, MEASURES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _finite_float(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected a finite number {'>' if positive else '>='} 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    return _finite_float(text, positive=False)


def positive_float(text: str) -> float:
    return _finite_float(text, positive=True)


def eps_value(text: str) -> float:
    """An attack radius in [0,1] pixel units, a number (``0.0314``) or a fraction (``8/255``); 8 (0-255 units)
    is refused naming the fix (8/255 = 0.0314), as are ``8/0``, ``abc`` and negative values."""
    from landscape.attacks import _check_eps  # lazy: start-up

    num, sep, den = text.partition("/")
    try:
        value = non_negative_float(num.strip())
        if sep:
            divisor = positive_float(den.strip())
            value = value / divisor
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or a fraction like 8/255, got {text!r}") from None
    try:
        return _check_eps(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0]) from None


def key_value(text: str) -> tuple[str, object]:
    """``depth=34`` -> ("depth", 34); values parsed as Python literals, else kept as strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _absolute(text: str, what: str) -> str:
    """A registered name unchanged, or a ``file.py:attr`` spec made absolute (workers may run elsewhere)."""
    if not is_spec(text):
        return text
    try:
        return absolute_spec(text, what)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arch_spec(text: str) -> str:
    """``--arch`` value: a registered name, or ``file.py:Class`` made absolute."""
    return _absolute(text, "architecture")


def data_spec(text: str) -> str:
    """``--data`` value: a dataset name, or ``file.py:fn`` made absolute."""
    return _absolute(text, "dataset")


def count_or_all(text: str) -> int | str:
    """``--n``: a positive integer, or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    return positive_int(text)


def add_model_args(p: argparse.ArgumentParser, *, arch_required: bool = False) -> None:
    """The model options shared by measure, slice, trajectory, train and evaluate (see ``model_from_args``)."""
    g = p.add_argument_group("model")
    g.add_argument("--arch", required=arch_required, default=None, type=arch_spec, metavar="ARCH",
                   help="registered architecture (`landscape.list_models()`; a family such as preact_resnet18 "
                        "lets the checkpoint pick its exact wiring), or your own class as path/to/file.py:ClassName "
                        "or package.module:ClassName" + ("" if arch_required else
                                                         "; optional when the checkpoint records its architecture "
                                                         "(files written by `landscape train`, a trusted whole "
                                                         "model)"))
    g.add_argument("--arch-arg", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument, e.g. depth=34 (repeatable); num_classes / in_channels / input_size "
                        "/ input_shape default to the dataset's where the constructor takes them")
    g.add_argument("--num-classes", type=positive_int, default=None,
                   help="number of classes (default: the dataset's)")
    g.add_argument("--normalize", default="none",
                   help="wrap the model in Normalized with this dataset's mean/std ('none' or a dataset name)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling (runs code stored in the file: only for files you trust)")
    g.add_argument("--checkpoint-entry", choices=["last", "best"], default=None,
                   help="for files holding {'last', 'best'} weights (RobustBench style): which to read "
                        "(default: last, named in a note)")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


DATASETS_TEXT = ", ".join(DATASETS)  # help text without imports


def _help(helps: dict[str, str] | None, dest: str, text: str | None = None) -> str | None:
    """The help of option ``dest``: the command's own (``helps``; ``argparse.SUPPRESS`` hides it), else ``text``."""
    return (helps or {}).get(dest, text)


def add_data_args(p: argparse.ArgumentParser, *, default_n: int | str | None = 500,
                  helps: dict[str, str] | None = None) -> None:
    """The data options; ``helps`` maps an option's dest to the help it has in this command (see ``_help``)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", type=data_spec, metavar="DATA",
                   help=f"dataset: {DATASETS_TEXT} (`landscape.datasets.list_datasets()`), or your own function "
                        "as path/to/file.py:fn or package.module:fn returning (x, y) tensors or a torch Dataset "
                        "(default: digits)")
    g.add_argument("--data-root", default=None, metavar="PATH",
                   help="folder (or file) holding the dataset (default: $LANDSCAPE_DATA, else "
                        "~/.cache/landscape/data); nothing is downloaded")
    g.add_argument("--data-arg", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. size=32 for imagefolder, or your function's keyword (repeatable)")
    g.add_argument("--split", default="test",
                   help=_help(helps, "split", "train | test (svhn also: extra) (default: test)"))
    g.add_argument("--n", type=count_or_all, default=default_n,
                   help=_help(helps, "n", f"number of samples (class-stratified subset) or 'all' (default: "
                                          f"{default_n if default_n is not None else 'all'})"))
    g.add_argument("--seed", type=int, default=0, help="seed of the subset and the attack (default: 0)")
    g.add_argument("--batch-size", type=positive_int, default=128, help=_help(helps, "batch_size", "default: 128"))
    g.add_argument("--data-workers", type=int, default=None, metavar="N",
                   help="processes decoding image files (default: up to 4; 0 decodes in the main process)")


def add_attack_args(p: argparse.ArgumentParser, *, helps: dict[str, str] | None = None) -> None:
    """The attack options; ``helps`` maps an option's dest to the help it has in this command (see ``_help``).
    ``attack_from_args`` turns them into one ``AttackSettings``."""
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default="pgd", choices=["pgd", "fgsm", "official"],
                   help=_help(helps, "attack", "pgd, fgsm, or official: the official evaluation attack (PGD-10, "
                                               "step eps/4, no random start) (default: pgd)"))
    g.add_argument("--eps", type=eps_value, default=None,
                   help=_help(helps, "eps", "radius in [0,1] pixel units, a number or a fraction such as 8/255 "
                                            "(default: the dataset's: 8/255 = 0.0314 for CIFAR, SVHN, Tiny-ImageNet "
                                            "and image folders, 0.1 for digits)"))
    g.add_argument("--steps", type=positive_int, default=None, help=_help(helps, "steps", "PGD steps (default 10)"))
    g.add_argument("--step-size", type=non_negative_float, default=None, help="default 2.5*eps/steps")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])
    g.add_argument("--random-start", action=argparse.BooleanOptionalAction, default=None,
                   help=_help(helps, "random_start", "PGD from a random point of the eps ball (default: yes; "
                                                     "official: no)"))


def attack_from_args(args: argparse.Namespace):
    """The ``AttackSettings`` of ``add_attack_args``' options (``--eps`` resolved first, see ``resolve_eps``)."""
    from landscape.attacks import AttackSettings, attack_settings  # lazy: start-up

    if args.attack == "official":
        given = [flag for flag, v in (("--steps", args.steps), ("--step-size", args.step_size),
                                      ("--random-start", args.random_start)) if v is not None]
        if given:
            raise ValueError(f"--attack official fixes PGD-10, step eps/4, no random start; drop {', '.join(given)} "
                             f"or use --attack pgd")
        return AttackSettings.official(args.eps, norm=args.norm)
    return attack_settings(args.attack, eps=args.eps, steps=10 if args.steps is None else args.steps,
                           step_size=args.step_size, norm=args.norm,
                           random_start=True if args.random_start is None else args.random_start)


def add_measure_args(p: argparse.ArgumentParser, *, default_measures: str | None = None) -> None:
    """The measure options besides the attack; each flag's dest is a ``MeasureSettings`` field, so
    ``measure_settings_from_args`` needs no change when a field and its flag are added."""
    g = p.add_argument_group("measures")
    g.add_argument("--measures", default=default_measures, nargs="+", metavar="NAME",
                   help=f"names (space- or comma-separated) from {','.join(MEASURES)} (default: "
                        f"{default_measures or ','.join(DEFAULT_MEASURES)})")
    g.add_argument("--eig-iters", type=positive_int, default=20,
                   help="most Lanczos steps for eig_top on smooth nets (ReLU nets: exact, no steps; default 20)")
    g.add_argument("--hvp-method", default="auto", choices=["auto", "double_backprop", "func"],
                   help="Hessian-vector product method (default: auto)")
    g.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="compute dtype (float64: precise curvature, slower; default: the model's)")
    g.add_argument("--float64", dest="dtype", action="store_const", const="float64", help="same as --dtype float64")
    g.add_argument("--weight-probe", type=positive_int, default=256,
                   help="samples the per-model weight-space measures (w_*) use: the first ones measured (default 256)")
    g.add_argument("--weight-layers", default=None, metavar="GLOB",
                   help="glob(s) of the parameter names the w_* measures use, e.g. 'fc2.*' (default: all)")


def measure_settings_from_args(args: argparse.Namespace):
    """The ``MeasureSettings`` of the options whose dest is one of its fields (``--batch-size`` and ``--seed``
    come from the data options)."""
    from landscape.measures.settings import MeasureSettings  # lazy: start-up

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(MeasureSettings) if hasattr(args, f.name)}
    if isinstance(values.get("measures"), list):  # `--measures a b,c` -> (a, b, c)
        values["measures"] = tuple(m.strip() for item in values["measures"] for m in item.split(",") if m.strip())
    return MeasureSettings(**values)


def model_kwargs(args: argparse.Namespace, info=None) -> dict:
    """Constructor kwargs: --arch-arg, then --num-classes, then what the dataset implies for the arguments the
    constructor takes (``landscape.models.data_kwargs``: num_classes, in_channels, input_size, input_shape).
    ``info`` is the dataset's ``DatasetInfo`` (default: read from ``--data``)."""
    from landscape.models import data_kwargs  # lazy: start-up

    kwargs = dict(args.arch_arg)
    if args.num_classes is not None:
        kwargs.setdefault("num_classes", args.num_classes)
    if info is None and getattr(args, "data", None):
        info = data_info(args)
    if info is not None and args.arch is not None:
        implied = data_kwargs(args.arch, input_shape=info.input_shape,
                              num_classes=args.num_classes or info.num_classes)
        for key, value in implied.items():
            kwargs.setdefault(key, value)
    return kwargs


def normalization(args: argparse.Namespace) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    from landscape.datasets import dataset_info  # lazy: start-up

    if args.normalize in (None, "none"):
        return None, None
    info = dataset_info(args.normalize)
    return tuple(info.mean), tuple(info.std)


def model_from_args(args: argparse.Namespace, path: str | os.PathLike | None = None, *, data=None):
    """The model of ``add_model_args``' options with the checkpoint at ``path`` (default ``args.checkpoint``)
    loaded, in eval mode on ``--device``, checked against one input of the data's shape and its classes.

    ``data`` is the ``LabelledDataset`` to be measured (default: ``--data``): its facts give the constructor
    arguments, and its first batch is the evidence when a bare state dict fits several wirings."""
    from landscape.checkpoints import load_model  # lazy: start-up
    from landscape.datasets import materialize  # lazy: start-up

    path = args.checkpoint if path is None else path
    mean, std = normalization(args)
    if args.trust_checkpoint:
        warn_trusted(getattr(path, "path", path))  # a Checkpoint already read, or a file
    if data is None and getattr(args, "data", None):
        data = dataset_from_args(args)
    info = data.info if data is not None else None
    kwargs = model_kwargs(args, info)
    if data is not None:  # decoded only if the file's keys fit several wirings
        from landscape.datasets import Subset  # lazy: start-up

        kwargs["evidence"] = lambda: materialize(Subset(data, range(min(len(data), 128))), workers=0)
    model = load_model(path, args.arch, trusted=args.trust_checkpoint, mean=mean, std=std,
                       device=args.device, entry=getattr(args, "checkpoint_entry", None), **kwargs)
    if info is not None:
        check_input_shape(model, info, getattr(path, "path", path))
    return model




def built_arch(model, args: argparse.Namespace) -> str:
    """The exact wiring ``model`` was built as (``landscape_arch``), else ``--arch``; for tables and output."""
    from landscape.models import ARCH_ATTR, Normalized  # lazy: start-up

    inner = model.model if isinstance(model, Normalized) else model
    return (getattr(inner, ARCH_ATTR, None) or {}).get("name", args.arch or type(inner).__name__)


def check_input_shape(model, info, path: str | os.PathLike) -> None:
    """Run one zero input shaped like the data's samples (``info``: its ``DatasetInfo``) through ``model``; a shape
    error becomes a ValueError naming the input shape (instead of a RuntimeError traceback from deep inside the
    first layer), and labels beyond the model's head a ValueError giving both counts."""
    import torch  # lazy: start-up

    from landscape._base import model_device, model_dtype  # lazy: start-up

    shape = tuple(info.input_shape)
    probe = torch.zeros((1, *shape), device=model_device(model), dtype=model_dtype(model))
    try:
        with torch.no_grad():
            logits = model(probe)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: the model does not take {info.name} inputs of shape {shape} ({first}); "
                         f"check --arch-arg (input_shape / input_size / in_channels) or --data-arg size=N") from None
    heads = int(logits.shape[-1]) if logits.dim() == 2 else None
    if heads is not None and info.num_classes > heads:
        raise ValueError(f"{path}: the data has {info.num_classes} classes (labels up to {info.num_classes - 1}), the "
                         f"model's head {heads} classes; check --data or --num-classes")


def warn_trusted(path) -> None:
    print(f"landscape: warning: --trust-checkpoint: fully unpickling {path}; this can run code stored in it",
          file=sys.stderr)


def open_from_args(args: argparse.Namespace, split: str | None = None):
    """The whole split of ``--data`` (``--data-root``, ``--data-arg``) as a ``LabelledDataset``, nothing decoded;
    opened once per split and kept on ``args``."""
    from landscape.datasets import open_dataset  # lazy: start-up

    split = split or args.split
    cache = args.__dict__.setdefault("_opened", {})
    if split not in cache:
        cache[split] = open_dataset(args.data, split, root=args.data_root, **dict(args.data_arg))
    return cache[split]


def dataset_from_args(args: argparse.Namespace, split: str | None = None, n=None):
    """The ``--n`` stratified subset (``--seed``) of ``open_from_args``; nothing decoded yet."""
    from landscape.datasets import select  # lazy: start-up

    return select(open_from_args(args, split), args.n if n is None else n, args.seed)


def data_info(args: argparse.Namespace):
    """``DatasetInfo`` of ``--data`` (a registered name's fixed facts, else those of the opened files)."""
    from landscape.datasets import dataset_info  # lazy: start-up

    try:
        return dataset_info(args.data)
    except ValueError:  # facts that come from the files, or a user function
        return open_from_args(args, "test" if args.split is None else args.split).info


def resolve_eps(args: argparse.Namespace, info=None) -> float:
    """``--eps``, else the dataset's default (set on ``args``; ``eps_text`` says which)."""
    if getattr(args, "eps", None) is None:
        args.eps = float((info or data_info(args)).eps)
        args.eps_from = info.name if info is not None else args.data
    return args.eps


def eps_text(args: argparse.Namespace) -> str:
    """``eps 0.0313725 = 8/255 (the default of cifar10; set --eps to change)`` for a command's summary."""
    n255 = args.eps * 255
    frac = f" = {round(n255)}/255" if round(n255) >= 1 and abs(n255 - round(n255)) < 1e-6 else ""
    src = getattr(args, "eps_from", None)
    return f"eps {args.eps:.6g}{frac} ({f'the default of {src}; set --eps to change' if src else 'from --eps'})"


def output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (parents too) and check it is writable, failing with a one-line error."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output directory {out} is not writable")
    return out


def table_out(path: str, formats: tuple[str, ...] = (".parquet", ".csv")) -> Path:
    """``--out`` for a table file: its suffix is one of ``formats`` and its folder exists."""
    out = Path(path)
    if out.suffix.lower() not in formats:
        raise ValueError(f"--out must end in {' or '.join(formats)}, got {path!r}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    return out


# ------------------------------------------------------- evaluation of checkpoints (evaluate, trajectory)

def add_eval_attack_args(g) -> None:
    """The PGD evaluation attack; defaults follow the official code (PGD-10, step eps/4, no random start)."""
    g.add_argument("--pgd-steps", type=positive_int, default=10, help="PGD steps (default 10, as the official code)")
    g.add_argument("--pgd-step-size", type=float, default=None, help="PGD step (default eps/4, as the official code)")
    g.add_argument("--pgd-random-start", action="store_true",
                   help="start PGD from a random point of the ball (the official evaluation does not)")
    g.add_argument("--aa-version", default="standard", choices=["standard", "plus", "rand"],
                   help="AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, Square)")


def pgd_settings(args: argparse.Namespace, eps: float, norm: str):
    from landscape.attacks import AttackSettings  # lazy: start-up

    step = eps / 4 if args.pgd_step_size is None else args.pgd_step_size
    return AttackSettings("pgd", eps, args.pgd_steps, step, norm, bool(args.pgd_random_start))


def checkpoint_loader(args: argparse.Namespace, data=None):
    """``path -> (model, stored epoch)`` with the command's model options (each file read once); ``data`` is the
    evaluated dataset (its facts and first batch go to the model loader)."""
    from landscape.checkpoints import load_checkpoint  # lazy: start-up

    def load(path: str):
        ckpt = load_checkpoint(path, trusted=args.trust_checkpoint, entry=getattr(args, "checkpoint_entry", None))
        return model_from_args(args, ckpt, data=data), ckpt.epoch

    return load


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
    from landscape.diagnose import read_training_log  # lazy: start-up
    from landscape.evaluate import final_eval  # lazy: start-up

    data = dataset_from_args(args, "test", n=args.final_eval_n or "all")
    result = final_eval(table, out_dir, checkpoint_loader(args, data), data, None, log=read_training_log(table=table),
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
