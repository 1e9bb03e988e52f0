"""Dead letters on the real services: moved from the `dead` queue into the dead_letters
table by the recorder, listed, shown and requeued through the API and the CLI, and sent
back to where they died."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aio_pika
import orjson
import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.admin import Admin
from webhook_router.deadletters import (
    ID_HEADER,
    REQUEUED_HEADER,
    DeadLetter,
    DeadLetterFilter,
    dead_headers,
)
from webhook_router.jobs import Delivery, Status
from webhook_router.models import decode_token
from webhook_router.runtime import serve
from webhook_router.settings import Settings
from webhook_router.store import Store

from ..conftest import eventually, free_port
from ..support.processes import rabbitmqctl
from .conftest import Stack, open_stack, private_job_log
from .test_cli import cli
from .test_delivery import find_dead, receiver, user_created
from .test_faults import own_namespace

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]


async def test_a_failing_delivery_is_dead_lettered_listed_and_delivered_once_requeued(
    stack: Stack,
) -> None:
    """An endpoint that fails every attempt: its delivery is dead-lettered by the worker,
    listed with its reason by the API and the CLI; once the endpoint is fixed, the requeue
    sends it back to the deliveries exchange and it arrives."""
    fixed = False
    arrived: list[dict[str, Any]] = []

    async def endpoint(request: web.Request) -> web.Response:
        if not fixed:
            return web.Response(status=500, text="down for now")
        arrived.append(await request.json())
        return web.json_response({"ok": True})

    space = stack.space()
    async with receiver(endpoint) as url:
        hook = await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1, timeout=30)
        assert job["status"] == Status.FAILED
        dead = await find_dead(stack, str(job["id"]))
        assert dead is not None
        assert dead.role == "worker" and dead.webhook_id == hook.id

        status, listed = await stack.api(
            "GET", "/app/api/v1/deadLetters?role=worker&reason=gave%20up&limit=1000"
        )
        assert status == 200, listed
        [mine] = [d for d in listed["deadLetters"] if d["id"] == dead.id]
        assert set(mine) >= {"id", "role", "reason", "deadAt", "eventId", "webhook", "preview"}
        assert "gave up after" in mine["reason"]
        assert mine["webhook"] == {"id": hook.id, "name": hook.name}
        assert mine["eventId"] == job["event_id"]

        code, out, err = await cli(stack.settings, "dead", "list", "--role", "worker", "--json")
        assert code == 0, err
        assert dead.id in [d["id"] for d in orjson.loads(out)["deadLetters"]]
        code, out, err = await cli(stack.settings, "dead", "show", dead.id)
        assert code == 0, err
        assert "gave up after" in out and job["event_id"] in out

        status, shown = await stack.api("GET", f"/app/api/v1/deadLetters/{dead.id}")
        assert status == 200
        whole = shown["deadLetter"]
        assert Delivery.decode(whole["body"].encode()).job_id == str(job["id"])
        assert whole["headers"]["x-failed-in"] == "worker"

        fixed = True
        status, requeued = await stack.api("POST", f"/app/api/v1/deadLetters/{dead.id}/requeue")
        assert status == 200, requeued
        assert requeued["deadLetter"]["requeueCount"] == 1
        assert requeued["deadLetter"]["requeuedAt"] is not None

        async def complete() -> bool:
            rows = await stack.jobs(space)
            return bool(rows) and rows[0]["status"] == Status.COMPLETE

        assert await eventually(complete, timeout=20), await stack.jobs(space)
    assert len(arrived) == 1
    assert arrived[0]["space"]["slug"] == space


async def test_a_bad_event_is_listed_by_the_router_and_dies_again_as_a_new_dead_letter(
    stack: Stack,
) -> None:
    """The router refuses an event without a space; requeued (by filters), it goes back to
    the events exchange with its routing key, the router refuses it again, and that death
    is a new row that names the one it was requeued from."""
    marker = uuid.uuid4().hex
    body = orjson.dumps({"event": {"type": "User", "action": "Created", "id": marker}})
    topology = stack.router.topology
    assert topology is not None
    await broker.publish(topology.events, body, "user.created", message_id=f"bad-{marker}")
    first = await find_dead(stack, f"bad-{marker}")
    assert first is not None
    assert first.role == "router" and first.routing_key == "user.created"
    assert first.event_id == marker

    status, listed = await stack.api("GET", "/app/api/v1/deadLetters?role=router&limit=1000")
    assert status == 200
    assert first.id in [d["id"] for d in listed["deadLetters"]]

    selection = {"role": "router", "start": first.dead_at.isoformat()}
    status, answer = await stack.api("POST", "/app/api/v1/deadLetters/requeue", json=selection)
    assert status == 200, answer
    assert answer["requeued"] >= 1

    async def again() -> DeadLetter | None:
        rows = await stack.store.pool.fetch(
            "SELECT id FROM dead_letters WHERE message_id = $1 AND id <> $2",
            f"bad-{marker}",
            uuid.UUID(first.id),
        )
        return await stack.store.get_dead_letter(str(rows[0]["id"])) if rows else None

    second = await eventually(again, timeout=15)
    assert second is not None, "the requeued event did not reach the router again"
    assert second.headers[REQUEUED_HEADER] == first.id
    assert second.body == first.body
    stored = await stack.store.get_dead_letter(first.id)
    assert stored is not None and stored.requeue_count == 1
    # a requeue by filters sends back only what was never requeued: the window of the first
    # death selects it, and it was requeued
    window = {
        "role": "router",
        "start": first.dead_at.isoformat(),
        "end": (first.dead_at + timedelta(microseconds=1)).isoformat(),
    }
    query = "&".join(f"{k}={quote(v)}" for k, v in window.items())
    status, listed = await stack.api("GET", f"/app/api/v1/deadLetters?{query}")
    assert [d["id"] for d in listed["deadLetters"]] == [first.id]
    status, answer = await stack.api("POST", "/app/api/v1/deadLetters/requeue", json=window)
    assert (status, answer) == (200, {"requeued": 0})


async def test_a_redelivered_dead_letter_is_stored_once_and_any_body_is_kept_whole(
    stack: Stack,
) -> None:
    """The same message in the dead queue twice (a redelivery) is one row, keyed by the id
    its role stamped; a message the broker dead-lettered without one is keyed by its bytes
    and headers. A body of NUL, bytes that are not UTF-8 and a megabyte is kept exactly."""
    topology = stack.router.topology
    assert topology is not None
    poison = b"\x00\xff\xfe" + b"x" * 1_000_000 + b"\x00"
    stamped = str(uuid.uuid4())
    headers = {"x-failed-in": "worker", "x-reason": "bad delivery: \x00 in it", ID_HEADER: stamped}
    unstamped = f"broker-{uuid.uuid4().hex}"
    death = {"x-death": [{"queue": stack.settings.names.router, "reason": "delivery_limit"}]}
    for _ in range(2):
        await broker.publish(topology.dead, poison, "", message_id="poison", headers=headers)
        await broker.publish(topology.dead, b"[]", "", message_id=unstamped, headers=death)

    async def stored() -> list[Any]:
        rows = await stack.store.pool.fetch(
            "SELECT id, role, reason, body, preview FROM dead_letters"
            " WHERE id = $1 OR message_id = $2",
            uuid.UUID(stamped),
            unstamped,
        )
        return list(rows) if len(rows) >= 2 else []

    assert await eventually(stored, timeout=15)
    # both copies of each consumed (the queue empty, a second for the last in hand)
    assert await eventually(lambda: _dead_queue_empty(stack), timeout=15)
    await asyncio.sleep(1.0)
    rows = await stored()
    assert len(rows) == 2, rows
    by_id = {str(r["id"]): r for r in rows}
    assert bytes(by_id[stamped]["body"]) == poison
    assert "\x00" not in by_id[stamped]["reason"] and "\x00" not in by_id[stamped]["preview"]
    [broker_made] = [r for r in rows if str(r["id"]) != stamped]
    assert broker_made["role"] == "router"
    assert "delivery_limit" in broker_made["reason"]


async def _dead_queue_empty(stack: Stack) -> bool:
    topology = stack.recorder.topology
    assert topology is not None
    declared = await topology.dead_queue.declare()
    return declared.message_count == 0


async def test_filters_and_pages(st: Store, settings: Settings) -> None:
    """Role and reason text (any case, wildcards literal), a time window and pages that
    follow one another without a gap or a repeat."""
    role = f"test-{uuid.uuid4().hex[:8]}"
    start = datetime(2031, 1, 1, tzinfo=UTC)
    reasons = ["Boom 50%", "boom_x", "other", "BOOM again", "quiet"]
    ids = []
    for i, reason in enumerate(reasons):
        letter = DeadLetter(
            id=str(uuid.uuid4()),
            role=role,
            reason=reason,
            dead_at=start + timedelta(minutes=i),
            preview="",
            body=b"{}",
        )
        assert await st.keep_dead_letter(letter)
        assert not await st.keep_dead_letter(letter)  # stored once
        ids.append(letter.id)
    admin = Admin(settings, st)
    seen = []
    token = None
    while True:
        page = await admin.dead_letters(DeadLetterFilter(role=role, limit=2, after=token))
        seen += [d.id for d in page.dead_letters]
        if page.next_token is None:
            break
        token = decode_token(page.next_token)
    assert seen == list(reversed(ids))

    async def reasons_of(**filters: Any) -> list[str]:
        page = await admin.dead_letters(DeadLetterFilter(role=role, **filters))
        return [d.reason for d in page.dead_letters]

    assert await reasons_of(reason="boom") == ["BOOM again", "boom_x", "Boom 50%"]
    assert await reasons_of(reason="50%") == ["Boom 50%"]
    assert await reasons_of(reason="m_") == ["boom_x"]
    window = {"start": start + timedelta(minutes=1), "end": start + timedelta(minutes=3)}
    assert await reasons_of(**window) == ["other", "boom_x"]


async def test_dead_letters_wait_in_the_queue_while_postgres_is_down(settings: Settings) -> None:
    """With PostgreSQL stopped, dead letters stay in the `dead` queue (none acknowledged);
    once it is back every one of them is stored, once."""
    count = 20
    async with (
        private_job_log() as (pg, database_url),
        own_namespace(settings, database_url=database_url) as own,
        open_stack(own, ("recorder",)) as st,
    ):
        topology = st.recorder.topology
        assert topology is not None
        pg.stop()
        for n in range(count):
            headers = dead_headers("router", f"bad event {n}", "user.created")
            await broker.publish(topology.dead, b"{}", "", message_id=f"m{n}", headers=headers)
        assert await eventually(lambda: _keeper_waits(st), timeout=30)

        async def all_in_queue() -> bool:
            return await _in_queue(own) == count

        assert await eventually(all_in_queue, timeout=20), await _in_queue(own)
        pg.start()

        async def all_stored() -> bool:
            try:
                stored = await st.store.pool.fetchval("SELECT count(*) FROM dead_letters")
            except Exception:  # the pool reconnecting
                return False
            return bool(stored == count)

        assert await eventually(all_stored, timeout=60)
        assert await eventually(lambda: _queue_empty(own), timeout=30)


async def _keeper_waits(st: Stack) -> bool:
    return not st.recorder.keeper.database_ok


async def _in_queue(settings: Settings) -> int:
    """Messages of the dead queue, ready or held unacknowledged by a consumer (from the
    broker's own count, through a connection of the test's own)."""
    connection = await aio_pika.connect(settings.amqp_url[0])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            settings.names.dead, passive=True, arguments={"x-queue-type": "quorum"}
        )
        ready = queue.declaration_result.message_count
    return ready + await _unacknowledged(settings)


async def _unacknowledged(settings: Settings) -> int:
    """Messages the recorder holds unacknowledged on the dead queue: what the broker says
    through rabbitmqctl."""
    out = await asyncio.to_thread(
        rabbitmqctl, "list_queues", "name", "messages_unacknowledged", "--no-table-headers"
    )
    for line in out.splitlines():
        name, _, unacked = line.partition("\t")
        if name.strip() == settings.names.dead:
            return int(unacked.strip())
    return 0


async def _queue_empty(settings: Settings) -> bool:
    return await _in_queue(settings) == 0


async def test_an_event_too_large_is_delivered_once_the_limit_is_raised_and_it_is_requeued(
    settings: Settings,
) -> None:
    """A router refusal fixed by configuration: an event whose deliveries do not fit in
    WEBHOOK_ROUTER_MAX_MESSAGE_BYTES is dead-lettered; with the limit raised (the roles
    started again), requeuing it delivers it to the receiver."""
    arrived: list[int] = []

    async def count(request: web.Request) -> web.Response:
        arrived.append(len(await request.read()))
        return web.json_response({"ok": True})

    small = 1024 * 1024
    app = web.Application(client_max_size=8 * small)
    app.router.add_post("/hook", count)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    try:
        await _too_large_then_requeued(settings, small, url)
    finally:
        await runner.cleanup()
    assert len(arrived) == 1 and arrived[0] > small


async def _too_large_then_requeued(settings: Settings, small: int, url: str) -> None:
    async with own_namespace(settings, max_message_bytes=small) as own:
        async with open_stack(own) as st:
            space = st.space()
            await st.webhook(space, type="User", event="Created", url=url + "/hook")
            event = user_created(space)
            event["event"]["id"] = f"large-{space}"
            event["user"]["notes"] = "n" * (small + 1000)
            await broker.publish(
                st.router.topology.events,  # type: ignore[union-attr]
                orjson.dumps(event),
                "user.created",
                message_id=f"large-{space}",
            )
            dead = await find_dead(st, f"large-{space}")
            assert dead is not None and "too large to deliver" in dead.reason
            assert await st.jobs(space) == []
        raised = own.model_copy(update={"max_message_bytes": 4 * small})
        async with open_stack(raised) as st:
            await st.synced()
            status, answer = await st.api("POST", f"/app/api/v1/deadLetters/{dead.id}/requeue")
            assert status == 200, answer
            [job] = await st.settled(space, 1, timeout=30)
            assert job["status"] == Status.COMPLETE, job["summary"]


async def test_the_api_says_no_clearly(stack: Stack) -> None:
    """Bad parameters and bodies are 422 naming the field; an unknown id 404; a dead letter
    with no role to send it back to 409, and it stays as it was."""
    status, answer = await stack.api("GET", "/app/api/v1/deadLetters?colour=red")
    unknown_parameter = [{"field": "colour", "message": "unknown parameter"}]
    assert (status, answer["errors"]) == (422, unknown_parameter)
    status, answer = await stack.api("GET", "/app/api/v1/deadLetters?limit=0&start=later")
    assert status == 422
    assert {e["field"] for e in answer["errors"]} == {"limit", "start"}
    unknown = uuid.uuid4()
    assert (await stack.api("GET", f"/app/api/v1/deadLetters/{unknown}"))[0] == 404
    assert (await stack.api("POST", f"/app/api/v1/deadLetters/{unknown}/requeue"))[0] == 404
    status, answer = await stack.api(
        "POST", "/app/api/v1/deadLetters/requeue", json={"role": 3, "what": 1}
    )
    assert status == 422
    assert {e["field"] for e in answer["errors"]} == {"role", "what"}

    topology = stack.router.topology
    assert topology is not None
    marker = f"orphan-{uuid.uuid4().hex}"
    await broker.publish(topology.dead, b"{}", "", message_id=marker, headers={})
    orphan = await find_dead(stack, marker)
    assert orphan is not None and orphan.role == "unknown"
    status, answer = await stack.api("POST", f"/app/api/v1/deadLetters/{orphan.id}/requeue")
    assert status == 409 and "cannot be requeued" in answer["error"]
    stored = await stack.store.get_dead_letter(orphan.id)
    assert stored is not None and stored.requeue_count == 0
    code, _, err = await cli(stack.settings, "dead", "requeue")
    assert code == 2 and "--all" in err
