"""The roles' consumer on the real broker: each message is handled in the task the channel
starts for it, the consumer comes back the same after the connection was lost, and the
message it hands on holds what aio-pika's own would."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

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


def attributes(message: object) -> dict[str, object]:
    """Every slot an incoming message has, by its mangled name, set or not."""
    found: dict[str, object] = {}
    for cls in type(message).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            name = f"_{cls.__name__.lstrip('_')}{slot}" if slot.startswith("__") else slot
            found[name] = getattr(message, name, "unset")
    return found


async def test_a_lean_message_holds_what_aio_pikas_message_holds(settings: Settings) -> None:
    """Deliveries off the real broker with every property set, none set, and the edge
    values aio-pika maps (empty strings, priority 0, not persistent): the lean message's
    every attribute equals the one aio-pika's constructor makes of the same delivery."""
    connection = await aiormq.connect(settings.amqp_url[0])
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(
            f"wrtest-lean-{uuid.uuid4().hex[:8]}", exclusive=True
        )
        queue = declared.queue
        assert queue is not None
        stamp = datetime(2026, 12, 4, 5, 19, 25, tzinfo=UTC)
        published = [
            spec.Basic.Properties(),
            spec.Basic.Properties(
                content_type="application/json",
                content_encoding="utf-8",
                headers={"x-death": [{"count": 2}], "traceparent": "00-a-b-01", "n": 3},
                delivery_mode=2,
                priority=5,
                correlation_id="corr",
                reply_to="reply",
                expiration="60000",
                message_id="e-1",
                timestamp=stamp,
                message_type="type",
                user_id="guest",
                app_id="app",
            ),
            spec.Basic.Properties(
                delivery_mode=1, priority=0, message_id="", correlation_id="", headers={}
            ),
        ]
        got: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

        async def keep(delivered: DeliveredMessage) -> None:
            await got.put(delivered)

        await channel.basic_consume(queue, keep, no_ack=False)
        for n, properties in enumerate(published):
            await channel.basic_publish(f"[{n}]".encode(), routing_key=queue, properties=properties)
        for n in range(len(published)):
            delivered = await asyncio.wait_for(got.get(), 10)
            for no_ack in (False, True):
                lean = attributes(broker.LeanMessage(delivered, no_ack=no_ack))
                theirs = attributes(aio_pika.IncomingMessage(delivered, no_ack=no_ack))
                assert lean == theirs
                assert lean["body"] == f"[{n}]".encode()
                assert lean["_IncomingMessage__channel"] is channel
        assert lean["timestamp"] is None and lean["priority"] == 0  # the last one's
        assert (
            lean["headers"] == {} and lean["delivery_mode"] is aio_pika.DeliveryMode.NOT_PERSISTENT
        )
    finally:
        await connection.close()
