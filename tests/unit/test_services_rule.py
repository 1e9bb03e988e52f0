"""The conftest's rule for missing services, run as the suite runs: pytest in a child
process on a test that needs them, pointed at loopback ports where nothing listens. The
shared services are never stopped for this. Without the requirement the tests are skipped
and the summary says why; with WEBHOOK_ROUTER_REQUIRE_SERVICES=1 (as CI sets it) the run
fails naming each missing service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import DEFAULT_DATABASE, REQUIRE_SERVICES, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
NEEDS_SERVICES = "tests/integration/test_store_queries.py"


def run_suite(path: Path, *, require: bool, database: str | None = None) -> tuple[int, str, int]:
    """Run a test file that needs the services with the broker missing (and the database,
    unless given); (exit code, output, the broker's port)."""
    amqp_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_SERVICES}
    env |= {
        "WEBHOOK_ROUTER_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{amqp_port}/",
        "WEBHOOK_ROUTER_DATABASE_URL": database
        or f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        # only what is in `path` can be found: a `docker` there or none at all
        "PATH": str(path),
    }
    if require:
        env[REQUIRE_SERVICES] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_SERVICES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, amqp_port


def test_required_services_that_are_missing_fail_the_run_naming_each(tmp_path: Path) -> None:
    code, output, amqp_port = run_suite(tmp_path, require=True)
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert f"no RabbitMQ at 127.0.0.1:{amqp_port} and no PostgreSQL at 127.0.0.1:" in output
    assert f"{REQUIRE_SERVICES} is set: they are required" in output
    assert " skipped" not in output.splitlines()[-1], output.splitlines()[-1]


def test_a_required_broker_alone_missing_is_named_alone(tmp_path: Path) -> None:
    # the database is the shared one: only a TCP connection is opened to it
    code, output, amqp_port = run_suite(tmp_path, require=True, database=DEFAULT_DATABASE)
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert f"no RabbitMQ at 127.0.0.1:{amqp_port}, and no Docker engine" in output
    assert "PostgreSQL at" not in output


def test_without_the_requirement_they_are_skipped_and_the_summary_says_why(
    tmp_path: Path,
) -> None:
    # a Docker client with no engine behind it: asking it must leave no socket open (the
    # suite turns a ResourceWarning into an error)
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(0o755)
    code, output, amqp_port = run_suite(tmp_path, require=False)
    assert code == pytest.ExitCode.OK, output
    last = output.strip().splitlines()[-1]
    assert " skipped" in last and "passed" not in last and "error" not in last, last
    assert f"tests skipped: no RabbitMQ at 127.0.0.1:{amqp_port}" in output
    assert f"Set {REQUIRE_SERVICES}=1" in output
