"""The package's architecture, read from its own imports: floors, no cycle, short modules.

:data:`FLOORS` is the one place the layering is written down, lowest floor first. A module may import
modules of its own floor or of lower floors, never of a higher one, and the imports (those inside
functions and ``TYPE_CHECKING`` blocks included) must not form a cycle. Every module must be on a
floor, and no module may pass :data:`MAX_LINES` lines. The tests mirror the package: every module that
defines a top-level function or class has its test module, named by :func:`mirroring_test`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "dvae_transform"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 400
MAX_FUNCTION_LINES = 60  # lines of code: blank lines, comments and the docstring aside

FLOORS: list[tuple[str, list[str]]] = [
    ("foundations", [
        "metadata", "validation", "files", "precision", "fingerprint", "images", "distributed", "workers", "log",
        "labels", "deprecation",
    ]),
    ("weights", ["weights"]),  # safetensors-only loading, the network's Hub mixin
    ("network", ["config", "model"]),
    ("method", ["purify"]),
    ("cache", ["cache.*"]),  # shard caches and the work folder
    ("input adapters", ["data.*"]),
    ("shortcut check", ["shortcut"]),
    ("training", ["training.*"]),  # the loop, its training sets, resume state, losses, refits
    ("storage", ["saved.*", "pretrained.*"]),  # a saved purifier's folder and card; the official weights
    ("transform", ["transforms"]),
    ("dataset", ["purified_dataset"]),
    ("tools", ["cli", "evaluation.*"]),
    ("public API", ["__init__"]),  # dvae_transform/__init__.py
]
# Sub-package __init__ files hold a docstring only: they import nothing and sit on no floor.
SUBPACKAGES = ("cache", "data", "evaluation", "pretrained", "saved", "training")


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


def package_of(module: str) -> str:
    """The top-level unit a module belongs to: its sub-package, or the module itself."""
    return module.split(".")[0]


def package_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """``graph`` with modules merged into their top-level units (self-imports left out)."""
    merged: dict[str, set[str]] = {}
    for module, targets in graph.items():
        unit = package_of(module)
        merged.setdefault(unit, set()).update(package_of(target) for target in targets)
        merged[unit].discard(unit)
    return merged


def test_no_import_runs_back_up() -> None:
    graph = {name: targets for name, targets in import_graph().items() if name not in SUBPACKAGES}
    assert upward_imports(graph) == []


def test_every_package_sits_on_one_floor() -> None:
    floors: dict[str, set[str]] = {}
    for name in package_modules():
        if name not in SUBPACKAGES:
            floors.setdefault(package_of(name), set()).add(FLOORS[floor_of(name)][0])
    assert {unit: sorted(names) for unit, names in floors.items() if len(names) > 1} == {}


def test_no_import_cycle_between_packages() -> None:
    assert find_cycle(package_graph(import_graph())) is None


def test_the_library_never_imports_the_evaluation_tooling() -> None:
    graph = import_graph()
    library = [name for name in graph if not name.startswith("evaluation") and name not in ("cli", "__init__")]
    assert {name: sorted(graph[name]) for name in library if any(t.startswith("evaluation") for t in graph[name])} == {}


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_module_is_short(name: str) -> None:
    lines = len(package_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (one idea per module)"


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef, source_lines: list[str]) -> int:
    """Lines of code in ``function``'s body: blank lines, comment lines and the docstring are not counted."""
    body = function.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    lines = source_lines[body[0].lineno - 1 : function.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def long_functions(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    return [
        f"{node.name} ({count} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (count := code_lines(node, lines)) > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_functions_are_short(name: str) -> None:
    assert long_functions(package_modules()[name]) == [], f"split these functions of {name}"


def mirroring_test(module: str) -> str:
    """The test module of a package module: ``cache.store`` -> ``tests/test_cache_store.py``."""
    return f"tests/test_{module.replace('.', '_')}.py"


def defines_something(path: Path) -> bool:
    """Whether the module at ``path`` defines a top-level function or class."""
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for node in ast.parse(path.read_text(encoding="utf-8")).body
    )


def test_every_module_has_its_test_module() -> None:
    modules = {name: path for name, path in package_modules().items() if path.name != "__init__.py"}
    missing = [
        mirroring_test(name) for name, path in modules.items()
        if defines_something(path) and not (ROOT.parent / mirroring_test(name)).is_file()
    ]
    assert missing == [], "add these test modules (tests mirror the package)"


# ----------------------------------------------------------------------------- the checks themselves


def test_test_modules_are_named_after_the_module_and_only_definitions_need_one(tmp_path: Path) -> None:
    assert mirroring_test("metadata") == "tests/test_metadata.py"
    assert mirroring_test("data.image_folder") == "tests/test_data_image_folder.py"
    for source, expected in [("X = 1\nimport os\n", False), ("class A:\n    pass\n", True),
                             ("async def f():\n    pass\n", True), ("if True:\n    def f(): pass\n", False)]:
        (tmp_path / "probe.py").write_text(source)
        assert defines_something(tmp_path / "probe.py") is expected, source


def test_package_checks_merge_modules_into_their_packages() -> None:
    graph = package_graph({"training.loop": {"data.sources", "training.sets"}, "data.sources": {"training.loop"}})
    assert graph == {"training": {"data"}, "data": {"training"}}
    assert find_cycle(graph) == ["data", "training", "data"]


def test_function_length_counts_code_only(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    source.write_text(f'def fits():\n    """Doc."""\n\n    # note\n{body}\ndef too_long():\n{body}    return 0\n')
    assert long_functions(source) == [f"too_long ({MAX_FUNCTION_LINES + 1} lines)"]


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


def test_readme_says_where_every_module_and_package_is() -> None:
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Where things are") :]
    section = section[: section.find("\n## ", 5) if "\n## " in section[5:] else len(section)]
    units = {package_of(name) for name in package_modules() if name != "__init__"}
    homes = {unit: f"`{unit}/`" if unit in SUBPACKAGES else f"`{unit}.py`" for unit in units}
    assert sorted(unit for unit, home in homes.items() if home not in section) == []
