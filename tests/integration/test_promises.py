"""Promises the docs make, each proved on the real broker, database and HTTP servers: the
job log never goes back, a poison message stops after the delivery limit, answers are cut
at the response limit, connect and total timeouts, 413 over 1 MiB at ingest, an event
delivered twice makes the same jobs. (The API without WEBHOOK_ROUTER_API_TOKEN starts and
takes only stored tokens: test_tokens.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from webhook_router import broker
from webhook_router.events import parse_event
from webhook_router.jobs import Attempt, Delivery, Outcome, Status, job_id, utcnow
from webhook_router.settings import Settings
from webhook_router.topology import DELIVERY_LIMIT, RECORD_KEY
from webhook_router.worker import Worker

from ..conftest import drop_namespace, eventually
from .conftest import Stack, answer_app, event_for, open_stack
from .test_delivery import find_dead

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

USERS_TREE = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"
RESPONSE_LIMIT = 100
CONNECT_TIMEOUT = 0.5
REQUEST_TIMEOUT = 1.5
ROLES = ("recorder", "router", "worker", "api")


def user_created(space: str, n: int = 0) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": f"user-{n}"})


@asynccontextmanager
async def own_stack(
    settings: Settings, roles: tuple[str, ...] = ROLES, **changes: Any
) -> AsyncIterator[Stack]:
    """A stack on a namespace of its own with changed settings; idle, then dropped, at the
    end."""
    own = settings.model_copy(update={"namespace": f"wrtest_{uuid.uuid4().hex[:8]}", **changes})
    try:
        async with open_stack(own, roles) as running:
            since = await running.store.pool.fetchval("SELECT clock_timestamp()")
            yield running
            await running.idle(running.spaces, since)
    finally:
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.schedule)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tight(settings: Settings) -> AsyncIterator[Stack]:
    """A stack with a small response limit, short timeouts and one quick retry."""
    async with own_stack(
        settings,
        response_limit=RESPONSE_LIMIT,
        connect_timeout=CONNECT_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        retry_schedule="100ms",
    ) as running:
        yield running


def delivery_of(row: asyncpg.Record) -> Delivery:
    """The delivery of a recorded job, to send outcomes of it by hand."""
    return Delivery(
        job_id=str(row["id"]),
        event_id=row["event_id"],
        event_at=row["event_at"].isoformat(),
        webhook_id=str(row["webhook_id"]),
        webhook_name=row["webhook_name"],
        space=row["space"],
        scope_type=row["scope_type"],
        scope_id=row["scope_id"],
        type=row["type"],
        action=row["event"],
        parent_type=row["parent_type"],
        parent_id=row["parent_id"],
        tree_group=row["tree_group"],
        tree_name=row["tree_name"],
        url=row["url"],
        body=row["request_content"] or "",
    )


def attempt(number: int, status: int | None, content: str | None) -> Attempt:
    return Attempt(number, utcnow().isoformat(), 1.0, status, content, None)


# the job log never goes back


async def test_a_late_or_repeated_outcome_changes_nothing_in_the_job_log(stack: Stack) -> None:
    """Outcomes are ordered by (replay, attempt, rank): once a job is Complete after its
    first attempt, an older Queued, a retry of that attempt, a late failure of it and a
    repeat of its completion change neither the job nor its attempts, whether they come in
    one batch or one by one. A marker job sent after each shows the recorder wrote them."""
    space = stack.space()
    await stack.webhook(space, type="User", event="Created", url=USERS_TREE)
    await stack.publisher.publish(user_created(space))
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete" and job["attempts"] == 1
    before = dict(job)
    attempts_before = [dict(a) for a in await stack.store.job_attempts(str(job["id"]))]
    d = delivery_of(job)

    late = [
        Outcome(d, Status.QUEUED),
        Outcome(
            d,
            Status.QUEUED,
            summary="503 Service Unavailable",
            retry_count=1,
            attempt=attempt(1, 503, "late"),
        ),
        Outcome(
            d,
            Status.FAILED,
            summary="500 Internal Server Error",
            response_status=500,
            response_content="late failure",
            attempt=attempt(1, 500, "late failure"),
        ),
        Outcome(
            d,
            Status.COMPLETE,
            summary="200 OK",
            run_id="repeated",
            response_status=200,
            response_content="repeated",
            attempt=attempt(1, 200, "repeated"),
        ),
    ]
    assert all(o.version <= (0, 1, 2) for o in late)
    results = stack.worker.topology.results
    markers: list[str] = []

    async def send(outcomes: list[Outcome]) -> None:
        marker = replace(d, job_id=str(uuid.uuid4()), webhook_name=f"marker-{len(markers)}")
        markers.append(marker.job_id)
        done = Outcome(marker, Status.COMPLETE, summary="200 OK", attempt=attempt(1, 200, ""))
        await broker.publish(results, orjson.dumps([*outcomes, done]), RECORD_KEY)

    # a job new to the log, completed twice in one batch: the first to come stays, as it
    # would had the two come one by one
    twice = replace(d, job_id=str(uuid.uuid4()), webhook_name="twice")
    first, repeat = (
        Outcome(
            twice,
            Status.COMPLETE,
            summary="200 OK",
            response_status=200,
            response_content=content,
            attempt=attempt(1, 200, content),
        )
        for content in ("first", "repeat")
    )
    await send([first, repeat])
    await send(late)  # one batch
    for outcome in late:  # one by one
        await send([outcome])

    async def markers_written() -> bool:
        rows = await stack.jobs(space)
        return {str(r["id"]) for r in rows} >= set(markers)

    assert await eventually(markers_written), "the recorder never wrote the marker jobs"
    [after] = [r for r in await stack.jobs(space) if r["id"] == before["id"]]
    assert dict(after) == before
    assert [dict(a) for a in await stack.store.job_attempts(str(job["id"]))] == attempts_before
    [kept] = [r for r in await stack.jobs(space) if str(r["id"]) == twice.job_id]
    assert kept["response_content"] == "first"


# the same event twice


async def test_the_same_event_delivered_twice_makes_the_same_jobs(stack: Stack) -> None:
    """Job ids derive from the event id and the webhook id: a second delivery of an event
    posts again under the same `webhook-id` and makes no second job."""
    space = stack.space()
    hooks = [
        await stack.webhook(space, type="User", event="Created", url=USERS_TREE, name=name)
        for name in ("first", "second")
    ]
    event = parse_event(user_created(space))
    await stack.publisher.publish(event)
    await stack.publisher.publish(event)

    async def both_posted_twice() -> bool:
        return len(stack.received_for(space)) >= 2 * len(hooks)

    # the marker: each delivery of the event was posted to both webhooks
    assert await eventually(both_posted_twice), len(stack.received_for(space))
    expected = {job_id(event.id, h.id) for h in hooks}
    assert sorted(p.headers["webhook-id"] for p in stack.received_for(space)) == sorted(
        [*expected, *expected]
    )
    rows = await stack.settled(space, 2)
    assert {str(r["id"]) for r in rows} == expected
    assert len(rows) == len(hooks)
    assert {r["status"] for r in rows} == {"Complete"}


# a poison message


async def test_a_poison_delivery_stops_after_the_delivery_limit_and_is_dead_lettered(
    settings: Settings,
) -> None:
    """A delivery that makes the worker fail on every try (a port out of range: the worker
    cannot even tell its endpoint) is given back each time; the queue's delivery limit
    stops it after DELIVERY_LIMIT redeliveries and dead-letters it, kept whole, while a good
    delivery behind it goes through."""
    async with own_stack(settings, ("recorder", "router")) as st:
        tries: dict[str, int] = {}
        # the real worker, its handler wrapped to count the tries of each message; nothing
        # else is changed
        worker = Worker(st.settings, st.store)
        handle = worker.on_delivery

        async def counted(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            key = message.message_id or ""
            tries[key] = tries.get(key, 0) + 1
            await handle(message)

        worker.on_delivery = counted  # type: ignore[method-assign]
        await worker.start()
        try:
            space = st.space()
            hook = await st.webhook(space, type="User", event="Created", url=USERS_TREE)
            poison_id = str(uuid.uuid4())
            poison = Delivery(
                job_id=poison_id,
                event_id="poison",
                event_at=utcnow().isoformat(),
                webhook_id=hook.id,
                webhook_name=hook.name,
                space=space,
                scope_type="Space",
                scope_id=space,
                type="User",
                action="Created",
                parent_type="User",
                parent_id="u",
                tree_group="Users",
                tree_name="Created",
                url="http://127.0.0.1:99999/out-of-range",
                body="{}",
            )
            topology = worker.topology
            assert topology is not None
            await broker.publish(
                topology.deliveries,
                orjson.dumps([poison]),
                st.router.names.delivery_key(hook.id),
                message_id=poison_id,
            )
            await st.publisher.publish(user_created(space))
            [job] = await st.settled(space, 1)
            assert job["status"] == "Complete", "the good delivery behind the poison stalled"

            found = await find_dead(st, poison_id, timeout=30)
            assert found is not None, f"not dead-lettered after {tries.get(poison_id)} tries"
            assert Delivery.decode_batch(found.body) == [poison]
            [death] = found.headers["x-death"]
            assert death["reason"] == "delivery_limit"
            assert found.role == "worker" and "delivery_limit" in found.reason
            # given DELIVERY_LIMIT times again after the first, then stopped
            assert tries[poison_id] == DELIVERY_LIMIT + 1
        finally:
            await worker.stop(st.settings.drain_timeout)


# the response limit


async def test_an_answer_is_cut_at_the_response_limit_and_marked(tight: Stack) -> None:
    """The answer is written in one piece, so this holds however it is read."""
    limit = tight.settings.response_limit
    answers = {"over": b"x" * limit + b"OVER", "at": b"y" * limit}

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=answers[request.match_info["tail"]])

    runner, url = await answer_app(answer)
    try:
        space = tight.space()
        for name in answers:
            await tight.webhook(space, type="User", event="Created", url=f"{url}/{name}")
        await tight.publisher.publish(user_created(space))
        rows = await tight.settled(space, 2)
    finally:
        await runner.cleanup()
    by_url = {r["url"].rsplit("/", 1)[1]: r for r in rows}
    assert by_url["over"]["response_content"] == "x" * limit + "\n[truncated]"
    assert by_url["at"]["response_content"] == "y" * limit
    [over_attempt] = await tight.store.job_attempts(str(by_url["over"]["id"]))
    assert over_attempt.response_content == "x" * limit + "\n[truncated]"


async def test_the_response_limit_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_ROUTER_RESPONSE_LIMIT", str(RESPONSE_LIMIT))
    assert Settings().response_limit == RESPONSE_LIMIT


# timeouts


@contextmanager
def unanswered_listener() -> Iterator[int]:
    """A port on 127.0.0.1 whose accept queue is full: the kernel drops further SYNs, so a
    connection there is never made (nothing is refused, it just hangs)."""
    listener = socket.socket()
    clients: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            clients.append(client)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
        yield port
    finally:
        for client in clients:
            client.close()
        listener.close()


async def test_a_connection_never_made_fails_at_the_connect_timeout(tight: Stack) -> None:
    connect = tight.settings.connect_timeout
    total = tight.settings.request_timeout
    assert connect < total
    with unanswered_listener() as port:
        # what the worker will meet: a connection attempt that does not finish
        probe = socket.socket()
        probe.settimeout(connect)
        with probe, pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
        space = tight.space()
        await tight.webhook(space, type="User", event="Created", url=f"http://127.0.0.1:{port}/")
        await tight.publisher.publish(user_created(space))
        [job] = await tight.settled(space, 1, timeout=tight.settle_bound())
    assert job["status"] == "Failed"
    attempts = await tight.store.job_attempts(str(job["id"]))
    assert len(attempts) == 2
    for a in attempts:
        assert a.response_status is None and a.error == f"connect timed out after {connect:g}s", a
        seconds = a.duration_ms / 1000
        # cut by the connect timeout, well before the whole request's
        assert connect <= seconds < total, (
            f"{seconds:.2f}s: connect_timeout {connect:g}s, request_timeout {total:g}s"
        )


async def test_an_answer_too_slow_fails_at_the_request_timeout(tight: Stack) -> None:
    total = tight.settings.request_timeout
    hang = 10 * total
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        # connected at once, answered long after the timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), hang)
        return web.json_response({})

    runner, url = await answer_app(slow)
    try:
        space = tight.space()
        await tight.webhook(space, type="User", event="Created", url=url + "/slow")
        await tight.publisher.publish(user_created(space))
        [job] = await tight.settled(space, 1, timeout=tight.settle_bound())
    finally:
        release.set()
        await runner.cleanup()
    assert job["status"] == "Failed"
    attempts = await tight.store.job_attempts(str(job["id"]))
    assert len(attempts) == 2
    for a in attempts:
        assert a.error == f"timed out after {total:g}s"
        seconds = a.duration_ms / 1000
        assert total <= seconds < hang, (
            f"{seconds:.2f}s: request_timeout {total:g}s, the receiver hangs {hang:g}s"
        )


# ingest


async def test_an_event_over_1_mib_gets_413_and_the_next_is_accepted(stack: Stack) -> None:
    """Ingest takes a body up to 1 MiB and refuses one byte more with 413; the events
    after it are taken and delivered."""
    space = stack.space()
    await stack.webhook(space, type="User", event="Created", url=USERS_TREE)
    mib = 1024 * 1024
    # a space without webhooks: the big event is taken, and no job posts it on
    event = user_created(stack.space())
    event["user"]["padding"] = ""
    base = len(orjson.dumps(event))
    event["user"]["padding"] = "p" * (mib - base + 1)
    over = orjson.dumps(event)
    assert len(over) == mib + 1
    status, text = await post_event(stack, over)
    assert status == 413, text

    event["user"]["padding"] = "p" * (mib - base)
    at_limit = orjson.dumps(event)
    assert len(at_limit) == mib
    status, text = await post_event(stack, at_limit)
    assert status == 202, text

    status, text = await post_event(stack, orjson.dumps(user_created(space)))
    assert status == 202, text
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete" and job["event_id"] == orjson.loads(text)["id"]


async def post_event(stack: Stack, body: bytes) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.api_url + "/app/api/v1/events",
            data=io.BytesIO(body),
            headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.text()
