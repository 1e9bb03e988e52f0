"""The peers of `bench/e2e.py --vs-peers` are well-formed, read without importing them
(FastStream and Celery are in the `bench` extra, which the tests do not install): each
app object the benchmark starts exists, the task it sends is the one the Celery app
defines, each INSERT fills exactly the columns of the peers' table with one value each,
and the peers' frameworks stay out of the runtime and dev dependencies."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers"


def e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_e2e", ROOT / "bench" / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_e2e"] = module
    spec.loader.exec_module(module)
    return module


def tree(name: str) -> ast.Module:
    return ast.parse((PEERS / f"{name}.py").read_text())


def assigned(module: ast.Module) -> dict[str, ast.expr]:
    return {
        target.id: node.value
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def table_columns() -> list[str]:
    schema = (PEERS / "schema.sql").read_text()
    body = schema[schema.index("CREATE TABLE peer_jobs (") :].split(");")[0]
    return [line.split()[0] for line in body.splitlines()[1:] if line.strip()]


def test_the_benchmark_starts_apps_that_exist() -> None:
    commands = e2e().PEERS
    assert set(commands) == {"faststream-2", "faststream-1", "celery"}
    for name, command in commands.items():
        if command[0] == "faststream":
            module, app = command[2].split(":")
        else:
            module, app = command[command.index("-A") + 1], "app"
        assert app in assigned(tree(module)), f"{name}: {module} defines no `{app}`"


def test_the_celery_app_defines_the_task_the_benchmark_sends() -> None:
    names = [
        keyword.value.value
        for node in ast.walk(tree("celery_app"))
        if isinstance(node, ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        for keyword in decorator.keywords
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant)
    ]
    assert names == ["deliver"]
    assert 'send_task("deliver"' in (ROOT / "bench" / "e2e.py").read_text()


@pytest.mark.parametrize(
    ("module", "placeholder"), [("faststream_app", r"\$\d+"), ("celery_app", "%s")]
)
def test_each_insert_fills_the_table_once_per_column(module: str, placeholder: str) -> None:
    parsed = tree(module)
    insert = assigned(parsed)["INSERT"]
    assert isinstance(insert, ast.Constant) and isinstance(insert.value, str)
    columns = re.search(r"peer_jobs \(([^)]*)\)", insert.value)
    assert columns is not None
    named = [c.strip() for c in columns.group(1).split(",")]
    # completed_at is the only column left to its default
    assert named == [c for c in table_columns() if c != "completed_at"]
    values = insert.value[insert.value.index("VALUES") :]
    assert len(re.findall(placeholder, values)) == len(named)
    calls = [
        node
        for node in ast.walk(parsed)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "execute"
    ]
    assert len(calls) == 1
    arguments = calls[0].args[1:]
    if len(arguments) == 1 and isinstance(arguments[0], ast.Tuple):
        arguments = arguments[0].elts
    assert len(arguments) == len(named)


def test_the_peers_frameworks_are_in_the_bench_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=;! ]", r, maxsplit=1)[0].lower() for r in requirements}

    bench = names(project["optional-dependencies"]["bench"])
    elsewhere = names(project["dependencies"]) | names(project["optional-dependencies"]["dev"])
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for path in PEERS.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0
        for alias in node.names
    }
    distribution = {"psycopg_pool": "psycopg-pool"}
    third_party = {distribution.get(m, m) for m in imported} - set(sys.stdlib_module_names)
    assert third_party - elsewhere - {"__future__"} <= bench
    assert {"celery", "faststream", "psycopg", "requests"} <= bench
    assert not bench & elsewhere
