"""The package's architecture, checked from the modules' imports (read with ast): every
import points down the layer order, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = [
    ("kdray", "kdray.errors", "kdray.console"),
    ("kdray.cache", "kdray.models", "kdray.folders"),
    ("kdray.config",),
    ("kdray.data",),
    ("kdray.eval",),
    ("kdray.world", "kdray.hub", "kdray.losses", "kdray.tracking"),
    ("kdray.teacher",),
    ("kdray.train",),
    ("kdray.trial", "analysis"),
    ("kdray.study",),
    ("kdray.cli",),
    ("kdray.__main__",),
]
"""Bottom to top. A module may import its own unit (subpackage) and any unit of a lower layer;
units of one layer are independent of each other."""

ANALYSIS_MAY_IMPORT = {
    "kdray.errors",
    "kdray.config.run",
    "kdray.tracking.runs",
    "kdray.tracking.stores",
    "kdray.tracking.models",
    "kdray.folders",
}
"""analysis reads MLflow or CSV: of kdray it uses the errors, the method names, the store, the
registered students' names and tags, and the check that its output folder can be written."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (no runtime dependency)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt)}
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The kdray and analysis modules a file imports, at top level or inside functions
    (`from package import module` counts as importing the module, not the package)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("kdray", "analysis")}


def all_modules() -> dict[str, set[str]]:
    files = [*ROOT.glob("kdray/**/*.py"), *ROOT.glob("analysis/**/*.py")]
    names = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, names) for f in files}


def unit_of(module: str) -> tuple[int, str]:
    """(layer index, unit) of a module: its longest matching unit prefix."""
    best = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            inside = module.startswith(unit + ".") and unit != "kdray"  # the root: itself only
            if (module == unit or inside) and (best is None or len(unit) > len(best[1])):
                best = (layer, unit)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in all_modules():
        unit_of(module)


def test_imports_point_down_the_layers():
    upward = []
    for module, imported in all_modules().items():
        layer, unit = unit_of(module)
        for target in imported:
            target_layer, target_unit = unit_of(target)
            if target_unit != unit and target_layer >= layer:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_analysis_imports_nothing_of_the_training_side():
    wrong = [
        f"{module} -> {target}"
        for module, imported in all_modules().items()
        if module.startswith("analysis")
        for target in imported
        if target.startswith("kdray") and target not in ANALYSIS_MAY_IMPORT
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules of `graph`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    modules = all_modules()
    graph = {name: {t for t in imported if t != name} for name, imported in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert unit_of("kdray.train.loop")[0] < unit_of("kdray.study.grid")[0]
    assert unit_of("kdray.world.zoo") == (5, "kdray.world")
