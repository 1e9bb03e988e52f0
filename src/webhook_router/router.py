"""Router role: events in, one delivery per matching webhook out, each job recorded Queued.

The event is acknowledged only after every delivery and every Queued record it caused was
confirmed by the broker, so a router that dies mid-event loses nothing; the event comes
back and, job ids being derived from event and webhook, makes no second job. An event
published without `event.id` gets one derived from its routing key and body
(`events.derived_id`), so its redelivery is the same event too; a missing
`event.timestamp` is taken from the message's AMQP timestamp, else from an earlier copy this
router saw, else from the event's jobs already recorded (the job log's rows are keyed by id
and event time), else now. With a direct handoff (handoff.py) the jobs go to the worker and
the recorder of this process in memory instead, and the event is acknowledged once they are
recorded.

An event that can never be routed (invalid, not storable, not encodable, or too large for
its deliveries to fit in a message) is dead-lettered with the reason before anything of it
is published; only a failure to publish gives the event back to be tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from webhook_router import broker, metrics, tracing
from webhook_router.acks import Acks
from webhook_router.cache import WebhookCache
from webhook_router.events import Event, EventInvalid, derived_id, iso_timestamp, parse_event
from webhook_router.jobs import Delivery, Outcome, Status
from webhook_router.planning import Batchers, plan, publish_jobs
from webhook_router.sequencer import Sequencer
from webhook_router.service import Drain, InFlight, SideTasks, dead_letter, link
from webhook_router.settings import Settings
from webhook_router.store import Ledger, Store
from webhook_router.topology import Topology

log = structlog.get_logger(__name__)

LOOKUP_TIMEOUT = 2.0
"""Seconds the router waits for the job log to tell when an event happened; without an
answer (the database away) it takes its own clock."""
TIMES_KEPT = 10_000
"""Events without a time whose first copy's time the router remembers (the oldest go)."""


Handoff = Callable[[Sequence[Delivery], Sequence[Outcome]], Awaitable[None]]
"""An event's deliveries and its jobs' records, handed over in memory."""


class Unroutable(Exception):
    """An event that can never be routed, whatever is tried again: it is dead-lettered."""


class Router:
    name = "router"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.names = settings.names
        self.side = SideTasks(self.name)
        self.cache = WebhookCache(store, settings.database_url, settings.webhook_refresh)
        self.inflight = InFlight()
        self.acks = Acks()
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self._consumer_tag: str | None = None
        self.batchers: Batchers | None = None
        self.sequencer = Sequencer(settings, self.cache, self.event_of, Ledger(store.pool))
        self._times: dict[str, asyncio.Future[str]] = {}
        """Per event id that came without a time, the time its first copy was given: a copy
        arriving before the first one's jobs are recorded gets the same (the job log keys a
        job by id and event time, so two times would make two rows of one job)."""
        self.handoff: Handoff | None = None
        """Where an event's jobs go in memory (a direct handoff: handoff.py), returning once
        they are done; None: published to the workers and the recorder."""

    async def start(self) -> None:
        self.side.watch(await self.cache.start())
        s = self.settings  # a direct handoff's events wait for their records: it holds more
        prefetch = s.router_prefetch if self.handoff is None else s.direct_prefetch
        self.connection, self.topology = await link(s, self.name, prefetch=prefetch)
        self.batchers = Batchers.of(self.topology, self.settings.max_message_bytes)
        await self.sequencer.load()
        self._consumer_tag = await self.topology.router.consume(self.on_event)
        self.side.start(self.sequencer.run(), "sequencer")
        log.info("router started", queue=self.names.router)

    def ready(self) -> bool:
        return broker.connected(self.connection) and self.side.alive

    async def stop(self, deadline: float) -> None:
        drain = Drain(deadline, self.name)
        self.side.retire()  # the sequencer's loop ends now, and that is no death
        await self.sequencer.stop()
        if self.topology is not None and self._consumer_tag is not None:
            await broker.cancel([(self.topology.router, self._consumer_tag)])
        await self.inflight.wait_idle(drain.left())
        if self.batchers is not None:
            await drain.step(self.batchers.drain(), "deliveries and outcomes confirmed")
        await self.acks.drain()
        await self.side.stop()
        await self.cache.stop()
        if self.connection is not None:
            await broker.close(self.connection, drain.left())

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        assert self.topology is not None
        topology = self.topology
        self.acks.received(message)
        with (
            self.inflight.hold(),
            tracing.span("route event", parent=message.headers, kind=tracing.CONSUMER) as span,
        ):
            try:
                event = await self.event_of(message)
                metrics.event_received(event.type, event.action)
                jobs = await self.route(event)
                if span is not None:
                    span.set_attributes(
                        {
                            "event.id": event.id,
                            "event.type": event.type,
                            "event.action": event.action,
                            "webhook_router.jobs": jobs,
                        }
                    )
            except (EventInvalid, Unroutable) as exc:
                try:
                    await dead_letter(topology.dead, message, role=self.name, reason=str(exc))
                    await message.ack()
                except Exception:
                    log.exception("event not dead-lettered", message_id=message.message_id)
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)
                self.acks.settled(message)
                return
            except Exception:
                # the broker or a bug: give the event back; the delivery limit stops a loop
                log.exception("event not routed", message_id=message.message_id)
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                self.acks.settled(message)
                return
            self.acks.done(message)

    async def event_of(self, message: AbstractIncomingMessage) -> Event:
        """The message's event, with what it lacked filled in the same way each time it is
        seen: the id derived from the message, the timestamp from the message's AMQP
        timestamp, an earlier copy's or the event's jobs already recorded."""
        stamped = message.timestamp
        event = parse_event(
            message.body,
            default_id=lambda: derived_id(message.body, message.routing_key or ""),
            default_timestamp=iso_timestamp(stamped) if stamped is not None else None,
        )
        if "timestamp" not in event.filled or stamped is not None:
            return event
        taken = self._times.get(event.id)
        if taken is None:  # the first copy in hand: its answer is every copy's
            taken = asyncio.ensure_future(self._time_of(event))
            self._times[event.id] = taken
            while len(self._times) > TIMES_KEPT:
                del self._times[next(iter(self._times))]
        timestamp = await asyncio.shield(taken)
        if timestamp == event.body["event"]["timestamp"]:
            return event
        header = {**event.body["event"], "timestamp": timestamp}
        return parse_event({**event.body, "event": header}, fill=False)

    async def _time_of(self, event: Event) -> str:
        """When an event that came without a time happened: as its jobs already recorded
        say, else as first seen here (the time `event` was given)."""
        try:
            recorded = await asyncio.wait_for(self.store.event_time(event.id), LOOKUP_TIMEOUT)
        except Exception as exc:
            log.warning("event time not looked up", event_id=event.id, error=repr(exc))
            recorded = None
        if recorded is None:
            return str(event.body["event"]["timestamp"])
        return iso_timestamp(recorded)

    async def route(self, event: Event) -> int:
        """Publish the event's deliveries and Queued records (or hand them over, then
        returning once they are done); returns how many jobs.
        Raises Unroutable, having published nothing, for an event that can never be."""
        assert self.topology is not None
        matches = self.cache.index.match(event, self.settings.engine_url)
        matches = [m for m in matches if not self.sequencer.carries(m.webhook, event)]
        try:
            deliveries, outcomes = plan(event, matches, trace=tracing.carrier())
        except (TypeError, ValueError) as exc:  # orjson's encoding errors are ValueErrors
            raise Unroutable(f"event not encodable: {exc}") from None
        too_large = oversized(outcomes, self.settings.max_message_bytes)
        if too_large:
            raise Unroutable(
                f"event too large to deliver: its deliveries are {too_large} bytes, more than "
                f"the {self.settings.max_message_bytes} bytes a message may hold "
                "(WEBHOOK_ROUTER_MAX_MESSAGE_BYTES)"
            )
        if self.handoff is None:
            await publish_jobs(self.topology, deliveries, outcomes, self.batchers)
            _log_jobs(event, outcomes, "job queued")
        else:  # said before the worker's lines about the same jobs
            _log_jobs(event, outcomes, "job handed over")
            await self.handoff(deliveries, outcomes)
        if not outcomes:
            log.debug("no webhook matched", event_id=event.id, type=event.type, action=event.action)
        return len(outcomes)


def _log_jobs(event: Event, outcomes: Sequence[Outcome], queued: str) -> None:
    """A line per job: `queued` for a job on its way to a worker, else "job failed"."""
    for o in outcomes:
        log.info(
            queued if o.status == Status.QUEUED else "job failed",
            event_id=event.id,
            job_id=o.delivery.job_id,
            webhook=o.delivery.webhook_name,
            url=o.delivery.url,
            summary=o.summary,
        )


def oversized(outcomes: Sequence[Outcome], max_bytes: int) -> int:
    """Bytes of the largest of the outcomes (each carries its delivery, so is larger than
    it) when one would not fit in a message of `max_bytes`; else 0. Small events are not
    measured: the batcher's own check stands behind this one."""
    if not outcomes or len(outcomes[0].delivery.body) * 8 < max_bytes:
        return 0
    largest = max(len(orjson.dumps([o])) for o in outcomes)
    return largest if largest > max_bytes else 0
