"""The sequencer: in a router process, routes the events of ordered webhooks one key after
another (docs/ordering.md).

Every router runs one; the `ordered` queue's single active consumer makes one of them the
sequencer at a time. It reads events in queue order and, per key, publishes the delivery of
event k+1 only once the broker confirmed k's; keys do not wait for each other. An event is
acknowledged once its deliveries and Queued records were confirmed. A publish that fails
ends the connection: what it held returns to the queue in order, and nothing of it is
published on another connection.

It also binds `ordered` to the events ordered webhooks take, and notes in the ledger when
each binding was first made. Both sides decide by the event's timestamp: an ordered
webhook's job of an event stamped from that time on is the sequencer's, of an earlier one
the main routers' (`carries`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson
import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from webhook_router import broker
from webhook_router.batching import Batcher
from webhook_router.cache import WebhookCache
from webhook_router.events import Event, EventInvalid
from webhook_router.jobs import Outcome, Status
from webhook_router.ordered import (
    REDELIVERED,
    OrderedTopology,
    close_quietly,
    connect_plain,
    declare_ordered,
    key_of,
    ordered_event_keys,
    shard_of,
)
from webhook_router.planning import plan
from webhook_router.settings import Settings
from webhook_router.store import Ledger
from webhook_router.topology import RECORD_KEY
from webhook_router.webhooks import Webhook

log = structlog.get_logger(__name__)

RECONNECT_WAIT = 1.0


class Sequencer:
    def __init__(
        self,
        settings: Settings,
        cache: WebhookCache,
        event_of: Callable[[AbstractIncomingMessage], Awaitable[Event]],
        ledger: Ledger,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.cache = cache
        self.event_of = event_of
        self.ledger = ledger
        self.carried: dict[str, datetime] = {}
        """Event routing keys `ordered` is bound to, with when each was first bound."""
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._connection: AbstractConnection | None = None
        self._records: Batcher[Outcome] | None = None

    def carries(self, webhook: Webhook, event: Event) -> bool:
        """Whether this webhook's job of this event is the sequencer's, not the router's."""
        bound_at = self.carried.get(event.routing_key)
        return webhook.ordered and bound_at is not None and event.timestamp >= bound_at

    async def load(self) -> None:
        """The bindings made so far, before the router takes its first event: from its
        start the router leaves to the sequencers what `ordered` holds copies of."""
        self.carried = await self.ledger.bindings(self.names.namespace)

    def _wanted(self) -> set[str]:
        return ordered_event_keys(self.cache.by_id.values())

    async def run(self) -> None:
        """Sequence while ordered webhooks exist; connect again after every loss."""
        while not self._stopping:
            if not self._wanted() and not self.carried:
                await asyncio.sleep(self.settings.webhook_refresh)
                continue
            try:
                self._connection = await connect_plain(
                    self.settings.amqp_url, f"sequencer {socket.gethostname()}:{os.getpid()}"
                )
                await self._serve(self._connection)
            except Exception as exc:
                log.warning("sequencer connection lost", error=repr(exc))
            finally:
                await close_quietly(self._connection)
                self._connection = None
            await asyncio.sleep(RECONNECT_WAIT)

    async def stop(self) -> None:
        """Stop taking events and let what was taken finish; the connection's close returns
        the rest, in order, to the next sequencer."""
        self._stopping = True
        pending = [*self._tails.values(), *self._settling]
        if pending:
            await asyncio.wait(pending, timeout=self.settings.drain_timeout)
        await close_quietly(self._connection)

    async def _serve(self, connection: AbstractConnection) -> None:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=self.settings.router_prefetch)
        topology = await declare_ordered(channel, self.names)
        # Queued records of all keys share messages; a new batcher per connection, so
        # nothing of a lost one is published on the next
        self._records = Batcher(
            lambda: topology.results,
            lambda _: RECORD_KEY,
            max_bytes=self.settings.max_message_bytes,
        )
        intake: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await self._bind(topology)

        async def received(message: AbstractIncomingMessage) -> None:
            intake.put_nowait(message)  # before any await: intake keeps the queue's order

        await topology.ordered.consume(received)
        log.info("sequencer subscribed", queue=self.names.ordered)
        tasks = [
            asyncio.create_task(self._route_all(topology, intake, lost), name="sequencer"),
            asyncio.create_task(self._bind_all(topology, lost), name="sequencer-bindings"),
        ]
        try:
            await lost.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _bind(self, topology: OrderedTopology) -> None:
        wanted = self._wanted()
        namespace = self.names.namespace
        for key in sorted(wanted - set(self.carried)):
            await topology.ordered.bind(topology.events, routing_key=key)
            await self.ledger.bound(namespace, key)
        for key in sorted(set(self.carried) - wanted):
            self.carried.pop(key)  # first: the main routers take the webhook again
            await self.ledger.unbound(namespace, key)
            await topology.ordered.unbind(topology.events, routing_key=key)
        self.carried = {k: at for k, at in (await self.ledger.bindings(namespace)).items()}

    async def _bind_all(self, topology: OrderedTopology, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await asyncio.sleep(self.settings.webhook_refresh / 2)
            try:
                await self._bind(topology)
            except Exception:
                log.exception("ordered bindings not updated")
                lost.set()

    async def _route_all(
        self,
        topology: OrderedTopology,
        intake: asyncio.Queue[AbstractIncomingMessage],
        lost: asyncio.Event,
    ) -> None:
        while True:
            message = await intake.get()
            try:
                outcomes = await self._plan(message)
            except Exception:
                log.exception("ordered event not planned", message_id=message.message_id)
                lost.set()
                return
            if not outcomes:
                await message.ack()
                continue
            parts = []
            redelivered = bool(message.redelivered)
            for outcome in outcomes:
                key = key_of(outcome.delivery)
                task = asyncio.create_task(
                    self._send(topology, self._tails.get(key), outcome, redelivered, lost)
                )
                self._tails[key] = task
                task.add_done_callback(functools.partial(self._forget, key))
                parts.append(task)
            settling = asyncio.create_task(self._settle(message, parts, lost))
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _plan(self, message: AbstractIncomingMessage) -> list[Outcome]:
        """The event's jobs for ordered webhooks. An invalid or unroutable event has none
        here: the main routers dead-letter it."""
        try:
            event = await self.event_of(message)
        except EventInvalid:
            return []
        matches = self.cache.index.match(event, self.settings.engine_url)
        matches = [m for m in matches if self.carries(m.webhook, event)]
        try:
            return plan(event, matches)[1]
        except (TypeError, ValueError):
            return []

    async def _send(
        self,
        topology: OrderedTopology,
        before: asyncio.Task[None] | None,
        outcome: Outcome,
        redelivered: bool,
        lost: asyncio.Event,
    ) -> None:
        """Publish one job after the key's previous one was confirmed: its Queued record,
        and its delivery to the key's shard (a job failed at routing is final at once)."""
        if before is not None:
            await before  # its failure is this one's: the key stops here
        if lost.is_set():
            raise ConnectionError("the sequencer's connection is lost")
        assert self._records is not None
        publishes = [self._records.add(outcome)]
        if outcome.status == Status.QUEUED:
            d = outcome.delivery
            publishes.append(
                broker.publish(
                    topology.deliveries,
                    orjson.dumps([d]),
                    str(shard_of(key_of(d), self.names.ordered_shards)),
                    message_id=d.job_id,
                    headers={REDELIVERED: True} if redelivered else None,
                )
            )
        await asyncio.gather(*publishes)

    async def _settle(
        self, message: AbstractIncomingMessage, parts: list[asyncio.Task[None]], lost: asyncio.Event
    ) -> None:
        done = await asyncio.gather(*parts, return_exceptions=True)
        failed = [r for r in done if isinstance(r, BaseException)]
        if failed:
            log.warning("ordered event not routed: reconnecting", error=repr(failed[0]))
            lost.set()
            return
        with contextlib.suppress(Exception):
            await message.ack()
