"""The package's architecture, read from its own imports: floors, no cycle, short modules.

:data:`FLOORS` is the one place the layering is written down, lowest floor first. A module may import
modules of its own floor or of lower floors, never of a higher one, and the imports (those inside
functions and ``TYPE_CHECKING`` blocks included) must not form a cycle. Every module must be on a
floor, and no module may pass :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "dvae_transform"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 400

FLOORS: list[tuple[str, list[str]]] = [
    ("foundations", [
        "metadata", "validation", "files", "precision", "fingerprint", "images", "distributed", "workers", "log",
        "labels",
    ]),
    ("weights", ["checkpoints.weights"]),  # safetensors-only loading, the network's Hub mixin
    ("network", ["config", "model", "losses"]),
    ("method", ["purify", "training_set", "fit_checkpoint", "fit"]),
    ("storage", [
        "cache.store", "cache.maintenance", "checkpoints.layout", "checkpoints.recipe", "checkpoints.registry",
        "checkpoints.resolve", "checkpoints.card",
    ]),
    ("input adapters", [
        "data.shards", "data.loader", "data.sources", "data.spool", "data.streaming", "data.output", "data.formats",
    ]),
    ("shortcut check", ["shortcut", "restarts"]),  # the probe, and the fit that refits when it fails
    ("transform", ["transforms"]),
    ("dataset", ["data.purified"]),
    ("tools", ["cli", "evaluation.*", "checkpoints.check_batch"]),
    ("public API", ["__init__"]),  # dvae_transform/__init__.py
]
# Sub-package __init__ files hold a docstring only: they import nothing and sit on no floor.
SUBPACKAGES = ("cache", "checkpoints", "data", "evaluation")


def module_name(path: Path) -> str:
    """``cache/store.py`` -> ``cache.store``; ``__init__.py`` -> ``__init__``; ``data/__init__.py`` -> ``data``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute dotted name an ``ImportFrom`` refers to, from inside ``module``."""
    if node.level == 0:
        return node.module or ""
    parts = [PACKAGE, *([] if module == "__init__" else module.split("."))]
    if not is_package:
        parts.pop()  # a module's own package
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package modules that ``module`` imports (``__init__`` for the package itself)."""
    known = set(known)
    is_package = path.name == "__init__.py"

    def local(name: str) -> str | None:
        if name == PACKAGE:
            return "__init__"
        if name.startswith(PACKAGE + "."):
            return name[len(PACKAGE) + 1 :]
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [local(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = local(_absolute(module, node, is_package))
            if base is None:
                continue
            prefix = "" if base == "__init__" else base + "."
            targets = [f"{prefix}{alias.name}" if f"{prefix}{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target is not None)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def floor_of(module: str) -> int | None:
    for index, (_, members) in enumerate(FLOORS):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return index
    return None


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a closed path (``[a, b, a]``), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import of a module on a higher floor than the importer's."""
    return [
        f"{module} (floor {FLOORS[floor_of(module)][0]!r}) imports {target} (floor {FLOORS[floor_of(target)][0]!r})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if floor_of(target) > floor_of(module)
    ]


# ----------------------------------------------------------------------------- the package


def test_every_module_is_on_a_floor() -> None:
    unplaced = [name for name in package_modules() if name not in SUBPACKAGES and floor_of(name) is None]
    assert unplaced == [], f"put these modules on a floor in FLOORS: {unplaced}"


def test_subpackage_inits_import_nothing() -> None:
    graph = import_graph()
    assert {name: graph[name] for name in SUBPACKAGES if graph[name]} == {}


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_no_import_runs_back_up() -> None:
    graph = {name: targets for name, targets in import_graph().items() if name not in SUBPACKAGES}
    assert upward_imports(graph) == []


def test_the_library_never_imports_the_evaluation_tooling() -> None:
    graph = import_graph()
    library = [name for name in graph if not name.startswith("evaluation") and name not in ("cli", "__init__")]
    assert {name: sorted(graph[name]) for name in library if any(t.startswith("evaluation") for t in graph[name])} == {}


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_module_is_short(name: str) -> None:
    lines = len(package_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (one idea per module)"


# ----------------------------------------------------------------------------- the checks themselves


def test_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward_imports({"model": {"transforms"}}) == [
        "model (floor 'network') imports transforms (floor 'transform')"
    ]
    source = tmp_path / "probe.py"
    source.write_text(
        "def later():\n"  # imports inside functions count like the others
        "    from .purified import PurifiedDataset\n"
        "    from .. import cli\n"
        "    import dvae_transform.evaluation.bench\n"
    )
    known = package_modules()
    assert imports_of("data.sources", source, known) == {"data.purified", "cli", "evaluation.bench"}
    nested = tmp_path / "pkg" / "__init__.py"
    nested.parent.mkdir()
    nested.write_text("from . import store\nfrom ..transforms import DVAEPurify\n")
    assert imports_of("cache", nested, known) == {"cache.store", "transforms"}
