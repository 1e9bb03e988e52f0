"""Batches on the real broker: what handlers add in one turn of the loop goes out as one
confirmed message; past `max_items` the rest waits for the confirm; an unroutable batch
fails its waiters and the next batch goes out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from aio_pika.abc import AbstractExchange, AbstractQueue

from webhook_router import broker
from webhook_router.batching import Batcher, TooLarge
from webhook_router.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@asynccontextmanager
async def exchange_of(settings: Settings) -> AsyncIterator[tuple[AbstractExchange, AbstractQueue]]:
    """A direct exchange and a queue bound to it with key `k`, the test's own."""
    name = f"wrtest-batch-{uuid.uuid4().hex[:8]}"
    connection = await broker.connect(settings.amqp_url, name="test")
    try:
        channel = await broker.channel(connection)
        exchange = await channel.declare_exchange(name, "direct", auto_delete=True)
        queue = await channel.declare_queue(name, exclusive=True)
        await queue.bind(exchange, "k")
        yield exchange, queue
    finally:
        await connection.close()


async def messages_in(queue: AbstractQueue) -> list[list[int]]:
    got = []
    while (message := await queue.get(fail=False)) is not None:
        got.append(orjson.loads(message.body))
        await message.ack()
    return got


async def test_items_added_in_one_turn_go_out_as_one_message(settings: Settings) -> None:
    async with exchange_of(settings) as (exchange, queue):
        batcher: Batcher[int] = Batcher(lambda: exchange, lambda _: "k")
        await asyncio.gather(*(batcher.add(n) for n in range(10)))
        assert await messages_in(queue) == [list(range(10))]

        await batcher.add(10)
        assert await messages_in(queue) == [[10]]


async def test_past_max_items_the_rest_waits_for_the_confirm(settings: Settings) -> None:
    async with exchange_of(settings) as (exchange, queue):
        batcher: Batcher[int] = Batcher(lambda: exchange, lambda _: "k", max_items=200)
        await asyncio.gather(*(batcher.add(n) for n in range(500)))
        got = await messages_in(queue)
        assert [len(m) for m in got] == [200, 200, 100]
        assert sorted(n for m in got for n in m) == list(range(500))


async def test_an_unroutable_batch_fails_its_waiters_only(settings: Settings) -> None:
    async with exchange_of(settings) as (exchange, queue):
        batcher: Batcher[int] = Batcher(lambda: exchange, lambda n: "k" if n else "nowhere")
        results = await asyncio.gather(batcher.add(0), batcher.add(1), return_exceptions=True)
        assert isinstance(results[0], Exception) and results[1] is None
        await batcher.add(2)
        await batcher.drain()
        assert await messages_in(queue) == [[1], [2]]


async def test_a_batch_closes_at_its_byte_budget_whatever_the_item_count(
    settings: Settings,
) -> None:
    """Items of ~100 kB under a 350 kB budget: three to a message, every message within the
    budget, every item delivered once."""
    async with exchange_of(settings) as (exchange, queue):
        batcher: Batcher[str] = Batcher(lambda: exchange, lambda _: "k", max_bytes=350_000)
        items = [f"{n:03d}" + "x" * 100_000 for n in range(10)]
        await asyncio.gather(*(batcher.add(item) for item in items))
        got = []
        while (message := await queue.get(fail=False)) is not None:
            assert len(message.body) <= 350_000
            got.append(orjson.loads(message.body))
            await message.ack()
        assert [len(m) for m in got] == [3, 3, 3, 1]
        assert sorted(i for m in got for i in m) == items


async def test_an_item_too_large_or_not_encodable_fails_alone(settings: Settings) -> None:
    """One item above the budget and one that cannot be encoded (nested deeper than JSON
    encoding allows) each fail their own waiter; the neighbours added with them go out."""
    async with exchange_of(settings) as (exchange, queue):
        batcher: Batcher[object] = Batcher(lambda: exchange, lambda _: "k", max_bytes=10_000)
        deep: object = []
        for _ in range(300):
            deep = [deep]
        results = await asyncio.gather(
            batcher.add(1),
            batcher.add("y" * 20_000),
            batcher.add(deep),
            batcher.add(2),
            return_exceptions=True,
        )
        assert results[0] is None and results[3] is None
        assert isinstance(results[1], TooLarge) and results[1].size > 20_000
        assert isinstance(results[2], orjson.JSONEncodeError)
        assert await messages_in(queue) == [[1, 2]]
