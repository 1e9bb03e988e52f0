"""The worker's side of a rate limit (ratelimit.RateLimits) over the in-memory slots of
testing.MemoryStore, which take slots as the SQL does: starts 1/rate apart, none beyond the
horizon, the rest deferred; a database error reaches the caller."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from webhook_router.ratelimit import RateLimits
from webhook_router.testing import MemoryStore

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]


async def test_slots_are_spaced_and_those_beyond_the_horizon_are_deferred() -> None:
    """Twenty at once, 10/s, a horizon of 0.5s: those in line take the slots that come
    within their horizon (about 0s to 1s), each 0.1s after the last; the rest defer."""
    limits = RateLimits(MemoryStore(), horizon=0.5)
    began = time.monotonic()

    async def start() -> float | None:
        wait = await limits.admit("hook", 10.0)
        return None if wait is None else time.monotonic() + wait - began

    starts = await asyncio.gather(*(start() for _ in range(20)))
    taken = sorted(s for s in starts if s is not None)
    assert 9 <= len(taken) <= 12, starts
    assert starts.count(None) == 20 - len(taken) >= 8
    assert taken[0] == pytest.approx(0.0, abs=0.05)
    assert taken[-1] <= 1.1
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(taken)), taken


async def test_webhooks_have_slots_of_their_own() -> None:
    limits = RateLimits(MemoryStore(), horizon=0.5)
    first = await limits.admit("a", 0.5)
    other = await limits.admit("b", 0.5)
    assert first == pytest.approx(0.0, abs=0.05) and other == pytest.approx(0.0, abs=0.05)
    assert await limits.admit("a", 0.5) is None, "the next slot of `a` is 2s away"


async def test_a_database_error_reaches_the_caller() -> None:
    class Away:
        async def take_rate_slot(
            self, webhook_id: str, spacing: float, horizon: float
        ) -> tuple[float | None, float]:
            raise OSError("connection refused")

    with pytest.raises(OSError, match="connection refused"):
        await RateLimits(Away(), horizon=0.5).admit("hook", 10.0)


async def test_deliveries_a_stalled_process_held_do_not_start_together() -> None:
    """Five deliveries hold the slots at 0.1-0.5s (10/s); the process then stalls for 0.8s
    (its loop blocked, as when the machine does not run it). Each wakes after its slot
    and, being more than LATE late, takes a new slot: they start 0.1s apart after the
    stall, not all at once on top of whatever other workers start then."""
    limits = RateLimits(MemoryStore(), horizon=2.0)
    assert await limits.reach("hook", 10.0)  # the slot at 0s
    began = time.monotonic()
    started: list[float] = []

    async def deliver() -> None:
        assert await limits.reach("hook", 10.0)
        started.append(time.monotonic() - began)

    waiting = [asyncio.create_task(deliver()) for _ in range(5)]
    await asyncio.sleep(0.02)  # each has its slot and sleeps until it
    time.sleep(0.8)  # noqa: ASYNC251 -- the stall: the loop blocked, on purpose
    await asyncio.gather(*waiting)
    assert len(started) == 5 and min(started) >= 0.8, started
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(sorted(started))), started


async def test_a_delivery_on_time_keeps_its_slot() -> None:
    limits = RateLimits(MemoryStore(), horizon=2.0)
    began = time.monotonic()
    starts = []
    for _ in range(3):
        assert await limits.reach("hook", 10.0)
        starts.append(time.monotonic() - began)
    assert starts[0] == pytest.approx(0.0, abs=0.05)
    assert starts[2] == pytest.approx(0.2, abs=0.05), starts
