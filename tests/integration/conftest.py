"""The whole stack in the test process: router, worker, recorder, API and a local engine,
on the test session's own namespace and database, with real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import pytest_asyncio
from aiohttp import web

from webhook_router import store
from webhook_router.api import ApiRole
from webhook_router.engine import Engine
from webhook_router.jobs import Status
from webhook_router.launch import store_of
from webhook_router.publisher import Publisher
from webhook_router.recorder import Recorder
from webhook_router.router import Router
from webhook_router.runtime import serve
from webhook_router.settings import Settings, parse_schedule
from webhook_router.store import Store
from webhook_router.webhooks import Webhook

from ..conftest import eventually, free_port
from ..support.processes import PrivatePostgres

PIPELINE_SLACK = 5.0
"""Seconds allowed for routing an event and recording outcomes: not a setting, a margin."""


@dataclass
class Stack:
    settings: Settings
    store: Store
    engine: Engine
    router: Router
    worker: Any
    recorder: Recorder
    publisher: Publisher
    api_url: str
    api_role: ApiRole | None = None
    spaces: list[str] = field(default_factory=list)
    """Every space handed out by `space()`, in order: what `idle()` looks at."""

    def space(self) -> str:
        """A space of the test's own, so tests never see each other's jobs."""
        made = f"space-{uuid.uuid4().hex[:8]}"
        self.spaces.append(made)
        return made

    def settle_bound(self) -> float:
        """The longest a delivery can legitimately run under these settings: every attempt
        waits its `endpoint_wait` in line and times out (`request_timeout`), with each wait
        of the retry schedule in between, plus PIPELINE_SLACK for routing and recording."""
        s = self.settings
        schedule = parse_schedule(s.retry_schedule)
        attempts = len(schedule) + 1
        return attempts * (s.endpoint_wait + s.request_timeout) + sum(schedule) + PIPELINE_SLACK

    async def idle(self, spaces: list[str], since: datetime) -> None:
        """Wait until no job of these spaces (or made since `since`) is Queued or In
        Progress and the worker holds no delivery; else fail naming what is left."""

        async def left() -> tuple[list[asyncpg.Record], int]:
            rows = await self.store.pool.fetch(
                "SELECT id, space, webhook_name, status, retry_count, summary"
                " FROM webhook_jobs WHERE status = ANY($1::text[])"
                " AND (space = ANY($2::text[]) OR created_at >= $3)",
                [Status.QUEUED.value, Status.IN_PROGRESS.value],
                spaces,
                since,
            )
            return list(rows), self.worker.inflight.count if self.worker is not None else 0

        async def quiet() -> bool:
            rows, holding = await left()
            return not rows and holding == 0

        bound = self.settle_bound()
        if await eventually(quiet, timeout=bound):
            return
        rows, holding = await left()
        shown = ", ".join(
            f"{r['space']}/{r['webhook_name']} {r['status']} (retries {r['retry_count']}, "
            f"{r['summary']})"
            for r in rows[:10]
        )
        raise AssertionError(
            f"the stack is not idle {bound:g}s after the test (the longest a delivery runs "
            f"under these settings: every attempt waiting in line and timing out, plus the "
            f"retry schedule and {PIPELINE_SLACK:g}s): "
            f"{len(rows)} jobs left unsettled [{shown}], {holding} messages held by the worker"
        )

    async def webhook(self, space: str, *, kapp: str | None = None, **fields: Any) -> Webhook:
        created = await self.store.insert_webhook(
            space=space,
            kapp=kapp,
            name=fields.pop("name", f"hook-{uuid.uuid4().hex[:6]}"),
            type=fields.pop("type"),
            event=fields.pop("event"),
            filter=fields.pop("filter", None),
            url=fields.pop("url"),
            auth_strategy=fields.pop("auth_strategy", None),
            trace_context=fields.pop("trace_context", True),
        )
        assert created is not None
        await eventually(self._cached(created.id), timeout=10)
        return created

    def _cached(self, webhook_id: str) -> Any:
        async def check() -> bool:
            return webhook_id in self.router.cache.by_id

        return check

    async def synced(self) -> None:
        """Wait until the router holds the current webhooks."""
        revision = await self.store.webhook_revision()

        async def check() -> bool:
            return self.router.cache.revision >= revision

        assert await eventually(check, timeout=10)

    async def jobs(self, space: str) -> list[asyncpg.Record]:
        return list(
            await self.store.pool.fetch(
                "SELECT * FROM webhook_jobs WHERE space = $1 ORDER BY created_at", space
            )
        )

    async def settled(
        self,
        space: str,
        count: int,
        statuses: tuple[str, ...] = (Status.COMPLETE, Status.FAILED),
        timeout: float = 20.0,
    ) -> list[asyncpg.Record]:
        """The space's jobs once `count` of them are in one of `statuses`."""

        async def check() -> list[asyncpg.Record] | None:
            rows = await self.jobs(space)
            done = [r for r in rows if r["status"] in statuses]
            return rows if len(done) >= count else None

        rows = await eventually(check, timeout=timeout)
        if rows is None:
            seen = await self.jobs(space)
            by_status: dict[str, int] = {}
            for r in seen:
                by_status[r["status"]] = by_status.get(r["status"], 0) + 1
            raise AssertionError(
                f"fewer than {count} jobs of {space} reached {statuses}: {by_status}"
            )
        return rows

    def received_for(self, space: str) -> list[Any]:
        return [r for r in self.engine.received if r.json()["space"]["slug"] == space]

    async def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = "test-token",
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.api_url + path, json=json, data=data, headers=headers
            ) as response,
        ):
            body = await response.read()
            try:
                parsed: Any = await response.json(content_type=None) if body else None
            except ValueError:
                parsed = body.decode()
            return response.status, parsed


def event_for(space: str, type_: str, action: str, **entities: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": {"type": type_, "action": action},
        "space": {"slug": space, "attributes": []},
        **entities,
    }


ROLE_STOP_BOUND = 60.0
"""How long a role of a test's stack may take to stop: its drain timeout and its closing
handshakes with a broker and a database that may be going away take far less; past it, the
test fails saying which role hung instead of hanging until its own timeout."""


def awaiting(task: asyncio.Future[Any]) -> str:
    """Where a task's coroutine waits: the chain of awaits, outermost first."""
    where = []
    awaited: Any = getattr(task, "get_coro", lambda: None)()
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        frame = awaited.cr_frame
        file = frame.f_code.co_filename.rsplit("/", 1)[-1]
        where.append(f"{frame.f_code.co_name} ({file}:{frame.f_lineno})")
        awaited = awaited.cr_await
    return " <- ".join(reversed(where)) or "?"


@asynccontextmanager
async def open_stack(
    settings: Settings, roles: tuple[str, ...] = ("recorder", "router", "worker", "api")
) -> AsyncIterator[Stack]:
    """Run the given roles in this process, with a local engine, until the block ends."""
    from webhook_router.worker import Worker

    engine = Engine()
    engine_port = free_port()
    engine_runner = await serve(engine.app(), "127.0.0.1", engine_port)
    api_port = free_port()
    s = settings.model_copy(
        update={"engine_url": f"http://127.0.0.1:{engine_port}", "api_port": api_port}
    )
    pool = await store.connect(s.database_url, max_size=10)
    st = store_of(pool, s)
    recorder = Recorder(s, st)
    router = Router(s, st)
    worker = Worker(s, st)
    api = ApiRole(s, st)
    chosen: list[Any] = [r for r in (recorder, router, worker, api) if r.name in roles]
    if s.direct_handoff:
        from webhook_router.handoff import connect

        chosen = connect(chosen)
    started: list[Any] = []
    publisher = Publisher(s.amqp_url, s.namespace)
    try:
        for role in chosen:
            await role.start()
            started.append(role)
        await publisher.open()
        yield Stack(
            s,
            st,
            engine,
            router,
            worker,
            recorder,
            publisher,
            f"http://127.0.0.1:{api_port}",
            api if api in started else None,
        )
    finally:
        await publisher.close()
        unstopped = []
        for role in reversed(started):
            stopping = asyncio.ensure_future(role.stop(s.drain_timeout))
            await asyncio.wait([stopping], timeout=ROLE_STOP_BOUND)
            if not stopping.done():
                unstopped.append(f"{role.name} (waiting in {awaiting(stopping)})")
                stopping.cancel()
                await asyncio.gather(stopping, return_exceptions=True)
            else:
                stopping.result()
        await engine_runner.cleanup()
        if unstopped:
            pool.terminate()
        else:
            await pool.close()
        assert not unstopped, (
            f"{unstopped} did not stop within {ROLE_STOP_BOUND:g}s of being asked to "
            f"(drain timeout {s.drain_timeout:g}s)"
        )


@pytest_asyncio.fixture(loop_scope="session")
async def st(database_url: str) -> AsyncIterator[Store]:
    """A store on the test session's database, for tests of the job log's queries."""
    pool = await store.connect(database_url)
    try:
        yield Store(pool)
    finally:
        await pool.close()


@pytest_asyncio.fixture(scope="package")
async def shared_stack(settings: Settings) -> AsyncIterator[Stack]:
    """One stack for this package's tests, stopped when they are done: left running through
    the rest of the session, its connections would miss their heartbeats while synchronous
    tests hold the event loop, and the broker would drop them."""
    async with open_stack(settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def stack(shared_stack: Stack) -> AsyncIterator[Stack]:
    """The shared stack for one test; after it, the stack must be idle again (nothing of the
    test Queued, no delivery in flight), so no test's leftovers run under the next one."""
    since = await shared_stack.store.pool.fetchval("SELECT clock_timestamp()")
    first = len(shared_stack.spaces)
    yield shared_stack
    await shared_stack.idle(shared_stack.spaces[first:], since)


async def answer_app(handler: Any) -> tuple[web.AppRunner, str]:
    """A receiver on 127.0.0.1 answering every POST with `handler`; (runner, base URL)."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)
    return runner, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def private_job_log() -> AsyncIterator[tuple[PrivatePostgres, str]]:
    """A PostgreSQL server of the test's own with a migrated job log: (server, database URL),
    for tests that stop and start the database; removed at the end."""
    pg = PrivatePostgres(free_port())
    pg.init()
    pg.start()
    try:
        admin = await asyncpg.connect(pg.url)
        await admin.execute("CREATE DATABASE router")
        await admin.close()
        database_url = pg.url.rsplit("/", 1)[0] + "/router"
        pool = await store.connect(database_url)
        await store.migrate(pool)
        await pool.close()
        yield pg, database_url
    finally:
        pg.remove()
