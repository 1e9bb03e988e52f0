"""Outcomes from many concurrent handlers, published together as one confirmed message.

Every delivery's outcome goes to the recorder; one broker message per outcome would cost
the broker, the recorder and the worker more than the POST itself. Handlers `add` their
outcome and wait: the batch goes out when it is full or a few milliseconds old, and each
waiter returns once the broker confirmed the message holding its outcome (or raises, and
its handler does not acknowledge). A batch is a JSON array of outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from aio_pika.abc import AbstractExchange

from webhook_router import broker
from webhook_router.jobs import Outcome
from webhook_router.topology import RECORD_KEY


class OutcomeBatcher:
    def __init__(
        self,
        exchange: Callable[[], AbstractExchange],
        max_items: int = 200,
        max_wait: float = 0.005,
    ) -> None:
        self._exchange = exchange
        self.max_items = max_items
        self.max_wait = max_wait
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def add(self, *outcomes: Outcome) -> None:
        """Return once every one of `outcomes` is in a confirmed message."""
        loop = asyncio.get_running_loop()
        waits = []
        for outcome in outcomes:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((outcome, future))
            waits.append(future)
        if len(self._pending) >= self.max_items:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        await asyncio.gather(*waits)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._publish(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _publish(self, batch: list[tuple[Outcome, asyncio.Future[None]]]) -> None:
        body = orjson.dumps([outcome for outcome, _ in batch])
        try:
            await broker.publish(self._exchange(), body, RECORD_KEY)
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
        self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
