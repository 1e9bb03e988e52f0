"""The console's own reads of the job log: filters, counts and series the store lacks.

Kept apart from store.py so the console can grow without touching the roles' queries; every
statement is parameterised and put together from fixed fragments, never from user text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from webhook_router.jobs import Status
from webhook_router.store import webhook_of
from webhook_router.webhooks import Webhook

LIST_COLUMNS = (
    "id, scheduled_at, status, summary, run_id, webhook_id, webhook_name, scope_type, scope_id,"
    " type, event, tree_group, tree_name, url, retry_count, attempts, duration_ms,"
    " response_status"
)


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The jobs page's filters; every field but `space` is optional."""

    space: str
    status: str | None = None
    webhook: str | None = None
    type: str | None = None
    event: str | None = None
    kapp: str | None = None
    form: str | None = None
    url_text: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 50
    after: tuple[datetime, str] | None = None


def like_escape(text: str) -> str:
    """`text` matched literally inside a LIKE pattern (escape character `\\`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(q: JobQuery, *, with_status: bool = True) -> tuple[list[str], list[Any]]:
    where = ["space = $1"]
    args: list[Any] = [q.space]

    def add(fragment: str, value: Any) -> None:
        args.append(value)
        where.append(fragment.replace("?", f"${len(args)}"))

    if with_status and q.status is not None:
        add("status = ?", q.status)
    if q.webhook is not None:
        add("webhook_name = ?", q.webhook)
    if q.type is not None:
        add("type = ?", q.type)
    if q.event is not None:
        add("event = ?", q.event)
    if q.kapp is not None:
        add("scope_type = 'Kapp' AND scope_id = ?", q.kapp)
    if q.form is not None:
        # Every tree group about a form ends with " > {form slug}" (trees.tree_of).
        add("tree_group LIKE ? ESCAPE '\\'", "% > " + like_escape(q.form))
    if q.url_text is not None:
        add("url ILIKE ? ESCAPE '\\'", "%" + like_escape(q.url_text) + "%")
    if q.start is not None:
        add("scheduled_at >= ?", q.start)
    if q.end is not None:
        add("scheduled_at < ?", q.end)
    return where, args


async def list_jobs(pool: asyncpg.Pool, q: JobQuery) -> list[asyncpg.Record]:
    """Newest first by scheduledAt then id, as the API pages them; `after` continues."""
    where, args = _where(q)
    if q.after is not None:
        args.extend(q.after)
        where.append(f"(scheduled_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
    args.append(q.limit)
    sql = (
        f"SELECT {LIST_COLUMNS} FROM webhook_jobs WHERE "
        + " AND ".join(where)
        + f" ORDER BY scheduled_at DESC, id DESC LIMIT ${len(args)}"
    )
    return list(await pool.fetch(sql, *args))


async def count_by_status(pool: asyncpg.Pool, q: JobQuery) -> dict[str, int]:
    """Jobs per status under every filter but the status itself, each status present."""
    where, args = _where(q, with_status=False)
    sql = "SELECT status, count(*) AS n FROM webhook_jobs WHERE " + " AND ".join(where)
    rows = await pool.fetch(sql + " GROUP BY status", *args)
    counts = {s.value: 0 for s in Status}
    for row in rows:
        counts[row["status"]] = int(row["n"])
    return counts


async def attempts_per_minute(
    pool: asyncpg.Pool, space: str, since: datetime
) -> list[asyncpg.Record]:
    """HTTP attempts and failed ones (no answer or not 2xx) per minute since `since`,
    for the space's current webhooks; minutes without attempts are absent."""
    return list(
        await pool.fetch(
            """
            SELECT date_trunc('minute', started_at) AS minute,
                   count(*) AS deliveries,
                   count(*) FILTER (
                       WHERE error IS NOT NULL
                          OR coalesce(response_status NOT BETWEEN 200 AND 299, true)
                   ) AS failures
            FROM webhook_job_attempts
            WHERE webhook_id IN (SELECT id FROM webhooks WHERE space = $1)
              AND started_at >= $2
            GROUP BY 1
            ORDER BY 1
            """,
            space,
            since,
        )
    )


async def failing_webhooks(
    pool: asyncpg.Pool, space: str, since: datetime, limit: int = 10
) -> list[asyncpg.Record]:
    """The webhooks with the most jobs that ended Failed since `since`, most first."""
    return list(
        await pool.fetch(
            """
            SELECT webhook_id, webhook_name, scope_type, scope_id,
                   count(*) AS failed,
                   max(updated_at) AS last_failed,
                   (array_agg(summary ORDER BY updated_at DESC))[1] AS last_summary
            FROM webhook_jobs
            WHERE space = $1 AND status = 'Failed' AND updated_at >= $2
            GROUP BY webhook_id, webhook_name, scope_type, scope_id
            ORDER BY failed DESC, last_failed DESC
            LIMIT $3
            """,
            space,
            since,
            limit,
        )
    )


async def retry_backlog(
    pool: asyncpg.Pool, space: str, limit: int = 20
) -> tuple[int, list[asyncpg.Record]]:
    """How many jobs wait for a retry (Queued after a failed attempt), and the next due."""
    total = await pool.fetchval(
        "SELECT count(*) FROM webhook_jobs"
        " WHERE space = $1 AND status = 'Queued' AND retry_count > 0",
        space,
    )
    rows = await pool.fetch(
        f"SELECT {LIST_COLUMNS} FROM webhook_jobs"
        " WHERE space = $1 AND status = 'Queued' AND retry_count > 0"
        " ORDER BY scheduled_at, id LIMIT $2",
        space,
        limit,
    )
    return int(total), list(rows)


async def space_webhooks(pool: asyncpg.Pool, space: str) -> list[Webhook]:
    """Every webhook of the space, space-level first, then by kapp and name."""
    rows = await pool.fetch(
        "SELECT * FROM webhooks WHERE space = $1 ORDER BY kapp NULLS FIRST, name", space
    )
    return [webhook_of(r) for r in rows]


async def known_spaces(pool: asyncpg.Pool, limit: int = 200) -> list[str]:
    """Spaces that have webhooks, for the space switcher."""
    rows = await pool.fetch("SELECT DISTINCT space FROM webhooks ORDER BY space LIMIT $1", limit)
    return [str(r["space"]) for r in rows]
