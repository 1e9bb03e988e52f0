"""Messages from many concurrent handlers, published together as one confirmed message.

One broker message per delivery and per outcome would cost the broker and every consumer
more than the POST itself. Handlers `add` their items and wait; each waiter returns once the
broker confirmed the message holding its items, or raises, and its handler does not
acknowledge what it was handling.

Batches form from the broker's own pace, not from a timer: per routing key, one message is
out waiting for its confirm, and what handlers add meanwhile goes out together as soon as
that confirm is back (at once when `max_items` are waiting). Under light load an item is
published on the next turn of the event loop, with nothing added to its latency; under
load, batches grow with the confirm's round trip, which is when batching pays.

A message is bounded by bytes as well as by items: a batch closes before it would pass
`max_bytes` (kept under the broker's maximum message size), so a few large items never make
a message the broker refuses. Each item is encoded on its own when added: an item that
cannot be encoded, or that alone is larger than `max_bytes`, fails its own waiter at once
(`TooLarge` for the latter) and never the batch it would have joined.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import orjson
from aio_pika.abc import AbstractExchange

from webhook_router import broker

Item = TypeVar("Item")

MAX_BYTES = 16 * 1024 * 1024
"""The default byte budget of one message (the setting `max_message_bytes`)."""


class TooLarge(ValueError):
    """An item that alone does not fit in a message of the byte budget."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{size} bytes encoded, more than the {limit} bytes a message may hold")


class Batcher(Generic[Item]):
    def __init__(
        self,
        exchange: Callable[[], AbstractExchange],
        routing_key: Callable[[Item], str],
        max_items: int = 200,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._exchange = exchange
        self._routing_key = routing_key
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._pending: dict[str, list[tuple[bytes, asyncio.Future[None]]]] = {}
        self._bytes: dict[str, int] = {}
        """Bytes of the message the pending items of a routing key would make."""
        self._out: dict[str, int] = {}
        """Messages per routing key published and not yet confirmed."""
        self._scheduled: set[str] = set()
        self._flushes: set[asyncio.Task[None]] = set()

    async def add(self, *items: Item) -> None:
        """Return once every one of `items` is in a confirmed message; raises the first
        failure (TooLarge, an encoding error, the broker's) after every item was settled."""
        loop = asyncio.get_running_loop()
        waits = []
        for item in items:
            future: asyncio.Future[None] = loop.create_future()
            waits.append(future)
            try:
                encoded = orjson.dumps(item)
            except orjson.JSONEncodeError as exc:
                future.set_exception(exc)
                continue
            size = len(encoded) + 2  # within `[` and `]`
            if size > self.max_bytes:
                future.set_exception(TooLarge(size, self.max_bytes))
                continue
            key = self._routing_key(item)
            if key in self._pending and self._bytes[key] + len(encoded) + 1 > self.max_bytes:
                self._flush(key)  # the item does not fit: the batch so far goes out now
            pending = self._pending.setdefault(key, [])
            self._bytes[key] = self._bytes.get(key, 1) + len(encoded) + 1
            pending.append((encoded, future))
            if len(pending) >= self.max_items:
                self._flush(key)
            elif not self._out.get(key) and key not in self._scheduled:
                # what the other handlers add in this turn of the loop goes in the same batch
                self._scheduled.add(key)
                loop.call_soon(self._flush_if_idle, key)
        results = await asyncio.gather(*waits, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _flush_if_idle(self, key: str) -> None:
        self._scheduled.discard(key)
        if not self._out.get(key):
            self._flush(key)

    def _flush(self, key: str) -> None:
        batch = self._pending.pop(key, [])
        self._bytes.pop(key, None)
        if batch:
            self._out[key] = self._out.get(key, 0) + 1
            task = asyncio.create_task(self._publish(key, batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _publish(self, key: str, batch: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        body = b"[" + b",".join(encoded for encoded, _ in batch) + b"]"
        try:
            await broker.publish(self._exchange(), body, key)
        except BaseException as exc:
            self._out[key] -= 1
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._out[key] -= 1
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        if not self._out[key]:
            # what was added while this message waited for its confirm goes out now
            self._flush(key)

    async def drain(self) -> None:
        """Publish what is pending and wait for it (on stop)."""
        while self._pending or self._flushes:
            for key in list(self._pending):
                self._flush(key)
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
