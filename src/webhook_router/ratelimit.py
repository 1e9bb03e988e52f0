"""Rate limits across every worker process: a webhook's deliveries start at least 1/rate
seconds apart, whichever worker posts them.

The slots live in PostgreSQL, one row per limited webhook (the time its next delivery may
start): a worker takes the next slot with one statement (queries.sql: take_rate_slot), only
when it starts within `horizon` seconds, and sleeps until then. A delivery that finds no
slot that close is deferred without spending an attempt and comes back later; none is
dropped. A worker asks for one slot of a webhook at a time (its deliveries wait in memory,
not on the row's lock) and, told that the slots are booked, defers without asking again
until they run out. Unlimited webhooks never come here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class SlotSource(Protocol):
    async def take_rate_slot(
        self, webhook_id: str, spacing: float, horizon: float
    ) -> tuple[float | None, float]: ...


class RateLimits:
    def __init__(self, slots: SlotSource, horizon: float) -> None:
        self._slots = slots
        self.horizon = horizon
        self._lines: dict[str, asyncio.Lock] = {}
        self._booked_until: dict[str, float] = {}
        """Per webhook, until when (monotonic) another slot cannot start within the horizon."""

    def _booked(self, webhook_id: str) -> bool:
        return self._booked_until.get(webhook_id, 0.0) > time.monotonic()

    async def admit(self, webhook_id: str, rate: float) -> float | None:
        """Seconds to wait before the delivery starts, or None: defer it. Raises what the
        database raises (the caller defers then too: no limit is exceeded)."""
        if self._booked(webhook_id):
            return None
        line = self._lines.setdefault(webhook_id, asyncio.Lock())
        try:
            async with asyncio.timeout(self.horizon):
                await line.acquire()
        except TimeoutError:
            return None
        try:
            if self._booked(webhook_id):
                return None
            asked = time.monotonic()
            wait, booked = await self._slots.take_rate_slot(webhook_id, 1.0 / rate, self.horizon)
        finally:
            line.release()
        if wait is None:
            self._booked_until[webhook_id] = time.monotonic() + max(booked - self.horizon, 0.0)
            return None
        # the slot's time is the database's, counted from when the statement began: the
        # time the answer took to come back (a lock, a busy server) is already waited
        return max(asked + wait - time.monotonic(), 0.0)
