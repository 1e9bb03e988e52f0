"""Endpoint isolation benchmark: deliveries per second to a healthy endpoint alone, then
beside an endpoint that hangs until the request timeout; prints both and their ratio.

    python bench/isolation.py --events 3000

Roles run as their own processes against the configured RabbitMQ and PostgreSQL, in a
database and namespace of their own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from e2e import drop_namespace, env_of, free_port

from webhook_router import store
from webhook_router.events import now_timestamp
from webhook_router.publisher import Publisher
from webhook_router.settings import Settings


async def hanging_receiver(port: int) -> web.AppRunner:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_post("/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def phase(
    pool: asyncpg.Pool, publisher: Publisher, space: str, healthy: int, hanging: int
) -> float:
    """Publish; return healthy deliveries per second until all healthy jobs are Complete."""
    began = time.time()
    events = [("Updated", n) for n in range(healthy)] + [("Created", n) for n in range(hanging)]
    window = asyncio.Semaphore(200)

    async def one(action: str, n: int) -> None:
        async with window:
            await publisher.publish(
                {
                    "event": {"type": "User", "action": action, "timestamp": now_timestamp()},
                    "space": {"slug": space},
                    "user": {"username": f"u{n}"},
                }
            )

    await asyncio.gather(*(one(a, n) for a, n in events))
    while True:
        done = await pool.fetchval(
            "SELECT count(*) FROM webhook_jobs WHERE space = $1 AND event = 'Updated'"
            " AND status = 'Complete'",
            space,
        )
        if done >= healthy:
            return healthy / (time.time() - began)
        await asyncio.sleep(0.05)


async def main(events: int, hanging: int) -> None:
    base = Settings()
    dbname = f"webhook_router_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(base.database_url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    healthy_port, hanging_port = free_port(), free_port()
    settings = base.model_copy(
        update={
            "namespace": f"bench_{uuid.uuid4().hex[:8]}",
            "database_url": urlunsplit(parts._replace(path="/" + dbname)),
            "engine_url": f"http://127.0.0.1:{healthy_port}",
            "allowed_networks": ["127.0.0.0/8"],
            "retry_schedule": "1s,2s,4s",
            "request_timeout": 10.0,
        }
    )
    pool = await store.connect(settings.database_url)
    processes = []
    hang = await hanging_receiver(hanging_port)
    try:
        await store.migrate(pool)
        st = store.Store(pool)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).parent / "receiver.py"),
                    "--port",
                    str(healthy_port),
                ]
            )
        )
        for role in ("router", "worker", "recorder"):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "webhook_router.cli", role], env=env_of(settings)
                )
            )
        await asyncio.sleep(3)
        rates = []
        for label, slow in (("alone", 0), ("beside a hanging endpoint", hanging)):
            space = f"iso-{uuid.uuid4().hex[:6]}"
            await st.insert_webhook(
                space=space,
                kapp=None,
                name="healthy",
                type="User",
                event="Updated",
                filter=None,
                auth_strategy=None,
                url="/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Updated",
            )
            await st.insert_webhook(
                space=space,
                kapp=None,
                name="hanging",
                type="User",
                event="Created",
                filter=None,
                auth_strategy=None,
                url=f"http://127.0.0.1:{hanging_port}/hook",
            )
            await asyncio.sleep(1)
            async with Publisher(settings.amqp_url, settings.namespace) as publisher:
                rate = await phase(pool, publisher, space, events, slow)
            rates.append(rate)
            print(f"healthy endpoint {label:28s} {rate:8.0f} deliveries/s", flush=True)
        print(f"ratio {rates[1] / rates[0]:.2f} (target at least 0.80)")
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(30)
        await hang.cleanup()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        await drop_namespace(settings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events to the healthy one")
    parser.add_argument("--hanging", type=int, default=500, help="events to the hanging one")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.hanging))
