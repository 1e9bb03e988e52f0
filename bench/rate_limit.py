"""Rate-limit benchmark: how close one webhook's `rateLimit` holds across worker processes.

A router, a recorder and N workers run as processes of their own; one webhook limited to
RATE deliveries per second gets RATE x SECONDS + 1 events at once, and a receiver on
127.0.0.1 records when each POST arrives. Printed per worker count: the mean rate from the
first arrival to the last, and the most arrivals in any 1-second window.

    python bench/rate_limit.py --rate 10 --seconds 30 --workers 1 3

It makes its own database and namespace (from the WEBHOOK_ROUTER_* settings) and drops
them at the end. The integration test tests/integration/test_rate_limit.py runs
`measure` on the test session's services and asserts the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

from webhook_router import store
from webhook_router.publisher import Publisher
from webhook_router.settings import Settings


@dataclass(frozen=True, slots=True)
class Figures:
    workers: int
    rate: float
    arrivals: int
    duplicates: int
    duration: float
    mean: float
    """Arrivals per second from the first to the last."""
    max_window: int
    """Most arrivals within any 1-second window."""
    max_start_window: int | None = None
    """Most attempts started (as the job log's `started_at` says, the workers' clocks)
    within any 1-second window: what the limiter itself spaces."""
    gap_before: float = 0.0
    """The longest pause between two arrivals in the two seconds up to the busiest window's
    last one: a window filled right after a second or more without any arrival is a
    pile-up after a stall, of the receiver or of every worker."""

    def line(self) -> str:
        starts = "" if self.max_start_window is None else f", of starts {self.max_start_window}"
        return (
            f"workers={self.workers} limit={self.rate:g}/s arrivals={self.arrivals} "
            f"duplicates={self.duplicates} over {self.duration:.2f}s: "
            f"mean {self.mean:.2f}/s ({(self.mean / self.rate - 1) * 100:+.1f}%), "
            f"busiest 1s window {self.max_window}{starts} "
            f"(longest pause before it {self.gap_before:.2f}s)"
        )


def busiest(times: list[float]) -> tuple[int, int]:
    """The most of `times` (sorted) within any 1-second window, and the index of the
    window's last one."""
    most, last, start = 0, 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        if end - start + 1 > most:
            most, last = end - start + 1, end
    return most, last


def figures(
    workers: int,
    rate: float,
    times: list[float],
    ids: list[str],
    starts: list[float] | None = None,
) -> Figures:
    times = sorted(times)
    duration = times[-1] - times[0] if len(times) > 1 else 0.0
    most, last = busiest(times)
    before = [t for t in times[: last + 1] if times[last] - 2.0 <= t]
    gap = max((b - a for a, b in itertools.pairwise(before)), default=0.0)
    return Figures(
        workers,
        rate,
        len(times),
        len(ids) - len(set(ids)),
        duration,
        (len(times) - 1) / duration if duration else 0.0,
        most,
        busiest(sorted(starts))[0] if starts else None,
        gap,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_ROUTER_")}
    for name, value in settings.model_dump().items():
        env[f"WEBHOOK_ROUTER_{name.upper()}"] = (
            ",".join(value) if isinstance(value, list) else str(value)
        )
    env["WEBHOOK_ROUTER_LOG_LEVEL"] = "warning"
    env["WEBHOOK_ROUTER_LOG_FORMAT"] = "json"
    return env


@asynccontextmanager
async def processes(settings: Settings, roles: list[str]) -> AsyncIterator[None]:
    """Each role as `webhook-router ROLE`, killed at the end."""
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webhook_router.cli",
            role,
            env=env_of(settings),
            stdout=asyncio.subprocess.DEVNULL,
        )
        for role in roles
    ]
    try:
        yield
    finally:
        for process in started:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def consumers(settings: Settings, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(settings.amqp_url[0])
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.consumer_count or 0)


async def measure(settings: Settings, *, workers: int, rate: float, seconds: float) -> Figures:
    """Run the roles on `settings` (a migrated database, a namespace of the caller's own)
    and measure one webhook limited to `rate`; raises when not every event arrived."""
    times: list[float] = []
    ids: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        times.append(time.monotonic())
        ids.append(request.headers.get("webhook-id", ""))
        await request.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pool = await store.connect(settings.database_url)
    space = f"rate-{uuid.uuid4().hex[:8]}"
    events = round(rate * seconds) + 1
    try:
        webhook = await store.Store(pool).insert_webhook(
            space=space,
            kapp=None,
            name="limited",
            type="User",
            event="Created",
            filter=None,
            url=f"http://127.0.0.1:{port}/hook",
            auth_strategy=None,
            rate_limit=rate,
        )
        roles = ["router", "recorder", *["worker"] * workers]
        async with (
            processes(settings, roles),
            Publisher(settings.amqp_url, settings.namespace) as publisher,
        ):
            deadline = time.monotonic() + 60
            while True:
                try:
                    ready = await consumers(settings, settings.names.deliver_queues()[0])
                except Exception:  # not declared yet
                    ready = 0
                if ready >= workers:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready} of {workers} workers consuming after 60s")
                await asyncio.sleep(0.5)
            await asyncio.gather(
                *(
                    publisher.publish(
                        {
                            "event": {"type": "User", "action": "Created"},
                            "space": {"slug": space},
                            "user": {"username": f"user-{n}"},
                        }
                    )
                    for n in range(events)
                )
            )
            deadline = time.monotonic() + seconds * 2 + 30
            while len(times) < events and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # anything beyond the events would show as a duplicate
            assert webhook is not None
            starts = await started(pool, webhook.id, events)
    finally:
        await pool.close()
        await runner.cleanup()
    if len(times) < events:
        raise RuntimeError(f"only {len(times)} of {events} deliveries arrived")
    return figures(workers, rate, times, ids, starts)


async def started(pool: asyncpg.Pool, webhook_id: str, events: int) -> list[float]:
    """When each attempt of the webhook started, by the job log (once all are recorded,
    within 30 s), in seconds of the epoch."""
    query = (
        "SELECT extract(epoch FROM started_at)::double precision AS at "
        "FROM webhook_job_attempts WHERE webhook_id = $1"
    )
    deadline = time.monotonic() + 30
    while True:
        rows = await pool.fetch(query, uuid.UUID(webhook_id))
        if len(rows) >= events or time.monotonic() > deadline:
            return [float(r["at"]) for r in rows]
        await asyncio.sleep(0.2)


async def main_async(rate: float, seconds: float, worker_counts: list[int]) -> None:
    base = Settings(allowed_networks=["127.0.0.0/8"])
    parts = urlsplit(base.database_url)
    dbname = f"webhook_router_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    database_url = urlunsplit(parts._replace(path="/" + dbname))
    try:
        pool = await store.connect(database_url)
        await store.migrate(pool)
        await pool.close()
        for count in worker_counts:
            namespace = f"bench_rate_{uuid.uuid4().hex[:8]}"
            settings = base.model_copy(
                update={"database_url": database_url, "namespace": namespace}
            )
            try:
                print((await measure(settings, workers=count, rate=rate, seconds=seconds)).line())
            finally:
                await drop_namespace(settings)
    finally:
        await admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        await admin.close()


async def drop_namespace(settings: Settings) -> None:
    import aio_pika

    names = settings.names
    connection = await aio_pika.connect(settings.amqp_url[0])
    async with connection:
        channel = await connection.channel()
        retry = [names.retry_queue(s) for s in settings.retry_delays]
        for queue in [*names.work_queues(), names.dead, *retry]:
            await channel.queue_delete(queue)
        for exchange in names.exchanges():
            await channel.exchange_delete(exchange)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="the webhook's rateLimit")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3], help="worker counts")
    args = parser.parse_args()
    asyncio.run(main_async(args.rate, args.seconds, args.workers))


if __name__ == "__main__":
    main()
