"""The package's layers: `core` at the bottom, a package per stage, the pipeline and CLI on top.

Walks every import statement in `cvo_spark/` (module level and inside functions) and fails
on one that reaches up a layer, or on a circular import between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cvo_spark"

#: Layer of each top-level part of the package; an import may go to the same package or to
#: a strictly lower layer. Stage packages of one layer do not import each other.
LAYERS: dict[str, int] = {
    "core": 0,
    "synth": 1,
    "ingest": 1,
    "features": 1,
    "segments": 2,
    "models": 2,
    "offers": 3,
    "measure": 3,
    "policy": 3,
    "stream": 4,
    "report": 4,
    "pipeline": 5,
    "cli": 6,
    "__init__": 0,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every `cvo_spark.*` module this file imports (from-imports resolved to modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cvo_spark"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cvo_spark"):
            for alias in node.names:  # `from cvo_spark.models import clv` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _graph()}
    assert parts <= set(LAYERS), f"no layer for {sorted(parts - set(LAYERS))}: add it to LAYERS"
    # the stages of DESIGN each have a package
    for stage in (
        "ingest",
        "features",
        "segments",
        "models",
        "offers",
        "stream",
        "measure",
        "report",
        "synth",
    ):
        assert (PACKAGE / stage / "__init__.py").exists(), stage


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, imports in graph.items():
        src = _part(module)
        for target in imports:
            dst = _part(target)
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                upward.append(f"{module} -> {target}")
    return sorted(upward)


def circular_imports(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[str] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target == module or target not in graph:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_reaches_up_a_layer():
    upward = upward_imports(_graph())
    assert not upward, "imports up (or sideways) a layer:\n" + "\n".join(upward)


def test_no_circular_imports():
    cycles = circular_imports(_graph())
    assert not cycles, "circular imports:\n" + "\n".join(cycles)


def test_the_walker_reports_planted_upward_and_circular_imports():
    """The checks above can fail: imports planted into the real graph are reported."""
    graph = _graph()
    assert "cvo_spark.offers.stage" not in graph["cvo_spark.core.io"]
    graph["cvo_spark.core.io"] = graph["cvo_spark.core.io"] | {"cvo_spark.offers.stage"}
    graph["cvo_spark.segments.b2b"] = graph["cvo_spark.segments.b2b"] | {"cvo_spark.models.labels"}
    assert upward_imports(graph) == [
        "cvo_spark.core.io -> cvo_spark.offers.stage",
        "cvo_spark.segments.b2b -> cvo_spark.models.labels",
    ]
    # offers.stage imports core.io, which now imports offers.stage: a cycle
    assert any("cvo_spark.core.io" in c and "cvo_spark.offers.stage" in c for c in circular_imports(graph))
    # and a file's imports are read: the offers stage imports the engine
    assert "cvo_spark.offers.engine" in _imports(PACKAGE / "offers" / "stage.py")
