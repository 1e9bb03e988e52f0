"""Prometheus metrics: what flows through the roles, how long it takes, what piles up.

Each process has one registry, served at `/metrics` by the API and by every role process's
health port. The roles call the small functions below at the points where things happen;
queue depths are read from the broker when `/metrics` is scraped, so they are never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import aio_pika.exceptions
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from webhook_router.classify import Decision, Verdict
from webhook_router.jobs import Delivery, Outcome
from webhook_router.topology import Names, delay_name

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

EVENTS_RECEIVED = Counter(
    "webhook_router_events_received",
    "Valid events a router took from the events queue, by type and action.",
    ["type", "action"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "webhook_router_deliveries",
    "HTTP attempts to webhooks, by verdict: complete, retry, fail or disable.",
    ["verdict"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "webhook_router_delivery_seconds",
    "Time of one HTTP attempt to a webhook, from connect to the answer read.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "webhook_router_webhook_attempts",
    "HTTP attempts per webhook (space, kapp or empty, name), by result: complete or failed "
    "(a retry, a failure or a disabled webhook); two series per webhook.",
    ["space", "kapp", "webhook", "result"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "webhook_router_retries",
    "Next attempts put into a retry queue after a retryable failure, by the queue's delay.",
    ["delay"],
    registry=REGISTRY,
)
DEFERRALS = Counter(
    "webhook_router_deliveries_deferred",
    "Deliveries held back without spending an attempt (endpoint busy or its circuit open).",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "webhook_router_dead_letters",
    "Messages put into the dead-letter queue, by the role that put them there.",
    ["role"],
    registry=REGISTRY,
)
RECORDER_BATCH = Histogram(
    "webhook_router_recorder_batch_size",
    "Outcomes the recorder wrote in one transaction.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=REGISTRY,
)
RECORDER_LAG = Histogram(
    "webhook_router_recorder_lag_seconds",
    "From an outcome's time (job queued, attempt finished) to its write in the job log.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "webhook_router_queue_messages",
    "Messages ready in each queue, read from the broker when scraped.",
    ["queue"],
    registry=REGISTRY,
)
ROLE_READY = Gauge(
    "webhook_router_role_ready",
    "1 while a role of the process is ready (what /readyz answers), else 0; set when scraped.",
    ["component"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "webhook_router_api_requests",
    "API requests by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)


_events_received = functools.cache(EVENTS_RECEIVED.labels)
_deliveries = functools.cache(DELIVERIES.labels)
_webhook_attempts = functools.cache(WEBHOOK_ATTEMPTS.labels)
"""The series of each event's and each delivery's counters, each looked up once: `labels`
checks its values and takes a lock every time it is asked."""


def event_received(type_: str, action: str) -> None:
    """A valid event was taken in (its type and action are the catalogue's)."""
    _events_received(type_, action).inc()


def delivery_done(decision: Decision, seconds: float) -> None:
    """An HTTP attempt was reported: its verdict and time, the retry it scheduled, and the
    dead letter it left when the schedule ran out."""
    _deliveries(decision.verdict.value).inc()
    DELIVERY_SECONDS.observe(seconds)
    if decision.verdict is Verdict.RETRY and decision.delay is not None:
        RETRIES.labels(delay_name(decision.delay)).inc()
    if decision.exhausted:
        dead_lettered("worker")


def webhook_attempt(delivery: Delivery, decision: Decision) -> None:
    """An attempt of one webhook: what its failure ratio is computed from."""
    kapp = delivery.scope_id if delivery.scope_type == "Kapp" else ""
    result = "complete" if decision.verdict is Verdict.COMPLETE else "failed"
    _webhook_attempts(delivery.space, kapp, delivery.webhook_name, result).inc()


def role_ready(component: str, ready: bool) -> None:
    ROLE_READY.labels(component).set(1 if ready else 0)


def deferred() -> None:
    DEFERRALS.inc()


def dead_lettered(role: str) -> None:
    DEAD_LETTERS.labels(role).inc()


def api_request(method: str, route: str, status: int) -> None:
    API_REQUESTS.labels(method, route, str(status)).inc()


def outcome_time(outcome: Outcome) -> datetime | None:
    """When the outcome happened: its attempt's end, else when the job was planned."""
    try:
        if outcome.attempt is not None:
            started = datetime.fromisoformat(outcome.attempt.started_at)
            return started + timedelta(milliseconds=outcome.attempt.duration_ms)
        if outcome.delivery.created_at:
            return datetime.fromisoformat(outcome.delivery.created_at)
    except ValueError:
        return None
    return None


def recorded(outcomes: Sequence[Outcome], now: datetime | None = None) -> None:
    """A batch written to the job log: its size, and each outcome's wait to get there."""
    RECORDER_BATCH.observe(len(outcomes))
    now = now or datetime.now(UTC)
    for outcome in outcomes:
        at = outcome_time(outcome)
        if at is not None and at.tzinfo is not None:
            RECORDER_LAG.observe(max(0.0, (now - at).total_seconds()))


class QueueDepths:
    """Reads how many messages wait in each of the namespace's queues (passive declares)."""

    def __init__(
        self, names: Names, retry_delays: Iterable[float] = (), timeout: float = 5.0
    ) -> None:
        self.queues = (
            *names.work_queues(),
            *(names.retry_queue(s) for s in sorted(set(retry_delays))),
            names.dead,
        )
        self.timeout = timeout

    async def read(self, connection: AbstractConnection) -> dict[str, int]:
        """Depth of every queue that exists; a missing queue is left out."""
        depths: dict[str, int] = {}
        channel: AbstractChannel | None = None
        try:
            for queue in self.queues:
                if channel is None or channel.is_closed:
                    channel = await connection.channel(publisher_confirms=False)
                try:
                    declared = await channel.declare_queue(queue, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    continue
                count = declared.declaration_result.message_count
                depths[queue] = int(count or 0)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return depths

    async def refresh(self, connection: AbstractConnection | None) -> None:
        """Set the gauge from the broker; without a broker the gauge shows nothing rather
        than old numbers."""
        depths: dict[str, int] = {}
        if connection is not None and not connection.is_closed:
            try:
                depths = await asyncio.wait_for(self.read(connection), self.timeout)
            except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
                log.warning("queue depths not read", error=repr(exc))
        QUEUE_MESSAGES.clear()
        for queue, count in depths.items():
            QUEUE_MESSAGES.labels(queue).set(count)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def handler(
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving the registry in Prometheus's text format."""

    async def metrics(request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        response = web.Response(body=exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return metrics
