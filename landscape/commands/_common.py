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


def data_spec(text: str) -> str:
    """``--data`` value: a dataset name, or ``file.py:fn`` made absolute (workers may run elsewhere)."""
    from landscape._spec import absolute_spec, is_spec

    if not is_spec(text):
        return text
    try:
        return absolute_spec(text, "dataset")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


DATASETS_TEXT = "digits, cifar10, cifar100, svhn, tiny-imagenet, imagefolder, npz"  # help text without imports


def add_data_args(p: argparse.ArgumentParser, *, default_n: int | str | None = 500) -> None:
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
    g.add_argument("--split", default="test", help="train | test (svhn also: extra) (default: test)")
    g.add_argument("--n", type=count_or_all, default=default_n,
                   help=f"number of samples (class-stratified subset) or 'all' (default: "
                        f"{default_n if default_n is not None else 'all'})")
    g.add_argument("--seed", type=int, default=0, help="seed of the subset and the attack (default: 0)")
    g.add_argument("--batch-size", type=positive_int, default=128, help="default: 128")
    g.add_argument("--data-workers", type=int, default=None, metavar="N",
                   help="processes decoding image files (default: up to 4; 0 decodes in the main process)")


def add_attack_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default="pgd", choices=["pgd", "fgsm"])
    g.add_argument("--eps", type=eps_value, default=None,
                   help="radius in [0,1] pixel units (default: the dataset's: 8/255 = 0.0314 for CIFAR, SVHN, "
                        "Tiny-ImageNet and image folders, 0.1 for digits)")
    g.add_argument("--steps", type=positive_int, default=10)
    g.add_argument("--step-size", type=non_negative_float, default=None, help="default 2.5*eps/steps")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"])


def model_kwargs(args: argparse.Namespace, info=None) -> dict:
    """Constructor kwargs: --arch-arg, then --num-classes, then what the dataset implies for the arguments the
    constructor takes (``landscape.models.data_kwargs``: num_classes, in_channels, input_size, input_shape).
    ``info`` is the dataset's ``DatasetInfo`` (default: read from ``--data``)."""
    from landscape.models import data_kwargs

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
    from landscape.datasets import dataset_info

    if args.normalize in (None, "none"):
        return None, None
    info = dataset_info(args.normalize)
    return tuple(info.mean), tuple(info.std)


def model_from_args(args: argparse.Namespace, path: str | os.PathLike | None = None, *, data=None):
    """The model of ``add_model_args``' options with the checkpoint at ``path`` (default ``args.checkpoint``)
    loaded, in eval mode on ``--device``, checked against one input of the data's shape and its classes.

    ``data`` is the ``LabelledDataset`` to be measured (default: ``--data``): its facts give the constructor
    arguments, and its first batch is the evidence when a bare state dict fits several wirings."""
    from landscape.checkpoints import load_model
    from landscape.datasets import materialize

    path = args.checkpoint if path is None else path
    mean, std = normalization(args)
    if args.trust_checkpoint:
        warn_trusted(getattr(path, "path", path))  # a Checkpoint already read, or a file
    if data is None and getattr(args, "data", None):
        data = dataset_from_args(args)
    info = data.info if data is not None else None
    kwargs = model_kwargs(args, info)
    import inspect  # TEMP until load_model takes evidence

    if data is not None and "evidence" in inspect.signature(load_model).parameters:
        from landscape.datasets import Subset

        first = Subset(data, range(min(len(data), 128)))
        kwargs["evidence"] = materialize(first, workers=0)
    model = load_model(path, args.arch, trusted=args.trust_checkpoint, mean=mean, std=std,
                       device=args.device, entry=getattr(args, "checkpoint_entry", None), **kwargs)
    if info is not None:
        check_input_shape(model, info, getattr(path, "path", path))
    return model


load_model_from_args = model_from_args  # the name the subcommands used first


def built_arch(model, args: argparse.Namespace) -> str:
    """The exact wiring ``model`` was built as (``landscape_arch``), else ``--arch``; for tables and output."""
    from landscape.models import ARCH_ATTR, Normalized

    inner = model.model if isinstance(model, Normalized) else model
    return (getattr(inner, ARCH_ATTR, None) or {}).get("name", args.arch or type(inner).__name__)


def check_input_shape(model, info, path: str | os.PathLike) -> None:
    """Run one zero input shaped like the data's samples (``info``: its ``DatasetInfo``) through ``model``; a shape
    error becomes a ValueError naming the input shape (instead of a RuntimeError traceback from deep inside the
    first layer), and labels beyond the model's head a ValueError giving both counts."""
    import torch

    from landscape._base import model_device, model_dtype

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
    import sys

    print(f"landscape: warning: --trust-checkpoint: fully unpickling {path}; this can run code stored in it",
          file=sys.stderr)


def open_from_args(args: argparse.Namespace, split: str | None = None):
    """The whole split of ``--data`` (``--data-root``, ``--data-arg``) as a ``LabelledDataset``, nothing decoded;
    opened once per split and kept on ``args``."""
    from landscape.datasets import open_dataset

    split = split or args.split
    cache = args.__dict__.setdefault("_opened", {})
    if split not in cache:
        cache[split] = open_dataset(args.data, split, root=args.data_root, **dict(args.data_arg))
    return cache[split]


def dataset_from_args(args: argparse.Namespace, split: str | None = None, n=None):
    """The ``--n`` stratified subset (``--seed``) of ``open_from_args``; nothing decoded yet."""
    from landscape.datasets import select

    return select(open_from_args(args, split), args.n if n is None else n, args.seed)


def data_info(args: argparse.Namespace):
    """``DatasetInfo`` of ``--data`` (a registered name's fixed facts, else those of the opened files)."""
    from landscape.datasets import dataset_info

    try:
        return dataset_info(args.data)
    except ValueError:  # facts that come from the files, or a user function
        return open_from_args(args, "test" if args.split is None else args.split).info


def load_data_from_args(args: argparse.Namespace, split: str | None = None):
    """``(x, y)`` tensors of ``dataset_from_args`` (for the commands whose samples fit in memory)."""
    from landscape.datasets import materialize

    return materialize(dataset_from_args(args, split), workers=args.data_workers)


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
