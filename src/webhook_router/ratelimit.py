"""Rate limits across every worker process: a webhook's deliveries start at least 1/rate
seconds apart, whichever worker posts them.

The slots live in PostgreSQL, one row per limited webhook (the time its next delivery may
start): a worker takes the next slot with one statement (queries.sql: take_rate_slot), only
when it starts within `horizon` seconds, and sleeps until then. A delivery that finds no
slot that close is deferred without spending an attempt and comes back later; none is
dropped. A worker asks for one slot of a webhook at a time (its deliveries wait in memory,
not on the row's lock): the first in line, told that the slots are booked, waits until
they run out (within its horizon) and asks again, the others waiting behind it; whoever
is still in line at the end of its horizon is deferred. A delivery that wakes more than
LATE seconds after its slot (its process was not running: the machine stalled it) takes a
new slot instead of starting at once: otherwise every slot a stalled worker held would
start together, on top of the other workers' deliveries. Unlimited webhooks never come
here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class SlotSource(Protocol):
    async def take_rate_slot(
        self, webhook_id: str, spacing: float, horizon: float
    ) -> tuple[float | None, float]: ...


LATE = 0.25
"""Seconds after its slot a delivery may still start."""


class RateLimits:
    def __init__(self, slots: SlotSource, horizon: float) -> None:
        self._slots = slots
        self.horizon = horizon
        self._lines: dict[str, asyncio.Lock] = {}
        self._booked_until: dict[str, float] = {}
        """Per webhook, until when (monotonic) another slot cannot start within the horizon."""

    async def reach(self, webhook_id: str, rate: float) -> bool:
        """Wait until a slot of the webhook starts: True then, False to defer the delivery
        (no slot within the horizon). Woken more than LATE seconds after its slot, it takes
        the next free one (the slot it missed is left unused). Raises as `admit` does."""
        while True:
            wait = await self.admit(webhook_id, rate)
            if wait is None:
                return False
            due = time.monotonic() + wait
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() - due <= LATE:
                return True

    async def admit(self, webhook_id: str, rate: float) -> float | None:
        """Seconds to wait before the delivery starts, or None: defer it, no slot starting
        within the horizon being free by the end of it. Raises what the database raises
        (the caller defers then too: no limit is exceeded)."""
        deadline = time.monotonic() + self.horizon
        if self._booked_until.get(webhook_id, 0.0) >= deadline:
            return None
        line = self._lines.setdefault(webhook_id, asyncio.Lock())
        try:
            async with asyncio.timeout(self.horizon):
                await line.acquire()
        except TimeoutError:
            return None
        try:
            while True:
                until = self._booked_until.get(webhook_id, 0.0)
                if until >= deadline:
                    return None
                if until > time.monotonic():
                    await asyncio.sleep(until - time.monotonic())
                spacing = 1.0 / rate
                wait, booked = await self._slots.take_rate_slot(webhook_id, spacing, self.horizon)
                if wait is not None:
                    return max(wait, 0.0)
                self._booked_until[webhook_id] = time.monotonic() + max(booked - self.horizon, 0.0)
        finally:
            line.release()
