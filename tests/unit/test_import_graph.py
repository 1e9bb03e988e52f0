"""The package's import graph: no circle, and nothing below the front ends imports a front
end or a role."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "webhook_router"
FRONT_ENDS = {"api", "console", "cli", "demo"}
ROLES = {"router", "worker", "recorder"}
WIRING = {"runtime", "roles", "handoff", "launch", "testing", "demo", "api", "cli"}
"""Modules that run or stand in for roles, and so may name them."""


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package's modules, at any depth of the file."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_of(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("webhook_router"):
                    base = node.module.removeprefix("webhook_router").lstrip(".")
                    found |= {f"{base}.{a.name}".strip(".") for a in node.names}
                    found.add(base)
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.removeprefix("webhook_router.")
                    for a in node.names
                    if a.name.startswith("webhook_router.")
                }
        graph[name] = found
    return {m: {i for i in deps if i in graph and i != m} for m, deps in graph.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = imports()
    assert "admin" in graph and "console.app" in graph

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += graph[module]
        return seen

    circles = sorted(m for m in graph if m in reach(m) and top(m) != "")
    assert circles == [], f"modules on an import circle: {circles}"


def test_nothing_below_the_front_ends_imports_a_front_end_or_a_role() -> None:
    graph = imports()
    wrong = {
        (module, dep)
        for module, deps in graph.items()
        for dep in deps
        if top(module) not in WIRING | FRONT_ENDS | ROLES
        and top(dep) in FRONT_ENDS | ROLES
        and not (top(module) == "console" and top(dep) == "console")
    }
    assert wrong == set()
