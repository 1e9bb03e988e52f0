"""Monthly partitions made ahead of time, also for a month whose rows already sit in the
DEFAULT partition (an event dated further ahead than partitions were made)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from webhook_router import store

from ..conftest import Services, _with_database

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(services: Services) -> AsyncIterator[asyncpg.Pool]:
    name = f"webhook_router_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(services.admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await store.connect(_with_database(services.admin_database_url, name))
    try:
        await store.migrate(pool)
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrations_twice_change_nothing_and_make_partitions_ahead(
    fresh: asyncpg.Pool,
) -> None:
    before = await fresh.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert await store.migrate(fresh) == []
    assert await fresh.fetch("SELECT version FROM schema_migrations ORDER BY version") == before
    months = await fresh.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname ~ '^webhook_jobs_[0-9]{4}_[0-9]{2}$'"
    )
    assert months == 5  # last month, this month, three ahead


async def test_a_month_already_in_default_gets_its_partition_with_its_rows(
    fresh: asyncpg.Pool,
) -> None:
    await fresh.execute(
        "INSERT INTO webhook_jobs (id, event_at, event_id, webhook_id, webhook_name, space,"
        " scope_type, scope_id, type, event, parent_type, tree_group, tree_name, status,"
        " scheduled_at, created_at, updated_at) VALUES (gen_random_uuid(), '2031-09-15',"
        " 'e', gen_random_uuid(), 'w', 's', 'Space', 's', 'User', 'Created', 'User', 'Users',"
        " 'Created', 'Queued', now(), now(), now())"
    )
    await fresh.execute(
        "INSERT INTO webhook_job_attempts (job_id, event_at, replay, attempt, webhook_id, url,"
        " started_at, duration_ms) VALUES (gen_random_uuid(), '2031-09-15', 0, 1,"
        " gen_random_uuid(), 'https://hooks.example/x', now(), 1)"
    )
    await fresh.execute("SELECT webhook_router_make_partitions('2031-09-01', 1)")
    assert await fresh.fetchval("SELECT count(*) FROM webhook_jobs_default") == 0
    assert await fresh.fetchval("SELECT count(*) FROM webhook_jobs_2031_09") == 1
    assert await fresh.fetchval("SELECT count(*) FROM webhook_job_attempts_default") == 0
    assert (
        await fresh.fetchval("SELECT endpoint FROM webhook_job_attempts_2031_09")
        == "https://hooks.example:443"
    )


async def test_migrate_makes_its_database_on_a_fresh_server(services: Services) -> None:
    name = f"webhook_router_test_{uuid.uuid4().hex[:10]}"
    url = _with_database(services.admin_database_url, name)
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        assert await store.ensure_database(url) is True
        assert await store.ensure_database(url) is False
        pool = await store.connect(url)
        try:
            assert "0001_initial" in await store.migrate(pool)
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
