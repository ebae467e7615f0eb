"""The package's shape: imports run one way (no cycles, no upward imports, nothing imports the package root)
and modules stay small. Read from the source with ``ast``; nothing is imported.

The allowlists below hold today's known exceptions. They may only shrink: an entry that is no longer needed
fails the test until it is deleted, so a fixed exception cannot come back unnoticed.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "landscape"
ROOT = "landscape"
MAX_LINES = 600

#: Layer of each top-level module or subpackage: a module may import from its own layer or lower ones.
#: A new top-level module needs a line here (that is the point: decide where it sits).
LAYERS = {
    "_base": 0, "_io": 0, "_progress": 0, "_spec": 0, "_version": 0,
    "models": 1, "attacks": 1, "runs": 1, "testing": 1, "augmentation": 1, "chunking": 1,
    "checkpoints": 2, "datasets": 2, "measures": 2, "slices": 2, "regularizers": 2, "weight_slices": 2,
    "diagnose": 3, "trajectory": 3, "training": 3, "evaluate": 3, "objectives": 3, "protocol": 3,
    "monitor": 3, "attribution": 3, "masking": 3, "ranking": 3,
    "plotting": 4, "report": 4, "study": 4,
    "commands": 5, "cli": 5, "__main__": 5,
}
#: The command line sits above the package root's public API and may import it (nothing imports them).
MAY_IMPORT_ROOT = ("landscape.cli", "landscape.commands", "landscape.__main__")

#: Known exceptions, each (importer, imported) with the way out.
ALLOWED_UPWARD: set[tuple[str, str]] = set()
#: Known cycles inside a layer, each (importer, imported) edge whose removal breaks the cycle.
ALLOWED_CYCLE_EDGES: set[tuple[str, str]] = set()
ALLOWED_ROOT_IMPORTS: set[str] = set()
#: Modules over MAX_LINES today (path -> lines when listed); each is being split.
OVERSIZED: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The landscape modules an import statement loads (a package's module when a name is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == ROOT]
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != ROOT:
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _graph() -> dict[str, set[str]]:
    """module -> modules it imports, at import time or inside functions (a lazy import is still a dependency)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(t for t in _targets(module, node) if t != module)
    return graph


GRAPH = _graph()


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_known_cycle():
    assert _cycles({"landscape.a": {"landscape.b"}, "landscape.b": {"landscape.c"},
                    "landscape.c": {"landscape.a"}}) == [["landscape.a", "landscape.b", "landscape.c"]]
    assert _cycles({"landscape.a": {"landscape.b"}}) == []


def test_every_module_has_a_layer():
    missing = sorted({_top(m) for m in MODULES if _top(m) is not None} - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS (tests/test_architecture.py): {missing}"


def test_no_import_cycles():
    allowed = ALLOWED_UPWARD | ALLOWED_CYCLE_EDGES
    graph = {m: {t for t in targets if (m, t) not in allowed} for m, targets in GRAPH.items()}
    assert _cycles(graph) == []
    stale = {(m, t) for m, t in ALLOWED_CYCLE_EDGES if t not in GRAPH.get(m, ())
             or not any(m in c for c in _cycles(GRAPH))}
    assert not stale, f"fixed: delete these from ALLOWED_CYCLE_EDGES: {sorted(stale)}"


def test_no_module_imports_a_higher_layer():
    upward = sorted((m, t) for m, targets in GRAPH.items() for t in targets
                    if _top(m) and _top(t) and LAYERS.get(_top(t), 0) > LAYERS.get(_top(m), 0))
    assert [pair for pair in upward if pair not in ALLOWED_UPWARD] == [], "import a lower layer only"
    stale = ALLOWED_UPWARD - set(upward)
    assert not stale, f"fixed: delete these from ALLOWED_UPWARD: {sorted(stale)}"


def test_no_library_module_imports_the_package_root():
    importers = {m for m, targets in GRAPH.items() if ROOT in targets and m != ROOT
                 and not m.startswith(MAY_IMPORT_ROOT)}
    assert importers - ALLOWED_ROOT_IMPORTS == set(), \
        "import from the module that defines the name (e.g. `from .measures import measure`), not the root"
    stale = ALLOWED_ROOT_IMPORTS - importers
    assert not stale, f"fixed: delete these from ALLOWED_ROOT_IMPORTS: {sorted(stale)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_under_the_line_limit(module):
    path = MODULES[module]
    rel = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text().splitlines())
    if rel in OVERSIZED:
        assert lines <= OVERSIZED[rel], f"{rel} grew to {lines} lines (listed at {OVERSIZED[rel]}): split it"
        assert lines > MAX_LINES, f"{rel} is {lines} lines now: delete it from OVERSIZED"
    else:
        assert lines <= MAX_LINES, f"{rel} has {lines} lines (limit {MAX_LINES}): split it by concern"


def test_oversized_entries_still_exist():
    gone = [rel for rel in OVERSIZED if not (PACKAGE / rel).is_file()]
    assert not gone, f"split: delete these from OVERSIZED: {gone}"
