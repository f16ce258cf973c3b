"""The package's dependencies point one way: every import (module level or
inside a function) of an attnbench module goes to a module of the same layer
or one below, there is no import cycle, and no private name crosses a module
boundary. The layers, bottom to top, are declared here and in DEVELOPERS.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnbench"

# Bottom to top. A module may import from its own rank or any rank below;
# inside a rank the imports must not form a cycle. Sub-ranks order the
# insides of the variants and bench packages.
LAYERS: list[tuple[str, ...]] = [
    ("attnbench.model", "attnbench.stats", "attnbench.paired"),
    ("attnbench.between_runs",),
    ("attnbench.errors",),
    ("attnbench.testing",),
    ("attnbench.variants.layer",),
    ("attnbench.variants.registry",),
    ("attnbench.variants.exact", "attnbench.variants.sparse", "attnbench.variants.clustered",
     "attnbench.variants.lowrank", "attnbench.variants.kernel", "attnbench.variants.synthesizer",
     "attnbench.variants.fastformer", "attnbench.variants.aft", "attnbench.variants.conv",
     "attnbench.variants.flex", "attnbench.variants.factory", "attnbench.variants.pooling",
     "attnbench.variants.random_features", "attnbench.variants.mixers"),
    ("attnbench.variants", "attnbench"),
    ("attnbench.quality.approx", "attnbench.quality.mqar", "attnbench.quality.plan", "attnbench.quality"),
    ("attnbench.visits",),
    ("attnbench.published", "attnbench.results", "attnbench.env", "attnbench.suite", "attnbench.schema",
     "attnbench.suite_quality", "attnbench.buildcheck", "attnbench.yamlfile"),
    ("attnbench.bench.timing", "attnbench.bench.memory", "attnbench.bench.messages", "attnbench.bench.checks",
     "attnbench.bench.flops", "attnbench.bench.signals", "attnbench.bench.progress", "attnbench.bench.skip",
     "attnbench.bench.calibration", "attnbench.bench.noise", "attnbench.bench.shard", "attnbench.bench.placement",
     "attnbench.bench.worker_setup"),
    ("attnbench.bench.measure", "attnbench.bench.interleave", "attnbench.bench.records", "attnbench.bench.rundir",
     "attnbench.bench.quality",
     "attnbench.merge"),
    ("attnbench.bench.child",),
    ("attnbench.bench.executor", "attnbench.bench.devices", "attnbench.bench.ray_executor"),
    ("attnbench.bench.spread",),
    ("attnbench.bench.sweep", "attnbench.bench"),
    ("attnbench.analysis", "attnbench.agreement", "attnbench.quality.summary"),
    ("attnbench.tables", "attnbench.plots", "attnbench.roofline", "attnbench.quality.tables"),
    ("attnbench.report", "attnbench.markdown", "attnbench.catalog"),
    ("attnbench.compare_report",),
    ("attnbench.console", "attnbench.cli_help"),
    ("attnbench.cli_boundary",),
    ("attnbench.cli_results",),
    ("attnbench.cli", "attnbench.__main__"),
]
RANK = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}


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


def test_every_module_has_a_declared_layer():
    assert sorted(set(MODULES) - set(RANK)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    upward = [f"line {line}: {target} ({RANK[target]} > {RANK[name]})"
              for target, _, line in imports_of(MODULES[name]) if RANK.get(target, -1) > RANK[name]]
    assert not upward, f"{name} imports upward: {upward}"


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
    source.write_text("def f():\n    from attnbench.cli import app\n    import attnbench.report\n")
    assert [t for t, _, _ in imports_of(source)] == ["attnbench.cli", "attnbench.report"]
