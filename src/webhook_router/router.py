"""Router role: events in, one delivery per matching webhook out, each job recorded Queued.

The event is acknowledged only after every delivery and every Queued record it caused was
confirmed by the broker, so a router that dies mid-event loses nothing; the event comes
back and, job ids being derived from event and webhook, makes no second job.
"""

from __future__ import annotations

import contextlib

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from webhook_router import broker, metrics
from webhook_router.acks import Acks
from webhook_router.cache import WebhookCache
from webhook_router.events import Event, EventInvalid, parse_event
from webhook_router.jobs import Status
from webhook_router.planning import Batchers, plan, publish_jobs
from webhook_router.service import InFlight, SideTasks, dead_letter, link
from webhook_router.settings import Settings
from webhook_router.store import Store
from webhook_router.topology import Topology

log = structlog.get_logger(__name__)


class Router:
    name = "router"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.names = settings.names
        self.side = SideTasks(self.name)
        self.cache = WebhookCache(store, settings.database_url, settings.webhook_refresh)
        self.inflight = InFlight()
        self.acks = Acks()
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self._consumer_tag: str | None = None
        self.batchers: Batchers | None = None

    async def start(self) -> None:
        self.side.watch(await self.cache.start())
        self.connection, self.topology = await link(
            self.settings, self.name, prefetch=self.settings.router_prefetch
        )
        self.batchers = Batchers.of(self.topology)
        self._consumer_tag = await self.topology.router.consume(self.on_event)
        log.info("router started", queue=self.names.router)

    def ready(self) -> bool:
        return broker.connected(self.connection) and self.side.alive

    async def stop(self, deadline: float) -> None:
        if self.topology is not None and self._consumer_tag is not None:
            await broker.cancel([(self.topology.router, self._consumer_tag)])
        await self.inflight.wait_idle(deadline)
        if self.batchers is not None:
            await self.batchers.drain()
        await self.acks.drain()
        await self.side.stop()
        await self.cache.stop()
        if self.connection is not None:
            await self.connection.close()

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        assert self.topology is not None
        topology = self.topology
        self.acks.received(message)
        with self.inflight.hold():
            try:
                event = parse_event(message.body)
            except EventInvalid as exc:
                await dead_letter(topology.dead, message, role=self.name, reason=str(exc))
                await message.ack()
                self.acks.settled(message)
                return
            metrics.event_received(event.type, event.action)
            try:
                await self.route(event)
            except Exception:
                # the broker or a bug: give the event back; the delivery limit stops a loop
                log.exception("event not routed", event_id=event.id)
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                self.acks.settled(message)
                return
            self.acks.done(message)

    async def route(self, event: Event) -> int:
        """Publish the event's deliveries and Queued records; returns how many jobs."""
        assert self.topology is not None
        matches = self.cache.index.match(event, self.settings.engine_url)
        deliveries, outcomes = plan(event, matches)
        await publish_jobs(self.topology, deliveries, outcomes, self.batchers)
        for o in outcomes:
            log.info(
                "job queued" if o.status == Status.QUEUED else "job failed",
                event_id=event.id,
                job_id=o.delivery.job_id,
                webhook=o.delivery.webhook_name,
                url=o.delivery.url,
                summary=o.summary,
            )
        if not outcomes:
            log.debug("no webhook matched", event_id=event.id, type=event.type, action=event.action)
        return len(outcomes)
