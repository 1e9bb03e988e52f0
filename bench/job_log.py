"""How fast the job log answers at scale: the API's job list filters and the analysts' views.

Makes a database of its own, migrates it, seeds N jobs with their attempts (several spaces,
50 webhooks, mostly Complete with some Failed and Queued, events over the last 90 days so
that several monthly partitions are used), vacuums and analyzes it, then prints for every
query the median time of a few runs and its EXPLAIN (ANALYZE, BUFFERS) plan.

    .venv/bin/python bench/job_log.py --jobs 1000000

The database is dropped at the end unless --keep is given; --reuse NAME queries a kept
one again (after applying any new migration to it) without seeding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from webhook_router import store
from webhook_router.catalogue import CATALOGUE, Level
from webhook_router.store import JobFilter, Store

SPACES = {"acme": 0.45, "globex": 0.2, "initech": 0.15, "umbrella": 0.1, "hooli": 0.1}
KAPPS = ("services", "hr", "it")
ENGINE = "http://engine.internal:8081"
ENDPOINTS = {  # base of an endpoint's answer time, in milliseconds
    ENGINE: 45.0,
    "https://hooks.chat.example": 180.0,
    "https://api.partner.example:8443": 320.0,
    "https://crm.example.com": 90.0,
    "http://10.20.0.15:9000": 12.0,
    "https://audit.example.org": 600.0,
}
TYPE_WEIGHTS = {
    "Submission": 30,
    "User": 7,
    "Team": 4,
    "Form": 3,
    "Datastore Submission": 4,
    "Datastore Form": 1,
    "Space": 1,
}
WEBHOOKS = 50
SLOTS = 1000
PADDING = " ".join(f"field{i}" for i in range(60))


@dataclass(frozen=True)
class BenchWebhook:
    n: int
    id: str
    space: str
    kapp: str | None
    name: str
    type: str
    event: str
    endpoint: str
    path: str
    weight: float


def plan_webhooks(rng: random.Random) -> list[BenchWebhook]:
    """50 webhooks over the spaces, weighted so a few carry most jobs, as in real spaces."""
    types = {t.name: t for t in CATALOGUE}
    names = list(TYPE_WEIGHTS)
    out: list[BenchWebhook] = []
    spaces = list(SPACES)
    for n in range(WEBHOOKS):
        space = spaces[n % len(spaces)]
        type_ = rng.choices(names, weights=list(TYPE_WEIGHTS.values()))[0]
        event = rng.choice(types[type_].actions)
        kapp = rng.choice(KAPPS) if types[type_].level is Level.KAPP else None
        endpoint = ENGINE if rng.random() < 0.7 else rng.choice(list(ENDPOINTS)[1:])
        path = "" if endpoint == ENGINE else f"/in/{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        weight = SPACES[space] / (1 + rng.random() * 9) ** 3
        out.append(
            BenchWebhook(
                n, "", space, kapp, f"{type_} {event} {n}", type_, event, endpoint, path, weight
            )
        )
    return out


async def create_webhooks(st: Store, planned: list[BenchWebhook]) -> list[BenchWebhook]:
    made = []
    for w in planned:
        url = (
            "/app/api/v1/run-tree/Kinetic%20Request%20CE/x/y"
            if w.endpoint == ENGINE
            else w.endpoint + w.path
        )
        created = await st.insert_webhook(
            space=w.space,
            kapp=w.kapp,
            name=w.name,
            type=w.type,
            event=w.event,
            filter=None,
            url=url,
            auth_strategy=None,
        )
        assert created is not None
        made.append(
            BenchWebhook(
                w.n,
                created.id,
                w.space,
                w.kapp,
                w.name,
                w.type,
                w.event,
                w.endpoint,
                w.path,
                w.weight,
            )
        )
    return made


SETUP = """
CREATE TABLE bench_webhooks (
    n int PRIMARY KEY, id uuid, space text, kapp text, name text, type text, event text,
    endpoint text, path text, base_ms double precision);
CREATE TABLE bench_slots (slot int PRIMARY KEY, n int);
"""

# One statement per chunk: the jobs of event numbers $1..$2 and their attempts.
SEED = r"""
WITH s AS (
    SELECT g, random() AS r_status, random() AS r_time, random() AS r_att, random() AS r_kind,
           random() AS r_dur, floor(random() * 1000)::int AS slot,
           floor(random() * 20)::int AS form_i
    FROM generate_series($1::bigint, $2::bigint) AS g
), x AS (
    SELECT s.*, w.id AS webhook_id, w.name AS webhook_name, w.space, w.kapp, w.type, w.event,
           w.endpoint, w.path, w.base_ms,
           (ARRAY['ipad-request', 'onboarding', 'offboarding', 'laptop', 'travel', 'expense',
                  'access', 'badge', 'parking', 'vpn', 'desk', 'phone', 'leave', 'training',
                  'incident', 'change', 'problem', 'asset', 'contract', 'vendor'])[form_i + 1]
               AS form,
           CASE WHEN r_status < 0.92 THEN 'Complete'
                WHEN r_status < 0.96 THEN 'Failed'
                WHEN r_status < 0.985 THEN 'Retry'
                WHEN r_status < 0.99 THEN 'Unsent'
                ELSE 'Queued' END AS kind
    FROM s JOIN bench_slots USING (slot) JOIN bench_webhooks w USING (n)
), y AS (
    SELECT x.*,
           CASE type
               WHEN 'Submission' THEN 'Submissions > ' || kapp || ' > ' || form
               WHEN 'Form' THEN kapp || ' > ' || form
               WHEN 'Datastore Submission' THEN 'Datastore Submissions > ' || form
               WHEN 'Datastore Form' THEN 'Datastore Forms > ' || form
               WHEN 'User' THEN 'Users'
               WHEN 'Team' THEN 'Teams'
               ELSE 'Space' END AS tree_group,
           CASE type
               WHEN 'Submission' THEN md5(space || (g / 4))::uuid::text
               WHEN 'Datastore Submission' THEN md5(space || (g / 3))::uuid::text
               WHEN 'Form' THEN form
               WHEN 'Datastore Form' THEN form
               WHEN 'User' THEN 'user' || (g % 3000) || '@example.com'
               WHEN 'Team' THEN 'team-' || (g % 80)
               ELSE space END AS parent_id,
           CASE kind
               WHEN 'Complete' THEN CASE WHEN r_att < 0.88 THEN 1 WHEN r_att < 0.97 THEN 2
                                         ELSE 3 END
               WHEN 'Failed' THEN CASE WHEN r_kind < 0.6 THEN 1 ELSE 3 END
               WHEN 'Retry' THEN CASE WHEN r_att < 0.7 THEN 1 ELSE 2 END
               WHEN 'Unsent' THEN 1
               ELSE 0 END AS n_attempts,
           CASE WHEN kind IN ('Retry', 'Queued') THEN now() - r_time * interval '10 minutes'
                ELSE now() - ($4::bigint - g + r_time * 100) / $4::bigint * interval '90 days'
           END AS at,
           CASE kind
               WHEN 'Complete' THEN 200
               WHEN 'Failed' THEN CASE WHEN r_kind < 0.3 THEN 404 WHEN r_kind < 0.5 THEN 400
                                       WHEN r_kind < 0.6 THEN 422 WHEN r_kind < 0.8 THEN 503
                                       WHEN r_kind < 0.9 THEN 500 END
               WHEN 'Retry' THEN CASE WHEN r_kind < 0.6 THEN 503 END
           END AS code,
           CASE WHEN r_kind < 0.95 THEN 'timed out after 30s'
                ELSE 'connection failed: [Errno 111] Connect call failed' END AS error
    FROM x
), z AS (
    SELECT y.*,
           CASE code WHEN 200 THEN '200 OK' WHEN 400 THEN '400 Bad Request'
                     WHEN 404 THEN '404 Not Found' WHEN 422 THEN '422 Unprocessable Entity'
                     WHEN 500 THEN '500 Internal Server Error'
                     WHEN 503 THEN '503 Service Unavailable' ELSE error END AS said,
           CASE WHEN endpoint = 'http://engine.internal:8081'
                THEN endpoint || '/app/api/v1/run-tree/Kinetic%20Request%20CE/'
                     || replace(replace(tree_group, ' ', '%20'), '>', '%3E') || '/'
                     || replace(event, ' ', '%20')
                ELSE endpoint || path END AS url,
           at + interval '20 milliseconds' AS created,
           CASE WHEN r_dur < 0.03 AND code IS NOT NULL THEN base_ms * (5 + 20 * r_dur)
                WHEN code IS NULL THEN 30000.0
                ELSE base_ms * (0.6 + 0.8 * r_dur) END AS took
    FROM y
), jobs AS (
    INSERT INTO webhook_jobs (
        id, event_at, event_id, webhook_id, webhook_name, space, scope_type, scope_id, type,
        event, parent_type, parent_id, tree_group, tree_name, url, request_content,
        response_status, response_content, summary, run_id, status, retry_count, attempts,
        replay, duration_ms, scheduled_at, created_at, updated_at, completed_at)
    SELECT
        gen_random_uuid(), at, 'evt-' || g, webhook_id, webhook_name, space,
        CASE WHEN kapp IS NULL THEN 'Space' ELSE 'Kapp' END, coalesce(kapp, space), type,
        event, type, parent_id, tree_group, event, url,
        format('{"event":{"id":"evt-%s","type":"%s","action":"%s","timestamp":"%s"},'
               '"space":{"slug":"%s","name":"%s"},"kapp":{"slug":"%s"},'
               '"form":{"slug":"%s","name":"%s"},"submission":{"id":"%s","coreState":'
               '"Submitted","createdBy":"user%s@example.com","values":{"Status":"Open",'
               '"Requested For":"user%s@example.com","Notes":"%s"}}}',
               g, type, event, at, space, space, kapp, form, form, parent_id, g % 3000,
               (g * 7) % 3000, $3::text),
        CASE WHEN kind = 'Unsent' OR n_attempts = 0 THEN NULL ELSE code END,
        CASE WHEN kind IN ('Unsent', 'Queued') THEN NULL
             WHEN code = 200 AND endpoint = 'http://engine.internal:8081'
             THEN format('{"messageType":"success","message":"Initiated run #%s.",'
                         '"runId":"%s"}', g, g)
             WHEN code = 200 THEN '{"ok":true}'
             WHEN code IS NOT NULL THEN format('{"message":"%s"}', said) END,
        CASE kind
            WHEN 'Queued' THEN NULL
            WHEN 'Unsent' THEN 'URL: kapp(''attribute:Task Source Name'') is null'
            WHEN 'Failed' THEN
                CASE WHEN n_attempts = 3 THEN said || ' (gave up after 3 attempts)' ELSE said END
            ELSE said END,
        CASE WHEN code = 200 AND endpoint = 'http://engine.internal:8081' THEN g::text END,
        CASE kind WHEN 'Complete' THEN 'Complete' WHEN 'Failed' THEN 'Failed'
                  WHEN 'Unsent' THEN 'Failed' ELSE 'Queued' END,
        CASE kind WHEN 'Retry' THEN n_attempts WHEN 'Queued' THEN 0 WHEN 'Unsent' THEN 0
                  ELSE n_attempts - 1 END,
        n_attempts, 0,
        CASE WHEN n_attempts > 0 AND kind <> 'Unsent' THEN took END,
        CASE WHEN kind = 'Retry' THEN now() + r_dur * interval '30 minutes' ELSE created END,
        created,
        created + (n_attempts * took + 50) * interval '1 millisecond',
        CASE WHEN kind IN ('Complete', 'Failed', 'Unsent')
             THEN created + (n_attempts * took + 50) * interval '1 millisecond' END
    FROM z
    RETURNING id, event_at, webhook_id, url, status, attempts, response_status,
              response_content, summary, duration_ms, created_at
)
INSERT INTO webhook_job_attempts (
    job_id, event_at, replay, attempt, webhook_id, url, started_at, duration_ms,
    response_status, response_content, error, request_headers)
SELECT j.id, j.event_at, 0, a, j.webhook_id, j.url,
       j.created_at + interval '5 milliseconds'
           + (CASE a WHEN 1 THEN 0 WHEN 2 THEN 5 ELSE 35 END) * interval '1 second',
       CASE WHEN a = j.attempts THEN j.duration_ms
            ELSE j.duration_ms * (0.5 + random()) END,
       CASE WHEN a = j.attempts THEN j.response_status
            WHEN j.status = 'Failed' THEN j.response_status ELSE 503 END,
       CASE WHEN a = j.attempts THEN j.response_content
            WHEN j.status = 'Failed' AND j.response_status IS NULL THEN NULL
            ELSE '{"message":"503 Service Unavailable"}' END,
       CASE WHEN j.response_status IS NULL AND (a = j.attempts OR j.status = 'Failed')
            THEN split_part(j.summary, ' (gave up', 1) END,
       jsonb_build_object('Content-Type', 'application/json', 'webhook-id', j.id::text,
                          'User-Agent', 'webhook-router/0.1.0')
FROM jobs j, generate_series(1, j.attempts) AS a
WHERE j.summary IS NULL OR j.summary NOT LIKE 'URL:%'
"""


async def seed(
    pool: asyncpg.Pool, webhooks: list[BenchWebhook], jobs: int, chunk: int, workers: int
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(SETUP)
        await conn.executemany(
            "INSERT INTO bench_webhooks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [
                (
                    w.n,
                    uuid.UUID(w.id),
                    w.space,
                    w.kapp,
                    w.name,
                    w.type,
                    w.event,
                    w.endpoint,
                    w.path,
                    ENDPOINTS[w.endpoint],
                )
                for w in webhooks
            ],
        )
        total = sum(w.weight for w in webhooks)
        slots: list[tuple[int, int]] = []
        edge = 0.0
        for w in webhooks:
            edge += w.weight / total * SLOTS
            slots.extend((s, w.n) for s in range(len(slots), min(SLOTS, round(edge))))
        slots.extend((s, webhooks[-1].n) for s in range(len(slots), SLOTS))
        await conn.executemany("INSERT INTO bench_slots VALUES ($1, $2)", slots)

    ranges = [(lo, min(lo + chunk - 1, jobs)) for lo in range(1, jobs + 1, chunk)]
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for r in ranges:
        queue.put_nowait(r)
    done = 0
    started = time.perf_counter()

    async def work() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while not queue.empty():
                lo, hi = queue.get_nowait()
                await conn.execute(SEED, lo, hi, PADDING, jobs)
                done += hi - lo + 1
                print(
                    f"  seeded {done:>9,} jobs  {time.perf_counter() - started:6.1f}s",
                    flush=True,
                )

    await asyncio.gather(*(work() for _ in range(workers)))
    await pool.execute("DROP TABLE bench_webhooks, bench_slots")


@dataclass
class Query:
    name: str
    sql: str
    args: tuple[Any, ...]


class _Capture:
    """Stands in for the pool to read the SQL that Store.list_jobs would run."""

    def __init__(self) -> None:
        self.sql = ""
        self.args: tuple[Any, ...] = ()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.sql, self.args = sql, args
        return []


async def list_query(name: str, f: JobFilter) -> Query:
    capture = _Capture()
    await Store(capture).list_jobs(f)  # type: ignore[arg-type]
    return Query(name, capture.sql, capture.args)


async def keyset_at(pool: asyncpg.Pool, q: Query, depth: int) -> tuple[datetime, str] | None:
    """The (scheduled_at, id) of the row `depth` rows into a filter's result."""
    sql = q.sql.rsplit(" LIMIT ", 1)[0] + f" OFFSET {depth} LIMIT 1"
    row = await pool.fetchrow(sql, *q.args[:-1])
    return (row["scheduled_at"], str(row["id"])) if row else None


async def pick(pool: asyncpg.Pool, sql: str) -> Any:
    return await pool.fetchval(sql)


async def api_queries(pool: asyncpg.Pool, deep: int) -> list[Query]:
    space = "acme"
    webhook = await pick(
        pool,
        "SELECT webhook_name FROM webhook_jobs WHERE space = 'acme' AND scope_type = 'Kapp'"
        " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    rare = await pick(
        pool,
        "SELECT webhook_name FROM webhook_jobs WHERE space = 'acme'"
        " GROUP BY 1 HAVING count(*) >= 500 ORDER BY count(*) LIMIT 1",
    )
    kapp = await pick(
        pool,
        "SELECT scope_id FROM webhook_jobs WHERE space = 'acme' AND scope_type = 'Kapp'"
        " GROUP BY 1 ORDER BY count(*) LIMIT 1",
    )
    busy = await pool.fetchrow(
        "SELECT space, parent_type, parent_id FROM webhook_jobs"
        " WHERE parent_type IN ('User', 'Team') GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 1"
    )
    submission = await pick(
        pool,
        "SELECT parent_id FROM webhook_jobs WHERE space = 'acme' AND parent_type = 'Submission'"
        " LIMIT 1",
    )
    now = datetime.now(UTC)
    week = (now - timedelta(days=37), now - timedelta(days=30))
    filters: list[tuple[str, JobFilter]] = [
        ("space", JobFilter(space=space)),
        ("status Failed", JobFilter(space=space, status="Failed")),
        ("status Queued", JobFilter(space=space, status="Queued")),
        ("status Complete", JobFilter(space=space, status="Complete")),
        (f"webhook {webhook!r}", JobFilter(space=space, webhook=webhook)),
        (f"webhook {rare!r} (rare)", JobFilter(space=space, webhook=rare)),
        (
            f"webhook {rare!r} (rare) + status Failed",
            JobFilter(space=space, webhook=rare, status="Failed"),
        ),
        (f"kapp {kapp!r}", JobFilter(space=space, kapp=kapp)),
        (
            f"kapp {kapp!r} + status Failed",
            JobFilter(space=space, kapp=kapp, status="Failed"),
        ),
        (
            f"webhook {webhook!r} + status Failed",
            JobFilter(space=space, webhook=webhook, status="Failed"),
        ),
        (
            f"parent {busy['parent_type']} {busy['parent_id']!r}",
            JobFilter(
                space=busy["space"], parent_type=busy["parent_type"], parent_key=busy["parent_id"]
            ),
        ),
        (
            "parent Submission",
            JobFilter(space=space, parent_type="Submission", parent_key=submission),
        ),
        ("scheduledAt window (7 days)", JobFilter(space=space, start=week[0], end=week[1])),
        (
            "scheduledAt window + status Failed",
            JobFilter(space=space, status="Failed", start=week[0], end=week[1]),
        ),
        ("space, limit 1000", JobFilter(space=space, limit=1000)),
    ]
    out: list[Query] = []
    for name, f in filters:
        first = await list_query(name + ", first page", f)
        out.append(first)
        total = await pool.fetchval(
            "SELECT count(*) FROM (" + first.sql.rsplit(" ORDER BY ", 1)[0] + ") t",
            *first.args[:-1],
        )
        depth = min(deep, int(total) // 2)
        if depth >= f.limit:
            after = await keyset_at(pool, first, depth)
            if after is not None:
                page = JobFilter(**{**_fields(f), "after": after})
                out.append(await list_query(f"{name}, page at row {depth:,}", page))
    return out


def _fields(f: JobFilter) -> dict[str, Any]:
    return {k: getattr(f, k) for k in JobFilter.__dataclass_fields__}


VIEW_QUERIES = [
    (
        "success rate per webhook, last 7 days",
        "SELECT day, space, webhook_name, jobs, complete, failed, success_rate"
        " FROM webhook_job_success_daily WHERE day >= current_date - 7"
        " ORDER BY day DESC, space, webhook_name",
    ),
    (
        "success rate of one space, last 30 days",
        "SELECT webhook_name, sum(complete) AS complete, sum(failed) AS failed,"
        " round(sum(complete)::numeric / nullif(sum(complete + failed), 0), 4) AS success_rate"
        " FROM webhook_job_success_daily WHERE space = 'acme' AND day >= current_date - 30"
        " GROUP BY webhook_name ORDER BY success_rate NULLS FIRST",
    ),
    (
        "success rate per webhook, whole log",
        "SELECT space, webhook_name, sum(jobs) AS jobs, sum(failed) AS failed"
        " FROM webhook_job_success_daily GROUP BY 1, 2 ORDER BY failed DESC LIMIT 10",
    ),
    (
        "p50/p95 per endpoint, last 7 days",
        "SELECT day, endpoint, attempts, p50_ms, p95_ms FROM webhook_endpoint_latency"
        " WHERE day >= current_date - 7 ORDER BY day DESC, p95_ms DESC",
    ),
    (
        "failures by answer, last 7 days",
        "SELECT response_status, error, sum(jobs) AS jobs FROM webhook_job_failures"
        " WHERE day >= current_date - 7 GROUP BY 1, 2 ORDER BY jobs DESC",
    ),
    (
        "failures by answer, whole log",
        "SELECT response_status, error, sum(jobs) AS jobs FROM webhook_job_failures"
        " GROUP BY 1, 2 ORDER BY jobs DESC",
    ),
    (
        "runs per tree, last 7 days",
        "SELECT tree_group, tree_name, sum(runs) AS runs FROM webhook_runs_per_tree"
        " WHERE day >= current_date - 7 GROUP BY 1, 2 ORDER BY runs DESC LIMIT 20",
    ),
    (
        "jobs waiting for retry",
        "SELECT id, space, webhook_name, retry_count, summary, scheduled_at"
        " FROM webhook_jobs_waiting_retry ORDER BY scheduled_at LIMIT 100",
    ),
    (
        "jobs waiting for retry, per webhook",
        "SELECT space, webhook_name, count(*), min(scheduled_at) AS next_attempt_at"
        " FROM webhook_jobs_waiting_retry GROUP BY 1, 2 ORDER BY 3 DESC",
    ),
]


async def timed(run: Callable[[], Awaitable[Any]], runs: int) -> float:
    await run()
    times = []
    for _ in range(runs):
        clock = time.perf_counter()
        await run()
        times.append((time.perf_counter() - clock) * 1000)
    return statistics.median(times)


async def report(pool: asyncpg.Pool, q: Query, runs: int, plans: bool) -> tuple[float, float]:
    """Prints the median round trip of the query, its server time and its plan."""
    ms = await timed(lambda: pool.fetch(q.sql, *q.args), runs)
    plan = [r[0] for r in await pool.fetch("EXPLAIN (ANALYZE, BUFFERS) " + q.sql, *q.args)]
    server = float(plan[-1].split()[-2]) if plan[-1].startswith("Execution Time") else 0.0
    print(f"\n### {q.name}: {ms:.2f} ms round trip (median of {runs}), {server:.2f} ms in server")
    if plans:
        print("\n".join("    " + line for line in plan))
    return ms, server


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to seed")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "WEBHOOK_ROUTER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="server to make the bench database on (its database is only used to create it)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each query")
    parser.add_argument("--deep", type=int, default=50_000, help="rows into a deep page")
    parser.add_argument("--chunk", type=int, default=50_000, help="jobs per seeding statement")
    parser.add_argument("--workers", type=int, default=2, help="connections seeding at once")
    parser.add_argument("--no-plans", action="store_true", help="print times only")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the webhooks")
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="query a database kept by an earlier --keep run (migrated again, not seeded); kept",
    )
    args = parser.parse_args()

    name = args.reuse or f"webhook_router_bench_{uuid.uuid4().hex[:8]}"
    if not args.reuse:
        admin = await asyncpg.connect(args.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    url = _database(args.database_url, name)
    print(f"database {name}")
    try:
        pool = await store.connect(url, max_size=args.workers + 1)
        try:
            await run(pool, args)
        finally:
            await pool.close()
    finally:
        if args.keep or args.reuse:
            print(f"kept database {name}")
        else:
            admin = await asyncpg.connect(args.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


async def run(pool: asyncpg.Pool, args: argparse.Namespace) -> None:
    clock = time.perf_counter()
    applied = await store.migrate(pool)
    took = time.perf_counter() - clock
    print(f"migrations applied: {', '.join(applied) or 'none'} ({took:.1f}s)")
    seeded = 0.0
    if not args.reuse:
        today = datetime.now(UTC).date()
        await pool.execute(
            "SELECT webhook_router_make_partitions($1, 8)",
            today.replace(day=1) - timedelta(days=100),
        )
        webhooks = await create_webhooks(Store(pool), plan_webhooks(random.Random(args.seed)))
        print(f"seeding {args.jobs:,} jobs over {len(webhooks)} webhooks")
        clock = time.perf_counter()
        await seed(pool, webhooks, args.jobs, args.chunk, args.workers)
        seeded = time.perf_counter() - clock
    clock = time.perf_counter()
    await pool.execute("VACUUM (ANALYZE) webhook_jobs, webhook_job_attempts")
    vacuumed = time.perf_counter() - clock
    counts = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM webhook_jobs) AS jobs,"
        " (SELECT count(*) FROM webhook_job_attempts) AS attempts"
    )
    done = f"seeded in {seeded:.1f}s" if not args.reuse else "reused"
    print(
        f"{counts['jobs']:,} jobs and {counts['attempts']:,} attempts ({done});"
        f" VACUUM (ANALYZE) {vacuumed:.1f}s"
    )
    for r in await pool.fetch(
        "SELECT c.relname, count(*) AS rows FROM webhook_jobs j"
        " JOIN pg_class c ON c.oid = j.tableoid GROUP BY 1 ORDER BY 1"
    ):
        print(f"  {r['relname']}: {r['rows']:,} jobs")
    for r in await pool.fetch(
        "SELECT t, pg_size_pretty(sum(pg_table_size(p.relid))) AS heap,"
        " pg_size_pretty(sum(pg_indexes_size(p.relid))) AS indexes"
        " FROM unnest(ARRAY['webhook_jobs', 'webhook_job_attempts']) t,"
        " pg_partition_tree(t::regclass) p WHERE p.isleaf GROUP BY t"
    ):
        print(f"  {r['t']}: table {r['heap']}, indexes {r['indexes']}")

    summary: list[tuple[str, float, float]] = []
    print("\n## API job list (Store.list_jobs)")
    for q in await api_queries(pool, args.deep):
        summary.append((q.name, *await report(pool, q, args.runs, not args.no_plans)))
    views = await pool.fetchval("SELECT to_regclass('webhook_job_success_daily') IS NOT NULL")
    if views:
        print("\n## Views")
        for name, sql in VIEW_QUERIES:
            q = Query(name, sql, ())
            summary.append((name, *await report(pool, q, args.runs, not args.no_plans)))
    print("\n## Summary\n\n| Query | Round trip, median (ms) | Server (ms) |\n|---|---:|---:|")
    for name, ms, server in summary:
        print(f"| {name} | {ms:.1f} | {server:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
