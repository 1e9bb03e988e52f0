"""Services for the tests: the given or local RabbitMQ and PostgreSQL, else containers.

Each test session gets its own database and its own namespace of exchanges and queues,
made here and dropped at the end, so the suite never touches a running deployment.

Without the services (and without a Docker engine for containers) the tests that need them
are skipped, and the summary says so: a laptop can still run the rest. Where the services
are required (CI sets WEBHOOK_ROUTER_REQUIRE_SERVICES=1) a missing one fails the run, naming
it. Every test that needs them carries the `services` marker, so `-m "not services"` runs
the others alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from webhook_router import store
from webhook_router.settings import Settings

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"


REQUIRE_SERVICES = "WEBHOOK_ROUTER_REQUIRE_SERVICES"


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def missing_services(amqp: str, database: str) -> list[str]:
    """The services that do not answer, each named with its address."""
    missing = []
    if not reachable(amqp):
        missing.append(f"RabbitMQ at {address(amqp)}")
    if not reachable(database):
        missing.append(f"PostgreSQL at {address(database)}")
    return missing


def address(url: str) -> str:
    """`host:port` of a URL, without the credentials it may carry."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def services_required() -> bool:
    return os.environ.get(REQUIRE_SERVICES, "").strip().lower() in {"1", "true", "yes"}


def docker_available() -> bool:
    """Whether a Docker engine answers its ping (a client alone is not enough). Asked on a
    socket of our own, closed whatever happens: the suite makes a leaked one an error."""
    if shutil.which("docker") is None:
        return False
    host = urlsplit(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        if host.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.connect(host.path)
            except OSError:
                sock.close()
                raise
        elif host.scheme in {"tcp", "http"}:
            sock = socket.create_connection((host.hostname or "127.0.0.1", host.port or 2375), 2)
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(64)
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer


@dataclass(frozen=True)
class Services:
    amqp_url: str
    admin_database_url: str


SKIPPED_FOR: list[str] = []
"""Why the tests that need services were skipped, for the run's summary."""


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The broker and database to test against; when they are missing and no Docker engine
    can start them, a skip that says why, or a failure where they are required."""
    amqp = os.environ.get("WEBHOOK_ROUTER_AMQP_URL", DEFAULT_AMQP).split(",")[0]
    database = os.environ.get("WEBHOOK_ROUTER_DATABASE_URL", DEFAULT_DATABASE)
    missing = missing_services(amqp, database)
    if not missing:
        yield Services(amqp, database)
        return
    if not docker_available():
        reason = f"no {' and no '.join(missing)}, and no Docker engine for containers"
        if services_required():
            pytest.fail(f"{reason} ({REQUIRE_SERVICES} is set: they are required)", pytrace=False)
        SKIPPED_FOR.append(reason)
        pytest.skip(reason)
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with ExitStack() as stack:
        rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
        pg = stack.enter_context(PostgresContainer("postgres:16", driver=None))
        amqp = (
            f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/"
        )
        yield Services(amqp, pg.get_connection_url())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the services, directly or through another fixture."""
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIPPED_FOR:
        skipped = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(
            f"{skipped} tests skipped: {SKIPPED_FOR[0]}. Set {REQUIRE_SERVICES}=1 to make "
            "missing services fail the run (CI does).",
            yellow=True,
        )


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest_asyncio.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """A database of this test session's own, migrated; dropped at the end."""
    name = f"webhook_router_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(services.admin_database_url, name)
    pool = await store.connect(url)
    try:
        await store.migrate(pool)
    finally:
        await pool.close()
    yield url
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def drop_namespace(
    amqp_url: str,
    name: str,
    shards: int = 1,
    schedule: Sequence[float] | None = None,
    ordered_shards: int = 16,
) -> None:
    """Delete every queue and exchange of a namespace, its ordered path's too; `schedule`
    names its retry queues (the suite's own schedule when not given), besides the rate
    limit's (`endpoint_wait`, which the suite leaves at its default)."""
    import aio_pika

    from webhook_router.settings import Settings
    from webhook_router.topology import Names

    names = Names(name, shards, ordered_shards)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queues = [*names.work_queues(), names.dead, names.ordered, *names.ordered_queues()]
        queues += [names.retry_queue(s) for s in (TEST_SCHEDULE if schedule is None else schedule)]
        queues.append(names.retry_queue(Settings.model_fields["endpoint_wait"].default))
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in (*names.exchanges(), names.ordered_deliveries):
            await channel.exchange_delete(exchange)


@pytest_asyncio.fixture(scope="session")
async def namespace(services: Services) -> AsyncIterator[str]:
    """A namespace of this test session's own; its queues and exchanges are deleted."""
    name = f"wrtest_{uuid.uuid4().hex[:10]}"
    yield name
    await drop_namespace(services.amqp_url, name)


TEST_SCHEDULE = (0.2, 0.4, 0.6)


@pytest.fixture(scope="session")
def settings(services: Services, database_url: str, namespace: str) -> Settings:
    return Settings(
        amqp_url=[services.amqp_url],
        database_url=database_url,
        namespace=namespace,
        engine_url="http://127.0.0.1:1",
        retry_schedule=",".join(f"{round(s * 1000)}ms" for s in TEST_SCHEDULE),
        api_token=["test-token"],
        allowed_networks=["127.0.0.0/8", "::1/128"],
        default_space="acme",
        recorder_batch_wait=0.01,
        webhook_refresh=1.0,
        request_timeout=5.0,
        connect_timeout=2.0,
        drain_timeout=5.0,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check` (async, returning a value) until it is truthy; its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)
