"""The holders of the ordered shards: in a worker process, POST the deliveries of ordered
webhooks one at a time per key, in their shard's order (docs/ordering.md).

Each shard queue has a single active consumer; the worker active on it holds it. On its
first message (a delivery or a tick) the holder takes the shard in the ledger (the epoch
goes up) and loads the keys that wait there. A key's deliveries are handled one after the
other: a delivery whose key has a head (a delivery waiting for its retry, or in hand) or
parked deliveries is parked in the ledger; else it is POSTed. A final outcome is committed
in the ledger, with the key's next parked delivery made its head, before that next one
starts; a retry waits in the ledger as the key's head, on a timer, not in a queue. Every
ledger write is fenced by the holder's epoch, so a holder that lost its shard without
knowing cannot start the next POST of any key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from webhook_router.cache import WebhookCache
from webhook_router.classify import Decision, Verdict
from webhook_router.jobs import Attempt, Delivery
from webhook_router.ordered import (
    REDELIVERED,
    TICK,
    close_quietly,
    connect_plain,
    declare_ordered,
    key_of,
)
from webhook_router.settings import Settings
from webhook_router.store import Ledger


class Poster(Protocol):
    """What a holder needs of its worker: one attempt at a time, and its report."""

    settings: Settings
    schedule: tuple[float, ...]
    cache: WebhookCache

    async def attempt(self, delivery: Delivery) -> tuple[Attempt, Decision] | str: ...

    async def report(
        self, delivery: Delivery, attempt: Attempt, decision: Decision, *, retry: bool = True
    ) -> None: ...


log = structlog.get_logger(__name__)

RECONNECT_WAIT = 1.0
SHARD_PREFETCH = 32
"""Messages one shard's consumer holds: a key's deliveries beyond its head wait here for
their turn (or, behind a retry, in the ledger)."""
KEEP_FINALS = timedelta(days=1)
"""How long the ledger remembers a final job, to skip a redelivered copy of its delivery."""


@dataclass
class Key:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    head: Delivery | None = None
    """The delivery waiting for its retry (or resumed from the ledger), if any."""
    parked: list[str] = field(default_factory=list)
    """Job ids parked behind the head, in order (their deliveries are in the ledger)."""
    users: int = 0
    """Deliveries and timers of the key under way: the key is forgotten only at none."""

    @property
    def idle(self) -> bool:
        return self.users == 0 and self.head is None and not self.parked


@dataclass
class Shard:
    name: str
    """Its queue's name: what the ledger knows it by."""
    epoch: int | None = None
    keys: dict[str, Key] = field(default_factory=dict)

    def key(self, name: str) -> Key:
        """The key's state, counted as used until `release`."""
        found = self.keys.get(name)
        if found is None:
            found = self.keys[name] = Key()
        found.users += 1
        return found

    def release(self, name: str, key: Key) -> None:
        key.users -= 1
        if key.idle and self.keys.get(name) is key:
            del self.keys[name]


async def _received(
    intake: asyncio.Queue[AbstractIncomingMessage], message: AbstractIncomingMessage
) -> None:
    intake.put_nowait(message)  # before any await: the intake keeps the shard's order


class Holder:
    def __init__(self, worker: Poster, ledger: Ledger) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.names = worker.settings.names
        self.ledger = ledger
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._connection: AbstractConnection | None = None
        self._lost = asyncio.Event()
        self._work: set[asyncio.Task[None]] = set()
        self._stopping = False

    def _wanted(self) -> bool:
        return any(w.ordered for w in self.worker.cache.by_id.values())

    async def run(self) -> None:
        """Hold shards while ordered webhooks exist; connect again after every loss, with
        nothing kept from before (the ledger and the queues hold it all)."""
        while not self._stopping:
            if not self._wanted():
                await asyncio.sleep(self.settings.webhook_refresh)
                continue
            try:
                self._connection = await connect_plain(
                    self.settings.amqp_url, f"holder {self.owner}"
                )
                await self._serve(self._connection)
            except Exception as exc:
                log.warning("holder connection lost", error=repr(exc))
            finally:
                await self._drop()
            await asyncio.sleep(RECONNECT_WAIT)

    async def stop(self, deadline: float) -> None:
        """Finish the POSTs started, then close: what is held returns to the shards."""
        self._stopping = True
        self._lost.set()
        if self._work:
            await asyncio.wait(list(self._work), timeout=deadline)
        await close_quietly(self._connection)

    async def _drop(self) -> None:
        for task in list(self._work):
            task.cancel()
        await close_quietly(self._connection)
        self._connection = None

    def _spawn(self, work: asyncio.Future[None] | asyncio.Task[None]) -> None:
        assert isinstance(work, asyncio.Task)
        self._work.add(work)
        work.add_done_callback(self._work.discard)

    async def _serve(self, connection: AbstractConnection) -> None:
        self._lost = lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=SHARD_PREFETCH)
        topology = await declare_ordered(channel, self.names)
        loops = []
        for queue in topology.shards:
            intake: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            shard = Shard(queue.name)
            await queue.consume(functools.partial(_received, intake))
            loops.append(asyncio.create_task(self._hold(shard, intake, lost)))
        loops.append(asyncio.create_task(self._tick(channel, lost)))
        log.info("holder subscribed", shards=len(topology.shards), owner=self.owner)
        try:
            await lost.wait()
        finally:
            for task in loops:
                task.cancel()

    async def _tick(self, channel: AbstractChannel, lost: asyncio.Event) -> None:
        every = self.settings.ordered_tick
        while not lost.is_set():
            for name in self.names.ordered_queues():
                with contextlib.suppress(Exception):
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"", headers={TICK: True}, expiration=every * 2),
                        routing_key=name,
                    )
            await asyncio.sleep(every)

    async def _hold(
        self, shard: Shard, intake: asyncio.Queue[AbstractIncomingMessage], lost: asyncio.Event
    ) -> None:
        while True:
            message = await intake.get()
            if shard.epoch is None:
                try:
                    await self._take(shard, lost)
                except Exception:
                    log.exception("ordered shard not taken", shard=shard.name)
                    lost.set()
                    return
            if (message.headers or {}).get(TICK):
                await message.ack()
                continue
            try:
                [delivery] = Delivery.decode_batch(message.body)
            except (ValueError, TypeError):
                log.error("not an ordered delivery: dead-lettered", shard=shard.name)
                await message.reject()
                continue
            name = key_of(delivery)
            self._spawn(
                asyncio.create_task(
                    self._handle(shard, name, shard.key(name), delivery, message, lost)
                )
            )

    async def _take(self, shard: Shard, lost: asyncio.Event) -> None:
        state = await self.ledger.take(shard.name, self.owner, KEEP_FINALS)
        shard.epoch = state.epoch
        now = datetime.now(UTC)
        for name, raw, due in state.heads:
            key = shard.key(name)  # the timer's use
            [key.head] = Delivery.decode_batch(raw)
            self._arm(shard, name, key, (due - now).total_seconds(), lost)
        for name, job, _ in state.parked:
            key = shard.key(name)
            key.parked.append(job)
            shard.release(name, key)
        log.info(
            "ordered shard taken",
            shard=shard.name,
            epoch=state.epoch,
            waiting=len(state.heads),
            parked=len(state.parked),
        )

    def _arm(self, shard: Shard, name: str, key: Key, delay: float, lost: asyncio.Event) -> None:
        """Run the key's head after `delay`; `key` is counted as used by the caller."""
        self._spawn(asyncio.create_task(self._when_due(shard, name, key, max(delay, 0.0), lost)))

    async def _when_due(
        self, shard: Shard, name: str, key: Key, delay: float, lost: asyncio.Event
    ) -> None:
        with _holding(shard, name, key, lost, "ordered key stopped"):
            await asyncio.sleep(delay)
            async with key.lock:
                head = key.head
                while head is not None and not lost.is_set():
                    head = await self._run(shard, name, key, head, lost)

    async def _handle(
        self,
        shard: Shard,
        name: str,
        key: Key,
        delivery: Delivery,
        message: AbstractIncomingMessage,
        lost: asyncio.Event,
    ) -> None:
        with _holding(shard, name, key, lost, "ordered delivery not handled"):
            async with key.lock:  # the first await: a key's deliveries go in queue order
                if not lost.is_set():
                    await self._handle_held(shard, name, key, delivery, message, lost)

    async def _handle_held(
        self,
        shard: Shard,
        name: str,
        key: Key,
        delivery: Delivery,
        message: AbstractIncomingMessage,
        lost: asyncio.Event,
    ) -> None:
        assert shard.epoch is not None
        job = delivery.job_id
        if (message.redelivered or (message.headers or {}).get(REDELIVERED)) and (
            (key.head is not None and key.head.job_id == job)
            or job in key.parked
            or await self.ledger.final_at(job, delivery.replay)
        ):
            await message.ack()
            return
        if key.head is not None or key.parked:
            await self.ledger.park(shard.name, shard.epoch, name, job, delivery.encode())
            if job not in key.parked:
                key.parked.append(job)
            await message.ack()
            return
        head = await self._run(shard, name, key, delivery, lost)
        await message.ack()
        while head is not None and not lost.is_set():
            head = await self._run(shard, name, key, head, lost)

    async def _run(
        self, shard: Shard, name: str, key: Key, delivery: Delivery, lost: asyncio.Event
    ) -> Delivery | None:
        """One attempt of the key's delivery in hand; returns the key's next delivery to
        POST now (its first parked one, once this one is final), else None."""
        assert shard.epoch is not None
        worker = self.worker
        tried = await worker.attempt(delivery)
        if isinstance(tried, str):  # deferred: the same attempt again, after a wait
            await self._wait(shard, name, key, delivery, worker.schedule[0], lost)
            return None
        attempt, decision = tried
        await worker.report(delivery, attempt, decision, retry=False)
        if decision.verdict is Verdict.RETRY:
            assert decision.delay is not None
            await self._wait(shard, name, key, delivery.next_attempt(), decision.delay, lost)
            return None
        raw = await self.ledger.finish(
            shard.name, shard.epoch, name, delivery.job_id, delivery.replay
        )
        key.head = None
        if raw is None:
            return None
        [key.head] = Delivery.decode_batch(raw)
        if key.head.job_id in key.parked:
            key.parked.remove(key.head.job_id)
        return key.head

    async def _wait(
        self,
        shard: Shard,
        name: str,
        key: Key,
        head: Delivery,
        delay: float,
        lost: asyncio.Event,
    ) -> None:
        assert shard.epoch is not None
        due = datetime.now(UTC) + timedelta(seconds=delay)
        await self.ledger.set_head(shard.name, shard.epoch, name, head.encode(), due)
        key.head = head
        shard.key(name)  # the timer's use, released when it has run
        self._arm(shard, name, key, delay, lost)


@contextlib.contextmanager
def _holding(
    shard: Shard, name: str, key: Key, lost: asyncio.Event, failure: str
) -> Iterator[None]:
    """A task's hold on a key of its shard: released however the task ends; a failure (the
    broker or the database away) is logged as `failure` and marks the shard lost, so the
    holder reconnects and the broker hands the shard to a holder that can go on."""
    try:
        yield
    except Exception:
        log.exception(f"{failure}: the holder reconnects", key=name)
        lost.set()
    finally:
        shard.release(name, key)
