"""One bad outcome never costs its neighbours their record: a results message holding
outcomes of many jobs, one of which PostgreSQL refuses, is split until the refused outcome
stands alone; that one is dead-lettered with the database's reason, every other outcome of
the message is recorded. One test per way the job log can refuse a value."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.jobs import Attempt, Delivery, Outcome, Status
from webhook_router.topology import RECORD_KEY

from .conftest import Stack
from .test_delivery import find_dead, receiver

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


def outcome(space: str, n: int) -> Outcome:
    """A Complete outcome of a job of its own, with an answer."""
    job = str(uuid.uuid4())
    delivery = Delivery(
        job_id=job,
        event_id=f"event-{job}",
        event_at="2026-11-20T10:00:00+00:00",
        webhook_id=str(uuid.uuid4()),
        webhook_name=f"hook {n}",
        space=space,
        scope_type="Space",
        scope_id=space,
        type="User",
        action="Created",
        parent_type="User",
        parent_id=f"user-{n}",
        tree_group="Users",
        tree_name="Created",
        url="http://127.0.0.1:9/hook",
        body='{"event": {}}',
        created_at="2026-11-20T10:00:00+00:00",
    )
    attempt = Attempt(1, "2026-11-20T10:00:01+00:00", 12.5, 200, '{"ok": true}', None)
    return Outcome(
        delivery,
        Status.COMPLETE,
        summary="200 OK",
        response_status=200,
        response_content='{"ok": true}',
        attempt=attempt,
    )


def spoil_answer(o: Outcome, content: str) -> Outcome:
    assert o.attempt is not None
    return replace(
        o, response_content=content, attempt=replace(o.attempt, response_content=content)
    )


BAD: dict[str, Any] = {
    # a raw NUL in an answer: text columns cannot hold U+0000
    "nul in text": lambda o: spoil_answer(o, "Initiated run \x00 #42"),
    # 10000-01-01T13:59:59Z: beyond what the timestamp can be sent as
    "time out of range": lambda o: replace(
        o, delivery=replace(o.delivery, event_at="9999-12-31T23:59:59-14:00")
    ),
    # an incompressible 6 kB tree group: beyond the 2704 bytes of a btree index row
    "oversized index key": lambda o: replace(
        o, delivery=replace(o.delivery, tree_group=secrets.token_urlsafe(4500))
    ),
    # jsonb cannot hold \u0000 either
    "nul in json": lambda o: replace(
        o,
        attempt=replace(o.attempt, request_headers={"x-bad": "a\x00b"}) if o.attempt else None,
    ),
    # a status beyond integer
    "integer out of range": lambda o: replace(o, response_status=2**40),
}


KEYS_REFUSED = {"time out of range", "oversized index key"}


@pytest.mark.parametrize("refusal", list(BAD))
async def test_a_refused_outcome_is_dead_lettered_alone_and_its_neighbours_recorded(
    stack: Stack, refusal: str
) -> None:
    assert stack.recorder.topology is not None
    space = stack.space()
    good = [outcome(space, n) for n in range(15)]
    bad = BAD[refusal](outcome(space, 99))
    batch = [*good[:7], bad, *good[7:]]
    await broker.publish(stack.recorder.topology.results, orjson.dumps(batch), RECORD_KEY)

    # every neighbour is recorded as it was sent
    rows = await stack.settled(space, len(good))
    neighbours = [r for r in rows if str(r["id"]) != bad.delivery.job_id]
    assert sorted(str(r["id"]) for r in neighbours) == sorted(o.delivery.job_id for o in good)
    assert {r["status"] for r in neighbours} == {"Complete"}
    assert all(r["response_content"] == '{"ok": true}' for r in neighbours)
    # of the refused one, what the log can hold is recorded, saying why; a key or a time
    # it cannot hold leaves no row
    row = await stack.store.get_job(bad.delivery.job_id)
    if refusal in KEYS_REFUSED:
        assert row is None
    else:
        assert row is not None and row["status"] == "Complete"
        assert row["response_content"] is None
        assert "not stored whole (dead-lettered)" in row["summary"]
        assert row["summary"].startswith("200 OK; ")
    # the whole outcome waits in the dead-letter queue, alone, with the database's reason
    dead = await find_dead(stack, bad.delivery.job_id)
    assert dead is not None, "the refused outcome was not dead-lettered"
    assert str(dead.headers["x-reason"]).startswith("database refused:")
    assert dead.headers["x-failed-in"] == "recorder"
    [parked] = Outcome.decode_batch(dead.body)
    assert parked == bad


async def test_every_outcome_of_a_results_message_is_kept_when_several_are_refused(
    stack: Stack,
) -> None:
    """Three refused outcomes of different kinds spread through 40: 37 recorded whole, 3
    dead-lettered, each alone (and the one whose answer was refused recorded without it)."""
    assert stack.recorder.topology is not None
    space = stack.space()
    batch = [outcome(space, n) for n in range(40)]
    spoiled = {3: "nul in text", 20: "time out of range", 39: "oversized index key"}
    for index, refusal in spoiled.items():
        batch[index] = BAD[refusal](batch[index])
    await broker.publish(stack.recorder.topology.results, orjson.dumps(batch), RECORD_KEY)

    rows = await stack.settled(space, 38)
    good = [o.delivery.job_id for i, o in enumerate(batch) if i not in spoiled]
    # the one with NUL in its answer is recorded without it
    assert sorted(str(r["id"]) for r in rows) == sorted([*good, batch[3].delivery.job_id])
    for index in spoiled:
        assert await find_dead(stack, batch[index].delivery.job_id) is not None


async def test_an_item_that_is_no_outcome_is_dead_lettered_alone(stack: Stack) -> None:
    """A results message whose seventh item is not an outcome at all (from a role of another
    version, say): the 12 outcomes around it are recorded, the item is dead-lettered alone."""
    assert stack.recorder.topology is not None
    space = stack.space()
    good = [outcome(space, n) for n in range(12)]
    strange = {"delivery": {"job_id": "x"}, "status": "Sent"}
    body = orjson.dumps([*good[:6], strange, *good[6:]])
    message_id = f"results-{space}"
    await broker.publish(stack.recorder.topology.results, body, RECORD_KEY, message_id=message_id)

    rows = await stack.settled(space, len(good))
    assert sorted(str(r["id"]) for r in rows) == sorted(o.delivery.job_id for o in good)
    dead = await find_dead(stack, message_id)
    assert dead is not None
    assert orjson.loads(dead.body) == [strange]
    assert str(dead.headers["x-reason"]).startswith("bad outcome:")


async def test_an_item_that_is_no_delivery_is_dead_lettered_alone(stack: Stack) -> None:
    """A deliveries message whose middle item is not a delivery: the deliveries around it
    are posted and recorded, the item is dead-lettered alone."""
    assert stack.worker.topology is not None
    posted: list[str] = []

    async def fine(request: web.Request) -> web.Response:
        posted.append(request.headers["webhook-id"])
        return web.Response(text="ok")

    space = stack.space()
    async with receiver(fine) as url:
        good = [replace(outcome(space, n).delivery, url=url + "/h") for n in range(6)]
        body = orjson.dumps([*good[:3], {"job_id": "only this"}, *good[3:]])
        message_id = f"deliveries-{space}"
        await broker.publish(stack.worker.topology.deliveries, body, "", message_id=message_id)
        rows = await stack.settled(space, len(good))
    assert sorted(posted) == sorted(d.job_id for d in good)
    assert sorted(str(r["id"]) for r in rows) == sorted(d.job_id for d in good)
    dead = await find_dead(stack, message_id)
    assert dead is not None
    assert orjson.loads(dead.body) == [{"job_id": "only this"}]
    assert str(dead.headers["x-reason"]).startswith("bad delivery:")
