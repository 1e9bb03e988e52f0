"""`docker compose up` on a newcomer's machine, checked without a Docker engine.

The Compose file is validated against the Compose specification in test_manifests.py; here
it is read for what a newcomer meets: the host ports it takes (only the API's, on loopback,
so a machine that already runs PostgreSQL or RabbitMQ can run it), a health check on every
long-running service that matches the port its command serves, `demo` waiting for all of
them, and a closing hint that works from the host. The `observability` profile adds only
Prometheus, Grafana and Jaeger, each on its own loopback port with a health check; tracing
stays off unless OTEL_TRACES_EXPORTER is set where compose runs. The health probe
the checks run is run here against real servers on 127.0.0.1; the build context is computed
from `.dockerignore` by docker-py's own matcher (the one `docker build` through the SDK
uses).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from docker.utils.build import exclude_paths  # type: ignore[import-untyped]

from webhook_router import tracing
from webhook_router.cli import parser
from webhook_router.runtime import health_app, serve
from webhook_router.settings import Settings

from ..conftest import free_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "deploy" / "docker" / "probe.py"
PROBE_IN_IMAGE = "webhook-router-probe"
ROLES = ("router", "worker-1", "worker-2", "recorder")
ONE_SHOTS = ("migrate", "demo")
HOST_CLI = "docker compose exec api webhook-router"


OBSERVABILITY = {"prometheus": 9090, "grafana": 3000, "jaeger": 16686}


def compose(profile: str | None = None) -> dict[str, Any]:
    """The services `docker compose up` starts, or those only `--profile profile` adds."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    wanted = [profile] if profile else []
    return {name: s for name, s in services.items() if s.get("profiles", []) == wanted}


def long_running() -> dict[str, Any]:
    return {name: s for name, s in compose().items() if name not in ONE_SHOTS}


def test_only_the_api_is_published_and_only_on_loopback() -> None:
    published = {name: s["ports"] for name, s in compose().items() if s.get("ports")}
    assert published == {"api": [f"127.0.0.1:8080:{Settings().api_port}"]}
    assert "postgres" in compose() and "rabbitmq" in compose()


def test_the_observability_profile_publishes_its_uis_on_loopback_only() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    profiled = {name for name, s in services.items() if s.get("profiles")}
    assert profiled == set(OBSERVABILITY), "plain `docker compose up` stays as it was"
    observability = compose("observability")
    for name, port in OBSERVABILITY.items():
        assert observability[name]["ports"] == [f"127.0.0.1:{port}:{port}"], name
        assert not observability[name]["image"].startswith("webhook-router"), name


def test_the_observability_services_check_their_own_readiness() -> None:
    paths = {"prometheus": "/-/ready", "grafana": "/api/health", "jaeger": "/"}
    for name, port in OBSERVABILITY.items():
        check = compose("observability")[name]["healthcheck"]
        assert not check.get("disable", False)
        assert check["test"] == [
            "CMD",
            "wget",
            "-q",
            "--spider",
            f"http://127.0.0.1:{port}{paths[name]}",
        ]
    assert compose("observability")["grafana"]["depends_on"] == {
        "prometheus": {"condition": "service_healthy"}
    }


def test_the_observability_services_mount_files_that_exist() -> None:
    for name in OBSERVABILITY:
        for volume in compose("observability")[name].get("volumes", []):
            source, _, mode = volume.split(":")
            assert mode == "ro", volume
            assert (ROOT / source).exists(), volume
            assert source.startswith("./deploy/"), volume


def _probe_target(service: dict[str, Any]) -> list[str]:
    check = service["healthcheck"]
    assert not check.get("disable", False)
    command, probe, *target = check["test"]
    if probe != PROBE_IN_IMAGE:  # the services' own images carry their own check
        return []
    assert command == "CMD"
    return list(target)


def test_every_long_running_service_has_a_health_check_on_what_it_serves() -> None:
    services = long_running()
    assert set(services) == {*ROLES, "api", "engine", "postgres", "rabbitmq"}
    for name in ROLES:
        command = services[name]["command"]
        port = int(command[command.index("--health-port") + 1])
        assert _probe_target(services[name]) == [f"http://127.0.0.1:{port}/readyz"], name
    api = services["api"]
    assert api["command"] == ["api"]
    assert api["environment"]["WEBHOOK_ROUTER_API_HOST"] == "0.0.0.0"
    assert _probe_target(api) == [f"http://127.0.0.1:{Settings().api_port}/readyz"]
    engine = services["engine"]
    assert engine["command"] == ["engine"]
    engine_port = urlsplit(engine["environment"]["WEBHOOK_ROUTER_ENGINE_URL"]).port
    assert _probe_target(engine) == ["--listening", f"127.0.0.1:{engine_port}"]
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["rabbitmq"]["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]


def test_the_one_shot_commands_turn_the_image_health_check_off() -> None:
    for name in ONE_SHOTS:
        assert compose()[name]["healthcheck"] == {"disable": True}, name


def test_demo_waits_until_every_role_the_api_and_the_engine_are_healthy() -> None:
    demo = compose()["demo"]
    assert demo["depends_on"] == {
        name: {"condition": "service_healthy"} for name in (*ROLES, "api", "engine")
    }
    assert demo["restart"] == "no"


def test_the_demo_hint_runs_the_cli_in_the_api_container_from_the_host() -> None:
    services = compose()
    args = parser().parse_args(services["demo"]["command"])
    assert args.command == "demo"
    assert args.cli == HOST_CLI
    # `docker compose exec api webhook-router ...`: the api service runs this image, whose
    # entrypoint is webhook-router, with the same database and broker as the demo
    exec_, service, program = shlex.split(HOST_CLI)[2:]
    assert exec_ == "exec" and program == "webhook-router"
    api, demo = services[service], services["demo"]
    assert api["image"] == demo["image"] == "webhook-router:local"
    for setting in ("WEBHOOK_ROUTER_DATABASE_URL", "WEBHOOK_ROUTER_AMQP_URL"):
        assert api["environment"][setting] == demo["environment"][setting]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["webhook-router"]' in dockerfile


def test_the_image_carries_the_probe_and_checks_its_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"COPY deploy/docker/probe.py /usr/local/bin/{PROBE_IN_IMAGE}" in dockerfile
    healthcheck = re.search(r"^HEALTHCHECK (.+?)\n(?=\S)", dockerfile, re.M | re.S)
    assert healthcheck is not None
    assert f'CMD ["{PROBE_IN_IMAGE}", "http://127.0.0.1:8090/healthz"]' in healthcheck.group(1)
    assert re.search(r"^USER router$", dockerfile, re.M)


def build_context(root: Path) -> set[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return set(exclude_paths(str(root), patterns, dockerfile="Dockerfile"))


def test_the_build_context_carries_only_what_the_image_needs(tmp_path: Path) -> None:
    """On a tree like a developer's (a venv, git, caches, egg-info), the context is
    what the Dockerfile copies and nothing else."""
    for path in (
        ".venv/lib/python3.11/site-packages/big.py",
        ".git/objects/ab/cdef",
        ".mypy_cache/3.11/cache.json",
        ".pytest_cache/v/lastfailed",
        ".ruff_cache/0.5/x",
        "src/webhook_router/__pycache__/cli.cpython-311.pyc",
        "src/webhook_router.egg-info/PKG-INFO",
        "tests/test_x.py",
        "test-artifacts/trace.zip",
        "pyproject.toml",
        "README.md",
        "Dockerfile",
        "src/webhook_router/cli.py",
        "src/webhook_router/sql/queries.sql",
        "deploy/docker/probe.py",
        "deploy/kubernetes/base/api.yaml",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    files = {f for f in build_context(tmp_path) if (tmp_path / f).is_file()}
    assert files == {
        "Dockerfile",
        "pyproject.toml",
        "README.md",
        "src/webhook_router/cli.py",
        "src/webhook_router/sql/queries.sql",
        "deploy/docker/probe.py",
    }


def test_the_real_build_context_has_every_file_the_dockerfile_copies() -> None:
    context = build_context(ROOT)
    copied = re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [s for line in copied for s in line.split()]
    assert sources == ["pyproject.toml", "README.md", "src", "deploy/docker/probe.py"]
    assert set(sources) <= context
    assert "src/webhook_router/sql/queries.sql" in context
    assert not [f for f in context if f.startswith((".venv", ".git/")) or "__pycache__" in f]


async def _probe(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), *args, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, err.decode()


class _Role:
    name = "router"

    def __init__(self) -> None:
        self.connected = False

    def ready(self) -> bool:
        return self.connected


@pytest.mark.asyncio(loop_scope="session")
async def test_the_probe_follows_a_role_from_unready_to_ready_and_gone() -> None:
    """The real health server of a role process (`health_app`); the role object stands in
    for a role's connection state only."""
    role = _Role()
    port = free_port()
    runner = await serve(health_app([role]), "127.0.0.1", port)  # type: ignore[list-item]
    try:
        code, err = await _probe(f"http://127.0.0.1:{port}/readyz")
        assert (code, err.strip()) == (
            1,
            f"unhealthy: http://127.0.0.1:{port}/readyz: 503 Service Unavailable",
        )
        assert await _probe(f"http://127.0.0.1:{port}/healthz") == (0, "")
        role.connected = True
        assert await _probe(f"http://127.0.0.1:{port}/readyz") == (0, "")
        assert await _probe("--listening", f"127.0.0.1:{port}") == (0, "")
    finally:
        await runner.cleanup()
    code, err = await _probe(f"http://127.0.0.1:{port}/readyz")
    assert code == 1 and "unhealthy" in err
    code, err = await _probe("--listening", f"127.0.0.1:{port}")
    assert code == 1 and "refused" in err.lower()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_probe_sees_the_demo_engine_listening() -> None:
    from webhook_router.engine import Engine

    port = free_port()
    runner = await serve(Engine().app(), "127.0.0.1", port)
    try:
        assert await _probe("--listening", f"127.0.0.1:{port}") == (0, "")
    finally:
        await runner.cleanup()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_probe_refuses_a_bad_call() -> None:
    code, err = await _probe()
    assert code == 1 and "usage:" in err


def test_tracing_is_off_unless_asked_for_and_then_goes_to_the_profiles_jaeger() -> None:
    checked = set()
    for name, service in long_running().items():
        env = service.get("environment", {})
        if not name.startswith(("router", "worker", "recorder", "api")):
            continue
        checked.add(name)
        assert env["OTEL_TRACES_EXPORTER"] == "${OTEL_TRACES_EXPORTER:-none}", name
        host = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname
        assert host in compose("observability"), name
        assert "{trace}" in env["WEBHOOK_ROUTER_TRACE_URL_TEMPLATE"], name
        assert not tracing.wanted({**env, "OTEL_TRACES_EXPORTER": "none"}), "off by default"
        assert tracing.wanted({**env, "OTEL_TRACES_EXPORTER": "otlp"})
    assert checked == {*ROLES, "api"}
