"""Coalesced acknowledgements on the real broker, across channels, over several runs and
without being asked: each channel's finished prefix is acknowledged on its own, a line goes
on after a run, a finished message is acknowledged by the next turn of the event loop with
no flush called, and a recorder's batch is acknowledged per channel by its highest tag."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from webhook_router.acks import Acks, ack_batch
from webhook_router.settings import Settings

from .test_acks import left_after_disconnect, queue_of, take

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_finished_message_is_acknowledged_without_a_flush(settings: Settings) -> None:
    """With a prefetch of one the broker gives the next message only once the one in hand
    is acknowledged: the second arriving shows the first was, by `done` alone."""
    async with queue_of(settings, 2) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)
            queue = await channel.declare_queue(name, passive=True)
            acks = Acks()
            got: list[bytes] = []
            second = asyncio.Event()

            async def handle(message: AbstractIncomingMessage) -> None:
                got.append(message.body)
                acks.received(message)
                if len(got) == 1:
                    acks.done(message)
                else:
                    second.set()

            await queue.consume(handle)
            await asyncio.wait_for(second.wait(), 10)
            assert got == [b"0", b"1"]
        finally:
            await connection.close()
        assert await left_after_disconnect(settings, name, Acks()) == ["1"]


async def test_each_channel_acknowledges_its_own_finished_prefix(settings: Settings) -> None:
    """Two channels, each with its own delivery tags from 1: the first holds its first
    message unfinished, so none of its messages may be acknowledged; every message of the
    second is finished and acknowledged all the same."""
    async with queue_of(settings, 4) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            held: dict[int, list[AbstractIncomingMessage]] = {0: [], 1: []}
            both = asyncio.Event()
            acks = Acks()
            for n in (0, 1):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=2)
                queue = await channel.declare_queue(name, passive=True)

                async def hold(message: AbstractIncomingMessage, n: int = n) -> None:
                    acks.received(message)
                    held[n].append(message)
                    if all(len(h) == 2 for h in held.values()):
                        both.set()

                await queue.consume(hold)
                # the first channel takes its two before the second starts
                if n == 0:
                    while len(held[0]) < 2:
                        await asyncio.sleep(0.01)
            await asyncio.wait_for(both.wait(), 10)
            first, second = held[0], held[1]
            assert [m.delivery_tag for m in first] == [m.delivery_tag for m in second] == [1, 2]

            acks.done(first[1])
            for m in second:
                acks.done(m)
            await acks.drain()
            assert [m.processed for m in first] == [False, False]
            assert [m.processed for m in second] == [False, True]  # one multiple-ack
        finally:
            await connection.close()
        # the first channel's two came back; the second's were acknowledged
        left = await left_after_disconnect(settings, name, Acks())
        assert left == sorted((m.body.decode() for m in first), key=int)


async def test_a_line_goes_on_after_each_run(settings: Settings) -> None:
    """Three runs on one channel, each acknowledged once its prefix is finished."""
    async with queue_of(settings, 6) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=10)
            queue = await channel.declare_queue(name, passive=True)
            messages = await take(queue, 6)
            acks = Acks()
            for m in messages:
                acks.received(m)
            for run in ((0, 1, 2), (3,), (4,)):
                for n in run:
                    acks.done(messages[n])
                await acks.drain()
                assert messages[run[-1]].processed, f"run {run} not acknowledged"
        finally:
            await connection.close()
        assert await left_after_disconnect(settings, name, Acks()) == ["5"]


async def test_a_message_of_a_closed_channel_is_taken_in_hand_quietly(
    settings: Settings,
) -> None:
    async with queue_of(settings, 1) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        [message] = await take(queue, 1)
        await connection.close()
        acks = Acks()
        acks.received(message)
        acks.done(message)
        await acks.drain()
        assert not message.processed
        assert await left_after_disconnect(settings, name, acks) == ["0"]


async def test_a_batch_is_acknowledged_per_channel_by_its_highest_tag(
    settings: Settings,
) -> None:
    """Two channels of three messages; a batch of the first two of one and all of the
    other, in any order: one multiple-ack each, carried by the highest tag, and the third
    of the first channel stays. Messages of a channel that died are skipped."""
    async with queue_of(settings, 6) as name:
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            held = []
            for _ in range(2):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=3)
                queue = await channel.declare_queue(name, passive=True)
                held.append(await take(queue, 3))
            first, second = held
            await ack_batch([second[2], first[1], second[0], first[0], second[1]])
            assert [m.processed for m in first] == [False, True, False]
            assert [m.processed for m in second] == [False, False, True]
            kept = first[2].body.decode()
            closed = await connection.channel()
            await closed.close()
        finally:
            await connection.close()
        # the connection is gone: a batch of its messages is skipped without raising
        await ack_batch(first)
        assert await left_after_disconnect(settings, name, Acks()) == [kept]


async def test_a_batch_with_messages_of_a_dead_channel_still_acknowledges_the_live_ones(
    settings: Settings,
) -> None:
    """After a reconnection a recorder's batch can hold messages of the channel that died
    and of the new one: the dead ones are skipped, the live ones acknowledged."""
    async with queue_of(settings, 4) as name:
        gone = await aio_pika.connect(settings.amqp_url[0])
        channel = await gone.channel()
        queue = await channel.declare_queue(name, passive=True)
        dead = await take(queue, 2)
        await gone.close()
        connection = await aio_pika.connect(settings.amqp_url[0])
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            live = await take(queue, 4)  # the dead channel's two came back
            await ack_batch([dead[0], *live[:3], dead[1]])
            assert [m.processed for m in live] == [False, False, True, False]
            left_body = live[3].body.decode()
        finally:
            await connection.close()
        assert await left_after_disconnect(settings, name, Acks()) == [left_body]
