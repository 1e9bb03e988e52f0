"""Ordered delivery per key (docs/ordering.md) on the real services: two routers and two
workers as processes, a receiver failing some first attempts, the holding worker SIGKILLed
mid-run; an unordered twin of the webhook on the same events shows the race it prevents."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from webhook_router.events import parse_event
from webhook_router.settings import Settings
from webhook_router.webhooks import Webhook

from ..conftest import drop_namespace, eventually
from ..support.processes import env_of
from .conftest import Stack, answer_app, event_for, open_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

KEYS = 40
EVENTS = 8
SHARDS = 4


@dataclass
class Post:
    hook: str
    key: str
    seq: int
    job: str
    start: float
    end: float | None = None
    status: int | None = None


class Receiver:
    """Answers 503 to a share of first attempts at random; records each POST's span."""

    def __init__(self, fail_share: float, seed: int) -> None:
        self.fail_share = fail_share
        self.random = random.Random(seed)
        self.posts: list[Post] = []
        self.seen: set[str] = set()
        self.fail_seq: dict[tuple[str, str], int] = {}
        """(hook, key) -> the event every attempt of which fails."""

    async def handle(self, request: web.Request) -> web.Response:
        hook = request.match_info["tail"]
        body = orjson.loads(await request.read())
        job = request.headers["webhook-id"]
        post = Post(hook, body["user"]["username"], body["user"]["seq"], job, time.monotonic())
        self.posts.append(post)
        first = job not in self.seen
        self.seen.add(job)
        await asyncio.sleep(self.random.uniform(0.001, 0.01))
        fail = self.fail_seq.get((hook, post.key)) == post.seq or (
            first and self.random.random() < self.fail_share
        )
        post.status = 503 if fail else 200
        post.end = time.monotonic()
        if fail:
            return web.Response(status=503)
        return web.json_response({"message": "ok"})

    def of(self, hook: str) -> dict[str, list[Post]]:
        by_key: dict[str, list[Post]] = defaultdict(list)
        for p in sorted(self.posts, key=lambda p: p.start):
            if p.hook == hook:
                by_key[p.key].append(p)
        return by_key


def order_breaches(posts: list[Post]) -> list[str]:
    """What breaks the guarantee among one key's POSTs (sorted by start): a POST of event
    j starting before a POST of an earlier event ended (or, one cut off, started)."""
    breaches = []
    for i, p in enumerate(posts):
        for q in posts[:i]:
            if q.seq < p.seq and (q.end if q.end is not None else q.start) > p.start:
                breaches.append(f"event {p.seq} started while event {q.seq} was in flight")
            if q.seq > p.seq:
                breaches.append(f"event {p.seq} posted after event {q.seq}")
    return breaches


@asynccontextmanager
async def role_logged(
    settings: Settings, role: str, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`webhook-router ROLE` as its own process, its log in a file (a pipe nobody reads
    would fill and stop it); killed at the end if still running."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webhook_router.cli",
            role,
            env=env_of(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def ordered_stack(settings: Settings) -> AsyncIterator[Stack]:
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{time.time_ns() % 10**10}",
            "ordered_shards": SHARDS,
            "ordered_tick": 1.0,
        }
    )
    try:
        async with open_stack(own, ("recorder",)) as st:
            yield st
    finally:
        await drop_namespace(
            own.amqp_url[0], own.namespace, schedule=own.schedule, ordered_shards=SHARDS
        )


async def add_webhook(st: Stack, space: str, url: str, *, ordered: bool) -> Webhook:
    created = await st.store.insert_webhook(
        space=space,
        kapp=None,
        name=f"hook-{'ordered' if ordered else 'unordered'}",
        type="User",
        event="Updated",
        filter=None,
        url=url,
        auth_strategy=None,
        ordered=ordered,
    )
    assert created is not None
    return created


def user_updated(space: str, key: str, seq: int) -> dict[str, Any]:
    return event_for(space, "User", "Updated", user={"username": key, "seq": seq})


async def settle(st: Stack, space: str, count: int, timeout: float) -> list[Any]:
    return await st.settled(space, count, timeout=timeout)


@pytest.mark.timeout(300)
async def test_ordered_keys_arrive_in_publish_order_through_faults(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = Receiver(fail_share=0.2, seed=time.time_ns())
    runner, base = await answer_app(receiver.handle)
    try:
        async with ordered_stack(settings) as st, AsyncExitStack() as processes:
            space = st.space()
            await add_webhook(st, space, base + "/ordered", ordered=True)
            await add_webhook(st, space, base + "/unordered", ordered=False)
            workers = []
            for n, role in enumerate(("router", "router", "worker", "worker")):
                log = tmp_path / f"{role}-{n}.log"
                process = await processes.enter_async_context(role_logged(st.settings, role, log))
                if role == "worker":
                    workers.append(process)
            # warm up: both routers carry the ordered webhook, a worker holds the shards
            await st.publisher.publish(user_updated(space, "warm-up", 0))
            await settle(st, space, 2, timeout=60)
            await asyncio.sleep(3 * st.settings.webhook_refresh)
            warm = len(receiver.posts)

            keys = [f"user-{k}" for k in range(KEYS)]

            async def publish_key(key: str) -> None:
                for seq in range(EVENTS):
                    await st.publisher.publish(user_updated(space, key, seq))

            publishing = asyncio.gather(*(publish_key(k) for k in keys))

            async def a_third_posted() -> bool:
                return len(receiver.posts) - warm >= KEYS * EVENTS * 2 // 3

            assert await eventually(a_third_posted, timeout=60)
            owners = await st.store.pool.fetch(
                "SELECT owner FROM ordered_shards WHERE shard LIKE $1", st.settings.namespace + ".%"
            )
            pids = [int(r["owner"].rsplit(":", 1)[1]) for r in owners]
            # the worker holding the most shards (the first to subscribe holds most or all)
            holding = max(workers, key=lambda w: pids.count(w.pid))
            assert holding.pid in pids
            holding.kill()
            assert await holding.wait() == -9
            await publishing

            jobs = await settle(st, space, 2 * (KEYS * EVENTS + 1), timeout=180)
        assert len(jobs) == 2 * (KEYS * EVENTS + 1)
        assert len({j["id"] for j in jobs}) == len(jobs)  # every job recorded once
        assert {j["status"] for j in jobs} == {"Complete"}

        ordered = receiver.of("ordered")
        (tmp_path / "posts.json").write_bytes(orjson.dumps(receiver.posts))
        breaches = {k: b for k, posts in ordered.items() if (b := order_breaches(posts))}
        assert not breaches, {
            k: [(p.seq, p.status, round(p.start, 3), p.end and round(p.end, 3)) for p in ordered[k]]
            for k in list(breaches)[:3]
        }
        for key in keys:
            done = [p.seq for p in ordered[key] if p.status == 200]
            assert sorted(set(done)) == list(range(EVENTS))
            # a repeat (the killed holder's POST) is of the event in hand, never an older one
            assert done == sorted(done), (key, done)
        unordered = receiver.of("unordered")
        raced = [
            k
            for k in keys
            if [p.seq for p in unordered[k] if p.status == 200]
            != sorted(p.seq for p in unordered[k] if p.status == 200)
        ]
        assert raced, "the unordered twin showed no out-of-order arrival: the test proves nothing"
        print(f"unordered keys out of order: {len(raced)} of {KEYS}")
    finally:
        await runner.cleanup()


@asynccontextmanager
async def ordered_in_process(settings: Settings) -> AsyncIterator[Stack]:
    """Every role in this process on a namespace of the test's own, ordered shards few."""
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{time.time_ns() % 10**10}",
            "ordered_shards": 2,
            "ordered_tick": 1.0,
        }
    )
    try:
        async with open_stack(own) as st:
            yield st
    finally:
        await drop_namespace(
            own.amqp_url[0], own.namespace, schedule=own.schedule, ordered_shards=2
        )


async def ready_for(st: Stack, space: str, url: str) -> Webhook:
    """An ordered webhook the router carries and a worker holds (one event through)."""
    hook = await add_webhook(st, space, url, ordered=True)

    async def carried() -> bool:
        known = hook.id in st.router.cache.by_id and hook.id in st.worker.cache.by_id
        event = parse_event(user_updated(space, "k", 0))
        return known and st.router.sequencer.carries(hook, event)

    assert await eventually(carried, timeout=10)
    await st.publisher.publish(user_updated(space, "warm-up", 0))
    await settle(st, space, 1, timeout=30)
    return hook


@asynccontextmanager
async def an_ordered_webhook(
    settings: Settings, receiver: Receiver
) -> AsyncIterator[tuple[Stack, str]]:
    """Every role in process, with an ordered webhook in a space of its own posting to
    `receiver` (at `/ordered`), carried and held; the stack and space."""
    runner, base = await answer_app(receiver.handle)
    try:
        async with ordered_in_process(settings) as st:
            space = st.space()
            await ready_for(st, space, base + "/ordered")
            yield st, space
    finally:
        await runner.cleanup()


@pytest.mark.timeout(120)
async def test_a_job_failed_for_good_holds_its_key_through_its_retries_then_releases_it(
    settings: Settings,
) -> None:
    receiver = Receiver(fail_share=0.0, seed=1)
    async with an_ordered_webhook(settings, receiver) as (st, space):
        receiver.fail_seq[("ordered", "user-a")] = 1  # every attempt of event 1 fails
        for seq in range(3):
            await st.publisher.publish(user_updated(space, "user-a", seq))
        await st.publisher.publish(user_updated(space, "user-b", 0))
        rows = await settle(st, space, 5, timeout=60)
        by_seq = {
            orjson.loads(r["request_content"])["user"]["seq"]: r
            for r in rows
            if orjson.loads(r["request_content"])["user"]["username"] == "user-a"
        }
        assert by_seq[1]["status"] == "Failed"
        assert by_seq[2]["status"] == "Complete"
        # the API shows that the key moved on past the failure, from both sides
        failed, next_one = str(by_seq[1]["id"]), str(by_seq[2]["id"])
        jobs = f"/app/api/v1/spaces/{space}/webhookJobs"
        status, body = await st.api("GET", f"{jobs}/{failed}")
        assert status == 200 and body["webhookJob"]["keyMovedOnTo"] == next_one
        status, body = await st.api("GET", f"{jobs}/{next_one}")
        assert status == 200 and body["webhookJob"]["afterFailedJob"] == failed
        assert body["webhookJob"]["keyMovedOnTo"] is None
    posts = receiver.of("ordered")["user-a"]
    attempts = len(st.settings.schedule) + 1
    assert [(p.seq, p.status) for p in posts] == [
        (0, 200),
        *[(1, 503)] * attempts,
        (2, 200),
    ]
    assert not order_breaches(posts)
    other = receiver.of("ordered")["user-b"][0]
    assert other.start < posts[-2].end  # (other keys are not held by the retries)


@pytest.mark.timeout(120)
async def test_a_retry_by_hand_of_an_ordered_job_goes_out_of_order_and_says_so(
    settings: Settings,
) -> None:
    receiver = Receiver(fail_share=0.0, seed=1)
    async with an_ordered_webhook(settings, receiver) as (st, space):
        receiver.fail_seq[("ordered", "user-a")] = 0
        await st.publisher.publish(user_updated(space, "user-a", 0))
        [failed] = [r for r in await settle(st, space, 2, timeout=60) if r["status"] == "Failed"]
        receiver.fail_seq.clear()
        await st.publisher.publish(user_updated(space, "user-a", 1))
        await settle(st, space, 3, timeout=30)
        one = f"/app/api/v1/spaces/{space}/webhookJobs/{failed['id']}"
        status, body = await st.api("PUT", one, json={"webhookJob": {"status": "queued"}})
        assert status == 200, body
        assert body["webhookJob"]["outOfOrder"] is True

        async def posted() -> bool:
            return any(p.seq == 0 and p.status == 200 for p in receiver.posts)

        assert await eventually(posted, timeout=30)
    posts = [(p.seq, p.status) for p in receiver.of("ordered")["user-a"]]
    # event 0 arrives after event 1: the retry did not wait for its key
    assert posts[-2:] == [(1, 200), (0, 200)]
