"""Starting `up` and `engine` as a newcomer does: a busy port stops them in one line with
nothing started, and a started `up` says where the console is and which token opens it.

Each command runs as its own process (`python -m webhook_router.cli`) on a namespace and a
database name of the test's own. A busy port is a socket this test holds open on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from webhook_router.settings import Settings
from webhook_router.trees import RUN_TREE_PREFIX

from ..conftest import Services, drop_namespace, free_port
from ..support.processes import env_of

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test listens on, so no one else can."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(services: Services, settings: Settings) -> AsyncIterator[Settings]:
    """Settings whose namespace and database do not exist yet; whatever a failing test
    made of them is dropped at the end."""
    name = f"wrtest_{uuid.uuid4().hex[:10]}"
    yield settings.model_copy(
        update={
            "namespace": name,
            "database_url": settings.database_url.rsplit("/", 1)[0] + "/" + name,
            "api_port": free_port(),
            "engine_url": f"http://127.0.0.1:{free_port()}",
        }
    )
    await drop_namespace(services.amqp_url, name)
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        *args,
        env=env_of(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def nothing_started(services: Services, settings: Settings) -> None:
    """Neither the database was created nor any queue of the namespace declared."""
    name = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        assert await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None
    finally:
        await admin.close()
    connection = await aio_pika.connect(services.amqp_url)
    async with connection:
        for queue in ("router", "deliver", "record"):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelClosed):
                await channel.declare_queue(f"{settings.namespace}.{queue}", passive=True)


def one_line_naming(err: str, setting: str, port: int) -> None:
    """One line, no traceback, naming the busy port and the setting that chose it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("webhook-router: cannot listen on 127.0.0.1:"), err
    assert f":{port} " in lines[0] and setting in lines[0], err
    assert "Traceback" not in err


async def test_up_with_the_api_port_busy_starts_nothing(
    services: Services, fresh: Settings, busy_port: int
) -> None:
    busy = fresh.model_copy(update={"api_port": busy_port})
    code, out, err = await run(busy, "up")
    assert code != 0
    one_line_naming(err, "WEBHOOK_ROUTER_API_PORT", busy_port)
    assert out == ""
    await nothing_started(services, busy)


async def test_up_demo_with_the_engine_port_busy_starts_nothing(
    services: Services, fresh: Settings, busy_port: int
) -> None:
    busy = fresh.model_copy(update={"engine_url": f"http://127.0.0.1:{busy_port}"})
    code, _, err = await run(busy, "up", "--demo")
    assert code != 0
    one_line_naming(err, "WEBHOOK_ROUTER_ENGINE_URL", busy_port)
    await nothing_started(services, busy)


@pytest.mark.parametrize("role", ["router", "worker", "recorder"])
async def test_a_direct_handoff_without_the_three_roles_starts_nothing(
    services: Services, fresh: Settings, role: str
) -> None:
    """WEBHOOK_ROUTER_DIRECT_HANDOFF in a process of one role: one line saying why, the
    usage exit code, nothing declared or created."""
    code, out, err = await run(fresh.model_copy(update={"direct_handoff": True}), role)
    assert code == 2, err
    assert err.strip().splitlines() == [
        "webhook-router: WEBHOOK_ROUTER_DIRECT_HANDOFF needs the router, the worker and the "
        "recorder in one process"
    ]
    assert out == ""
    await nothing_started(services, fresh)


async def test_up_with_the_health_port_busy_starts_nothing(
    services: Services, fresh: Settings, busy_port: int
) -> None:
    code, _, err = await run(fresh, "up", "--health-port", str(busy_port))
    assert code != 0
    one_line_naming(err, "--health-port", busy_port)
    await nothing_started(services, fresh)


async def test_a_role_with_its_health_port_busy_starts_nothing(
    services: Services, fresh: Settings, busy_port: int
) -> None:
    code, _, err = await run(fresh, "router", "--health-port", str(busy_port))
    assert code != 0
    one_line_naming(err, "--health-port", busy_port)
    await nothing_started(services, fresh)


RUN_WITHOUT_CHECK = """
import sys
from webhook_router import launch
from webhook_router.settings import Settings
try:
    launch.run(Settings(), ["api"], up=True)
except launch.CannotStart as exc:
    print(f"webhook-router: {exc}", file=sys.stderr)
    sys.exit(exc.code)
"""


async def test_a_port_taken_after_the_check_stops_in_one_line(
    fresh: Settings, busy_port: int
) -> None:
    """What a port taken between the check and the listen does: `launch.run` without the
    CLI's check, so the listen itself meets the busy port."""
    busy = fresh.model_copy(update={"api_port": busy_port})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_WITHOUT_CHECK,
        env=env_of(busy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1
    one_line_naming(err.decode(), "WEBHOOK_ROUTER_API_PORT", busy_port)


async def test_one_port_given_twice_is_refused(services: Services, fresh: Settings) -> None:
    code, _, err = await run(fresh, "up", "--health-port", str(fresh.api_port))
    assert code == 2
    assert err.strip() == (
        f"webhook-router: port {fresh.api_port} is given twice, by WEBHOOK_ROUTER_API_PORT "
        "and by --health-port"
    )
    await nothing_started(services, fresh)


async def test_engine_with_its_port_busy_exits_in_one_line(fresh: Settings, busy_port: int) -> None:
    busy = fresh.model_copy(update={"engine_url": f"http://127.0.0.1:{busy_port}"})
    code, out, err = await run(busy, "engine")
    assert code != 0
    one_line_naming(err, "WEBHOOK_ROUTER_ENGINE_URL", busy_port)
    assert out == ""


async def test_engine_on_a_free_port_answers_until_sigterm(fresh: Settings) -> None:
    """The other side of the check: a free port is not refused."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        "engine",
        env=env_of(fresh),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.decode().strip() == f"workflow engine (demo) at {fresh.engine_url}"
        path = RUN_TREE_PREFIX + "/S/G/N"
        async with (
            aiohttp.ClientSession() as http,
            http.post(fresh.engine_url + path, json={}) as response,
        ):
            assert response.status == 200
            assert "Initiated run #1" in (await response.json())["message"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def up(settings: Settings, *args: str) -> AsyncIterator[tuple[list[str], Path]]:
    """`up ARGS` (a token is generated unless `settings` has one), its stdout lines read
    until its closing hint ("Stop with Ctrl-C."), its log in a file; stopped with SIGTERM,
    its namespace dropped."""
    env = env_of(settings)
    if not settings.api_token:
        del env["WEBHOOK_ROUTER_API_TOKEN"]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stderr.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "webhook_router.cli",
                "up",
                *args,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            assert process.stdout is not None
            printed: list[str] = []
            while "Stop with Ctrl-C." not in printed:
                line = await asyncio.wait_for(process.stdout.readline(), 60)
                assert line, "up ended early: " + "".join(printed) + log.read_text()
                printed.append(line.decode().rstrip("\n"))
            yield printed, log
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 60) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await drop_namespace(settings.amqp_url[0], settings.namespace)


def generated_token(printed: list[str]) -> str:
    first = printed[0]
    assert first.startswith("API token (generated, set WEBHOOK_ROUTER_API_TOKEN to keep one): ")
    return first.rsplit(" ", 1)[1]


async def console_opens_with(console: str, token: str) -> None:
    """The console URL printed is the console: its login page, then a page once logged in."""
    async with aiohttp.ClientSession() as http:
        async with http.get(console) as page:
            assert page.status == 200
            assert "token" in (await page.text()).lower()
        api = console.removesuffix("/console/")
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(api + "/app/api/v1/webhookJobs", headers=headers) as answer:
            assert answer.status == 200, await answer.text()


async def test_up_demo_ends_with_the_real_token_and_the_console(
    settings: Settings,
) -> None:
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "default_space": f"demo-{uuid.uuid4().hex[:6]}",
            "engine_url": f"http://127.0.0.1:{free_port()}",
            "api_port": free_port(),
            "api_token": [],
        }
    )
    async with up(own, "--demo") as (printed, log):
        token = generated_token(printed)
        start = printed.index(next(line for line in printed if line.startswith("Demo: ")))
        hint = printed[start:]
        console = f"http://127.0.0.1:{own.api_port}/console/"
        assert f"  console:  {console}   (log in with the API token {token})" in hint
        assert any(line.startswith("  CLI:      ") and "jobs list" in line for line in hint)
        assert (
            f"  API:      curl -H 'Authorization: Bearer {token}' "
            f"http://127.0.0.1:{own.api_port}/app/api/v1/webhookJobs"
        ) in hint
        assert "<token>" not in "\n".join(printed)
        await console_opens_with(console, token)
        # the reloads of webhooks the demo installs are logged at debug, not info
        events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
        assert "api listening" in events
        assert "webhooks loaded" not in events


async def test_up_says_where_the_console_is_once_ready(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "api_port": free_port(),
            "api_token": [],
        }
    )
    async with up(own) as (printed, _):
        token = generated_token(printed)
        console = f"http://127.0.0.1:{own.api_port}/console/"
        assert printed[-4:] == [
            "webhook-router is up.",
            f"  console:  {console}   (log in with the API token {token})",
            f"  API:      http://127.0.0.1:{own.api_port}/app/api/v1/",
            "Stop with Ctrl-C.",
        ]
        await console_opens_with(console, token)


async def test_up_names_a_token_from_the_environment_without_printing_it(
    settings: Settings,
) -> None:
    secret = f"configured-{uuid.uuid4().hex}"
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "api_port": free_port(),
            "api_token": [secret],
        }
    )
    async with up(own) as (printed, _):
        console = f"http://127.0.0.1:{own.api_port}/console/"
        assert printed[0] == "" and printed[1] == "webhook-router is up."
        assert (
            f"  console:  {console}   (log in with a token from WEBHOOK_ROUTER_API_TOKEN)"
            in printed
        )
        assert secret not in "\n".join(printed)
        await console_opens_with(console, secret)
