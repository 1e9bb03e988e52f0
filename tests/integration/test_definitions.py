"""Bounded definitions over the live API and CLI: /healthz answers while maximal webhooks
are created, and the CLI refuses an over-long filter naming it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from webhook_router.expressions import FILTER_MAX

from .conftest import Stack
from .test_cli import cli

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]


def maximal_filter(n: int) -> str:
    """A filter of FILTER_MAX characters, among the slowest shapes to compile."""
    unit = f"values('a{n}')=='b'||"
    count = (FILTER_MAX - 4) // len(unit)
    text = unit * count + "true"
    return text + " " * (FILTER_MAX - len(text))


async def test_healthz_answers_while_maximal_webhooks_are_created(stack: Stack) -> None:
    """Compiling a definition is bounded, so creating the longest webhooks, one after another
    and then twenty at once, leaves the event loop free: /healthz keeps answering while they
    are in flight. (How long it waits is printed, not asserted: speed is for benchmarks.)"""
    space = stack.space()
    headers = {"Authorization": "Bearer test-token"}
    creates_done = asyncio.Event()
    during: list[int] = []
    waits: list[float] = []

    async def create(session: aiohttp.ClientSession, n: int) -> int:
        body = {
            "name": f"long-{n}",
            "type": "User",
            "event": "Created",
            "filter": maximal_filter(n),
            "url": "/x",
        }
        url = f"{stack.api_url}/app/api/v1/spaces/{space}/webhooks"
        async with session.post(url, json=body, headers=headers) as response:
            return response.status

    async def poll(session: aiohttp.ClientSession) -> None:
        while not creates_done.is_set():
            started = time.perf_counter()
            async with session.get(stack.api_url + "/healthz") as response:
                during.append(response.status)
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    async with aiohttp.ClientSession() as session:
        poller = asyncio.create_task(poll(session))
        await asyncio.sleep(0.05)  # the poller is answered before the creates start
        before = len(during)
        statuses = [await create(session, n) for n in range(20)]
        one_by_one = len(waits)
        statuses += await asyncio.gather(*(create(session, n) for n in range(20, 40)))
        answered_during = len(during) - before
        creates_done.set()
        await poller
    assert statuses == [201] * 40
    assert set(during) == {200}
    assert answered_during > 0, "no /healthz answer while the creates were in flight"
    print(
        f"/healthz: {answered_during} answers during 40 maximal creates; slowest "
        f"{max(waits[before:one_by_one], default=0):.3f} s beside one create at a time, "
        f"{max(waits[one_by_one:], default=0):.3f} s beside twenty at once"
    )
    stored = await stack.store.scope_webhooks(space, None)
    assert len(stored) == 40 and all(len(w.filter or "") == FILTER_MAX for w in stored)


async def test_the_cli_refuses_an_over_long_filter_naming_it(stack: Stack) -> None:
    space = stack.space()
    code, _, err = await cli(
        stack.settings,
        "webhooks",
        "create",
        "--space",
        space,
        "--name",
        "long",
        "--type",
        "User",
        "--event",
        "Created",
        "--url",
        "/x",
        "--filter",
        "true" + " " * FILTER_MAX,
    )
    assert code == 2
    assert f"filter: at position {FILTER_MAX}: expected a filter of at most {FILTER_MAX}" in err
    assert await stack.store.scope_webhooks(space, None) == []
