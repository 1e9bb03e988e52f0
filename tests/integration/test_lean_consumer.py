"""The roles' consumer on the real broker: each message is handled in the task the channel
starts for it, and the consumer comes back the same after the connection was lost."""

from __future__ import annotations

import asyncio
import uuid

import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage

from webhook_router import broker
from webhook_router.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_lost_connection_restores_the_lean_consumer(settings: Settings) -> None:
    connection = await broker.connect(settings.amqp_url, name="test")
    try:
        channel = await broker.channel(connection, prefetch=10)
        queue = await channel.declare_queue(f"wrtest-lean-{uuid.uuid4().hex[:8]}", exclusive=True)
        assert isinstance(queue, broker.LeanQueue)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def handle(message: AbstractIncomingMessage) -> None:
            assert isinstance(message, broker.LeanMessage)
            await message.ack()
            await got.put(message.body)

        tag = await queue.consume(handle)
        await channel.default_exchange.publish(broker.message(b"[1]"), routing_key=queue.name)
        assert await asyncio.wait_for(got.get(), 10) == b"[1]"

        lost = await channel.get_underlay_channel()
        assert isinstance(connection, broker.FailoverConnection) and connection.transport
        await connection.transport.connection.close()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if broker.connected(connection):
                underlay = await channel.get_underlay_channel()
                if underlay is not lost:
                    break
        assert isinstance(underlay, aiormq.Channel) and underlay is not lost
        await channel.default_exchange.publish(broker.message(b"[2]"), routing_key=queue.name)
        assert await asyncio.wait_for(got.get(), 10) == b"[2]"
        assert underlay.consumers[tag].__qualname__ == "LeanQueue.consume.<locals>.deliver"
    finally:
        await connection.close()
