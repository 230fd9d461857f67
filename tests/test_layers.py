"""The package's layering, enforced: each subpackage imports only the layers below it, the operator
only the shared API and planning, and no two modules import each other (directly or in a cycle),
counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worker" / "influence_trace"
OPERATOR = ROOT / "operator" / "influence_trace_operator"
# lowest first; a module may import its own layer and those before it (influence_trace/__init__.py)
LAYERS = ["api", "planning", "trace", "io", "generate", "report", "run", "demo"]
TOP = {"cli"}  # imports every command lazily
OPERATOR_MAY_IMPORT = {"api", "planning"}


def module_name(path: Path) -> str:
    base = PACKAGE.parent if PACKAGE in path.parents else OPERATOR.parent
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every influence_trace module this file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] in {"influence_trace", "influence_trace_operator"}}


def graph() -> dict[str, set[str]]:
    files = [*PACKAGE.rglob("*.py"), *OPERATOR.rglob("*.py")]
    modules = {module_name(f): f for f in files}
    return {name: {i for i in imports_of(f) if i in modules and i != name} for name, f in modules.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "influence_trace" and len(parts) > 1 else None


def test_every_subpackage_is_a_named_layer_with_a_docstring() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS)
    for name in LAYERS:
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())), name
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert loose == TOP, f"modules outside the layers: {loose - TOP}"


def violation(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when it may."""
    mine, theirs = layer(module), layer(imported)
    if module.startswith("influence_trace_operator"):
        if imported.startswith("influence_trace_operator") or theirs in OPERATOR_MAY_IMPORT:
            return None
        return f"the operator may use only {sorted(OPERATOR_MAY_IMPORT)}"
    if mine in LAYERS and theirs in LAYERS and LAYERS.index(theirs) > LAYERS.index(mine):
        return f"layer {mine} is below {theirs}"
    if mine not in LAYERS and mine not in TOP and module != "influence_trace":
        return "module outside every layer"
    return None


def test_imports_go_down_the_layers() -> None:
    bad = [f"{m} imports {i}: {why}" for m, deps in graph().items() for i in sorted(deps)
           if (why := violation(m, i))]
    assert bad == []
    assert violation("influence_trace.trace.capture", "influence_trace.run.pipeline")  # it can fail
    assert violation("influence_trace_operator.jobs", "influence_trace.trace.engine")


def test_no_import_cycles() -> None:
    deps = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in deps[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in deps:
        if name not in index:
            visit(name)
    assert cycles == []


def test_the_check_sees_a_cycle_and_a_wrong_way_import(tmp_path: Path) -> None:
    """The checker itself can fail: a planted upward import is found in the source it parses."""
    planted = tmp_path / "m.py"
    planted.write_text("def f():\n    from influence_trace.run.pipeline import run_pipeline\n")
    assert "influence_trace.run.pipeline" in imports_of(planted)
