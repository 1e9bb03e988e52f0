"""Messages are bounded by bytes: a ~0.95 MB event matching 150 webhooks is delivered and
every job recorded, in messages the broker accepts; an event whose deliveries cannot fit in
a message is dead-lettered by the router with the reason, never retried for ever."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.catalogue import routing_key
from webhook_router.runtime import serve

from ..conftest import eventually, free_port
from .conftest import Stack
from .test_delivery import find_dead, receiver, user_created

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


async def test_a_large_event_for_150_webhooks_is_delivered_and_recorded(stack: Stack) -> None:
    received: list[int] = []

    async def count(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.json_response({"message": "Initiated run #5."})

    space = stack.space()
    event = user_created(space)
    event["user"]["notes"] = "n" * 950_000
    size = len(orjson.dumps(event))
    async with receiver(count) as url:
        for n in range(150):
            await stack.store.insert_webhook(
                space=space,
                kapp=None,
                name=f"hook {n:03d}",
                type="User",
                event="Created",
                filter=None,
                url=url + f"/{n}",
                auth_strategy=None,
            )
        await stack.synced()
        await stack.publisher.publish(event)
        rows = await stack.settled(space, 150, timeout=90)
    assert len(rows) == 150
    assert {r["status"] for r in rows} == {"Complete"}
    assert len(received) == 150 and min(received) >= 950_000
    # what was sent is recorded whole
    assert all(len(r["request_content"]) >= size - 100 for r in rows)


async def test_an_event_too_large_for_a_message_is_dead_lettered_with_the_reason(
    stack: Stack,
) -> None:
    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    assert stack.router.topology is not None
    space = stack.space()
    limit = stack.settings.max_message_bytes
    event = user_created(space)
    event["event"]["id"] = f"large-{space}"
    event["user"]["notes"] = "n" * (limit + 1000)
    async with receiver(fine) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/h")
        await broker.publish(
            stack.router.topology.events,
            orjson.dumps(event),
            routing_key("User", "Created"),
            message_id=f"large-{space}",
        )
        dead = await find_dead(stack, f"large-{space}")
    assert dead is not None, "the event too large to deliver was not dead-lettered"
    assert dead.headers["x-failed-in"] == "router"
    assert "too large to deliver" in str(dead.headers["x-reason"])
    assert str(limit) in str(dead.headers["x-reason"])

    async def no_job() -> bool:
        return not await stack.jobs(space)

    assert await eventually(no_job, timeout=1)


async def test_an_event_at_the_budget_with_a_large_answer_is_recorded_whole(
    stack: Stack,
) -> None:
    """An event just under the budget fits in its delivery and its Queued record, but its
    outcome with a 60 kB answer would not: the outcome goes without the request body, and
    the job is recorded Complete with the request (from the Queued record) and the answer."""

    async def large_answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="a" * 60_000)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/h", large_answer)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)
    space = stack.space()
    limit = stack.settings.max_message_bytes
    event = user_created(space)
    event["user"]["notes"] = "n" * (limit - 8_000)
    try:
        await stack.webhook(space, type="User", event="Created", url=f"http://127.0.0.1:{port}/h")
        await stack.publisher.publish(event)
        [job] = await stack.settled(space, 1, timeout=60)
    finally:
        await runner.cleanup()
    assert job["status"] == "Complete"
    assert job["response_content"] == "a" * 60_000
    assert orjson.loads(job["request_content"])["user"]["notes"] == event["user"]["notes"]
