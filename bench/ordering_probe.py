"""Probes of the RabbitMQ behaviour that ordered delivery (docs/ordering.md) relies on.

    python bench/ordering_probe.py [--vhost ordering_probe] [PROBE ...]

Each probe declares its own queues in a private vhost, prints what it observed, and deletes
what it made. The vhost is made and dropped with `rabbitmqctl` (which must be on PATH and
allowed to run), unless `--keep-vhost` names one that already exists. Probes:

    turns       publishers taking turns, each publish confirmed before the next: queue order
    router-hop  two consumers of one shared queue: consecutive events of a key handled apart
    sac-kill    single active consumer SIGKILLed holding messages: who gets them, in what order
    sac-cut     the active consumer's connection closed by the broker: the same
    sac-cancel  the active consumer cancels while holding messages: does the next start early?
    sac-spread  two consumers subscribing to four SAC queues: which one is active where
    requeue     nack-requeue and channel close: where returned messages go in a quorum queue
    limit       x-delivery-limit against nack-requeue and against consumer connections lost
    ttl         TTL queue dead-lettering at least once: order and routing key kept
    hash        consistent-hash exchange: keys that move when a fifth queue is added
    pinned      a quorum queue's Raft log while one message stays unacknowledged
    commit      (PostgreSQL) one synchronous one-row transaction, as a key's holder writes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
SAC: dict[str, Any] = {**QUORUM, "x-single-active-consumer": True}


def url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True)
    return done.stdout


async def connect(vhost: str, name: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(url(vhost), client_properties={"connection_name": name})


async def declare(ch: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    return await ch.declare_queue(name, durable=True, arguments=arguments)


async def publish_numbers(ch: AbstractChannel, queue: str, numbers: range) -> None:
    for n in numbers:
        await ch.default_exchange.publish(
            aio_pika.Message(str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue,
        )


class Collector:
    """Messages a consumer received, without acknowledging them."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self.arrived = asyncio.Event()
        self.first_at: float | None = None

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.messages.append(message)
        self.arrived.set()

    def numbers(self) -> list[int]:
        return [int(m.body) for m in self.messages]

    def counts(self) -> list[int]:
        return [int(str((m.headers or {}).get("x-delivery-count", 0))) for m in self.messages]

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                self.arrived.clear()
                await self.arrived.wait()


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


# --- probes -------------------------------------------------------------------------------


async def turns(vhost: str) -> None:
    """Three publishers on three connections take turns, each waiting for its confirm."""
    conns = [await connect(vhost, f"pub{i}") for i in range(3)]
    chans = [await c.channel(publisher_confirms=True) for c in conns]
    q = await declare(chans[0], "probe.turns", QUORUM)
    for n in range(300):
        await publish_numbers(chans[n % 3], q.name, range(n, n + 1))
    got = Collector()
    await q.consume(got)
    await got.wait_for(300)
    order = got.numbers()
    print(
        f"turns: 300 publishes by 3 connections in turn; queue order == publish order: "
        f"{order == list(range(300))}"
    )
    await q.delete(if_unused=False, if_empty=False)
    for c in conns:
        await c.close()


async def router_hop(vhost: str) -> None:
    """Two routers share one queue; each takes 0-4 ms per event before publishing downstream."""
    pub = await connect(vhost, "pub")
    pch = await pub.channel(publisher_confirms=True)
    q = await declare(pch, "probe.router", QUORUM)
    out: list[int] = []
    consumers = []
    for name in ("router-a", "router-b"):
        conn = await connect(vhost, name)
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=8)

        async def handle(message: AbstractIncomingMessage) -> None:
            await asyncio.sleep(random.uniform(0, 0.004))
            out.append(int(message.body))
            await message.ack()

        await (await ch.get_queue(q.name)).consume(handle)
        consumers.append(conn)
    await publish_numbers(pch, q.name, range(500))
    async with asyncio.timeout(20):
        while len(out) < 500:
            await asyncio.sleep(0.05)
    inversions = sum(1 for a, b in itertools.pairwise(out) if b < a)
    print(
        f"router-hop: 500 events of one key, confirmed one by one, two consumers with "
        f"prefetch 8: {inversions} published downstream before an earlier one"
    )
    for c in consumers:
        await c.close()
    await q.delete(if_unused=False, if_empty=False)
    await pub.close()


async def holder(vhost: str, queue: str, hold: int) -> None:
    """Child process: take `hold` messages of a SAC queue, acknowledge none, wait to die."""
    conn = await connect(vhost, "probe-holder")
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=hold)
    got = Collector()
    await (await ch.get_queue(queue)).consume(got)
    await got.wait_for(hold)
    print("held", ",".join(map(str, got.numbers())), flush=True)
    await asyncio.sleep(3600)


async def _sac_takeover(
    vhost: str, name: str, lose: Callable[[subprocess.Popen[str]], Awaitable[None]]
) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    q = await declare(ch, name, SAC)
    await publish_numbers(ch, q.name, range(20))
    child = subprocess.Popen(
        [sys.executable, __file__, "--vhost", vhost, "--holder", name, "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        await _watch_takeover(vhost, q, child, lose)
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()
        await q.delete(if_unused=False, if_empty=False)
        await conn.close()


async def _watch_takeover(
    vhost: str,
    q: AbstractQueue,
    child: subprocess.Popen[str],
    lose: Callable[[subprocess.Popen[str]], Awaitable[None]],
) -> None:
    assert child.stdout is not None
    line = await asyncio.to_thread(child.stdout.readline)
    standby_conn = await connect(vhost, "standby")
    sch = await standby_conn.channel()
    await sch.set_qos(prefetch_count=50)
    standby = Collector()
    await (await sch.get_queue(q.name)).consume(standby)
    await settle(1.0)
    before = len(standby.messages)
    await lose(child)
    lost_at = time.monotonic()
    await standby.wait_for(20)
    assert standby.first_at is not None
    print(f"  active consumer held {line.split()[1]}; standby got {before} while it lived")
    print(f"  standby then got {standby.numbers()}")
    print(
        f"  redelivered flags of the first 6: {[m.redelivered for m in standby.messages[:6]]}"
        f", x-delivery-count: {standby.counts()[:6]}"
    )
    print(
        f"  first message {1000 * (standby.first_at - lost_at):.0f} ms after the loss was done"
        " (negative: before the command returned)"
    )
    await standby_conn.close()


async def sac_kill(vhost: str) -> None:
    async def kill(child: subprocess.Popen[str]) -> None:
        os.kill(child.pid, signal.SIGKILL)

    print("sac-kill: SAC quorum queue, 20 messages, active consumer holds 5 and is SIGKILLed")
    await _sac_takeover(vhost, "probe.sac-kill", kill)


async def sac_cut(vhost: str) -> None:
    async def cut(child: subprocess.Popen[str]) -> None:
        listing = rabbitmqctl(
            "list_connections", "-p", vhost, "-q", "--no-table-headers", "pid", "client_properties"
        )
        for row in listing.splitlines():
            pid, _, properties = row.partition("\t")
            if '{"connection_name","probe-holder"}' in properties:
                rabbitmqctl("close_connection", pid.strip(), "probe: connection cut")

    print("sac-cut: the same, the holder's connection closed with rabbitmqctl close_connection")
    await _sac_takeover(vhost, "probe.sac-cut", cut)


async def sac_cancel(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    q = await declare(ch, "probe.sac-cancel", SAC)
    await publish_numbers(ch, q.name, range(10))
    a_conn, b_conn = await connect(vhost, "a"), await connect(vhost, "b")
    a_ch, b_ch = await a_conn.channel(), await b_conn.channel()
    await a_ch.set_qos(prefetch_count=3)
    a, b = Collector(), Collector()
    a_tag = await (await a_ch.get_queue(q.name)).consume(a)
    await a.wait_for(3)
    await (await b_ch.get_queue(q.name)).consume(b)
    await settle(0.5)
    await (await a_ch.get_queue(q.name)).cancel(a_tag)
    await settle(1.0)
    print(
        f"sac-cancel: A holds {a.numbers()} unacknowledged and cancels; "
        f"before A settles anything B got {b.numbers()}"
    )
    for m in a.messages:
        await m.nack(requeue=True)
    await settle(1.0)
    print(f"  after A nacks its 3 with requeue, B has {b.numbers()}")
    for c in (a_conn, b_conn):
        await c.close()
    await q.delete(if_unused=False, if_empty=False)
    await conn.close()


async def sac_spread(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    names = [f"probe.spread.{i}" for i in range(4)]
    for name in names:
        await declare(ch, name, SAC)
    got: dict[str, Collector] = {}
    conns = []
    for worker in ("w1", "w2"):
        c = await connect(vhost, worker)
        conns.append(c)
        wch = await c.channel()
        for i, name in enumerate(names):
            got[f"{worker}:{i}"] = Collector()
            await (await wch.get_queue(name)).consume(got[f"{worker}:{i}"])
        await settle(0.2)
    for name in names:
        await publish_numbers(ch, name, range(5))
    await settle(1.0)
    active = {
        name: [w for w in ("w1", "w2") if got[f"{w}:{i}"].messages] for i, name in enumerate(names)
    }
    print(
        f"sac-spread: w1 subscribes to 4 SAC queues, then w2 to the same: active per queue {active}"
    )
    declared = (await ch.declare_queue(names[0], passive=True)).declaration_result
    print(f"  consumer count a passive declare gives for one of them: {declared.consumer_count}")
    await conns[0].close()
    await settle(1.0)
    moved = {name: bool(got[f"w2:{i}"].messages) for i, name in enumerate(names)}
    print(f"  after w1's connection closes, w2 receives from each: {moved}")
    await conns[1].close()
    for name in names:
        await ch.queue_delete(name)
    await conn.close()


async def requeue(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    q = await declare(ch, "probe.requeue", QUORUM)
    await publish_numbers(ch, q.name, range(10))
    c1 = await connect(vhost, "c1")
    c1q = await (await c1.channel()).get_queue(q.name)
    taken = [await c1q.get(timeout=2) for _ in range(5)]
    await taken[3].nack(requeue=True)
    await taken[1].nack(requeue=True)
    await settle()
    await c1.close()  # returns 0, 2, 4
    c2 = await connect(vhost, "c2")
    c2ch = await c2.channel()
    again = Collector()
    await (await c2ch.get_queue(q.name)).consume(again)
    await again.wait_for(10)
    print(
        "requeue: basic.get of 0-4, nack 3 then 1 with requeue, then its connection "
        f"closes (returning 0, 2, 4); the next consumer gets {again.numbers()}"
    )
    print(f"  x-delivery-count: {again.counts()}")
    await c2.close()
    await q.delete(if_unused=False, if_empty=False)
    await conn.close()


async def limit(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    dead = await declare(ch, "probe.limit.dead", QUORUM)
    args = {
        **QUORUM,
        "x-delivery-limit": 3,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead.name,
    }
    for how in ("nack", "close"):
        q = await declare(ch, f"probe.limit.{how}", args)
        await publish_numbers(ch, q.name, range(1))
        deliveries = 0
        for _ in range(6):
            c = await connect(vhost, "c")
            cch = await c.channel()
            message = await (await cch.get_queue(q.name)).get(timeout=2, fail=False)
            if message is None:
                await c.close()
                break
            deliveries += 1
            if how == "nack":
                await message.nack(requeue=True)
            await c.close()
            await settle(0.2)
        await settle(0.5)
        in_dead = (await ch.declare_queue(dead.name, passive=True)).declaration_result
        label = "nack-requeue" if how == "nack" else "connection closed unacknowledged"
        print(
            f"limit: x-delivery-limit 3, {label}: delivered {deliveries} times, then "
            f"{in_dead.message_count} message(s) in the dead-letter queue"
        )
        await q.delete(if_unused=False, if_empty=False)
        await dead.purge()
    await dead.delete(if_unused=False, if_empty=False)
    await conn.close()


async def ttl(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    target_ex = await ch.declare_exchange("probe.ttl.back", aio_pika.ExchangeType.DIRECT)
    target = await declare(ch, "probe.ttl.target", QUORUM)
    await target.bind(target_ex, routing_key="key-1")
    wait = await declare(
        ch,
        "probe.ttl.wait",
        {
            **QUORUM,
            "x-message-ttl": 500,
            "x-dead-letter-exchange": target_ex.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    retry_ex = await ch.declare_exchange("probe.ttl.retry", aio_pika.ExchangeType.DIRECT)
    await wait.bind(retry_ex, routing_key="key-1")
    for n in range(50):
        await retry_ex.publish(aio_pika.Message(str(n).encode()), routing_key="key-1")
    await target_ex.publish(aio_pika.Message(b"1000"), routing_key="key-1")
    got = Collector()
    await target.consume(got)
    await got.wait_for(51, timeout=15)
    order = got.numbers()
    keys = {m.routing_key for m in got.messages}
    print(
        f"ttl: 50 messages through a 500 ms TTL queue (at-least-once dead-lettering) and one "
        f"(1000) published straight to the target after them: target order {order[:3]}..."
        f"{order[-2:]}; the 50 in order: {[n for n in order if n < 1000] == list(range(50))};"
        f" routing keys {keys}"
    )
    await target.delete(if_unused=False, if_empty=False)
    await wait.delete(if_unused=False, if_empty=False)
    await target_ex.delete()
    await retry_ex.delete()
    await conn.close()


async def hash_moves(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    ex = await ch.declare_exchange("probe.hash", "x-consistent-hash")
    queues: list[AbstractQueue] = []
    keys = [f"webhook-1/Submission/{n:06d}" for n in range(4000)]

    async def placement() -> dict[str, str]:
        for k in keys:
            await ex.publish(aio_pika.Message(k.encode()), routing_key=k)
        where: dict[str, str] = {}
        for q in queues:
            while (m := await q.get(timeout=2, fail=False)) is not None:
                where[m.body.decode()] = q.name
                await m.ack()
        return where

    for i in range(4):
        q = await declare(ch, f"probe.hash.{i}", QUORUM)
        await q.bind(ex, routing_key="1")
        queues.append(q)
    before = await placement()
    q = await declare(ch, "probe.hash.4", QUORUM)
    await q.bind(ex, routing_key="1")
    queues.append(q)
    after = await placement()
    again = await placement()
    moved = [k for k in keys if before[k] != after[k]]
    to_new = sum(1 for k in moved if after[k] == "probe.hash.4")
    per = {q.name[-1]: sum(1 for k in keys if before[k] == q.name) for q in queues[:4]}
    print(
        f"hash: 4,000 keys over 4 queues {per}; a fifth queue bound: {len(moved)} keys "
        f"moved ({100 * len(moved) / len(keys):.1f}%), {to_new} of them to the new queue; "
        f"the same placement on a second pass: {after == again}"
    )
    for q in queues:
        await q.delete(if_unused=False, if_empty=False)
    await ex.delete()
    await conn.close()


def quorum_indexes(vhost: str, queue: str) -> str:
    done = subprocess.run(
        ["rabbitmq-queues", "quorum_status", "-p", vhost, queue, "--formatter", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    leader = next(m for m in json.loads(done.stdout) if m["Raft State"] == "leader")
    return f"log index {leader['Log Index']}, snapshot index {leader['Snapshot Index']}"


async def pinned(vhost: str) -> None:
    conn = await connect(vhost, "setup")
    ch = await conn.channel(publisher_confirms=True)
    for hold in (False, True):
        q = await declare(ch, f"probe.pinned.{hold}", QUORUM)
        held = None
        if hold:
            await publish_numbers(ch, q.name, range(1))
            held = await q.get(timeout=2)
        body = b"x" * 4096
        worker = await connect(vhost, "worker")
        wch = await worker.channel()
        await wch.set_qos(prefetch_count=200)

        async def ack(message: AbstractIncomingMessage) -> None:
            await message.ack()

        await (await wch.get_queue(q.name)).consume(ack)
        for _ in range(40):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(aio_pika.Message(body), routing_key=q.name)
                    for _ in range(500)
                )
            )
        await settle(2.0)
        print(
            f"pinned: 20,000 x 4 KB through a quorum queue, one message held unacknowledged:"
            f" {hold}; {quorum_indexes(vhost, q.name)}"
        )
        if held is not None:
            await held.ack()
        await worker.close()
        await q.delete(if_unused=False, if_empty=False)
    await conn.close()


async def commit(vhost: str) -> None:
    """Not the broker: one synchronous PostgreSQL transaction per final, as a holder makes."""
    server = os.environ.get("ORDERING_PROBE_DATABASE", "postgresql://postgres@127.0.0.1:5432/")
    database = f"ordering_probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server + "postgres")
    await admin.execute(f"CREATE DATABASE {database}")
    try:
        c = await asyncpg.connect(server + database)
        await c.execute(
            "CREATE TABLE ordered_keys (webhook_id uuid, parent text, head_job uuid,"
            " PRIMARY KEY (webhook_id, parent))"
        )
        webhook = uuid.uuid4()
        seconds = []
        for n in range(3200):
            began = time.perf_counter()
            async with c.transaction():
                await c.execute(
                    "INSERT INTO ordered_keys VALUES ($1, $2, $3) ON CONFLICT (webhook_id, parent)"
                    " DO UPDATE SET head_job = EXCLUDED.head_job",
                    webhook,
                    f"key-{n % 500}",
                    uuid.uuid4(),
                )
            seconds.append(time.perf_counter() - began)
        await c.close()
        ms = sorted(1000 * x for x in seconds[200:])
        print(
            f"commit: 3,000 one-row upserts, each its own transaction, one after the other: "
            f"p50 {ms[len(ms) // 2]:.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms"
        )
    finally:
        await admin.execute(f"DROP DATABASE {database}")
        await admin.close()


PROBES: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
    "turns": turns,
    "router-hop": router_hop,
    "sac-kill": sac_kill,
    "sac-cut": sac_cut,
    "sac-cancel": sac_cancel,
    "sac-spread": sac_spread,
    "requeue": requeue,
    "limit": limit,
    "ttl": ttl,
    "hash": hash_moves,
    "pinned": pinned,
    "commit": commit,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probes", nargs="*", help=f"any of {', '.join(PROBES)}; default: all")
    parser.add_argument("--vhost", default="ordering_probe")
    parser.add_argument("--keep-vhost", action="store_true", help="use an existing vhost")
    parser.add_argument("--holder", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # a queue deleted under its consumer is expected here, not worth a log line
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.holder:
        asyncio.run(holder(args.vhost, args.holder[0], int(args.holder[1])))
        return
    unknown = set(args.probes) - set(PROBES)
    if unknown:
        parser.error(f"unknown probe(s): {', '.join(sorted(unknown))}")
    if not args.keep_vhost:
        rabbitmqctl("add_vhost", args.vhost)
        rabbitmqctl("set_permissions", "-p", args.vhost, "guest", ".*", ".*", ".*")
    try:
        for name in args.probes or list(PROBES):
            asyncio.run(PROBES[name](args.vhost))
    finally:
        if not args.keep_vhost:
            rabbitmqctl("delete_vhost", args.vhost)


if __name__ == "__main__":
    main()
