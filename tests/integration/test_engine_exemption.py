"""The engine exemption end to end, loopback only: with no network allowed, the engine on
127.0.0.1:P gets the deliveries of relative webhook URLs, and an absolute URL to 127.0.0.1 is
refused whatever its port, the engine's own included."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from webhook_router.settings import Settings
from webhook_router.trees import RUN_TREE_PREFIX

from ..conftest import drop_namespace
from .conftest import Stack, answer_app, event_for, open_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@asynccontextmanager
async def guarded_stack(settings: Settings) -> AsyncIterator[Stack]:
    """A stack of its own namespace whose address guard lets no loopback network through."""
    own = settings.model_copy(
        update={"namespace": f"wrtest_{uuid.uuid4().hex[:8]}", "allowed_networks": []}
    )
    try:
        async with open_stack(own, ("recorder", "router", "worker")) as running:
            yield running
    finally:
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.schedule)


def user_created(space: str) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": "jane"})


async def test_only_relative_urls_reach_the_engine_and_absolute_loopback_is_refused(
    settings: Settings,
) -> None:
    hits: list[str] = []

    async def other(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    runner, other_url = await answer_app(other)
    try:
        async with guarded_stack(settings) as stack:
            engine_url = stack.settings.engine_url  # http://127.0.0.1:P
            space = stack.space()
            to_tree = RUN_TREE_PREFIX + "/Src/Users/${user('username')}"
            relative = await stack.webhook(space, type="User", event="Created", url=to_tree)
            elsewhere = await stack.webhook(
                space, type="User", event="Created", url=other_url + "/hook"
            )
            engine_absolute = await stack.webhook(
                space, type="User", event="Created", url=engine_url + "/absolute"
            )
            await stack.publisher.publish(user_created(space))
            jobs = {str(j["webhook_id"]): j for j in await stack.settled(space, 3)}
            received = [r.path for r in stack.received_for(space)]
    finally:
        await runner.cleanup()
    # the relative URL was delivered to the engine
    assert jobs[relative.id]["status"] == "Complete", jobs[relative.id]["summary"]
    assert received == [RUN_TREE_PREFIX + "/Src/Users/jane"]
    # an absolute URL to another port of the engine's host never left the worker
    assert jobs[elsewhere.id]["status"] == "Failed"
    assert "loopback" in jobs[elsewhere.id]["summary"]
    assert hits == []
    # nor did one naming the engine's own scheme, host and port
    assert jobs[engine_absolute.id]["status"] == "Failed"
    assert "loopback" in jobs[engine_absolute.id]["summary"]
