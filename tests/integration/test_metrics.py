"""Prometheus metrics on the API and on a role process's health port: every family is
exposed, queue depths follow the messages waiting, and the counters move as events flow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from webhook_router import broker, metrics
from webhook_router.api import Api
from webhook_router.classify import Decision, Verdict
from webhook_router.jobs import Attempt, Outcome, Status
from webhook_router.publisher import Publisher
from webhook_router.runtime import health_app, serve
from webhook_router.settings import Settings
from webhook_router.topology import Names

from ..conftest import TEST_SCHEDULE, eventually, free_port
from .conftest import Stack, answer_app, event_for
from .test_delivery import a_delivery

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

FAMILIES = {
    "webhook_router_events_received": "counter",
    "webhook_router_deliveries": "counter",
    "webhook_router_delivery_seconds": "histogram",
    "webhook_router_retries": "counter",
    "webhook_router_deliveries_deferred": "counter",
    "webhook_router_dead_letters": "counter",
    "webhook_router_recorder_batch_size": "histogram",
    "webhook_router_recorder_lag_seconds": "histogram",
    "webhook_router_queue_messages": "gauge",
    "webhook_router_api_requests": "counter",
    "webhook_router_webhook_attempts": "counter",
    "webhook_router_role_ready": "gauge",
}
USERS_TREE = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scrape:
    def __init__(self, text: str) -> None:
        self.types = {}
        self.samples: Samples = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def queues(self) -> dict[str, float]:
        return {
            dict(labels)["queue"]: value
            for (name, labels), value in self.samples.items()
            if name == "webhook_router_queue_messages"
        }


async def scrape(url: str, token: str | None = "test-token") -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        return Scrape(await response.text())


RETRY_DELAYS = (*TEST_SCHEDULE, Settings.model_fields["endpoint_wait"].default)
"""The suite's retry queues: its schedule's, and the rate limit's (`endpoint_wait`)."""


def namespace_queues(names: Names) -> set[str]:
    return {*names.work_queues(), names.dead, *(names.retry_queue(s) for s in RETRY_DELAYS)}


async def test_the_api_serves_every_metric_and_the_depth_of_every_queue(stack: Stack) -> None:
    first = await scrape(stack.api_url + "/metrics")
    for name, kind in FAMILIES.items():
        assert first.types.get(name) == kind, name
    assert "process_cpu_seconds" in first.types
    assert set(first.queues()) == namespace_queues(stack.router.names)
    assert all(depth >= 0 for depth in first.queues().values())

    second = await scrape(stack.api_url + "/metrics")
    route = {"method": "GET", "route": "/metrics", "status": "200"}
    assert second("webhook_router_api_requests_total", **route) == (
        first("webhook_router_api_requests_total", **route) + 1
    )


@asynccontextmanager
async def private_namespace(stack: Stack) -> AsyncIterator[Names]:
    """A namespace of the test's own whose queues no role drains; deleted afterwards."""
    names = Names(f"wrdepth_{uuid.uuid4().hex[:8]}")
    try:
        yield names
    finally:
        connection = await aio_pika.connect(stack.settings.amqp_url[0])
        async with connection:
            channel = await connection.channel()
            for queue in namespace_queues(names):
                await channel.queue_delete(queue)
            for exchange in (
                names.events,
                names.deliveries,
                names.retry,
                names.results,
                names.dead,
            ):
                await channel.exchange_delete(exchange)


async def test_queue_depths_follow_the_messages_waiting(stack: Stack) -> None:
    async with private_namespace(stack) as names:
        settings = stack.settings.model_copy(update={"namespace": names.namespace})
        api = Api(settings, stack.store)
        port = free_port()
        runner = await serve(api.app(), "127.0.0.1", port)
        health_port = free_port()
        depths = metrics.QueueDepths(names, settings.retry_delays)
        health = await serve(health_app([stack.router], depths), "127.0.0.1", health_port)
        try:
            before = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert set(before.queues()) == namespace_queues(names)
            assert before.queues()[names.router] == 0

            async with Publisher(settings.amqp_url, names.namespace) as publisher:
                for i in range(3):
                    await publisher.publish(event_for("s", "User", "Created", user={"n": i}))

            async def waiting(count: int) -> bool:
                seen = await scrape(f"http://127.0.0.1:{port}/metrics")
                return seen.queues()[names.router] == count

            assert await eventually(lambda: waiting(3), timeout=10)
            from_role = await scrape(f"http://127.0.0.1:{health_port}/metrics", token=None)
            assert from_role.queues()[names.router] == 3

            connection = await aio_pika.connect(stack.settings.amqp_url[0])
            async with connection:
                channel = await connection.channel()
                await (await channel.get_queue(names.router)).purge()
            assert await eventually(lambda: waiting(0), timeout=10)
        finally:
            await health.cleanup()
            await runner.cleanup()
            await api.close()


async def test_a_role_process_serves_metrics_on_its_health_port(stack: Stack) -> None:
    port = free_port()
    runner = await serve(health_app([stack.router, stack.recorder]), "127.0.0.1", port)
    try:
        exposed = await scrape(f"http://127.0.0.1:{port}/metrics", token=None)
        for name, kind in FAMILIES.items():
            assert exposed.types.get(name) == kind, name
        assert exposed("webhook_router_role_ready", component="router") == 1
        assert exposed("webhook_router_role_ready", component="recorder") == 1
    finally:
        await runner.cleanup()


class Stuck:
    """A role whose background task died: connected or not, it is not ready."""

    name = "stuck"

    def ready(self) -> bool:
        return False


async def test_the_readiness_gauge_says_which_role_is_not_ready(stack: Stack) -> None:
    port = free_port()
    roles: list[Any] = [stack.worker, Stuck()]
    runner = await serve(health_app(roles), "127.0.0.1", port)
    try:
        exposed = await scrape(f"http://127.0.0.1:{port}/metrics", token=None)
        assert exposed("webhook_router_role_ready", component="worker") == 1
        assert exposed("webhook_router_role_ready", component="stuck") == 0
        api = await scrape(stack.api_url + "/metrics")
        assert api("webhook_router_role_ready", component="api") == 1
    finally:
        await runner.cleanup()


async def test_the_recorder_lag_is_measured_from_each_outcome(stack: Stack) -> None:
    now = datetime.now(UTC)
    delivery = replace(
        a_delivery("http://127.0.0.1:1/"),
        job_id=str(uuid.uuid4()),
        event_at=now.isoformat(),
        webhook_id=str(uuid.uuid4()),
        webhook_name="n",
        parent_id=None,
        created_at=(now - timedelta(seconds=3)).isoformat(),
    )
    attempt = Attempt(1, (now - timedelta(seconds=2)).isoformat(), 500.0, 200, "", None)
    queued = Outcome(delivery, Status.QUEUED)
    done = Outcome(delivery, Status.COMPLETE, attempt=attempt)
    assert metrics.outcome_time(queued) == now - timedelta(seconds=3)
    assert metrics.outcome_time(done) == now - timedelta(seconds=1.5)

    before = Scrape(metrics.exposition().decode())
    metrics.recorded([queued, done], now=now)
    after = Scrape(metrics.exposition().decode())
    assert after("webhook_router_recorder_lag_seconds_count") == (
        before("webhook_router_recorder_lag_seconds_count") + 2
    )
    assert after("webhook_router_recorder_lag_seconds_sum") == pytest.approx(
        before("webhook_router_recorder_lag_seconds_sum") + 4.5
    )
    assert after("webhook_router_recorder_batch_size_sum") == (
        before("webhook_router_recorder_batch_size_sum") + 2
    )
    metrics.delivery_done(Decision(Verdict.RETRY, "503", delay=0.2, exhausted=False), 0.1)
    metrics.delivery_done(Decision(Verdict.FAIL, "gave up", exhausted=True), 0.1)
    last = Scrape(metrics.exposition().decode())
    assert last("webhook_router_retries_total", delay="200ms") == (
        after("webhook_router_retries_total", delay="200ms") + 1
    )
    assert last("webhook_router_dead_letters_total", role="worker") == (
        after("webhook_router_dead_letters_total", role="worker") + 1
    )


async def take_dead(stack: Stack, message_ids: set[str]) -> set[str]:
    """Those of these messages the recorder stored as dead letters (moved out of the
    dead-letter queue), waiting for all of them."""

    async def stored() -> set[str]:
        rows = await stack.store.pool.fetch(
            "SELECT message_id FROM dead_letters WHERE message_id = ANY($1)", list(message_ids)
        )
        return {r["message_id"] for r in rows}

    async def all_stored() -> bool:
        return await stored() == message_ids

    await eventually(all_stored, timeout=10)
    return await stored()


async def test_the_counters_move_when_events_flow(stack: Stack) -> None:
    """Needs the metric calls in router, worker, recorder and service (see metrics.py)."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    receiver, url = await answer_app(unavailable)
    try:
        before = await scrape(stack.api_url + "/metrics")
        space = stack.space()
        for name, target in (
            ("ok", stack.settings.engine_url + USERS_TREE),
            ("fails", stack.settings.engine_url + "/nowhere"),
            ("retries", url + "/hook"),
        ):
            await stack.webhook(space, name=name, type="User", event="Created", url=target)
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "m"}))
        bad_id = f"bad-{space}"
        await broker.publish(
            stack.router.topology.events,  # type: ignore[union-attr]
            b"{not an event",
            "user.created",
            message_id=bad_id,
        )
        jobs = await stack.settled(space, 3, timeout=20)
        retried = next(j for j in jobs if j["webhook_name"] == "retries")
        assert retried["status"] == "Failed" and retried["attempts"] == len(TEST_SCHEDULE) + 1
        assert await take_dead(stack, {bad_id, str(retried["id"])}) == {bad_id, str(retried["id"])}

        async def recorded_all() -> Scrape | None:
            now = await scrape(stack.api_url + "/metrics")
            lag = "webhook_router_recorder_lag_seconds_count"
            return now if now(lag) - before(lag) >= 3 + 1 + 1 + 4 else None

        after = await eventually(recorded_all, timeout=10)
        assert after is not None, "the recorder's lag was not measured for every outcome"
    finally:
        await receiver.cleanup()

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert moved("webhook_router_events_received_total", type="User", action="Created") >= 1
    assert moved("webhook_router_deliveries_total", verdict="complete") >= 1
    assert moved("webhook_router_deliveries_total", verdict="fail") >= 2
    assert moved("webhook_router_deliveries_total", verdict="retry") >= len(TEST_SCHEDULE)
    assert moved("webhook_router_delivery_seconds_count") >= 2 + len(TEST_SCHEDULE) + 1
    for seconds in TEST_SCHEDULE:
        assert moved("webhook_router_retries_total", delay=f"{round(seconds * 1000)}ms") >= 1
    assert moved("webhook_router_dead_letters_total", role="router") >= 1
    assert moved("webhook_router_dead_letters_total", role="worker") >= 1
    assert moved("webhook_router_recorder_batch_size_count") >= 1
    assert moved("webhook_router_recorder_batch_size_sum") >= 3 + 1 + 1 + 4
    per_webhook = {
        (name, result): after(
            "webhook_router_webhook_attempts_total",
            space=space,
            kapp="",
            webhook=name,
            result=result,
        )
        for name in ("ok", "fails", "retries")
        for result in ("complete", "failed")
    }
    assert per_webhook == {
        ("ok", "complete"): 1,
        ("ok", "failed"): 0,
        ("fails", "complete"): 0,
        ("fails", "failed"): 1,
        ("retries", "complete"): 0,
        ("retries", "failed"): len(TEST_SCHEDULE) + 1,
    }


async def test_queues_that_do_not_exist_are_left_out(stack: Stack) -> None:
    connection = await broker.connect(stack.settings.amqp_url, name="test-depths")
    try:
        missing = metrics.QueueDepths(Names(f"wrnone_{uuid.uuid4().hex[:8]}"), (1.0,))
        assert await missing.read(connection) == {}
        present = metrics.QueueDepths(stack.router.names, stack.settings.retry_delays)
        assert set(await present.read(connection)) == namespace_queues(stack.router.names)
    finally:
        await connection.close()
