"""The shape of the code: every module imports, no import circle, every arrow points down.

The import graph is read from the source with ``ast`` — every import counts, also one
inside a function or under ``TYPE_CHECKING`` (an import hidden there still ties the two
modules together). Each module belongs to a layer; a module may import its own layer or a
lower one, never a higher one. A new module must be given a layer here (the test says so).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import glacierd

ROOT = Path(glacierd.__file__).parent

# Top to bottom. A module's layer is that of the longest name below that is the module
# itself or a package holding it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("glacierd.cli", "glacierd.__main__")),
    (
        "the daemon, its listeners and doctor",
        (
            "glacierd.service",
            "glacierd.scheduler",
            "glacierd.reload",
            "glacierd.api",
            "glacierd.doctor",
            "glacierd.health",
        ),
    ),
    (
        "operations",
        (
            "glacierd.operations",
            # Applies store news through operations.retrieval: an operation in all but its
            # folder (its place is for the branch that reshapes it to settle).
            "glacierd.notifications.dispatch",
            # The SQS transport hands its messages to that dispatch.
            "glacierd.notifications.sqs",
        ),
    ),
    ("the context", ("glacierd.context",)),
    (
        "resources",
        (
            "glacierd.catalog",
            "glacierd.sources",
            "glacierd.stores",
            "glacierd.notifications",
            "glacierd.pipeline",
        ),
    ),
    (
        "foundation",
        (
            "glacierd.config",
            "glacierd.errors",
            "glacierd.logs",
            "glacierd.pgconnect",
            "glacierd.units",
            "glacierd.jsonsafe",
            "glacierd.sdnotify",
            "glacierd.debounce",
            "glacierd.journal",
        ),
    ),
]


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["glacierd", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _known(name: str) -> str | None:
    """The module ``name`` is, or lies in (``pkg.module.attribute`` -> ``pkg.module``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The glacierd modules ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # "from glacierd.catalog import backups" names a module; "... import Catalog"
                # a name in the package.
                found.add(_known(f"{base}.{alias.name}") or _known(base))
    return {name for name in found if name and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > best[0]
            ):
                best = (len(name), index)
    if module == "glacierd":
        return len(LAYERS) - 1  # the package itself holds only the version
    return best[1] if best else None


def test_the_graph_is_read_from_real_imports() -> None:
    """The graph is not empty by accident: known arrows are in it."""
    assert "glacierd.operations.retrieval" in GRAPH["glacierd.operations.fetch"]
    assert "glacierd.pgconnect.connect" in GRAPH["glacierd.sources.database"]
    assert "glacierd.service" in GRAPH["glacierd.cli.daemon"]  # imported inside a function
    assert "glacierd.catalog.backups" in GRAPH["glacierd.operations.inventory"]


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"glacierd.__main__"}))
def test_every_module_imports(module: str) -> None:
    # (glacierd.__main__ runs the command line when imported: only its imports are read.)
    importlib.import_module(module)


def test_every_module_has_a_layer() -> None:
    lost = [m for m in MODULES if layer_of(m) is None]
    assert not lost, f"give these modules a layer in LAYERS: {lost}"


def test_no_arrow_points_up() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module) or 0][0]}) imports {target} "
        f"({LAYERS[layer_of(target) or 0][0]})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if (layer_of(target) or 0) < (layer_of(module) or 0)
    ]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle or [])
