"""Faults under the roles: a worker killed mid-POST, SIGTERM, broker connections closed,
PostgreSQL stopped. Roles run as real processes or in this process against a namespace,
virtual host or database server of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from webhook_router import broker
from webhook_router.settings import Settings

from ..conftest import drop_namespace, eventually
from ..support.processes import (
    close_vhost_connections,
    delete_vhost,
    private_vhost,
    role_process,
    terminate,
)
from .conftest import Stack, answer_app, event_for, open_stack, private_job_log

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

CLOSE_SLACK = 3.0
"""Seconds allowed past a role's deadlines for closing its connections (and, for a process,
exiting): not a setting, a margin."""


def stop_bound(settings: Settings) -> float:
    """How long a stop may take under these settings: the drain deadline, a consumer cancel
    for each of the two queue-consuming roles that wait on one, and the closing slack."""
    return settings.drain_timeout + 2 * broker.CANCEL_TIMEOUT + CLOSE_SLACK


@asynccontextmanager
async def own_namespace(settings: Settings, **changes: Any) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"namespace": f"wrtest_{uuid.uuid4().hex[:8]}", **changes})
    try:
        yield own
    finally:
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.retry_delays)


def user_created(space: str, n: int = 0) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": f"user-{n}"})


async def publish_all(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Publish like a platform service: again until the broker confirms."""
    for event in events:
        for _ in range(100):
            try:
                await stack.publisher.publish(event)
                break
            except Exception:
                await asyncio.sleep(0.1)
                if not stack.publisher.connected:
                    await stack.publisher.close()
                    try:
                        await stack.publisher.open()
                    except Exception:
                        await asyncio.sleep(0.2)
        else:
            raise AssertionError("could not publish")


@asynccontextmanager
async def workerless_stack(settings: Settings, handler: Any) -> AsyncIterator[tuple[Stack, str]]:
    """Router and recorder in this process on a namespace of their own, a receiver answering
    with `handler`, and a webhook of a fresh space posting to it: (stack, space). The test
    runs the worker as a process of its own."""
    runner, url = await answer_app(handler)
    try:
        async with own_namespace(settings) as own, open_stack(own, ("recorder", "router")) as st:
            space = st.space()
            await st.webhook(space, type="User", event="Created", url=url + "/hook")
            yield st, space
    finally:
        await runner.cleanup()


async def test_a_worker_killed_mid_post_loses_nothing_and_makes_no_second_job(
    settings: Settings,
) -> None:
    arrived = asyncio.Event()
    released = asyncio.Event()
    posts: list[str] = []

    async def hang_first(request: web.Request) -> web.Response:
        posts.append(request.headers["webhook-id"])
        if len(posts) == 1:
            arrived.set()
            await released.wait()  # never answered: its worker is killed meanwhile
        return web.json_response({"message": "Initiated run #9."})

    async with workerless_stack(settings, hang_first) as (st, space):
        try:
            async with role_process(st.settings, "worker") as first:
                await st.publisher.publish(user_created(space))
                await asyncio.wait_for(arrived.wait(), 30)
                first.kill()
                assert await first.wait() == -9
            async with role_process(st.settings, "worker"):
                [job] = await st.settled(space, 1, timeout=60)
        finally:
            released.set()  # the hung handler ends, so the receiver stops without waiting for it
        assert job["status"] == "Complete"
        assert job["run_id"] == "9"
        assert posts == [str(job["id"]), str(job["id"])]
        assert len(await st.jobs(space)) == 1


async def test_sigterm_lets_a_worker_finish_what_it_holds_then_exit(settings: Settings) -> None:
    arrived = asyncio.Event()
    posts = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        arrived.set()
        await asyncio.sleep(1.0)
        return web.json_response({"message": "Initiated run #4."})

    async with workerless_stack(settings, slow) as (st, space):
        async with role_process(st.settings, "worker") as worker:
            await st.publisher.publish(user_created(space))
            await asyncio.wait_for(arrived.wait(), 30)
            terminate(worker)
            bound = stop_bound(st.settings)
            try:
                code = await asyncio.wait_for(worker.wait(), bound)
            except TimeoutError:
                raise AssertionError(
                    f"the worker did not exit within {bound:g}s of SIGTERM (drain_timeout "
                    f"{st.settings.drain_timeout:g}s + cancels + {CLOSE_SLACK:g}s)"
                ) from None
            assert code == 0
        [job] = await st.settled(space, 1, timeout=10)
        assert job["status"] == "Complete"
        assert posts == 1


async def test_closed_broker_connections_are_survived_by_every_role(settings: Settings) -> None:
    count = 300
    with private_vhost(settings.amqp_url[0]) as vhost_url:
        own = settings.model_copy(update={"amqp_url": [vhost_url]})
        async with open_stack(own) as st:
            space = st.space()
            await users_created_to_the_engine(st, space)
            events = [user_created(space, n) for n in range(count)]
            publishing = asyncio.create_task(publish_all(st, events))

            async def some_recorded() -> bool:
                return len(await st.jobs(space)) >= count // 10

            assert await eventually(some_recorded, timeout=30)
            close_vhost_connections(vhost_url)
            await asyncio.sleep(1.0)
            close_vhost_connections(vhost_url)
            await asyncio.wait_for(publishing, 60)
            rows = await st.settled(space, count, timeout=90)
            assert len(rows) == count
            assert {r["status"] for r in rows} == {"Complete"}
            users = {p.json()["user"]["username"] for p in st.received_for(space)}
            assert users == {f"user-{n}" for n in range(count)}


async def test_every_role_stops_cleanly_after_its_broker_went_away(settings: Settings) -> None:
    """A stop while the broker is gone (connections dropped, reconnections refused) ends
    within the drain deadline and raises nothing: a consumer the broker already dropped
    has nothing left to cancel, and the roles' other resources are still released."""
    with private_vhost(settings.amqp_url[0]) as vhost_url:
        own = settings.model_copy(update={"amqp_url": [vhost_url]})
        running = open_stack(own)
        st = await running.__aenter__()
        try:
            roles = (st.router, st.worker, st.recorder)
            assert all(role.ready() for role in roles)
            delete_vhost(vhost_url)

            async def all_cut_off() -> bool:
                return not any(role.ready() for role in roles)

            assert await eventually(all_cut_off, timeout=30)
        except BaseException:
            await running.__aexit__(None, None, None)
            raise
        await asyncio.wait_for(running.__aexit__(None, None, None), 30)
        assert st.worker.client.closed and st.worker.engine_client.closed


async def test_a_worker_stops_within_its_deadline_when_the_broker_goes_mid_post(
    settings: Settings,
) -> None:
    """The broker goes away while a POST is in flight: the worker's report of it can never
    be confirmed, and its stop must still end soon after its drain deadline,
    not wait for a broker that does not come back. The delivery is not acknowledged, so
    a broker that does come back gives it again."""
    posted = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        posted.set()
        await asyncio.sleep(1.0)
        return web.json_response({"ok": True})

    runner, url = await answer_app(slow)
    try:
        with private_vhost(settings.amqp_url[0]) as vhost_url:
            own = settings.model_copy(update={"amqp_url": [vhost_url]})
            running = open_stack(own)
            st = await running.__aenter__()
            try:
                space = st.space()
                await st.webhook(space, type="User", event="Created", url=url + "/hook")
                await st.publisher.publish(user_created(space))
                await asyncio.wait_for(posted.wait(), 15)
                delete_vhost(vhost_url)
            except BaseException:
                await running.__aexit__(None, None, None)
                raise
            loop = asyncio.get_running_loop()
            began = loop.time()
            await asyncio.wait_for(running.__aexit__(None, None, None), 40)
            took = loop.time() - began
            assert took < stop_bound(own), (
                f"stopped in {took:.1f}s: over drain_timeout {own.drain_timeout:g}s + two "
                f"consumer cancels of {broker.CANCEL_TIMEOUT:g}s + {CLOSE_SLACK:g}s"
            )
    finally:
        await runner.cleanup()


async def test_postgres_stopped_mid_run_loses_no_outcome(settings: Settings) -> None:
    count = 200
    async with (
        private_job_log() as (pg, database_url),
        own_namespace(settings, database_url=database_url) as own,
        open_stack(own) as st,
    ):
        space = st.space()
        await users_created_to_the_engine(st, space)
        await st.publisher.publish(user_created(space, -1))
        await st.settled(space, 1)
        pg.stop()
        for n in range(count):
            await st.publisher.publish(user_created(space, n))
        # the router and the workers keep delivering while the database is away
        assert await eventually(lambda: _received_at_least(st, space, count + 1), timeout=60)
        assert not st.recorder.database_ok
        pg.start()
        rows = await st.settled(space, count + 1, timeout=90)
        assert len(rows) == count + 1
        assert {r["status"] for r in rows} == {"Complete"}


async def users_created_to_the_engine(st: Stack, space: str) -> None:
    """A webhook of `space` posting every User Created to the engine's run-tree endpoint."""
    await st.webhook(
        space,
        type="User",
        event="Created",
        url="/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created",
    )


async def _received_at_least(st: Stack, space: str, n: int) -> bool:
    return len(st.received_for(space)) >= n
