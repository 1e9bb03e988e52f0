"""Sharded deliveries: N quorum queues behind the consistent-hash exchange, one webhook's
deliveries in one shard, workers consuming every shard, retries staying in their shard."""

from __future__ import annotations

import uuid
from collections import defaultdict

import aio_pika
import pytest
from aiohttp import web

from webhook_router.jobs import Delivery
from webhook_router.settings import Settings
from webhook_router.worker import Worker

from ..conftest import drop_namespace
from .conftest import answer_app, event_for, open_stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
SHARDS = 3


async def test_one_webhook_one_shard_and_workers_drain_every_shard(settings: Settings) -> None:
    calls: dict[str, int] = defaultdict(int)

    async def fails_first(request: web.Request) -> web.Response:
        job = request.headers["webhook-id"]
        calls[job] += 1
        if calls[job] == 1:
            return web.Response(status=503)
        return web.json_response({"message": "Initiated run #1."})

    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "delivery_shards": SHARDS,
            # every first answer is a 503: keep the circuit out of this test
            "circuit_threshold": 1000,
        }
    )
    runner, url = await answer_app(fails_first)
    try:
        async with open_stack(own, ("recorder", "router")) as st:
            space = st.space()
            hooks = [
                await st.webhook(
                    space, type="User", event="Created", url=f"{url}/{n}", name=f"hook-{n}"
                )
                for n in range(8)
            ]
            for n in range(5):
                await st.publisher.publish(
                    event_for(space, "User", "Created", user={"username": f"u{n}"})
                )
            await st.settled(space, 40, statuses=("Queued",))

            # no worker yet: look into the shards
            shard_of: dict[str, set[int]] = defaultdict(set)
            connection = await aio_pika.connect(own.amqp_url[0])
            async with connection:
                channel = await connection.channel()
                for index, name in enumerate(st.router.names.deliver_queues()):
                    queue = await channel.get_queue(name)
                    held = []
                    while (message := await queue.get(no_ack=False, fail=False)) is not None:
                        held.append(message)
                        for d in Delivery.decode_batch(message.body):
                            shard_of[d.webhook_id].add(index)
                    for message in held:
                        await message.nack(requeue=True)
            assert set(shard_of) == {h.id for h in hooks}
            assert all(len(shards) == 1 for shards in shard_of.values())
            assert len({next(iter(s)) for s in shard_of.values()}) > 1

            # the real worker, its handler wrapped to note which shard's consumer gave it
            # each attempt (the consumer tag names the queue); nothing else is changed
            worker = Worker(st.settings, st.store)
            handle = worker.on_delivery
            given: list[tuple[str, str, int, str]] = []

            async def noted(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                for d in Delivery.decode_batch(message.body):
                    given.append((d.job_id, d.webhook_id, d.attempt, message.consumer_tag or ""))
                await handle(message)

            worker.on_delivery = noted  # type: ignore[method-assign]
            await worker.start()
            try:
                rows = await st.settled(space, 40, timeout=60)
            finally:
                await worker.stop(st.settings.drain_timeout)
            assert {r["status"] for r in rows} == {"Complete"}
            assert {r["retry_count"] for r in rows} == {1}
            assert set(calls.values()) == {2}

            queues = st.router.names.deliver_queues()
            shard_of_tag = {tag: queues.index(queue.name) for queue, tag in worker._consumer_tags}
            attempts: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for job, webhook, attempt, tag in given:
                attempts[job].append((attempt, shard_of_tag[tag]))
                # every attempt comes from the shard its webhook hashed to
                assert shard_of_tag[tag] in shard_of[webhook], (job, attempt)
            assert set(attempts) == {str(r["id"]) for r in rows}
            # each job: its first attempt and its retry, both from one shard
            assert all(
                sorted(a for a, _ in seen) == [1, 2] and len({q for _, q in seen}) == 1
                for seen in attempts.values()
            ), attempts
    finally:
        await runner.cleanup()
        await drop_namespace(own.amqp_url[0], own.namespace, SHARDS, own.schedule)
