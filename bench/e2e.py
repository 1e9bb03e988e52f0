"""End-to-end benchmark: each role as its own process against the configured RabbitMQ and
PostgreSQL, a receiver answering like the workflow engine, N events published, every job
waited for until it is recorded Complete; then figures, and a check of the result.

    python bench/e2e.py --scenario single --events 20000
    python bench/e2e.py --scenario single --events 20000 --direct   # one `up`, direct handoff
    python bench/e2e.py --scenario fanout --events 4000
    python bench/e2e.py --scenario retry --events 10000
    python bench/e2e.py --scenario latency             # 300, 600 and 900 events/s, 20 s each
    python bench/e2e.py --scenario latency --rate 300 --seconds 30
    python bench/e2e.py --scenario ordered --events 6000
    python bench/e2e.py --scenario scaling --events 10000 --rounds 2
    python bench/e2e.py --all            # every scenario, with the issue's sizes
    python bench/e2e.py --vs-peers --events 3000 --rounds 3

It makes its own database and namespace and drops them at the end.

`--scenario latency` runs open loop at each of LATENCY_RATES in turn (or at `--rate`), so
the latency table comes from one run. `--scenario scaling` runs the single scenario with the
roles laid out each way of LAYOUTS (one process per role; two routers and two workers; all
roles in one `webhook-router up` process, without and with WEBHOOK_ROUTER_DIRECT_HANDOFF),
the order rotated from round to round. `--direct` runs any other scenario in one `up`
process with the direct handoff instead of one process per role.

`--scenario ordered` runs, one after the other, the webhook unordered then ordered per key
(docs/ordering.md): closed loop with 1,000 keys and with 10 keys (deliveries/s), then open
loop at 300 events/s with 1,000 keys (event -> POST); an event's key is its username.

`--vs-peers` (needs the `bench` extra, and `rabbitmqctl` for the Celery peer's vhost)
runs, in each round, webhook-router's single scenario (one process per role, all roles in one
`up` process, and that process with the direct handoff) and the peers in bench/peers/
(FastStream with 2 processes and with 1, Celery) on the same N events, the same receiver
and the same broker and database, each with a database and namespace of its own; the
order rotates from round to round, since this machine's speed drifts. It prints each
round's recorded deliveries/s, each system's median, and last the ratio of each
webhook-router layout's median, then of the best one's, to the best peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson

from webhook_router import store
from webhook_router.events import Event, parse_event
from webhook_router.publisher import Publisher
from webhook_router.settings import Settings

HERE = Path(__file__).parent
TICK = os.sysconf("SC_CLK_TCK")
URL = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"


async def receiver_stats(port: int) -> dict[str, Any]:
    """What the receiver counted: POSTs, duplicates, arrival times."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/stats") as response,
    ):
        stats: dict[str, Any] = await response.json()
    return stats


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


def descendants(pid: int) -> list[int]:
    """The process and every process it started, alive now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def service_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each broker (beam.smp) and database (postgres) process
    on this machine, to see where the rest of the time goes."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        kind = "broker" if name.startswith("beam") else "database" if name == "postgres" else None
        if kind is not None:
            pid = int(stat.parent.name)
            found[pid] = (kind, cpu_seconds(pid))
    return found


def service_cpu_since(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU used since `before` by the broker and database processes alive at both times
    (a backend that ended in between took its count with it)."""
    totals = {"broker": 0.0, "database": 0.0}
    for pid, (kind, used) in service_cpu().items():
        if pid in before:
            totals[kind] += used - before[pid][1]
    return totals


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Result:
    scenario: str
    events: int
    webhooks: int
    jobs: int
    publish_seconds: float
    total_seconds: float
    post_latency: list[float]
    record_latency: list[float]
    rss: dict[str, float]
    cpu: dict[str, float]
    checks: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        rate = self.jobs / self.total_seconds
        lines = [
            f"scenario {self.scenario}: {self.events} events x {self.webhooks} webhooks "
            f"= {self.jobs} jobs",
            f"  publish rate            {self.events / self.publish_seconds:9.0f} events/s",
            f"  recorded deliveries     {rate:9.0f} /s  ({self.total_seconds:.1f} s in all)",
            "  event -> POST    p50 {:7.1f} ms  p95 {:7.1f} ms  p99 {:7.1f} ms".format(
                *(1000 * pct(self.post_latency, q) for q in (50, 95, 99))
            ),
            "  event -> record  p50 {:7.1f} ms  p95 {:7.1f} ms  p99 {:7.1f} ms".format(
                *(1000 * pct(self.record_latency, q) for q in (50, 95, 99))
            ),
            "  peak RSS MB       " + "  ".join(f"{k} {v:.0f}" for k, v in self.rss.items()),
            "  CPU s / 1000 deliveries  "
            + "  ".join(f"{k} {1000 * v / self.jobs:.2f}" for k, v in self.cpu.items()),
            "  checks           " + "  ".join(f"{k}={v}" for k, v in self.checks.items()),
        ]
        return "\n".join(lines)


async def run(
    base: Settings,
    scenario: str,
    events: int,
    fanout: int,
    fail_share: float,
    rate: float | None,
    processes: dict[str, int],
    profile_dir: Path | None = None,
    shards: int = 1,
    ordered: bool = False,
    keys: int | None = None,
) -> Result:
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    dbname = f"webhook_router_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(base.database_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    database_url = urlunsplit(parts._replace(path="/" + dbname))
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    receiver_port = free_port()
    settings = base.model_copy(
        update={
            "namespace": namespace,
            "database_url": database_url,
            "engine_url": f"http://127.0.0.1:{receiver_port}",
            "retry_schedule": "1s,2s,4s",
            "delivery_shards": shards,
            "api_port": free_port(),  # for the one `up` process of the scaling scenario
        }
    )
    pool = await store.connect(database_url)
    started: list[subprocess.Popen[bytes]] = []
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        await store.migrate(pool)
        space = "bench"
        st = store.Store(pool)
        for n in range(fanout):
            await st.insert_webhook(
                space=space,
                kapp=None,
                name=f"hook-{n}",
                type="User",
                event="Created",
                filter=None,
                url=URL,
                auth_strategy=None,
                ordered=ordered,
            )
        receiver = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "receiver.py"),
                "--port",
                str(receiver_port),
                "--fail-share",
                str(fail_share),
            ]
        )
        started.append(receiver)
        roles: dict[str, list[subprocess.Popen[bytes]]] = {}
        for role, count in processes.items():
            command, env = role, env_of(settings)
            if role == DIRECT:
                command, env = "up", env | {"WEBHOOK_ROUTER_DIRECT_HANDOFF": "true"}
            roles[role] = [
                subprocess.Popen([sys.executable, "-m", "webhook_router.cli", command], env=env)
                for _ in range(count)
            ]
            started.extend(roles[role])
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for role, procs in roles.items():
                profilers.append(
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--pid",
                            str(procs[0].pid),
                            "--format",
                            "raw",
                            "--rate",
                            "200",
                            "--output",
                            str(profile_dir / f"{role}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        await wait_ready(receiver_port)
        await asyncio.sleep(2.0)  # roles connect and declare

        services_before = service_cpu()
        roles_before = {
            role: sum(cpu_seconds(p.pid) for p in procs) for role, procs in roles.items()
        }
        receiver_before = cpu_seconds(receiver.pid)
        bench_before = time.process_time()
        async with Publisher(settings.amqp_url, settings.namespace) as publisher:
            began = time.time()
            await publish(publisher, events, space, rate, keys)
            published = time.time()
        jobs = events * fanout
        await wait_complete(pool, jobs)
        finished = time.time()

        stats = await receiver_stats(receiver_port)
        rows = await pool.fetch(
            "SELECT event_at, completed_at, status FROM webhook_jobs WHERE status = 'Complete'"
        )
        record_latency = [(r["completed_at"] - r["event_at"]).total_seconds() for r in rows]
        rss = {}
        cpu = {}
        for role, procs in roles.items():
            rss[role] = max(peak_rss_mb(p.pid) for p in procs)
            cpu[role] = sum(cpu_seconds(p.pid) for p in procs) - roles_before[role]
        cpu.update(service_cpu_since(services_before))
        cpu["receiver"] = cpu_seconds(receiver.pid) - receiver_before
        cpu["publisher"] = time.process_time() - bench_before  # and the waiting for rows
        checks = {
            "all_complete": len(rows) == jobs,
            "posts_answered_once": stats["jobs"] == jobs and stats["duplicates"] == 0,
            "extra_posts": stats["posts"] - jobs,
        }
        return Result(
            scenario,
            events,
            fanout,
            jobs,
            published - began,
            finished - began,
            stats["latencies"],
            record_latency,
            rss,
            cpu,
            checks,
        )
    finally:
        for p in profilers:
            p.send_signal(signal.SIGINT)
            p.wait(60)
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        await drop_namespace(settings)


async def drop_namespace(settings: Settings) -> None:
    import aio_pika

    names = settings.names
    connection = await aio_pika.connect(settings.amqp_url[0])
    async with connection:
        channel = await connection.channel()
        queues = [*names.work_queues(), names.dead, *(names.retry_queue(s) for s in (1, 2, 4))]
        for queue in [*queues, names.ordered, *names.ordered_queues()]:
            await channel.queue_delete(queue)
        for exchange in (*names.exchanges(), names.ordered_deliveries):
            await channel.exchange_delete(exchange)


async def wait_ready(port: int) -> None:
    for _ in range(100):
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/stats"),
            ):
                return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise RuntimeError("receiver did not start")


def event(n: int, space: str, keys: int | None = None) -> Event:
    """The benchmark's n-th event, stamped now (the receiver measures latency from it); with
    `keys`, its user (its key) is one of that many."""
    stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return parse_event(
        {
            "event": {
                "id": str(uuid.uuid4()),
                "type": "User",
                "action": "Created",
                "timestamp": stamp,
            },
            "space": {"slug": space},
            "user": {"username": f"user-{n if keys is None else n % keys}"},
        }
    )


async def publish(
    publisher: Publisher, events: int, space: str, rate: float | None, keys: int | None = None
) -> None:
    """Closed loop (as fast as confirms come back, 200 in flight) or open loop at `rate`."""
    if rate is None:
        window = asyncio.Semaphore(200)

        async def one(n: int) -> None:
            async with window:
                await publisher.publish(event(n, space, keys))

        await asyncio.gather(*(one(n) for n in range(events)))
        return
    began = time.perf_counter()
    pending = set()
    for n in range(events):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.add(asyncio.create_task(publisher.publish(event(n, space, keys))))
        pending = {t for t in pending if not t.done()}
    await asyncio.gather(*pending)


async def wait_complete(pool: asyncpg.Pool, jobs: int, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = await pool.fetchval("SELECT count(*) FROM webhook_jobs WHERE status = 'Complete'")
        if done >= jobs:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"only {done} of {jobs} jobs Complete after {timeout} s")


DIRECT = "up+direct"
"""A layout's name for one `up` process with WEBHOOK_ROUTER_DIRECT_HANDOFF."""
OURS = {
    "webhook-router": {"router": 1, "worker": 1, "recorder": 1},
    "webhook-router-up": {"up": 1},
    "webhook-router-direct": {DIRECT: 1},
}
"""webhook-router as one process per role, as one `up` process, and as one `up` process
with the direct handoff (the peers run as one process and as two: each system's best
layout is compared)."""
PEERS = {
    "faststream-2": ["faststream", "run", "faststream_app:app", "--workers", "2"],
    "faststream-1": ["faststream", "run", "faststream_app:app", "--workers", "1"],
    "celery": [
        "celery",
        "-A",
        "celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "16",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ],
}
LOG_LEVEL = {"faststream": ["--log-level", "warning"], "celery": ["--loglevel", "WARNING"]}


async def run_peer(base: Settings, peer: str, events: int) -> Result:
    """One peer of bench/peers/ against N events, like `run` does webhook-router's single
    scenario: its own database and namespace, the receiver, the figures, the checks."""
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    dbname = f"webhook_router_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(base.database_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    database_url = urlunsplit(parts._replace(path="/" + dbname))
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    receiver_port = free_port()
    command = PEERS[peer]
    amqp_url = base.amqp_url[0]
    vhost = None
    if command[0] == "celery":
        # Celery's native delayed delivery, on with quorum queues, declares fixed names
        # (celery_delayed_*) outside any namespace: they go in a vhost of the run's own
        vhost = namespace
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        amqp_url = urlunsplit(urlsplit(amqp_url)._replace(path="/" + vhost))
    env = dict(os.environ)
    env.update(
        PEER_AMQP_URL=amqp_url,
        PEER_DATABASE_URL=database_url,
        PEER_NAMESPACE=namespace,
        PEER_WEBHOOK_URL=f"http://127.0.0.1:{receiver_port}{URL}",
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        await pool.execute((HERE / "peers" / "schema.sql").read_text())
        receiver = subprocess.Popen(
            [sys.executable, str(HERE / "receiver.py"), "--port", str(receiver_port)]
        )
        started.append(receiver)
        executable = str(Path(sys.executable).parent / command[0])
        system = subprocess.Popen(
            [executable, *command[1:], *LOG_LEVEL[command[0]]],
            cwd=HERE / "peers",
            env=env,
            stdout=subprocess.DEVNULL,  # Celery's banner
        )
        started.append(system)
        await wait_ready(receiver_port)
        await asyncio.sleep(4.0)  # processes start, connect and declare their queue

        services_before = service_cpu()
        before = {pid: cpu_seconds(pid) for pid in descendants(system.pid)}
        receiver_before = cpu_seconds(receiver.pid)
        bench_before = time.process_time()
        began = time.time()
        if command[0] == "celery":
            await publish_tasks(namespace, amqp_url, events)
        else:
            await publish_events(namespace, base.amqp_url, events)
        published = time.time()
        await wait_rows(pool, events)
        finished = time.time()

        stats = await receiver_stats(receiver_port)
        rows = await pool.fetch("SELECT event_at, completed_at, status FROM peer_jobs")
        processes = descendants(system.pid)
        cpu = {peer: sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in processes)}
        cpu.update(service_cpu_since(services_before))
        cpu["receiver"] = cpu_seconds(receiver.pid) - receiver_before
        cpu["publisher"] = time.process_time() - bench_before  # and the waiting for rows
        checks = {
            "all_complete": len(rows) == events and all(r["status"] == "Complete" for r in rows),
            "posts_answered_once": stats["jobs"] == events and stats["duplicates"] == 0,
            "extra_posts": stats["posts"] - events,
        }
        return Result(
            peer,
            events,
            1,
            events,
            published - began,
            finished - began,
            stats["latencies"],
            [(r["completed_at"] - r["event_at"]).total_seconds() for r in rows],
            {peer: sum(peak_rss_mb(pid) for pid in processes)},
            cpu,
            checks,
        )
    finally:
        for p in reversed(started):
            p.send_signal(signal.SIGINT if p is not started[0] else signal.SIGTERM)
        for p in started:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        if vhost is not None:
            rabbitmqctl("delete_vhost", vhost)
        else:
            await drop_peer_queues(amqp_url, namespace)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, check=True)


async def publish_events(namespace: str, urls: list[str], events: int) -> None:
    """The events as `publish` sends them to webhook-router (persistent, confirmed, 200 in
    flight), to the events exchange without declaring the router's queue."""
    import aio_pika

    from webhook_router import broker

    connection = await broker.connect(urls, name="publisher")
    async with connection:
        channel = await broker.channel(connection)
        exchange = await channel.declare_exchange(
            f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        window = asyncio.Semaphore(200)

        async def one(n: int) -> None:
            async with window:
                item = event(n, "bench")
                await broker.publish(exchange, item.encode(), item.routing_key, message_id=item.id)

        await asyncio.gather(*(one(n) for n in range(events)))


async def publish_tasks(namespace: str, url: str, events: int, threads: int = 8) -> None:
    """The events as Celery tasks (`send_task("deliver", [event])`, persistent, without
    confirms: Celery's default), from `threads` threads, since Celery's client publishes
    synchronously."""
    sys.path.insert(0, str(HERE / "peers"))
    from celery_app import make_app  # type: ignore[import-not-found]

    client = make_app(namespace, url)

    def some(first: int) -> None:
        for n in range(first, events, threads):
            client.send_task("deliver", [orjson.loads(event(n, "bench").encode())])

    await asyncio.gather(*(asyncio.to_thread(some, first) for first in range(threads)))
    client.close()


async def drop_peer_queues(url: str, namespace: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{namespace}.faststream")
        await channel.exchange_delete(f"{namespace}.events")


async def wait_rows(pool: asyncpg.Pool, jobs: int, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = await pool.fetchval("SELECT count(*) FROM peer_jobs")
        if done >= jobs:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"only {done} of {jobs} peer jobs recorded after {timeout} s")


def vs_peers(base: Settings, events: int, rounds: int) -> bool:
    """Rounds of webhook-router and each peer on the same N, the order rotated each round;
    prints each run, each round, the medians and the ratio; whether every check held."""
    systems = [*OURS, *PEERS]
    rates: dict[str, list[float]] = {name: [] for name in systems}
    ok = True
    for r in range(rounds):
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for name in order:
            if name in OURS:
                spec = dict(SCENARIOS["single"], events=events)
                result = asyncio.run(run(base, "single", processes=OURS[name], **spec))  # type: ignore[arg-type]
            else:
                result = asyncio.run(run_peer(base, name, events))
            print(f"round {r + 1}, {name}:", flush=True)
            print(result.report(), flush=True)
            rates[name].append(result.jobs / result.total_seconds)
            ok &= bool(result.checks["all_complete"] and result.checks["posts_answered_once"])
        print(
            f"round {r + 1}: " + "  ".join(f"{name} {rates[name][-1]:,.0f}/s" for name in systems),
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"recorded deliveries/s, {events} events x 1 webhook, {rounds} rounds:")
    for name in systems:
        print(
            f"  {name:15} "
            + " ".join(f"{v:7,.0f}" for v in rates[name])
            + f"   median {medians[name]:7,.0f}"
        )
    best = max(PEERS, key=lambda name: medians[name])
    for name in OURS:
        print(f"ratio of medians, {name} / best peer ({best}): {medians[name] / medians[best]:.2f}")
    ours = max(OURS, key=lambda name: medians[name])
    print(
        f"ratio of medians, best webhook-router ({ours}) / best peer ({best}): "
        f"{medians[ours] / medians[best]:.2f}"
    )
    return ok


SCENARIOS = {
    "single": {"events": 20000, "fanout": 1, "fail_share": 0.0, "rate": None},
    "fanout": {"events": 4000, "fanout": 5, "fail_share": 0.0, "rate": None},
    "retry": {"events": 10000, "fanout": 1, "fail_share": 0.1, "rate": None},
    "latency": {"events": 0, "fanout": 1, "fail_share": 0.0, "rate": None},
    "ordered": {"events": 6000, "fanout": 1, "fail_share": 0.0, "rate": None},
    "scaling": {"events": 10000, "fanout": 1, "fail_share": 0.0, "rate": None},
}
LATENCY_RATES = (300.0, 600.0, 900.0)
LATENCY_SECONDS = 20.0
"""The latency scenario's open-loop rates (events/s), each for this long."""
LAYOUTS = {
    "1 router, 1 worker, 1 recorder": {"router": 1, "worker": 1, "recorder": 1},
    "2 routers, 2 workers, 1 recorder": {"router": 2, "worker": 2, "recorder": 1},
    "one up process": {"up": 1},
    "one up process, direct handoff": {DIRECT: 1},
}
"""The scaling scenario's ways of running the roles."""
ORDERED_RUNS = (
    ("1000 keys", {"keys": 1000}),
    ("10 keys", {"keys": 10}),
    ("300 events/s, 1000 keys", {"keys": 1000, "rate": 300.0}),
)
"""The ordered scenario's runs, each made unordered then ordered."""


def runs_of(
    name: str, spec: dict[str, Any], seconds: float | None = None, rounds: int = 1
) -> list[tuple[str, dict[str, Any]]]:
    """A scenario's runs, each with its label: one, but for the ordered scenario (each case
    unordered then ordered), the latency scenario without a rate (each of LATENCY_RATES)
    and the scaling scenario (each of LAYOUTS, `rounds` times, the order rotated)."""
    if name == "ordered":
        return [
            (
                f"{'ordered' if ordered else 'unordered'}, {label}",
                spec | more | {"ordered": ordered},
            )
            for label, more in ORDERED_RUNS
            for ordered in (False, True)
        ]
    if name == "latency":
        rates = [spec["rate"]] if spec["rate"] else LATENCY_RATES
        span = seconds or LATENCY_SECONDS
        return [
            (f"open loop, {rate:g} events/s", spec | {"rate": rate, "events": int(rate * span)})
            for rate in rates
        ]
    if name == "scaling":
        layouts = list(LAYOUTS)
        return [
            (f"round {r + 1}, {label}", spec | {"processes": LAYOUTS[label]})
            for r in range(rounds)
            for label in layouts[r % len(layouts) :] + layouts[: r % len(layouts)]
        ]
    return [("", spec)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="single")
    parser.add_argument("--all", action="store_true", help="run every scenario")
    parser.add_argument("--events", type=int, help="events to publish")
    parser.add_argument("--fanout", type=int, help="webhooks per event")
    parser.add_argument("--rate", type=float, help="open loop: events per second")
    parser.add_argument("--seconds", type=float, help="open loop: for this long")
    parser.add_argument("--routers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--recorders", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy each role into this folder")
    parser.add_argument(
        "--vs-peers",
        action="store_true",
        help="webhook-router's single scenario (one process per role, and one up process) "
        "against the peers in bench/peers/, "
        "in alternating rounds (needs the bench extra)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of --vs-peers (default 3) and of the scaling scenario (default 1)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="one `up` process with WEBHOOK_ROUTER_DIRECT_HANDOFF instead of one per role",
    )
    parser.add_argument(
        "--shards",
        type=int,
        nargs="+",
        default=[1],
        help="delivery shards; several values run the scenario once for each",
    )
    args = parser.parse_args()
    base = Settings()
    if args.vs_peers:
        print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        sys.exit(0 if vs_peers(base, args.events or 3000, args.rounds or 3) else 1)
    processes = {"router": args.routers, "worker": args.workers, "recorder": args.recorders}
    if args.direct:
        processes = {DIRECT: 1}
    print(
        f"machine: {os.cpu_count()} CPUs; broker {urlsplit(base.amqp_url[0]).netloc}; "
        f"database {urlsplit(base.database_url).netloc}; processes {processes}"
    )
    chosen = list(SCENARIOS) if args.all else [args.scenario]
    failed = False
    for name in chosen:
        spec = dict(SCENARIOS[name])
        if not args.all:
            if args.events:
                spec["events"] = args.events
            if args.fanout:
                spec["fanout"] = args.fanout
            if args.rate:
                spec["rate"] = args.rate
            if args.rate and args.seconds:
                spec["events"] = int(args.rate * args.seconds)
        rates: dict[str, list[float]] = {}
        for shards in args.shards:
            for label, one in runs_of(name, spec, args.seconds, args.rounds or 1):
                if one.get("rate") and name == "ordered":
                    one["events"] = int(one["rate"] * (args.seconds or 20))
                layout = one.pop("processes", processes)
                result = asyncio.run(
                    run(
                        base,
                        name,
                        processes=layout,
                        profile_dir=args.profile,
                        shards=shards,
                        **one,
                    )
                )
                if len(args.shards) > 1:
                    print(f"delivery shards: {shards}")
                if label:
                    print(f"run: {label}")
                print(result.report(), flush=True)
                rates.setdefault(label.partition(", ")[2], []).append(
                    result.jobs / result.total_seconds
                )
                failed |= not (
                    result.checks["all_complete"] and result.checks["posts_answered_once"]
                )
        if name == "scaling":
            print("recorded deliveries/s by layout:")
            for label, values in rates.items():
                print(
                    f"  {label:34} "
                    + " ".join(f"{v:7,.0f}" for v in values)
                    + f"   median {statistics.median(values):7,.0f}"
                )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
