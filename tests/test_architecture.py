"""The package's shape, held by its source: short functions, small modules, imports that flow one
way with no circle, no module reaching into another's private names, no shim modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "manifold_jax"
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 500
LOW_LAYERS = ("manifold_jax.models", "manifold_jax.data")
"""Packages that never import the exploration, the studies, the reports or the CLI."""
HIGH_LAYERS = ("manifold_jax.explore", "manifold_jax.study", "manifold_jax.report", "manifold_jax.cli",
               "manifold_jax.geometry", "manifold_jax.baseline", "manifold_jax.serve")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            continue
        yield child
        yield from _walk_runtime(child)


def _resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` in module ``name``."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _owner(target: str) -> str | None:
    """The package module that ``target`` (a module or a name inside one) belongs to."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports(name: str) -> set[str]:
    """The package modules that module ``name`` imports at run time (top level or inside functions)."""
    found: set[str] = set()
    for node in _walk_runtime(_tree(name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target)
            if owner is not None and owner != name:
                found.add(owner)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        here = todo.pop()
        for nxt in GRAPH[here]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_the_walker_sees_imports_and_circles() -> None:
    # the checks below are only as good as the import graph: it must see what the package imports
    assert len(MODULES) > 40
    assert any(m.startswith("manifold_jax.explore.") for m in GRAPH["manifold_jax.explore"])
    cli = [n for n in MODULES if n.startswith("manifold_jax.cli")]
    for below in ("manifold_jax.explore", "manifold_jax.study", "manifold_jax.models"):
        assert any(_reaches(c, below) for c in cli), f"the CLI does not reach {below}"


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(_tree(name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_module_is_longer_than_its_limit() -> None:
    big = {str(p.relative_to(PACKAGE.parent)): n for p in MODULES.values()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_import_circle_between_modules() -> None:
    # a package's __init__ re-exports its modules, which import their siblings through it: an
    # edge into a package's own __init__ from inside the package is the re-export, not a circle
    circles = []
    for name in MODULES:
        if _is_package(name):
            continue
        for nxt in GRAPH[name]:
            if _is_package(nxt) and name.startswith(nxt + "."):
                continue
            if not _is_package(nxt) and _reaches(nxt, name):
                circles.append(f"{name} -> {nxt} -> ... -> {name}")
    assert not circles, circles


def test_no_module_imports_another_modules_private_names() -> None:
    reaching = []
    for name in MODULES:
        for node in _walk_runtime(_tree(name)):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(name, node)
                if not base.startswith("manifold_jax"):
                    continue
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and base != name:
                    reaching.append(f"{name}: from {base} import {', '.join(private)}")
    assert not reaching, reaching


def test_models_and_data_never_import_the_exploration_studies_or_reports() -> None:
    upward = [f"{name} imports {m}" for name in MODULES if name.startswith(LOW_LAYERS)
              for m in GRAPH[name] if m.startswith(HIGH_LAYERS)]
    assert not upward, upward


@pytest.mark.parametrize("name", [n for n in MODULES if not _is_package(n) and not n.endswith("__main__")])
def test_no_module_is_only_a_shim(name: str) -> None:
    # a shim re-exports another module under an old name; every module must define something
    body = [n for n in _tree(name).body if not isinstance(n, (ast.Import, ast.ImportFrom))
            and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets))]
    assert body, f"{name} only re-exports other modules"
