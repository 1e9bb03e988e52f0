"""Events published without `event.id` get an id derived from routing key and body, so the
same message seen twice (a redelivery, or the same body published again, each time with a
new random AMQP message id as aio-pika gives) is the same event: one job per webhook, POSTed
under the same `webhook-id` with the same body, filled timestamp included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.catalogue import routing_key
from webhook_router.events import derived_id

from ..conftest import eventually
from .conftest import Stack
from .test_delivery import receiver, user_created

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def publish_raw(stack: Stack, body: bytes, **properties: Any) -> None:
    assert stack.router.topology is not None
    exchange = stack.router.topology.events
    message = broker.message(body, message_id=properties.pop("message_id", None))
    for name, value in properties.items():
        setattr(message, name, value)
    await exchange.publish(message, routing_key=routing_key("User", "Created"), mandatory=True)


@pytest.mark.parametrize("with_timestamp", [True, False], ids=["timestamped", "no timestamp"])
@pytest.mark.parametrize("back_to_back", [False, True], ids=["after", "back to back"])
async def test_the_same_body_published_twice_without_id_makes_one_job_per_webhook(
    stack: Stack, with_timestamp: bool, back_to_back: bool
) -> None:
    """Back to back, the second copy is routed before the first one's jobs are recorded: it
    must still get the first one's time (the job log keys a job by id and event time)."""
    posts: list[tuple[str, bytes]] = []

    async def keep(request: web.Request) -> web.Response:
        posts.append((request.headers["webhook-id"], await request.read()))
        return web.json_response({"message": "ok"})

    space = stack.space()
    event = user_created(space)
    if with_timestamp:
        event["event"]["timestamp"] = "2026-11-20T10:00:00.000Z"
    body = orjson.dumps(event)
    async with receiver(keep) as url:
        for _ in range(2):
            await stack.webhook(space, type="User", event="Created", url=url + "/h")
        await publish_raw(stack, body)
        if not back_to_back:
            await stack.settled(space, 2)
        await publish_raw(stack, body)

        async def posted_twice() -> bool:
            return len(posts) == 4

        assert await eventually(posted_twice, timeout=10), posts
    rows = await stack.jobs(space)
    assert len(rows) == 2, [(r["id"], r["event_at"]) for r in rows]
    expected = derived_id(body, routing_key("User", "Created"))
    assert {r["event_id"] for r in rows} == {expected}
    # each job's POSTs carry one webhook-id and one body, timestamp included
    by_job: dict[str, set[bytes]] = {}
    for job, sent in posts:
        by_job.setdefault(job, set()).add(sent)
    assert sorted(by_job) == sorted(str(r["id"]) for r in rows)
    assert all(len(bodies) == 1 for bodies in by_job.values())
    sent_event = orjson.loads(posts[0][1])["event"]
    assert sent_event["id"] == expected


async def test_the_amqp_timestamp_is_the_events_when_it_has_none(stack: Stack) -> None:
    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"message": "ok"})

    space = stack.space()
    async with receiver(fine) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/h")
        stamped = datetime(2026, 11, 21, 8, 30, tzinfo=UTC)
        await publish_raw(
            stack,
            orjson.dumps(user_created(space)),
            message_id=f"msg-{space}",
            timestamp=stamped,
        )
        [job] = await stack.settled(space, 1)
    assert job["event_id"] == derived_id(orjson.dumps(user_created(space)), "user.created")
    assert job["event_at"] == stamped
    assert orjson.loads(job["request_content"])["event"]["timestamp"] == "2026-11-21T08:30:00.000Z"
