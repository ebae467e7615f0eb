"""The command line starts fast: ``landscape --help`` and ``landscape CMD --help`` import neither torch nor
matplotlib (nor pandas, scipy, numpy), and ``import landscape`` is light too; the plain name lists the help
shows equal their registries; the commands keep to their rules (no command imports another, no private
argparse attributes, one warning display). Timing: benchmarks/bench_cli.py.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from landscape.cli import COMMANDS, main, one_line_warnings

ROOT = Path(__file__).resolve().parents[1]
CLI = [ROOT / "landscape" / "cli.py", *sorted((ROOT / "landscape" / "commands").glob("*.py"))]
HEAVY = ("torch", "matplotlib", "pandas", "scipy", "seaborn", "numpy", "pyarrow", "plotly")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def _imported(importtime: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output."""
    return {line.split("|")[-1].strip().split(".")[0] for line in importtime.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_package(argv):
    proc = _python("-X", "importtime", "-m", "landscape.cli", *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
    heavy = sorted(_imported(proc.stderr) & set(HEAVY))
    assert heavy == [], f"`landscape {' '.join(argv)}` imports {heavy}"


def test_building_the_parser_and_every_help_leaves_heavy_packages_unloaded():
    code = f"""
import contextlib, io, json, sys
from landscape.cli import COMMANDS, main
codes = {{}}
for argv in [[]] + [[c] for c in COMMANDS]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*argv, "--help"])
        except SystemExit as exc:
            codes[" ".join(argv)] = [exc.code, len(out.getvalue())]
print(json.dumps({{"codes": codes, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})}}))
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["codes"]) == {"", *COMMANDS}
    assert all(code == 0 and chars > 100 for code, chars in result["codes"].values()), result["codes"]
    assert result["loaded"] == []


def test_import_landscape_is_light_and_its_public_api_loads_on_use():
    code = """
import sys
import landscape
heavy = [m for m in ("torch", "matplotlib", "pandas") if m in sys.modules]
assert heavy == [], heavy
import landscape.diagnose  # binds nothing over the public name: `landscape.diagnose` is the function
from landscape import diagnose, load_model, measure, train, LandscapeError, MEASURES, __version__
assert callable(diagnose) and diagnose.__module__ == "landscape.diagnose", diagnose
assert landscape.diagnose is diagnose
assert measure.__module__.startswith("landscape.measures") and callable(load_model) and callable(train)
assert issubclass(LandscapeError, Exception) and "grad" in MEASURES and __version__
for name in landscape.__all__:
    assert getattr(landscape, name) is not None, name
assert set(landscape.__all__) <= set(dir(landscape))
assert landscape.models.create_model is landscape.create_model  # submodules stay reachable as attributes
try:
    landscape.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""
    proc = _python("-c", code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_public_api_is_unchanged():
    import landscape

    assert sorted(landscape.__all__) == sorted([
        "LandscapeError", "CheckpointError", "DataError", "MEASURES", "Monitor", "Normalized", "__version__",
        "advlc", "analyse_trajectory", "attribute", "build_report", "create_model", "diagnose", "fgsm", "list_models",
        "load_checkpoint", "load_dataset", "load_model", "measure", "pgd", "rank_measures", "save_checkpoint",
        "slice_1d", "slice_2d", "train"])
    from landscape.attribution import attribute
    from landscape.checkpoints import load_model
    from landscape.diagnose import diagnose
    from landscape.measures import measure
    from landscape.monitor import Monitor
    from landscape.ranking import rank_measures

    assert (landscape.load_model, landscape.diagnose, landscape.measure) == (load_model, diagnose, measure)
    assert (landscape.Monitor, landscape.attribute, landscape.rank_measures) == (Monitor, attribute, rank_measures)


def _registries() -> dict[str, tuple]:
    from landscape.augmentation import AUGMENTATIONS
    from landscape.datasets import list_datasets
    from landscape.measures import DEFAULT_MEASURES, MEASURES
    from landscape.plotting import FIGURES
    from landscape.slices import DIRECTIONS, NORMALIZATIONS, RANDOM_KINDS
    from landscape.study.experiments import DEFAULT_VARIANTS, STUDIES, VARIANTS
    from landscape.training import METHODS, PRESETS
    from landscape.trajectory.executors import EXECUTORS

    return {"MEASURES": tuple(MEASURES), "DEFAULT_MEASURES": tuple(DEFAULT_MEASURES), "DIRECTIONS": tuple(DIRECTIONS),
            "NORMALIZATIONS": tuple(NORMALIZATIONS), "RANDOM_KINDS": tuple(RANDOM_KINDS),
            "METHODS": tuple(METHODS), "PRESETS": tuple(PRESETS), "AUGMENTATIONS": tuple(AUGMENTATIONS),
            "EXECUTORS": tuple(EXECUTORS), "VARIANTS": tuple(VARIANTS), "DEFAULT_VARIANTS": tuple(DEFAULT_VARIANTS),
            "STUDIES": tuple(STUDIES), "FIGURES": tuple(FIGURES), "DATASETS": tuple(sorted(list_datasets()))}


def test_the_light_name_lists_equal_their_registries():
    from landscape.commands import _names
    from landscape.commands._common import DATASETS_TEXT

    for name, names in _registries().items():
        light = getattr(_names, name)
        assert (tuple(sorted(light)) if name == "DATASETS" else light) == names, \
            f"landscape/commands/_names.py {name} is out of date: the registry has {names}"
    assert DATASETS_TEXT == ", ".join(_names.DATASETS)


def test_plot_offers_every_registered_figure():
    from landscape.commands.plot import _kinds
    from landscape.plotting import FIGURES

    assert _kinds() == list(FIGURES)


# ------------------------------------------------------------------------------- the commands' own rules

def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _function_imports(tree: ast.Module):
    """Import statements inside function bodies."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


@pytest.mark.parametrize("path", [p for p in CLI if p.parent.name == "commands"], ids=lambda p: p.name)
def test_no_command_imports_another(path):
    commands = {p.stem for p in CLI if p.parent.name == "commands" and not p.stem.startswith("_")}
    imported = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                imported |= {module.split(".")[0]} if module else {a.name for a in node.names}
            elif module.startswith("landscape.commands"):
                rest = module.removeprefix("landscape.commands").lstrip(".")
                imported |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[2] for a in node.names if a.name.startswith("landscape.commands.")}
    assert imported & commands - {path.stem} == set(), "shared pieces go to commands/_common.py or the library"


PRIVATE_ARGPARSE = {"_actions", "_option_string_actions", "_action_groups", "_group_actions", "_defaults",
                    "_subparsers", "_positionals", "_optionals", "_registries", "_mutually_exclusive_groups",
                    "_name_parser_map", "_choices_actions", "_get_optional_actions", "_get_positional_actions"}


@pytest.mark.parametrize("path", CLI, ids=lambda p: p.name)
def test_no_private_argparse_attributes(path):
    used = sorted({n.attr for n in ast.walk(_tree(path))
                   if isinstance(n, ast.Attribute) and n.attr in PRIVATE_ARGPARSE})
    assert used == [], f"{path.name} uses argparse internals {used}: pass the help to the shared helper instead"


@pytest.mark.parametrize("path", CLI, ids=lambda p: p.name)
def test_one_warning_display(path):
    """Only cli.py replaces ``warnings.showwarning`` (for the whole command, notes included)."""
    sets = [n for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute) and n.attr == "showwarning"
            and isinstance(n.ctx, ast.Store)]
    assert not sets or path.name == "cli.py", f"{path.name} sets warnings.showwarning: cli.py's display shows them all"


#: function-level imports in the command line are for start-up time only: of library modules that load torch,
#: pandas or matplotlib, never of the commands' own light helpers or of the light library modules
LIGHT = ("landscape._io", "landscape._spec", "landscape._version", "landscape.commands", "argparse", "sys", "os",
         "json", "math", "ast", "pathlib", "warnings", "importlib")


@pytest.mark.parametrize("path", CLI, ids=lambda p: p.name)
def test_lazy_imports_are_for_start_up_only(path):
    light = []
    for node in _function_imports(_tree(path)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            ["landscape.commands" if node.level else node.module]
        light += [n for n in names if any(n == m or n.startswith(m + ".") for m in LIGHT)]
    assert light == [], f"{path.name}: import these at the top of the module (they are light): {light}"


# ------------------------------------------------------------------------------------ the warning display

def test_trajectory_warnings_show_as_notes_and_others_as_one_line(capsys):
    from landscape.trajectory import TrajectoryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = one_line_warnings("trajectory")
        warnings.warn("skipped 4 optimizer-state file(s): opt_0.pth, ...", TrajectoryWarning)
        warnings.warn("accuracies look like percentages\nsecond line", RuntimeWarning)
    assert capsys.readouterr().err == ("landscape: note: skipped 4 optimizer-state file(s): opt_0.pth, ...\n"
                                       "landscape trajectory: warning: accuracies look like percentages "
                                       "[RuntimeWarning]\n")


def test_debug_keeps_pythons_display_for_warnings_but_notes_stay_notes(capsys):
    from landscape.trajectory import TrajectoryWarning

    shown = []  # the display --debug keeps (Python's; pytest's recorder here)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = one_line_warnings("trajectory", fallback=lambda *a: shown.append(a[:2]))
        warnings.warn("best-model copies are not measured", TrajectoryWarning)
        warnings.warn("accuracies look like percentages", RuntimeWarning)
    assert capsys.readouterr().err == "landscape: note: best-model copies are not measured\n"
    assert [(str(m), c) for m, c in shown] == [("accuracies look like percentages", RuntimeWarning)]


def test_main_shows_warnings_one_line_and_debug_through_pythons_display(tmp_path, capsys, monkeypatch):
    import landscape.commands.diagnose as diag

    def noisy(args):
        warnings.warn("accuracies look like percentages", RuntimeWarning)
        return 0

    monkeypatch.setattr(diag, "run", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        shown = []
        warnings.showwarning = lambda *a, **k: shown.append(str(a[0]))  # stands for Python's display
        assert main(["diagnose", "--debug", str(tmp_path / "t.parquet")]) == 0
        warnings.showwarning = before
    assert shown == ["accuracies look like percentages"] and capsys.readouterr().err == ""
