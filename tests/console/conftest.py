"""The console served as the API serves it, a real Chromium to drive it, and screenshots.

The console is served by the API role as in production (`Api.app()` mounts it), on
127.0.0.1, beside a router, worker, recorder and engine (`open_stack`), so a job it retries
really goes out again. They run in a namespace of their own (a second stack on the integration
tests' namespace would take their events from them), and only while this package's tests run.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import Services, drop_namespace
from tests.integration.conftest import Stack, open_stack
from webhook_router.api import Api
from webhook_router.settings import Settings

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
TOKEN = "test-token"
ANSWERED_4XX = "Failed to load resource: the server responded with a status of 4"
RUN_URL_TEMPLATE = "http://127.0.0.1:9/engine/runs/{run}"
TRACE_URL_TEMPLATE = "http://127.0.0.1:9/jaeger/trace/{trace}"


@dataclass
class Console:
    base: str
    """`http://127.0.0.1:{port}`; the console is under `/console/`."""
    api: Api
    stack: Stack

    def url(self, path: str = "") -> str:
        return f"{self.base}/console/{path}"


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def console(settings: Settings, services: Services) -> AsyncIterator[Console]:
    own = settings.model_copy(
        update={
            "namespace": f"wrconsole_{uuid.uuid4().hex[:10]}",
            "run_url_template": RUN_URL_TEMPLATE,
            "trace_url_template": TRACE_URL_TEMPLATE,
        }
    )
    try:
        async with open_stack(own) as stack:
            assert stack.api_role is not None
            yield Console(stack.api_url, stack.api_role.api, stack)
    finally:
        await drop_namespace(services.amqp_url, own.namespace, schedule=own.schedule)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) and page; fails on any script or CSP error
    (a page answered 4xx on purpose is not one)."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda msg: _console_problem(msg, problems))
    try:
        yield tab
    finally:
        await context.close()
    assert not problems, problems


def _console_problem(message: Any, problems: list[str]) -> None:
    if message.type == "error" and not message.text.startswith(ANSWERED_4XX):
        problems.append(f"console error: {message.text}")


async def shoot(tab: Any, name: str) -> None:
    """Save the viewport as test-artifacts/console/{name}.png, and into the folder named by
    CONSOLE_SCREENSHOTS (relative to the repository) when it is set."""
    data = await tab.screenshot(type="png")
    folders = [ARTIFACTS]
    if target := os.environ.get("CONSOLE_SCREENSHOTS"):
        folders.append(ROOT / target)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(data)


async def browser_login(tab: Any, console: Console, path: str) -> None:
    """Open `path`, land on the login form, log in, and come back to `path`."""
    await tab.goto(console.url(path))
    assert "/console/login" in tab.url
    await tab.fill("#token", TOKEN)
    await tab.click("button[type=submit]")
    await tab.wait_for_url(re.compile(re.escape(console.url(path.split("?")[0]))))


class Client:
    """A plain HTTP client of the console, with its own cookie jar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        kwargs.setdefault("allow_redirects", False)
        async with self.session.get(self.console.url(path), **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        kwargs.setdefault("allow_redirects", False)
        async with self.session.post(self.console.url(path), **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def login(self, token: str = TOKEN) -> tuple[int, Any]:
        status, html, _ = await self.get("login")
        assert status == 200, html
        nonce = re.search(r'name="nonce" value="([^"]+)"', html)
        assert nonce is not None
        status, _, headers = await self.post(
            "login", data={"token": token, "nonce": nonce.group(1), "next": "/console/"}
        )
        if status == 303:
            status_page, html, _ = await self.get("", allow_redirects=True)
            assert status_page == 200, html
            found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
            assert found is not None
            self.csrf = found.group(1)
        return status, headers
