"""The direct handoff (handoff.py): router, worker and recorder of one process passing an
event's jobs in memory, the event acknowledged only once they are recorded. Real broker,
real PostgreSQL, real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from webhook_router.events import parse_event
from webhook_router.handoff import NEEDS, DirectHandoff
from webhook_router.jobs import Status
from webhook_router.roles import build_roles
from webhook_router.settings import Settings
from webhook_router.testing import MemoryStore

from ..conftest import eventually, free_port
from .conftest import Stack, open_stack, private_job_log
from .test_delivery import receiver, user_created
from .test_faults import own_namespace

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]


@asynccontextmanager
async def direct_stack(settings: Settings, **changes: Any) -> AsyncIterator[Stack]:
    async with (
        own_namespace(settings, direct_handoff=True, **changes) as own,
        open_stack(own) as stack,
    ):
        yield stack


class Gate:
    """A receiver that holds every POST until opened, counting what arrived."""

    def __init__(self, answer: int = 200) -> None:
        self.open = asyncio.Event()
        self.arrived: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.answer = answer

    async def post(self, request: web.Request) -> web.Response:
        self.arrived.append(await request.json())
        self.ids.append(request.headers["webhook-id"])
        await self.open.wait()
        return web.json_response({"ok": True}, status=self.answer)


async def test_the_event_stays_in_hand_until_its_job_is_recorded(settings: Settings) -> None:
    """No broker message between the roles: while the POST is unanswered the job has no row
    (no Queued record was written for it) and the router still holds the event; once it is
    answered the job is recorded Complete and the event let go."""
    gate = Gate()
    async with direct_stack(settings) as stack, receiver(gate.post) as url:
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        assert await eventually(lambda: _arrived(gate, 1), timeout=20)
        assert stack.router.inflight.count == 1
        assert await stack.jobs(space) == []
        gate.open.set()
        [job] = await stack.settled(space, 1)
        assert job["status"] == Status.COMPLETE
        assert job["attempts"] == 1
        assert str(job["id"]) == gate.ids[0]
        assert await eventually(lambda: _idle(stack), timeout=10)
        assert len(gate.arrived) == 1


async def test_many_events_each_posted_once_and_recorded(settings: Settings) -> None:
    """A burst with two webhooks per event: every job posted once and recorded Complete with
    the body it was sent, one attempt each."""
    gate = Gate()
    gate.open.set()
    async with direct_stack(settings) as stack, receiver(gate.post) as url:
        space = stack.space()
        for n in range(2):
            await stack.webhook(space, type="User", event="Created", url=f"{url}/hook-{n}")
        for n in range(40):
            event = user_created(space)
            event["user"]["username"] = f"user-{n}"
            await stack.publisher.publish(event)
        jobs = await stack.settled(space, 80, timeout=30)
        assert {j["status"] for j in jobs} == {Status.COMPLETE}
        assert sorted(str(j["id"]) for j in jobs) == sorted(gate.ids)
        assert len(set(gate.ids)) == 80
        assert {j["attempts"] for j in jobs} == {1}
        sent = {(b["user"]["username"]) for b in gate.arrived}
        assert len(sent) == 40


async def test_events_in_hand_wait_for_a_post_slot_not_in_the_endpoint_line(
    settings: Settings,
) -> None:
    """The router of a direct handoff holds `direct_prefetch` events and hands the worker
    at most `worker_concurrency` of their deliveries at once; the rest wait in hand for a
    slot, not in the endpoint's line, so none is deferred while the endpoint is slow (a
    line of 2 with a wait of 0.3 s, the POSTs held 1.5 s), and every job ends Complete
    with one attempt."""
    gate = Gate()
    async with (
        direct_stack(
            settings,
            direct_prefetch=5,
            worker_concurrency=2,
            endpoint_concurrency=2,
            endpoint_wait=0.3,
        ) as stack,
        receiver(gate.post) as url,
    ):
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        for n in range(8):
            event = user_created(space)
            event["user"]["username"] = f"user-{n}"
            await stack.publisher.publish(event)
        try:  # the gate opens before any assertion: a hung POST holds the receiver's cleanup
            held = await eventually(lambda: _arrived(gate, 2), timeout=20)
            holding = await eventually(lambda: _holding(stack, 5), timeout=20)
            await asyncio.sleep(1.5)  # five endpoint waits
            arrived, jobs = len(gate.arrived), await stack.jobs(space)
        finally:
            gate.open.set()
        assert held and holding, (len(gate.arrived), stack.router.inflight.count)
        assert arrived == 2, f"{arrived} POSTs at once"
        assert jobs == [], "a delivery was deferred (recorded Queued) while it waited its turn"
        assert stack.router.inflight.count == 5
        done = await stack.settled(space, 8, timeout=30)
        assert {j["status"] for j in done} == {Status.COMPLETE}
        assert {j["attempts"] for j in done} == {1}
        assert len(gate.arrived) == 8


async def _holding(stack: Stack, count: int) -> bool:
    return stack.router.inflight.count == count


async def test_an_event_with_more_jobs_than_post_slots_posts_them_all(
    settings: Settings,
) -> None:
    """One event with six webhooks and two POST slots, one of its endpoints refusing every
    connection: each job takes its turn at a slot (none waits for the event's other jobs to
    be recorded), the refused one fails on its own and is recorded with its retry, and
    the five good jobs end Complete."""
    async with (
        direct_stack(settings, worker_concurrency=2) as stack,
        receiver(_answer) as url,
    ):
        space = stack.space()
        for n in range(5):
            await stack.webhook(space, type="User", event="Created", url=f"{url}/hook-{n}")
        closed = free_port()  # nothing listens there: every connection is refused
        await stack.webhook(space, type="User", event="Created", url=f"http://127.0.0.1:{closed}/")
        await stack.publisher.publish(user_created(space))
        done = await stack.settled(space, 5, timeout=30)
        assert (
            sorted(j["status"] for j in done if j["url"].startswith(url)) == [Status.COMPLETE] * 5
        )
        [refused] = [j for j in await stack.jobs(space) if not j["url"].startswith(url)]
        assert refused["status"] == Status.QUEUED and refused["attempts"] == 1
        handoff = stack.router.handoff
        assert isinstance(handoff, DirectHandoff)
        assert await eventually(lambda: _idle(stack), timeout=10)
        assert handoff.posting == {}


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True})


async def test_two_copies_of_an_event_in_hand_leave_no_post_slot_taken(
    settings: Settings,
) -> None:
    """Two copies of one event in hand at once give their deliveries the same job id; each
    delivery takes one of the two POST slots and gives one back, whichever copy's outcome
    reaches the recorder first. The events after them are posted too, and once all are
    recorded both slots are free and no job is counted as being posted."""
    gate = Gate()
    async with (
        direct_stack(settings, worker_concurrency=2) as stack,
        receiver(gate.post) as url,
    ):
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        twice = parse_event(user_created(space))
        await stack.publisher.publish(twice)
        await stack.publisher.publish(twice)
        try:  # the gate opens before any assertion: a hung POST holds the receiver's cleanup
            both = await eventually(lambda: _arrived(gate, 2), timeout=20)
            for n in range(3):
                event = user_created(space)
                event["user"]["username"] = f"user-{n}"
                await stack.publisher.publish(event)
        finally:
            gate.open.set()
        assert both and gate.ids[0] == gate.ids[1], "the copies' deliveries are one job"
        jobs = await stack.settled(space, 4, timeout=30)
        assert {j["status"] for j in jobs} == {Status.COMPLETE}
        assert await eventually(lambda: _idle(stack), timeout=10)
        handoff = stack.router.handoff
        assert isinstance(handoff, DirectHandoff)
        assert handoff.posting == {}
        for _ in range(2):  # both slots free: taken at once, then given back
            await asyncio.wait_for(handoff.slots.acquire(), 1.0)
        for _ in range(2):
            handoff.slots.release()


async def test_a_deferred_delivery_is_recorded_queued_then_delivered(settings: Settings) -> None:
    """One slot per endpoint and a short wait: the second event's delivery is deferred to a
    retry queue while the first holds the slot, and its job is in the log Queued meanwhile
    (no router's Queued record stands before it); both end Complete once the endpoint
    answers, the deferred one with a single attempt."""
    gate = Gate()
    async with (
        direct_stack(settings, endpoint_concurrency=1, endpoint_wait=0.3) as stack,
        receiver(gate.post) as url,
    ):
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        assert await eventually(lambda: _arrived(gate, 1), timeout=20)
        second = user_created(space)
        second["user"]["username"] = "second"
        await stack.publisher.publish(second)
        queued = await stack.settled(space, 1, statuses=(Status.QUEUED,), timeout=20)
        assert [j["attempts"] for j in queued] == [0]
        gate.open.set()
        jobs = await stack.settled(space, 2, timeout=30)
        assert {j["status"] for j in jobs} == {Status.COMPLETE}
        assert sorted(j["attempts"] for j in jobs) == [1, 1]


async def test_a_retry_is_recorded_queued_with_its_attempt_then_complete(
    settings: Settings,
) -> None:
    """An endpoint that answers 503 once: the job is recorded Queued with its failed
    attempt while the next waits in its retry queue, then Complete after the second."""
    answers = [503, 200]

    async def endpoint(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=answers.pop(0) if answers else 200)

    async with direct_stack(settings) as stack, receiver(endpoint) as url:
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1, timeout=30)
        assert job["status"] == Status.COMPLETE
        assert job["attempts"] == 2
        attempts = await stack.store.job_attempts(str(job["id"]))
        assert [(a.attempt, a.response_status) for a in attempts] == [(1, 503), (2, 200)]


async def test_an_event_in_hand_when_its_process_stops_is_delivered_by_the_next(
    settings: Settings,
) -> None:
    """The process stops while a POST hangs, past its drain deadline: its event was never
    acknowledged, so the next process gets it again and the job is recorded; the receiver
    got the POST twice under the same `webhook-id`, as when a worker dies mid-POST."""
    gate = Gate()
    async with own_namespace(settings, direct_handoff=True, drain_timeout=0.5) as own:
        async with receiver(gate.post) as url:
            async with open_stack(own) as first:
                space = first.space()
                await first.webhook(space, type="User", event="Created", url=url + "/hook")
                await first.publisher.publish(user_created(space))
                assert await eventually(lambda: _arrived(gate, 1), timeout=20)
                assert await first.jobs(space) == []
            gate.open.set()
            async with open_stack(own) as second:
                second.spaces.append(space)
                [job] = await second.settled(space, 1, timeout=30)
                assert job["status"] == Status.COMPLETE
        assert len(gate.ids) == 2 and gate.ids[0] == gate.ids[1] == str(job["id"])


async def test_while_postgres_is_away_events_wait_and_each_job_is_recorded_once_back(
    settings: Settings,
) -> None:
    """PostgreSQL (a private server) stops as five events arrive: each is posted once, its
    outcome waits in the recorder and its event stays in hand, unacknowledged; once the
    database is back every job is recorded Complete and none was posted twice."""
    count = 5
    gate = Gate()
    gate.open.set()
    async with (
        private_job_log() as (pg, database_url),
        direct_stack(settings, database_url=database_url) as stack,
        receiver(gate.post) as url,
    ):
        space = stack.space()
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        pg.stop()
        for n in range(count):
            event = user_created(space)
            event["user"]["username"] = f"user-{n}"
            await stack.publisher.publish(event)
        assert await eventually(lambda: _arrived(gate, count), timeout=30)
        assert await eventually(lambda: _recorder_waits(stack), timeout=30)
        assert stack.router.inflight.count == count
        pg.start()

        async def all_complete() -> list[asyncpg.Record] | None:
            try:
                rows = await stack.jobs(space)
            except Exception:  # the pool reconnecting
                return None
            done = [r for r in rows if r["status"] == Status.COMPLETE]
            return rows if len(done) == count else None

        jobs = await eventually(all_complete, timeout=60)
        assert jobs is not None, "not every job was recorded once the database was back"
        assert sorted(str(j["id"]) for j in jobs) == sorted(gate.ids)
        assert len(gate.ids) == count  # none posted twice
        assert await eventually(lambda: _idle(stack), timeout=20)


async def test_the_handoff_needs_the_three_roles_in_one_process(settings: Settings) -> None:
    direct = settings.model_copy(update={"direct_handoff": True})
    for names in (["router"], ["router", "worker"], ["worker", "recorder", "api"]):
        with pytest.raises(ValueError, match=NEEDS):
            build_roles(names, direct, MemoryStore())
    roles = build_roles(["api", "router", "worker", "recorder"], direct, MemoryStore())
    assert [r.name for r in roles] == ["recorder", "worker", "router", "api"]


async def _arrived(gate: Gate, count: int) -> bool:
    return len(gate.arrived) >= count


async def _recorder_waits(stack: Stack) -> bool:
    return not stack.recorder.database_ok


async def _idle(stack: Stack) -> bool:
    return stack.router.inflight.count == 0
