"""Option groups and loaders shared by the subcommands, so each option is spelled once."""
from __future__ import annotations

import argparse
import ast
import math
import os
from pathlib import Path


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
    """An attack radius in [0,1] pixel units; 8 (0-255 units) is refused naming the fix (8/255 = 0.0314)."""
    from landscape.attacks import _check_eps

    try:
        return _check_eps(non_negative_float(text))
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


def arch_spec(text: str) -> str:
    """``--arch`` value: a registered name, or ``file.py:Class`` made absolute (workers may run elsewhere)."""
    from landscape.models import absolute_spec, is_spec

    if not is_spec(text):
        return text
    try:
        return absolute_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options shared by measure, slice, trajectory, train and evaluate (see ``model_from_args``)."""
    g = p.add_argument_group("model")
    g.add_argument("--arch", required=True, type=arch_spec, metavar="ARCH",
                   help="registered architecture (`landscape.list_models()`; a family such as preact_resnet18 "
                        "lets the checkpoint pick its exact wiring), or your own class as path/to/file.py:ClassName "
                        "or package.module:ClassName")
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


def add_data_args(p: argparse.ArgumentParser, *, default_n: int | None = 500) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", help="digits | cifar10 | cifar100")
    g.add_argument("--data-root", default=None, help="folder or .npz with the local CIFAR files")
    g.add_argument("--split", default="test", choices=["train", "test"])
    g.add_argument("--n", type=positive_int, default=default_n, help="number of samples (stratified subset)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=positive_int, default=128)


def add_attack_args(p: argparse.ArgumentParser, *, default_eps: float = 0.1) -> None:
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default="pgd", choices=["pgd", "fgsm"])
    g.add_argument("--eps", type=eps_value, default=default_eps, help="radius in [0,1] pixel units (8/255 = 0.0314)")
    g.add_argument("--steps", type=positive_int, default=10)
    g.add_argument("--step-size", type=non_negative_float, default=None, help="default 2.5*eps/steps")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])


def model_kwargs(args: argparse.Namespace) -> dict:
    """Constructor kwargs: --arch-arg, then --num-classes, then what the dataset implies for the arguments the
    constructor takes (``landscape.models.data_kwargs``: num_classes, in_channels, input_size, input_shape)."""
    from landscape.datasets import dataset_info
    from landscape.models import data_kwargs

    kwargs = dict(args.arch_arg)
    if args.num_classes is not None:
        kwargs.setdefault("num_classes", args.num_classes)
    data = getattr(args, "data", None)
    if data:
        info = dataset_info(data)
        implied = data_kwargs(args.arch, input_shape=info.input_shape,
                              num_classes=args.num_classes or info.num_classes)
        for key, value in implied.items():
            kwargs.setdefault(key, value)
    return kwargs


def normalization(args: argparse.Namespace) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    from landscape.datasets import dataset_info

    if args.normalize in (None, "none"):
        return None, None
    info = dataset_info(args.normalize)
    return tuple(info.mean), tuple(info.std)


def model_from_args(args: argparse.Namespace, path: str | os.PathLike | None = None):
    """The model of ``add_model_args``' options with the checkpoint at ``path`` (default ``args.checkpoint``)
    loaded, in eval mode on ``--device``, checked against one input of ``--data``'s shape."""
    from landscape.checkpoints import load_model

    path = args.checkpoint if path is None else path
    mean, std = normalization(args)
    if args.trust_checkpoint:
        warn_trusted(getattr(path, "path", path))  # a Checkpoint already read, or a file
    model = load_model(path, args.arch, trusted=args.trust_checkpoint, mean=mean, std=std,
                       device=args.device, entry=getattr(args, "checkpoint_entry", None), **model_kwargs(args))
    if getattr(args, "data", None):
        check_input_shape(model, args.data, getattr(path, "path", path))
    return model


load_model_from_args = model_from_args  # the name the subcommands used first


def built_arch(model, args: argparse.Namespace) -> str:
    """The exact wiring ``model`` was built as (``landscape_arch``), else ``--arch``; for tables and output."""
    from landscape.models import ARCH_ATTR, Normalized

    inner = model.model if isinstance(model, Normalized) else model
    return (getattr(inner, ARCH_ATTR, None) or {}).get("name", args.arch)


def check_input_shape(model, data: str, path: str | os.PathLike) -> None:
    """Run one zero input shaped like ``data``'s samples through ``model``; a shape error becomes a ValueError
    naming the input shape (instead of a RuntimeError traceback from deep inside the first layer)."""
    import torch

    from landscape._base import model_device, model_dtype
    from landscape.datasets import dataset_info

    shape = tuple(dataset_info(data).input_shape)
    probe = torch.zeros((1, *shape), device=model_device(model), dtype=model_dtype(model))
    try:
        with torch.no_grad():
            model(probe)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: the model does not take {data} inputs of shape {shape} ({first}); "
                         f"check --arch-arg (input_shape / input_size / in_channels)") from None


def warn_trusted(path) -> None:
    import sys

    print(f"landscape: warning: --trust-checkpoint: fully unpickling {path}; this can run code stored in it",
          file=sys.stderr)


def load_data_from_args(args: argparse.Namespace, split: str | None = None):
    from landscape.datasets import load_dataset

    return load_dataset(args.data, split or args.split, root=args.data_root, n=args.n, seed=args.seed)


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
