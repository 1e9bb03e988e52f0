"""Starting `up` as a newcomer does: a started `up` says where the console is and which
token opens it.

Each command runs as its own process (`python -m webhook_router.cli`) on a namespace and a
database name of the test's own. A busy port is a socket this test holds open on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from webhook_router.settings import Settings

from ..conftest import drop_namespace, free_port
from ..support.processes import env_of

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


@asynccontextmanager
async def up(settings: Settings, *args: str) -> AsyncIterator[tuple[list[str], Path]]:
    """`up ARGS` with a generated token, its stdout lines read until its closing hint
    ("Stop with Ctrl-C."), its log in a file; stopped with SIGTERM, its namespace dropped."""
    env = env_of(settings)
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
        update={"namespace": f"wrtest_{uuid.uuid4().hex[:8]}", "api_port": free_port()}
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
