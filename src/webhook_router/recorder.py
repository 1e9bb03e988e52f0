"""Recorder role: outcomes in, batched idempotent writes to the job log.

A results message carries outcomes of many jobs; it is acknowledged only once every one of
its outcomes was committed or dead-lettered. An item of it that is no outcome at all is
dead-lettered alone when the message arrives; the others are recorded. While PostgreSQL is
away the recorder keeps its batch, stops acknowledging (so the broker stops sending) and
writes when the database is back; nothing is requeued, so nothing counts against the
delivery limit.

A batch the database refuses (a value it cannot store) is split in halves, again and again,
until the outcome it refuses stands alone: only that outcome is dead-lettered, whole, alone
and with the database's reason, and every other outcome of the batch is recorded. One bad
outcome never costs its neighbours their record. What of the refused one can be stored (its
job and status without request, answer or headers, the summary saying why) is recorded
too, so that its job does not stay behind; when even that is refused (a key or time the
log cannot hold), the dead letter is all there is.

In a process that runs the router and the worker beside it with WEBHOOK_ROUTER_DIRECT_HANDOFF
(handoff.py), outcomes also arrive in memory (`take`): each call's outcomes join the batch as
a message's would and are settled as it would be, `take` returning once they are committed
and raising if they were given back.

The recorder also keeps the dead letters: it moves the `dead` queue into the
`dead_letters` table (deadletters.py). It is the role that writes to PostgreSQL and already
waits out the database's absences; the queue stays the buffer meanwhile, and every
deployment runs a recorder, so no dead letter waits for a role nobody started.

Side effects of a committed batch (disabling a webhook that answered 410, or whose jobs
have all failed for WEBHOOK_ROUTER_DISABLE_AFTER, and announcing it) are retried;
if they still fail, the batch's messages are given back (nacked and requeued), never left
unsettled for a later multiple-ack to swallow: their outcomes are recorded again (which
changes nothing) and the side effects tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from webhook_router import acks, broker, metrics, tracing
from webhook_router.deadletters import DeadLetter, DeadLetterKeeper
from webhook_router.jobs import Outcome, Status, without_contents
from webhook_router.operator_events import (
    DISABLED,
    announce_dead_letter,
    publish_operator_event,
)
from webhook_router.service import (
    Drain,
    SideTasks,
    dead_letter,
    dead_letter_item,
    dead_letter_unreadable,
    link,
)
from webhook_router.settings import Settings
from webhook_router.store import Store, make_partitions
from webhook_router.topology import RECORD_KEY, Topology
from webhook_router.webhooks import Webhook

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
REFUSED = (
    asyncpg.PostgresError,
    asyncpg.exceptions._base.DataError,  # a value the driver cannot encode
    ValueError,
    TypeError,
    OverflowError,
)
"""What the job log answers about the values of a batch: the same batch always fails the
same way, so it is split, never retried as it is."""
PARTITION_EVERY = 3600.0
SIDE_EFFECT_TRIES = 3
FAILING_JOBS_MIN = 10
"""Failed jobs a webhook needs, besides failing for WEBHOOK_ROUTER_DISABLE_AFTER, to be
disabled: a webhook rarely triggered is not disabled on a few failures."""
T = TypeVar("T")


class GivenBack(Exception):
    """Outcomes handed in memory that were not recorded (their batch was given back)."""


class Handed:
    """Outcomes handed to the recorder in memory, in place of a results message, and settled
    as that message would be: `ack` once committed, `nack` when given back."""

    __slots__ = ("future", "size")

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        size = HANDED_OVERHEAD * len(outcomes)
        for o in outcomes:
            size += len(o.delivery.body) + len(o.response_content or "")
        self.size = size
        """About the bytes a results message of these outcomes would hold."""

    async def ack(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    async def nack(self, requeue: bool = True) -> None:
        if not self.future.done():
            self.future.set_exception(GivenBack("outcomes not recorded, given back"))


HANDED_OVERHEAD = 1024
"""Bytes of an encoded outcome besides its request body and its answer."""

Batch = list[tuple[list[Outcome], AbstractIncomingMessage | Handed]]


def _size(message: AbstractIncomingMessage | Handed) -> int:
    return message.size if isinstance(message, Handed) else len(message.body)


def refused(exc: BaseException) -> bool:
    """Whether `exc` is the database refusing the batch's values, not being away."""
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        return True
    return isinstance(exc, REFUSED) and not isinstance(exc, UNAVAILABLE)


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
        self._dead_tag: str | None = None
        self.keeper = DeadLetterKeeper(store, self.names, refused, self._announce_dead_letter)
        self._buffer: Batch = []
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._stopping = False
        self._flusher: asyncio.Task[None] | None = None
        self._partitioner: asyncio.Task[None] | None = None
        self.database_ok = True

    async def _announce_dead_letter(self, letter: DeadLetter) -> None:
        """`Webhook Dead Lettered`, once the dead letter is stored."""
        assert self.topology is not None
        await announce_dead_letter(self.topology.events, self.store, letter)

    async def start(self) -> None:
        s = self.settings
        self.connection, self.topology = await link(
            s, self.name, prefetch=s.recorder_batch_size * 2
        )
        self._flusher = self.side.start(self._flush_loop(), "recorder-flush")
        self._partitioner = self.side.start(self._partition_loop(), "partitions")
        self._consumer_tag = await self.topology.record.consume(self.on_outcome)
        self._dead_tag = await self.topology.dead_queue.consume(self.keeper.on_message)
        log.info("recorder started", queue=self.names.record)

    def ready(self) -> bool:
        return broker.connected(self.connection) and self.side.alive

    async def stop(self, deadline: float) -> None:
        drain = Drain(deadline, self.name)
        if self.topology is not None:
            consumers = [
                (queue, tag)
                for queue, tag in (
                    (self.topology.record, self._consumer_tag),
                    (self.topology.dead_queue, self._dead_tag),
                )
                if tag is not None
            ]
            await broker.cancel(consumers)
        self.keeper.stop()
        self._stopping = True
        self.side.retire()
        self._arrived.set()
        if self._flusher is not None:
            # the loop may also have ended on its own, its connection dropped under an ack
            # (aiormq fails that with a CancelledError): the stop goes on all the same
            await asyncio.wait([self._flusher], timeout=drain.left())
            self._flusher.cancel()
        for _, message in self._buffer:  # not written in time: handed ones learn it now
            if isinstance(message, Handed):
                await message.nack()
        await self.side.stop()
        if self.connection is not None:
            await broker.close(self.connection, drain.left())

    async def on_outcome(self, message: AbstractIncomingMessage) -> None:
        assert self.topology is not None
        try:
            items = Outcome.decode_each(message.body)
        except (ValueError, TypeError) as exc:
            await dead_letter(
                self.topology.dead, message, role=self.name, reason=f"bad outcome: {exc!r}"
            )
            await message.ack()
            return
        outcomes = [item for item in items if isinstance(item, Outcome)]
        await dead_letter_unreadable(self.topology.dead, items, message, role=self.name)
        if not outcomes:
            await message.ack()
            return
        self._buffer.append((outcomes, message))
        self._buffered += len(outcomes)
        self._arrived.set()

    async def take(self, outcomes: list[Outcome]) -> None:
        """Record outcomes handed in memory (a direct handoff): they join the next batch;
        returns once they are committed (or dead-lettered), raises GivenBack if not."""
        if self._flusher is None or self._flusher.done():
            raise GivenBack("the recorder is not running")
        handed = Handed(outcomes)
        self._buffer.append((outcomes, handed))
        self._buffered += len(outcomes)
        self._arrived.set()
        await handed.future

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
                await self._write(batch)

    def _take(self, size: int) -> Batch:
        """Whole messages from the front of the buffer, up to about `size` outcomes and
        the byte budget of one message (always at least one message)."""
        taken = 0
        count = 0
        volume = 0
        for outcomes, message in self._buffer:
            if count and (
                taken + len(outcomes) > size
                or volume + _size(message) > self.settings.max_message_bytes
            ):
                break
            taken += len(outcomes)
            volume += _size(message)
            count += 1
        batch, self._buffer[:] = self._buffer[:count], self._buffer[count:]
        self._buffered -= taken
        return batch

    async def _write(self, batch: Batch) -> None:
        """Record the batch, apply its side effects, then settle its messages: acknowledged
        when every outcome was recorded or dead-lettered, else given back."""
        started = time.time_ns()
        try:
            recorded = await self._record([o for outcomes, _ in batch for o in outcomes])
            await self._apply_side_effects(recorded)
        except BaseException as exc:
            if isinstance(exc, Exception):
                log.exception("batch not recorded, messages given back", messages=len(batch))
            for _, message in batch:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
            if not isinstance(exc, Exception):
                raise  # cancelled (stopped past the drain deadline)
            return
        await acks.ack_batch([m for _, m in batch if not isinstance(m, Handed)])
        for _, m in batch:
            if isinstance(m, Handed):
                await m.ack()
        metrics.recorded(recorded)
        tracing.recorded(recorded, started)
        log.debug("outcomes recorded", messages=len(batch), outcomes=len(recorded))

    async def _record(self, outcomes: list[Outcome], *, whole: bool = True) -> list[Outcome]:
        """Write the outcomes, waiting while the database is away; split what it refuses
        until the refused outcome stands alone, dead-letter that one whole and record what
        of it can be (`without_contents`). Returns the outcomes recorded."""
        delay = 0.5
        while True:
            try:
                await self.store.record(outcomes)
                break
            except Exception as exc:
                if refused(exc):
                    if len(outcomes) == 1:
                        if not whole:
                            return []
                        await self._refused(outcomes[0], exc)
                        reduced = without_contents(
                            outcomes[0], f"not stored whole (dead-lettered): {exc!r}"
                        )
                        return await self._record([reduced], whole=False)
                    half = len(outcomes) // 2
                    return await self._record(outcomes[:half]) + await self._record(outcomes[half:])
                if not isinstance(exc, UNAVAILABLE):
                    raise
                if self.database_ok:
                    log.warning("database unavailable, holding outcomes", error=repr(exc))
                self.database_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if not self.database_ok:
            log.info("database back, outcomes written")
            self.database_ok = True
        return outcomes

    async def _apply_side_effects(self, outcomes: list[Outcome]) -> None:
        """Disable the webhooks that answered 410 and those whose jobs have all failed for
        WEBHOOK_ROUTER_DISABLE_AFTER (one query for the batch's failed webhooks), each
        announced (operator event `Webhook Disabled`) before the change commits, so a
        failed announcement leaves the webhook enabled for the batch's next try. Each step
        is tried SIDE_EFFECT_TRIES times before the failure is raised (and the batch given
        back)."""
        disabled: list[Webhook] = []
        for outcome in outcomes:
            if not outcome.disable_webhook:
                continue
            gone = await self._tried(
                partial(
                    self.store.disable_webhook,
                    outcome.delivery.webhook_id,
                    outcome.disable_webhook,
                    then=self._announce,
                ),
                outcome.delivery.webhook_name,
            )
            if gone is not None:
                disabled.append(gone)
        failing = sorted(
            {
                o.delivery.webhook_id
                for o in outcomes
                if o.status == Status.FAILED and not o.disable_webhook
            }
        )
        if failing:
            after = self.settings.disable_after
            disabled += await self._tried(
                partial(
                    self.store.disable_failing,
                    failing,
                    self.settings.disable_after_seconds,
                    min_failed=FAILING_JOBS_MIN,
                    reason=f"every job failed for {after} or longer "
                    f"(at least {FAILING_JOBS_MIN}, no success)",
                    then=self._announce,
                ),
                f"{len(failing)} failing webhooks",
            )
        for webhook in disabled:
            log.warning(
                "webhook disabled",
                webhook=webhook.name,
                space=webhook.space,
                kapp=webhook.kapp,
                reason=webhook.disabled_reason,
            )

    async def _announce(self, webhook: Webhook) -> None:
        assert self.topology is not None
        await publish_operator_event(self.topology.events, DISABLED, webhook)

    async def _tried(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        for attempt in range(1, SIDE_EFFECT_TRIES + 1):
            try:
                return await step()
            except (*UNAVAILABLE, asyncpg.PostgresError, ConnectionError) as exc:
                if attempt == SIDE_EFFECT_TRIES:
                    raise
                log.warning("side effect not done yet, trying again", of=what, error=repr(exc))
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def _refused(self, outcome: Outcome, exc: Exception) -> None:
        """Dead-letter one outcome the database refused, alone, with its reason."""
        assert self.topology is not None
        await dead_letter_item(
            self.topology.dead,
            outcome,
            role=self.name,
            reason=f"database refused: {exc!r}",
            routing_key=RECORD_KEY,
            message_id=outcome.delivery.job_id,
        )

    async def _partition_loop(self) -> None:
        while True:
            await asyncio.sleep(PARTITION_EVERY)
            try:
                await make_partitions(self.store.pool)
            except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("partitions not made", error=repr(exc))
