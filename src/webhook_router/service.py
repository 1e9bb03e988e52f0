"""What every role shares: its broker link, its supervised background tasks, counting the
messages in hand, dead-lettering, draining.

A role is alive only while every background task it cannot work without runs: the first of
them to end makes it report not ready and asks the process to stop (`SideTasks`), rather
than leave it consuming with a dead flush loop or a frozen webhook cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

import orjson
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from webhook_router import broker, metrics
from webhook_router.deadletters import dead_headers
from webhook_router.jobs import Unreadable
from webhook_router.settings import Settings
from webhook_router.topology import Topology, declare

log = structlog.get_logger(__name__)


class SideTasks:
    """A role's background tasks. One that ends (or fails) while the role runs kills it:
    `alive` turns false, `died` is set and `reason` says which task and why."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.died = asyncio.Event()
        self.reason: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False

    @property
    def alive(self) -> bool:
        return not self.died.is_set()

    def start(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self.watch(asyncio.create_task(work, name=name))

    def watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        self._tasks.append(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        self.reason = f"{task.get_name()} " + (f"failed: {error!r}" if error else "ended")
        log.error("background task died: the role stops", role=self.role, reason=self.reason)
        self.died.set()

    def retire(self) -> None:
        """The role is stopping: from now on no task's end is a death."""
        self._stopping = True

    async def stop(self) -> None:
        """Cancel what still runs."""
        self.retire()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def link(
    settings: Settings, name: str, *, prefetch: int = 0
) -> tuple[AbstractRobustConnection, Topology]:
    """A role's broker connection and its declared topology: every role's first step."""
    connection = await broker.connect(settings.amqp_url, name=name)
    channel = await broker.channel(connection, prefetch=prefetch)
    return connection, await declare(channel, settings.names, settings.retry_delays)


class Role(Protocol):
    name: str
    side: SideTasks

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None:
        """Stop taking work, finish what is in hand within `deadline` seconds, close."""

    def ready(self) -> bool:
        """Connected now, and every background task alive."""


class Drain:
    """A stopping role's drain timeout, shared by its steps: each waits at most what is
    left of it. What a step has not finished by then (a publish the broker never confirms,
    as when a queue has lost its quorum) is given up: its messages stay unacknowledged and
    the broker hands them to another process once the connection closes."""

    FLOOR = 1.0
    """What a step is given even after the timeout went to the steps before it: enough to
    settle what is already done, not enough to hang."""

    def __init__(self, seconds: float, role: str) -> None:
        loop = asyncio.get_running_loop()
        self._end = loop.time() + seconds
        self._role = role

    def left(self) -> float:
        return max(self._end - asyncio.get_running_loop().time(), self.FLOOR)

    async def step(self, work: Coroutine[Any, Any, None], what: str) -> bool:
        """Await `work` within what is left; False (and a warning) when it was given up."""
        try:
            await broker.within(work, self.left())
        except TimeoutError:
            log.warning(
                "not finished within the drain timeout: left unacknowledged for another process",
                role=self._role,
                step=what,
            )
            return False
        return True


class InFlight:
    """Messages being handled, so that a stopping role can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def hold(self) -> InFlight:
        """`with inflight.hold():` counts one message in hand for the block."""
        return self

    def __enter__(self) -> None:
        self.count += 1
        self._idle.clear()

    def __exit__(self, *_: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def dead_letter(
    dead: AbstractExchange, message: AbstractIncomingMessage, *, role: str, reason: str
) -> None:
    """Park a message the role cannot handle in the dead-letter queue, with the reason.

    The caller acknowledges the original only after this returns (the copy is confirmed).
    """
    headers = dict(message.headers or {})
    headers.update(dead_headers(role, reason, message.routing_key))
    await broker.publish(dead, message.body, "", message_id=message.message_id, headers=headers)
    metrics.dead_lettered(role)
    log.warning("dead-lettered", role=role, reason=reason, message_id=message.message_id)


async def dead_letter_item(
    dead: AbstractExchange,
    item: Any,
    *,
    role: str,
    reason: str,
    routing_key: str | None,
    message_id: str | None = None,
) -> None:
    """Park one item of a batch message alone (as a message of one item) in the
    dead-letter queue, with the reason; its neighbours are handled without it."""
    headers = dead_headers(role, reason, routing_key)
    await broker.publish(dead, orjson.dumps([item]), "", message_id=message_id, headers=headers)
    metrics.dead_lettered(role)
    log.warning("item dead-lettered", role=role, reason=reason, message_id=message_id)


async def dead_letter_unreadable(
    dead: AbstractExchange, items: Iterable[object], message: AbstractIncomingMessage, *, role: str
) -> None:
    """Dead-letter, each alone, the items of a batch message that could not be read."""
    for item in items:
        if isinstance(item, Unreadable):
            await dead_letter_item(
                dead,
                item.item,
                role=role,
                reason=item.reason,
                routing_key=message.routing_key,
                message_id=message.message_id,
            )
