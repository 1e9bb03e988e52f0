"""Values the job log cannot hold never cost a job its record: an answer with NUL is stored
with U+FFFD (and the job says so) beside its neighbours; an event with what the log cannot
index (NUL in a key, a time out of range) is refused at ingest with 422 naming the field
and dead-lettered by the router with the reason, while the events around it are recorded;
an event with every key at its documented limit is recorded."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.catalogue import routing_key

from .conftest import Stack, event_for
from .test_delivery import find_dead, receiver, user_created

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_an_answer_with_nul_is_recorded_altered_and_its_neighbours_too(
    stack: Stack,
) -> None:
    """One event, 16 webhooks: 14 answered plainly, one with a raw NUL byte, one with
    `\\u0000` in JSON. Every job is Complete."""

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"message": "Initiated run #7."})

    async def raw_nul(request: web.Request) -> web.Response:
        return web.Response(body=b'{"message": "Initiated run #8.\x00"}')

    async def escaped_nul(request: web.Request) -> web.Response:
        return web.Response(body=b'{"message": "Initiated run #9. \\u0000"}')

    space = stack.space()
    async with (
        receiver(plain) as plain_url,
        receiver(raw_nul) as nul_url,
        receiver(escaped_nul) as escaped_url,
    ):
        for _ in range(14):
            await stack.webhook(space, type="User", event="Created", url=plain_url + "/h")
        nul = await stack.webhook(space, type="User", event="Created", url=nul_url + "/h")
        await stack.webhook(space, type="User", event="Created", url=escaped_url + "/h")
        await stack.publisher.publish(user_created(space))
        rows = await stack.settled(space, 16)

    assert len(rows) == 16
    assert {r["status"] for r in rows} == {"Complete"}
    [altered] = [r for r in rows if r["webhook_id"] == uuid.UUID(nul.id)]
    assert altered["response_content"] == '{"message": "Initiated run #8.\ufffd"}'
    assert altered["summary"] == "200 OK (answer altered: 1 NUL replaced by U+FFFD)"
    assert altered["run_id"] == "8"
    [attempt] = await stack.store.job_attempts(str(altered["id"]))
    assert attempt["response_content"] == altered["response_content"]
    escaped = [r for r in rows if r["run_id"] == "9"]
    assert len(escaped) == 1 and escaped[0]["summary"] == "200 OK"
    assert escaped[0]["response_content"] == '{"message": "Initiated run #9. \\u0000"}'


def submitted(space: str, n: int) -> dict[str, Any]:
    return event_for(
        space,
        "Submission",
        "Submitted",
        kapp={"slug": "services"},
        form={"slug": "ipad-request"},
        submission={"id": f"sub-{n}", "values": {"Status": "Open"}},
    )


BAD_EVENTS: dict[str, tuple[str, Any]] = {
    # the tree group is made of the form's slug
    "form.slug": ("form", {"slug": "ipad\x00request"}),
    "submission.id": ("submission", {"id": "sub\x00", "values": {}}),
    "event.timestamp": (
        "event",
        {"type": "Submission", "action": "Submitted", "timestamp": "9999-12-31T23:59:59-14:00"},
    ),
}
BAD_AT = (5, 14, 23)


async def test_unstorable_events_are_dead_lettered_and_the_ones_around_them_recorded(
    stack: Stack,
) -> None:
    """27 good events and 3 the log cannot hold (NUL in the form's slug or the submission's
    id, a time beyond PostgreSQL's), published straight to the exchange as a service that
    does not validate would, to a kapp with two webhooks: 54 jobs Complete, the 3 bad events
    dead-lettered by the router naming the field, no job of theirs."""

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"message": "ok"})

    assert stack.router.topology is not None
    events_exchange = stack.router.topology.events
    space = stack.space()
    async with receiver(plain) as url:
        for _ in range(2):
            await stack.webhook(
                space, kapp="services", type="Submission", event="Submitted", url=url + "/h"
            )
        bad_ids: dict[str, str] = {}
        for n in range(30):
            event = submitted(space, n)
            event["event"]["id"] = f"{space}-{n}"
            if n in BAD_AT:
                field = list(BAD_EVENTS)[BAD_AT.index(n)]
                key, value = BAD_EVENTS[field]
                event[key] = {**value, "id": f"{space}-{n}"} if key == "event" else value
                bad_ids[field] = f"{space}-{n}"
            await broker.publish(
                events_exchange,
                orjson.dumps(event),
                routing_key("Submission", "Submitted"),
                message_id=f"{space}-{n}",
            )
        rows = await stack.settled(space, 54)

    assert len(rows) == 54 and {r["status"] for r in rows} == {"Complete"}
    assert not {r["event_id"] for r in rows} & set(bad_ids.values())
    for field, event_id in bad_ids.items():
        dead = await find_dead(stack, event_id)
        assert dead is not None, f"the event with a bad {field} was not dead-lettered"
        assert dead.headers["x-failed-in"] == "router"
        assert field in str(dead.headers["x-reason"])


@pytest.mark.parametrize("field", list(BAD_EVENTS))
async def test_ingest_answers_422_naming_the_field_the_log_cannot_hold(
    stack: Stack, field: str
) -> None:
    event = submitted(stack.space(), 1)
    key, value = BAD_EVENTS[field]
    event[key] = value
    status, body = await stack.api("POST", "/app/api/v1/events", json=event)
    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == [field]


def wide(n: int, seed: int) -> str:
    """n characters of four UTF-8 bytes each, random so that nothing compresses them."""
    rng = random.Random(seed)
    return "".join(chr(rng.randint(0x10000, 0x10FFFF)) for _ in range(n))


async def test_an_event_with_every_key_at_its_limit_is_recorded(stack: Stack) -> None:
    """Slugs of 128 and ids of 255 characters of four bytes each, a webhook name of 255 such
    characters: a Complete and a Failed job (the failed jobs' index holds the summary too)
    are both recorded."""

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"message": "Initiated run #1234567890123456789."})

    async def refusing(request: web.Request) -> web.Response:
        return web.Response(status=422, text="no")

    space = "s" + wide(127, 1)
    kapp = wide(128, 2)
    event = event_for(
        space,
        "Submission",
        "Submitted",
        kapp={"slug": kapp},
        form={"slug": wide(128, 3)},
        submission={"id": wide(255, 4), "values": {}},
    )
    event["event"]["id"] = wide(63, 5)  # 252 bytes: an AMQP message id holds 255
    async with receiver(plain) as ok_url, receiver(refusing) as no_url:
        await stack.webhook(
            space, kapp=kapp, name=wide(255, 6), type="Submission", event="Submitted", url=ok_url
        )
        await stack.webhook(
            space, kapp=kapp, name=wide(255, 7), type="Submission", event="Submitted", url=no_url
        )
        await stack.publisher.publish(event)
        rows = await stack.settled(space, 2)
    assert sorted(r["status"] for r in rows) == ["Complete", "Failed"]
    assert {r["parent_id"] for r in rows} == {event["submission"]["id"]}
    assert "1234567890123456789" in {r["run_id"] for r in rows}
