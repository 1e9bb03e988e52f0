"""Recorder role: outcomes in, batched idempotent writes to the job log.

Outcomes are acknowledged only after their batch committed. While PostgreSQL is away the
recorder keeps its batch, stops acknowledging (so the broker stops sending) and writes
when the database is back; nothing is requeued, so nothing counts against the delivery
limit. An outcome the database refuses on its own is dead-lettered, not retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from webhook_router import acks, broker, metrics
from webhook_router.jobs import Outcome
from webhook_router.service import SideTasks, dead_letter, link
from webhook_router.settings import Settings
from webhook_router.store import Store, make_partitions
from webhook_router.topology import Topology

log = structlog.get_logger(__name__)

UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    TimeoutError,
)
PARTITION_EVERY = 3600.0


class Recorder:
    name = "recorder"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.names = settings.names
        self.side = SideTasks(self.name)
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self._consumer_tag: str | None = None
        self._buffer: list[tuple[list[Outcome], AbstractIncomingMessage]] = []
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._stopping = False
        self._flusher: asyncio.Task[None] | None = None
        self._partitioner: asyncio.Task[None] | None = None
        self.database_ok = True

    async def start(self) -> None:
        s = self.settings
        self.connection, self.topology = await link(
            s, self.name, prefetch=s.recorder_batch_size * 2
        )
        self._flusher = self.side.start(self._flush_loop(), "recorder-flush")
        self._partitioner = self.side.start(self._partition_loop(), "partitions")
        self._consumer_tag = await self.topology.record.consume(self.on_outcome)
        log.info("recorder started", queue=self.names.record)

    def ready(self) -> bool:
        return broker.connected(self.connection) and self.side.alive

    async def stop(self, deadline: float) -> None:
        if self.topology is not None and self._consumer_tag is not None:
            await broker.cancel([(self.topology.record, self._consumer_tag)])
        self._stopping = True
        self.side.retire()
        self._arrived.set()
        if self._flusher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flusher), deadline)
            self._flusher.cancel()
        await self.side.stop()
        if self.connection is not None:
            await self.connection.close()

    async def on_outcome(self, message: AbstractIncomingMessage) -> None:
        assert self.topology is not None
        try:
            outcomes = Outcome.decode_batch(message.body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            await dead_letter(
                self.topology.dead, message, role=self.name, reason=f"bad outcome: {exc!r}"
            )
            await message.ack()
            return
        self._buffer.append((outcomes, message))
        self._buffered += len(outcomes)
        self._arrived.set()

    async def _flush_loop(self) -> None:
        size = self.settings.recorder_batch_size
        while not (self._stopping and not self._buffer):
            await self._arrived.wait()
            if self._buffered < size and not self._stopping:
                await asyncio.sleep(self.settings.recorder_batch_wait)
            batch = self._take(size)
            if not self._buffer:
                self._arrived.clear()
            if batch:
                try:
                    await self._write(batch)
                except Exception:
                    # never let the loop die: the batch stays unacknowledged and comes
                    # back from the broker when the channel is recovered
                    log.exception("batch not recorded", count=len(batch))

    def _take(self, size: int) -> list[tuple[list[Outcome], AbstractIncomingMessage]]:
        """Whole messages from the front of the buffer, up to about `size` outcomes."""
        taken = 0
        count = 0
        for outcomes, _ in self._buffer:
            if count and taken + len(outcomes) > size:
                break
            taken += len(outcomes)
            count += 1
        batch, self._buffer[:] = self._buffer[:count], self._buffer[count:]
        self._buffered -= taken
        return batch

    async def _write(self, batch: list[tuple[list[Outcome], AbstractIncomingMessage]]) -> None:
        delay = 0.5
        while True:
            try:
                await self.store.record([o for outcomes, _ in batch for o in outcomes])
                break
            except UNAVAILABLE as exc:
                if self.database_ok:
                    log.warning("database unavailable, holding outcomes", error=repr(exc))
                self.database_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except asyncpg.PostgresError as exc:
                if len(batch) == 1:
                    await self._refused(batch[0][1], exc)
                    return
                for item in batch:
                    await self._write([item])
                return
        if not self.database_ok:
            log.info("database back, outcomes written")
            self.database_ok = True
        await self._apply_side_effects([o for outcomes, _ in batch for o in outcomes])
        await acks.ack_batch([m for _, m in batch])
        metrics.recorded([o for outcomes, _ in batch for o in outcomes])
        log.debug("outcomes recorded", messages=len(batch))

    async def _apply_side_effects(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.disable_webhook:
                disabled = await self.store.disable_webhook(
                    outcome.delivery.webhook_id, outcome.disable_webhook
                )
                if disabled:
                    log.warning(
                        "webhook disabled",
                        webhook=outcome.delivery.webhook_name,
                        job_id=outcome.delivery.job_id,
                        event_id=outcome.delivery.event_id,
                        reason=outcome.disable_webhook,
                    )

    async def _refused(self, message: AbstractIncomingMessage, exc: Exception) -> None:
        assert self.topology is not None
        await dead_letter(
            self.topology.dead, message, role=self.name, reason=f"database refused: {exc!r}"
        )
        await message.ack()

    async def _partition_loop(self) -> None:
        while True:
            await asyncio.sleep(PARTITION_EVERY)
            try:
                await make_partitions(self.store.pool)
            except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("partitions not made", error=repr(exc))
