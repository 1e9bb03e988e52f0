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
cannot be encoded, or that alone is larger than `max_bytes`, fails the `add` it came with
at once (`TooLarge` for the latter) and never the batch it would have joined. Each `add`
waits on one future, whatever its number of items.
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


class _Waiter:
    """What the caller of one `add` waits on: its future is settled once every item is,
    with the failure of the first item that failed, if any."""

    __slots__ = ("error", "error_at", "future", "left")

    def __init__(self, future: asyncio.Future[None], items: int) -> None:
        self.future = future
        self.left = items
        self.error: BaseException | None = None
        self.error_at = items
        if not items:
            future.set_result(None)

    def settle(self, at: int, error: BaseException | None) -> None:
        """The item at position `at` is confirmed (`error` None) or failed."""
        if error is not None and at < self.error_at:
            self.error, self.error_at = error, at
        self.left -= 1
        if self.left or self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(self.error)


_Entry = tuple[bytes, _Waiter, int]
"""An item pending in a batch: its encoding, its caller's waiter and its position there."""


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
        self._pending: dict[str, list[_Entry]] = {}
        self._bytes: dict[str, int] = {}
        """Bytes of the message the pending items of a routing key would make."""
        self._out: dict[str, int] = {}
        """Messages per routing key published and not yet confirmed."""
        self._scheduled: set[str] = set()
        self._flushes: set[asyncio.Task[None]] = set()

    async def add(self, *items: Item) -> None:
        """Return once every one of `items` is in a confirmed message; raises the first
        failure (TooLarge, an encoding error, the broker's) after every item was settled."""
        await self.submit(*items)

    def submit(self, *items: Item) -> asyncio.Future[None]:
        """`add` without the coroutine: the one future of `items`, settled as `add` returns
        or raises. The items join their batches now."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), len(items))
        for at, item in enumerate(items):
            try:
                encoded = orjson.dumps(item)
            except orjson.JSONEncodeError as exc:
                waiter.settle(at, exc)
                continue
            size = len(encoded) + 2  # within `[` and `]`
            if size > self.max_bytes:
                waiter.settle(at, TooLarge(size, self.max_bytes))
                continue
            key = self._routing_key(item)
            if key in self._pending and self._bytes[key] + len(encoded) + 1 > self.max_bytes:
                self._flush(key)  # the item does not fit: the batch so far goes out now
            pending = self._pending.setdefault(key, [])
            self._bytes[key] = self._bytes.get(key, 1) + len(encoded) + 1
            pending.append((encoded, waiter, at))
            if len(pending) >= self.max_items:
                self._flush(key)
            elif not self._out.get(key) and key not in self._scheduled:
                # what the other handlers add in this turn of the loop goes in the same batch
                self._scheduled.add(key)
                loop.call_soon(self._flush_if_idle, key)
        return waiter.future

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

    async def _publish(self, key: str, batch: list[_Entry]) -> None:
        body = b"[" + b",".join(encoded for encoded, _, _ in batch) + b"]"
        try:
            await broker.publish(self._exchange(), body, key)
        except BaseException as exc:
            self._out[key] -= 1
            for _, waiter, at in batch:
                waiter.settle(at, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._out[key] -= 1
            for _, waiter, at in batch:
                waiter.settle(at, None)
        if not self._out[key]:
            # what was added while this message waited for its confirm goes out now
            self._flush(key)

    async def drain(self) -> None:
        """Publish what is pending and wait for it (on stop)."""
        while self._pending or self._flushes:
            for key in list(self._pending):
                self._flush(key)
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
