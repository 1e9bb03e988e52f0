"""Messages from many concurrent handlers, published together as one confirmed message.

One broker message per delivery and per outcome would cost the broker and every consumer
more than the POST itself. Handlers `add` their items and wait: a batch (a JSON array) goes
out per routing key when it is full or a few milliseconds old, and each waiter returns once
the broker confirmed the message holding its items, or raises, and its handler does not
acknowledge what it was handling. Under light load a batch is one item and waits at most
`max_wait`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import orjson
from aio_pika.abc import AbstractExchange

from webhook_router import broker

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    def __init__(
        self,
        exchange: Callable[[], AbstractExchange],
        routing_key: Callable[[Item], str],
        max_items: int = 200,
        max_wait: float = 0.005,
    ) -> None:
        self._exchange = exchange
        self._routing_key = routing_key
        self.max_items = max_items
        self.max_wait = max_wait
        self._pending: dict[str, list[tuple[Item, asyncio.Future[None]]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def add(self, *items: Item) -> None:
        """Return once every one of `items` is in a confirmed message."""
        loop = asyncio.get_running_loop()
        waits = []
        for item in items:
            key = self._routing_key(item)
            future: asyncio.Future[None] = loop.create_future()
            pending = self._pending.setdefault(key, [])
            pending.append((item, future))
            waits.append(future)
            if len(pending) >= self.max_items:
                self._flush(key)
            elif key not in self._timers:
                self._timers[key] = loop.call_later(self.max_wait, self._flush, key)
        await asyncio.gather(*waits)

    def _flush(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, [])
        if batch:
            task = asyncio.create_task(self._publish(key, batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _publish(self, key: str, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        body = orjson.dumps([item for item, _ in batch])
        try:
            await broker.publish(self._exchange(), body, key)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def drain(self) -> None:
        """Publish what is pending and wait for it (on stop)."""
        for key in list(self._pending):
            self._flush(key)
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
