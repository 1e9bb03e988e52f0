"""Retention drops whole old months of the job log and keeps the rest, without holding
writers back: each test has a database of its own, so that old months made here never
meet another test's jobs."""

from __future__ import annotations

import asyncio
import time as clock
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from webhook_router import store
from webhook_router.durations import parse_duration
from webhook_router.jobs import Attempt, Delivery, Outcome, Status, job_id
from webhook_router.retention import PruneBlocked, prune
from webhook_router.store import Store

from ..conftest import Services, _with_database

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]


@pytest_asyncio.fixture(loop_scope="session")
async def st(services: Services) -> AsyncIterator[Store]:
    name = f"webhook_router_test_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    pool = await store.connect(_with_database(services.admin_database_url, name), max_size=8)
    try:
        await store.migrate(pool)
        yield Store(pool)
    finally:
        await pool.close()
        admin = await asyncpg.connect(services.admin_database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def month_start(months_ago: int) -> date:
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1 - months_ago
    return date(index // 12, index % 12 + 1, 1)


def middle_of(months_ago: int) -> datetime:
    return datetime.combine(month_start(months_ago), datetime.min.time(), UTC) + timedelta(days=14)


def partition(table: str, months_ago: int) -> str:
    return f"{table}_{month_start(months_ago):%Y_%m}"


OLD = (6, 5, 4)
OLD_PARTITIONS = [partition(t, m) for m in OLD for t in ("webhook_job_attempts", "webhook_jobs")]


def completed(event_at: datetime) -> Outcome:
    """A job of an event at `event_at`, answered 200 at its first attempt."""
    event_id, webhook_id = str(uuid.uuid4()), str(uuid.uuid4())
    delivery = Delivery(
        job_id=job_id(event_id, webhook_id),
        event_id=event_id,
        event_at=event_at.isoformat(),
        webhook_id=webhook_id,
        webhook_name="Submitted",
        space="acme",
        scope_type="Space",
        scope_id="acme",
        type="Submission",
        action="Submitted",
        parent_type="Submission",
        parent_id=str(uuid.uuid4()),
        tree_group="Submissions > services > ipad-request",
        tree_name="Submitted",
        url="http://127.0.0.1:1/hook",
        body="{}",
        created_at=event_at.isoformat(),
    )
    attempt = Attempt(1, event_at.isoformat(), 10.0, 200, "{}", None)
    return Outcome(delivery, Status.COMPLETE, summary="200 OK", attempt=attempt)


async def old_months_with_jobs(st: Store) -> None:
    await st.pool.execute(
        "SELECT webhook_router_make_partitions($1, $2)", month_start(max(OLD)), len(OLD)
    )
    await st.record([completed(middle_of(m)) for m in OLD])


async def counts(st: Store, table: str) -> dict[str, int]:
    rows = await st.pool.fetch(
        f"SELECT c.relname, count(*) FROM {table} t JOIN pg_class c ON c.oid = t.tableoid"
        " GROUP BY 1"
    )
    return {r[0]: r[1] for r in rows}


async def test_prune_drops_old_months_and_keeps_the_rest(st: Store) -> None:
    await old_months_with_jobs(st)
    kept = [completed(middle_of(1)), completed(datetime.now(UTC) - timedelta(minutes=1))]
    old_in_default = completed(middle_of(9))
    future_in_default = completed(middle_of(-9))
    await st.record([*kept, old_in_default, future_in_default])
    assert (await counts(st, "webhook_jobs"))["webhook_jobs_default"] == 2

    dropped = await prune(st, parse_duration("60d"))

    assert dropped == OLD_PARTITIONS
    for name in OLD_PARTITIONS:
        assert await st.pool.fetchval("SELECT to_regclass($1)", name) is None
    for outcome in kept:
        assert await st.get_job(outcome.delivery.job_id) is not None
        assert len(await st.job_attempts(outcome.delivery.job_id)) == 1
    assert await st.get_job(old_in_default.delivery.job_id) is None
    assert await st.job_attempts(old_in_default.delivery.job_id) == []
    assert await st.get_job(future_in_default.delivery.job_id) is not None
    assert await st.job_attempts(future_in_default.delivery.job_id) != []
    assert await st.pool.fetchval("SELECT to_regclass('webhook_jobs_default')") is not None
    assert await st.pool.fetchval("SELECT to_regclass($1)", partition("webhook_jobs", 1))

    assert await prune(st, parse_duration("60d")) == []


async def test_prune_keeps_months_that_end_after_the_cutoff(st: Store) -> None:
    await old_months_with_jobs(st)
    cutoff_in_month_5 = datetime.now(UTC) - datetime.combine(
        month_start(5) + timedelta(days=10), datetime.min.time(), UTC
    )

    dropped = await prune(st, cutoff_in_month_5.total_seconds())

    assert dropped == [partition(t, 6) for t in ("webhook_job_attempts", "webhook_jobs")]
    assert set(await counts(st, "webhook_jobs")) >= {partition("webhook_jobs", m) for m in (5, 4)}


async def test_prune_never_holds_a_writer_back_for_long(st: Store) -> None:
    """An analyst's open transaction holds the job tables while prune runs: prune waits for
    it, a short lock wait at a time, and the writer keeps writing the current month."""
    await old_months_with_jobs(st)
    stop = asyncio.Event()
    latencies: list[float] = []

    async def writer() -> None:
        while not stop.is_set():
            started = clock.perf_counter()
            await st.record([completed(datetime.now(UTC))])
            latencies.append(clock.perf_counter() - started)
            await asyncio.sleep(0.005)

    hold = 3.0
    lock_timeout = 0.2
    analyst = await st.pool.acquire()
    reading = analyst.transaction()

    async def analyst_query() -> None:
        await reading.start()
        await analyst.fetchval("SELECT count(*) FROM webhook_jobs")
        await asyncio.sleep(hold)
        await reading.commit()

    writing = asyncio.create_task(writer())
    querying = asyncio.create_task(analyst_query())
    try:
        await asyncio.sleep(0.1)
        started = clock.perf_counter()
        dropped = await prune(st, parse_duration("60d"), lock_timeout=lock_timeout, patience=30)
        took = clock.perf_counter() - started
        await querying
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await writing
        await asyncio.gather(querying, return_exceptions=True)
        await st.pool.release(analyst)

    assert dropped == OLD_PARTITIONS
    assert took >= hold - 0.3, "prune never met the analyst's lock, so nothing was measured"
    assert len(latencies) > 20
    # a writer queued behind prune's lock request waits at most prune's lock_timeout; one
    # stuck behind it for the whole analyst's transaction would wait `hold`: the bound is
    # their midpoint, so a slow machine has room and a missing lock_timeout cannot pass
    bound = (lock_timeout + hold) / 2
    assert max(latencies) < bound, (
        f"a write waited {max(latencies):.2f}s during prune: over {bound:g}s, midway between "
        f"prune's lock_timeout ({lock_timeout:g}s) and the analyst's hold ({hold:g}s)"
    )
    assert await st.pool.fetchval("SELECT count(*) FROM webhook_jobs") == len(latencies)


async def test_prune_gives_up_on_a_partition_held_too_long(st: Store) -> None:
    await old_months_with_jobs(st)
    first = partition("webhook_jobs", 6)
    analyst = await st.pool.acquire()
    try:
        async with analyst.transaction():
            await analyst.fetchval(f"SELECT count(*) FROM {first}")
            with pytest.raises(PruneBlocked) as blocked:
                await prune(st, parse_duration("60d"), lock_timeout=0.1, patience=0.5)
    finally:
        await st.pool.release(analyst)

    assert blocked.value.partition == first
    assert blocked.value.dropped == [partition("webhook_job_attempts", 6)]
    assert await prune(st, parse_duration("60d")) == OLD_PARTITIONS[1:]
