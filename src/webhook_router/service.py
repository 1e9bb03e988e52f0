"""What every role shares: counting the messages in hand, dead-lettering, draining."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import orjson
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from webhook_router import broker, metrics

log = structlog.get_logger(__name__)


class Role(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None:
        """Stop taking work, finish what is in hand within `deadline` seconds, close."""

    def ready(self) -> bool: ...


class InFlight:
    """Messages being handled, so that a stopping role can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
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
    headers.update({"x-reason": reason[:1000], "x-failed-in": role})
    if message.routing_key:
        headers["x-routing-key"] = message.routing_key
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
    headers = {"x-reason": reason[:1000], "x-failed-in": role}
    if routing_key:
        headers["x-routing-key"] = routing_key
    await broker.publish(dead, orjson.dumps([item]), "", message_id=message_id, headers=headers)
    metrics.dead_lettered(role)
    log.warning("item dead-lettered", role=role, reason=reason, message_id=message_id)
