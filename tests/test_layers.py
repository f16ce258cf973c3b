"""The package's dependencies point one way: every import (module level or
inside a function) of an attnbench module goes to a module of the same layer
or one below, there is no import cycle, and no private name crosses a module
boundary. The layers, bottom to top, are declared here and in DEVELOPERS.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnbench"

# Bottom to top: the package's folders (and its three single modules). A module
# may import from its own node or any node below; across the whole package the
# imports must not form a cycle. This list is the one place the order is written.
LAYERS: list[tuple[str, ...]] = [
    ("stats", "model", "errors", "testing"),  # stats imports nothing else of attnbench (checked below)
    ("variants", "attnbench"),                # "attnbench": the public API in attnbench/__init__.py
    ("quality",),
    ("store",),
    ("suite",),
    ("bench",),
    ("analysis",),
    ("report",),
    ("cli",),
]
RANK = {node: rank for rank, nodes in enumerate(LAYERS) for node in nodes}


def node_of(module: str) -> str:
    """The folder (or single module) a module belongs to: attnbench.bench.worker.measure -> bench."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "attnbench"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every attnbench import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "attnbench"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "attnbench":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:  # from attnbench.bench import timing: the module timing
                    out.append((submodule, [], node.lineno))
                else:
                    out.append((node.module, [alias.name], node.lineno))
    return out


def test_every_module_has_a_declared_layer_and_every_layer_exists():
    assert sorted({node_of(m) for m in MODULES} - set(RANK)) == []
    assert sorted(set(RANK) - {node_of(m) for m in MODULES}) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    rank = RANK[node_of(name)]
    upward = [f"line {line}: {target} ({node_of(target)} above {node_of(name)})"
              for target, _, line in imports_of(MODULES[name]) if RANK[node_of(target)] > rank]
    assert not upward, f"{name} imports upward: {upward}"


def test_the_statistics_import_nothing_else_of_attnbench():
    outside = [f"{name} line {line}: {target}" for name, path in MODULES.items() if node_of(name) == "stats"
               for target, _, line in imports_of(path) if node_of(target) != "stats"]
    assert not outside, outside


def test_the_tree_has_about_a_dozen_nodes():
    assert len(LAYERS) <= 9 and len(RANK) <= 14


def test_no_import_cycle():
    graph = {name: {target for target, _, _ in imports_of(path) if target != name} for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(name):], name]))
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            visit(target, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_private_name_crosses_a_module_boundary():
    crossing = []
    for name, path in MODULES.items():
        for target, names, line in imports_of(path):
            crossing += [f"{name} line {line}: {target}.{n}" for n in names
                         if n.startswith("_") and not n.startswith("__")]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                   for a in node.names
                   if (isinstance(node, ast.Import) and a.name.startswith("attnbench"))
                   or (isinstance(node, ast.ImportFrom) and f"{node.module}.{a.name}" in MODULES)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossing.append(f"{name} line {node.lineno}: {node.value.id}.{node.attr}")
    assert not crossing, crossing


def test_the_checker_sees_function_level_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from attnbench.cli.app import app\n    import attnbench.report.terminal\n")
    assert [t for t, _, _ in imports_of(source)] == ["attnbench.cli.app", "attnbench.report.terminal"]
