"""Supervised background tasks: a role whose flush loop, partition loop or webhook-cache
watcher dies reports not ready, and the process stops its roles and exits failed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from webhook_router.recorder import Recorder
from webhook_router.runtime import RoleDied, run_roles
from webhook_router.service import SideTasks
from webhook_router.settings import Settings
from webhook_router.testing import MemoryStore, memory_topology

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(10)]


async def fail(after: float = 0.0) -> None:
    await asyncio.sleep(after)
    raise RuntimeError("disk on fire")


async def test_a_task_that_fails_kills_its_role_and_says_why() -> None:
    side = SideTasks("recorder")
    side.start(fail(), "recorder-flush")
    await asyncio.wait_for(side.died.wait(), 2)
    assert not side.alive
    assert side.reason == "recorder-flush failed: RuntimeError('disk on fire')"


async def test_a_task_ending_or_cancelled_while_the_role_stops_is_no_death() -> None:
    side = SideTasks("router")
    side.start(asyncio.sleep(60), "webhook-cache")
    side.retire()
    side.start(asyncio.sleep(0), "ends")
    await asyncio.sleep(0.05)
    await side.stop()
    assert side.alive and side.reason is None


async def test_a_recorder_whose_flush_loop_died_is_not_ready() -> None:
    recorder = Recorder(Settings(), MemoryStore())
    recorder.topology = memory_topology(recorder.names)
    connected = asyncio.Event()
    connected.set()
    recorder.connection = SimpleNamespace(connected=connected)  # type: ignore[assignment]
    assert recorder.ready()
    recorder._arrived = None  # type: ignore[assignment]
    recorder.side.start(recorder._flush_loop(), "recorder-flush")
    await asyncio.wait_for(recorder.side.died.wait(), 2)
    assert not recorder.ready(), "a dead flusher must not report ready"
    assert recorder.side.reason is not None and "recorder-flush failed" in recorder.side.reason


class FakeRole:
    """A role with nothing but a background task that dies after it started."""

    name = "fake"

    def __init__(self) -> None:
        self.side = SideTasks(self.name)
        self.stopped = False

    async def start(self) -> None:
        self.side.start(fail(0.05), "loop")

    def ready(self) -> bool:
        return self.side.alive

    async def stop(self, deadline: float) -> None:
        await self.side.stop()
        self.stopped = True


async def test_run_roles_stops_every_role_when_one_task_dies() -> None:
    dying, other = FakeRole(), FakeRole()
    other.start = lambda: asyncio.sleep(0)  # type: ignore[method-assign]
    roles: list[Any] = [other, dying]
    with pytest.raises(RoleDied, match="fake: loop failed"):
        await asyncio.wait_for(run_roles(roles, drain=1), 5)
    assert dying.stopped and other.stopped
