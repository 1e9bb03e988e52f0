"""Endpoint isolation: a concurrency limit and a circuit breaker per endpoint.

A worker holds a bounded number of deliveries at once. Without a limit per endpoint, one
endpoint that hangs until its timeout would soon hold all of them and starve the others.
A delivery that finds its endpoint full waits briefly for a slot (a healthy endpoint frees
one within milliseconds); one that still finds it full, or finds its circuit open, is
deferred: it waits in a retry queue without spending an attempt. The guard is pure: the
worker passes the clock in. The line (`Line`) is where a delivery waits for a slot: one timer
bounds the wait of everyone in it, not one per waiting delivery.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

AT_LIMIT = "endpoint at its concurrency limit"


@functools.lru_cache(maxsize=4096)
def endpoint_of(url: str) -> str:
    """`scheme://host:port`: what shares connections, and fails together."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass
class _State:
    in_flight: int = 0
    failures: int = 0
    open_until: float = 0.0
    trial: bool = False


class EndpointGuard:
    def __init__(self, limit: int, threshold: int, cooldown: float) -> None:
        self.limit = limit
        self.threshold = threshold
        self.cooldown = cooldown
        self._states: dict[str, _State] = {}

    def acquire(self, endpoint: str, now: float) -> str | None:
        """Take a slot for a POST to `endpoint`; None if taken, else why it must wait."""
        state = self._states.setdefault(endpoint, _State())
        if state.open_until > now:
            return "circuit open"
        if state.failures >= self.threshold:
            if state.trial:
                return "circuit half-open, a trial is in progress"
            state.trial = True
        elif state.in_flight >= self.limit:
            return AT_LIMIT
        state.in_flight += 1
        return None

    def release(self, endpoint: str, *, healthy: bool, now: float) -> None:
        """Give the slot back, counting whether the endpoint answered well."""
        state = self._states[endpoint]
        state.in_flight -= 1
        state.trial = False
        if healthy:
            state.failures = 0
            state.open_until = 0.0
        else:
            state.failures += 1
            if state.failures >= self.threshold:
                state.open_until = now + self.cooldown
        if state.in_flight == 0 and state.failures == 0:
            del self._states[endpoint]

    def is_open(self, endpoint: str, now: float) -> bool:
        state = self._states.get(endpoint)
        return state is not None and state.open_until > now


class Line:
    """An endpoint's slots and the deliveries waiting for one, first come first served, each
    for at most `wait` seconds. Everyone waits as long, so the first in line is always the
    next to run out of time: a single timer, set for it, bounds the whole line."""

    def __init__(self, slots: int, wait: float) -> None:
        self.free = slots
        self.wait = wait
        self._waiting: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def take(self) -> bool:
        """Take a slot, at once when one is free and nobody waits, else in line; False when
        none came within `wait` seconds."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((loop.time() + self.wait, future))
        if self._timer is None:
            self._timer = loop.call_at(self._waiting[0][0], self._expire, loop)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                self.release()  # handed a slot as it was cancelled: the next one gets it
            raise

    def release(self) -> None:
        """Give a slot back: to the first one still waiting, else to the free ones."""
        while self._waiting:
            future = self._waiting.popleft()[1]
            if not future.done():
                future.set_result(True)
                return
        self.free += 1

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Turn away those whose wait is over; set the timer for the next one in line."""
        now = loop.time()
        while self._waiting and self._waiting[0][0] <= now:
            future = self._waiting.popleft()[1]
            if not future.done():
                future.set_result(False)
        self._timer = (
            loop.call_at(self._waiting[0][0], self._expire, loop) if self._waiting else None
        )
