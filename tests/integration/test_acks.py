"""Coalesced acknowledgements on the real broker: a run of finished messages is settled
with one multiple-ack, and never a message still in hand below it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from webhook_router.acks import Acks
from webhook_router.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@asynccontextmanager
async def queue_of(settings: Settings, count: int) -> AsyncIterator[str]:
    """A quorum queue of the test's own holding `count` messages numbered from 0."""
    name = f"wrtest-acks-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(settings.amqp_url[0])
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        try:
            for n in range(count):
                await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), name)
            yield name
        finally:
            await (await connection.channel()).queue_delete(name)
    finally:
        await connection.close()


async def take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    """The first `count` messages, in the order the broker delivered them, kept in hand."""
    got: list[AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def hold(message: AbstractIncomingMessage) -> None:
        got.append(message)
        if len(got) == count:
            arrived.set()

    await queue.consume(hold)
    await asyncio.wait_for(arrived.wait(), 10)
    return got


async def left_after_disconnect(settings: Settings, name: str, acks: Acks) -> list[str]:
    """What is still in the queue once the consumer's settled work is flushed; closing the
    consumer's connection returns every message it did not acknowledge."""
    await acks.drain()
    connection = await aio_pika.connect(settings.amqp_url[0])
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        bodies: list[str] = []
        while (message := await queue.get(fail=False)) is not None:
            bodies.append(message.body.decode())
            await message.ack()
        return sorted(bodies, key=int)
    finally:
        await connection.close()


async def test_only_the_finished_prefix_is_acknowledged(settings: Settings) -> None:
    """Messages 0..5 in hand; 1, 2 and 4 finish first: nothing may be acknowledged while 0
    is in hand. Then 3 is nacked on its own and 0 finishes: 0..4 leave the line (0, 1, 2, 4
    acknowledged by one multiple-ack, 3 settled by its nack), 5 stays."""
    async with queue_of(settings, 6) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=10)
            queue = await channel.declare_queue(name, passive=True)
            messages = await take(queue, 6)
            assert [m.body for m in messages] == [str(n).encode() for n in range(6)]
            acks = Acks()
            for m in messages:
                acks.received(m)
            for n in (1, 2, 4):
                acks.done(messages[n])
            await acks.drain()
            acknowledged_early = [m for m in messages if m.processed]
            assert acknowledged_early == []

            await messages[3].nack(requeue=False)
            acks.settled(messages[3])
            acks.done(messages[0])
            await acks.drain()
            # one multiple-ack, carried by the highest finished message of the run
            assert [m.body for m in messages if m.processed] == [b"3", b"4"]
        finally:
            await connection.close()
        assert await left_after_disconnect(settings, name, Acks()) == ["5"]


async def test_acks_of_a_dead_channel_are_dropped_and_the_messages_come_back(
    settings: Settings,
) -> None:
    """The channel dies with messages finished but not yet acknowledged: the flush does not
    raise, and the broker gives every message again to the next consumer."""
    async with queue_of(settings, 3) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        messages = await take(queue, 3)
        acks = Acks()
        for m in messages:
            acks.received(m)
        await connection.close()
        for m in messages:
            acks.done(m)
        await acks.drain()
        assert await left_after_disconnect(settings, name, acks) == ["0", "1", "2"]
