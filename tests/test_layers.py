"""Both packages' layering, enforced: each subpackage imports only the layers below it, the operator
only the worker's shared API and planning, only the operator's adapters import the Kubernetes client,
and no two modules import each other (directly or in a cycle), counting imports inside functions too."""

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
# the operator's layers, lowest first (influence_trace_operator/__init__.py)
OPERATOR_LAYERS = ["rules", "adapters", "reconciler", "runtime"]
CLIENT_LIBRARIES = {"kubernetes", "urllib3"}  # imported by the adapters only


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
    packages = {"influence_trace", "influence_trace_operator"}
    return parts[1] if parts[0] in packages and len(parts) > 1 else None


def libraries_of(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_every_subpackage_is_a_named_layer_with_a_docstring() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS)
    for name in LAYERS:
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())), name
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert loose == TOP, f"modules outside the layers: {loose - TOP}"


def test_every_operator_module_is_in_a_named_layer() -> None:
    packages = {p.parent.name for p in OPERATOR.glob("*/__init__.py")}
    assert packages == set(OPERATOR_LAYERS)
    for name in OPERATOR_LAYERS:
        assert ast.get_docstring(ast.parse((OPERATOR / name / "__init__.py").read_text())), name
    assert {p.stem for p in OPERATOR.glob("*.py")} == {"__init__"}


def client_violation(module: str, libraries: set[str]) -> str | None:
    """Why ``module`` may not import these libraries, or None when it may."""
    used = libraries & CLIENT_LIBRARIES
    if used and not module.startswith("influence_trace_operator.adapters"):
        return f"imports {sorted(used)} outside influence_trace_operator.adapters"
    return None


def test_only_the_adapters_import_the_kubernetes_client() -> None:
    files = [*PACKAGE.rglob("*.py"), *OPERATOR.rglob("*.py")]
    bad = [f"{module_name(f)}: {why}" for f in files
           if (why := client_violation(module_name(f), libraries_of(f)))]
    assert bad == []
    assert client_violation("influence_trace_operator.reconciler.reconcile", {"kubernetes", "logging"})
    assert client_violation("influence_trace_operator.adapters.kube", {"kubernetes"}) is None


def violation(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when it may."""
    mine, theirs = layer(module), layer(imported)
    if module.startswith("influence_trace_operator"):
        if not imported.startswith("influence_trace_operator"):
            allowed = theirs in OPERATOR_MAY_IMPORT
            return None if allowed else f"the operator may use only {sorted(OPERATOR_MAY_IMPORT)}"
        if mine in OPERATOR_LAYERS and theirs in OPERATOR_LAYERS and (
            OPERATOR_LAYERS.index(theirs) > OPERATOR_LAYERS.index(mine)
        ):
            return f"operator layer {mine} is below {theirs}"
        return None
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
    assert violation("influence_trace_operator.rules.jobs", "influence_trace.trace.engine")


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


MAX_FUNCTION_LINES = 40
MAX_RECONCILER_METHODS = 15


def long_functions(path: Path) -> list[str]:
    """Functions of the file longer than MAX_FUNCTION_LINES (decorators and docstring included)."""
    return [f"{path.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def test_operator_functions_are_short_and_the_reconciler_small(tmp_path: Path) -> None:
    assert [f for path in OPERATOR.rglob("*.py") for f in long_functions(path)] == []
    tree = ast.parse((OPERATOR / "reconciler" / "reconcile.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Reconciler"]
    assert len([n for n in cls.body if isinstance(n, ast.FunctionDef)]) <= MAX_RECONCILER_METHODS
    planted = tmp_path / "long.py"
    planted.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions(planted) == ["long.py:f (41 lines)"]
