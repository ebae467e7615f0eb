"""`landscape` command line: a thin shell over the library.

Each subcommand lives in ``landscape/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. User errors (``LandscapeError``, ``ValueError``,
``TypeError``) and environment errors (``OSError``: missing files, permissions, a full disk) print one line and
exit 2; ``--debug`` shows the traceback instead. Warnings print as one line each
(``landscape diagnose: warning: ... [RuntimeWarning]``), without Python's source line; ``--debug`` keeps
Python's own display. The trajectory's notes (``TrajectoryWarning``: skipped files, best-model copies) print as
``landscape: note: ...`` either way.

Start-up: ``landscape --help`` and ``landscape CMD --help`` import neither torch nor matplotlib (nor pandas,
scipy): the package root is lazy, the command modules import the library inside ``run`` and take their choices
from ``commands/_names.py`` (tests/test_cli_startup.py, benchmarks/bench_cli.py).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from landscape._version import __version__

COMMANDS = ["measure", "slice", "trajectory", "diagnose", "attribute", "evaluate", "plot", "report", "train",
            "demo"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="landscape", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"landscape.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"landscape.commands.{name}":
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _is_note(category: type[Warning]) -> bool:
    """A ``TrajectoryWarning`` (the trajectory's notes); its package is loaded when one was raised."""
    trajectory = sys.modules.get("landscape.trajectory")
    note = getattr(trajectory, "TrajectoryWarning", None)
    return note is not None and issubclass(category, note)


def one_line_warnings(command: str, *, fallback=None):
    """The command line's ``warnings.showwarning``: a ``TrajectoryWarning`` prints as ``landscape: note:
    MESSAGE``; any other warning as ``landscape COMMAND: warning: MESSAGE [Category]`` (the first line of the
    message, no file name, no source line), or through ``fallback`` when given (``--debug``: Python's display)."""
    def show(message, category, filename, lineno, file=None, line=None):
        if _is_note(category):
            text = f"landscape: note: {message}"
        elif fallback is not None:
            return fallback(message, category, filename, lineno, file, line)
        else:
            first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
            text = f"landscape {command}: warning: {first} [{category.__name__}]"
        try:
            print(text, file=file or sys.stderr)
        except OSError:  # stderr gone (closed pipe): a warning is not worth a crash
            pass
    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        debug = getattr(args, "debug", False)
        warnings.showwarning = one_line_warnings(args.command, fallback=warnings.showwarning if debug else None)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape._base import LandscapeError  # lazy: start-up (_base imports torch)

    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("landscape: interrupted", file=sys.stderr)
        return 130
    except (LandscapeError, ValueError, TypeError, OSError) as exc:  # OSError: missing files, permissions, disk full
        if getattr(args, "debug", False):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"landscape {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
