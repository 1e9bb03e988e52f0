"""Acknowledgements in order and coalesced: one multiple-ack per channel for each run of
finished messages at the front of what that channel delivered.

A role finishes its messages out of order (each waits for its own confirms), and "ack up to
N" must never settle a message below N that is still in hand: its effect is not confirmed
yet, and a crash would lose it. So `Acks` keeps, per channel, the delivery tags in hand in
order. A finished message is marked; a flush on the next turn of the event loop (when every
message finished by the same confirm has been marked) acknowledges the longest finished
prefix with a single frame. A message settled on its own (nacked, dead-lettered and acked)
leaves the line the same way without a second settlement. A channel that died takes its
tags with it: the broker redelivers those messages on the recovered channel, whose tags
start again, so lines are kept per channel object, never per number alone.

One ack frame per run instead of one per message saves the role's AMQP work and the
broker's: a quorum queue writes each settlement to its log.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError

log = structlog.get_logger(__name__)

LOST = (ChannelInvalidStateError, AMQPError, RuntimeError, ConnectionError)
"""What an ack on a channel that died raises; the broker redelivers, so it is only logged."""


@dataclass(slots=True)
class _Line:
    """One channel's messages in hand, by delivery tag; finished ones map to the message to
    acknowledge, or to None when it was settled on its own."""

    tags: list[int] = field(default_factory=list)
    finished: dict[int, AbstractIncomingMessage | None] = field(default_factory=dict)


class Acks:
    def __init__(self) -> None:
        self._lines: dict[object, _Line] = {}
        self._flush: asyncio.Task[None] | None = None

    def received(self, message: AbstractIncomingMessage) -> None:
        """Take a message in hand: call before anything can finish it."""
        line = self._line(message)
        if line is not None and message.delivery_tag is not None:
            bisect.insort(line.tags, message.delivery_tag)

    def done(self, message: AbstractIncomingMessage) -> None:
        """Its effect is confirmed: acknowledge it with the next run it completes."""
        self._finish(message, message)

    def settled(self, message: AbstractIncomingMessage) -> None:
        """It was nacked or acked on its own: let the line move past it."""
        self._finish(message, None)

    def _line(self, message: AbstractIncomingMessage) -> _Line | None:
        try:
            channel = message.channel
        except ChannelInvalidStateError:
            return None
        line = self._lines.get(channel)
        if line is None:
            line = self._lines[channel] = _Line()
            self._forget_closed()
        return line

    def _forget_closed(self) -> None:
        for channel in [c for c in self._lines if getattr(c, "is_closed", False)]:
            del self._lines[channel]

    def _finish(
        self, message: AbstractIncomingMessage, ack: AbstractIncomingMessage | None
    ) -> None:
        line = self._line(message)
        if line is None or message.delivery_tag is None:
            return
        line.finished[message.delivery_tag] = ack
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Acknowledge every channel's finished prefix now (also called on stop)."""
        self._flush = None
        for channel, line in list(self._lines.items()):
            last: AbstractIncomingMessage | None = None
            count = 0
            for tag in line.tags:
                if tag not in line.finished:
                    break
                message = line.finished.pop(tag)
                last = message or last
                count += 1
            del line.tags[:count]
            if last is None:
                continue
            try:
                await last.ack(multiple=True)
            except LOST as exc:
                log.debug("acks lost with their channel", count=count, error=repr(exc))
                self._lines.pop(channel, None)

    async def drain(self) -> None:
        """Acknowledge everything finished (on stop, before the connection closes)."""
        if self._flush is not None:
            await self._flush
        await self.flush()


async def ack_batch(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Acknowledge a batch that is a prefix of what its channels delivered (everything
    delivered before it is settled already): one multiple-ack per channel, carried by its
    highest delivery tag. Messages of a channel that died are skipped; the broker redelivers
    them on the recovered channel."""
    highest: dict[object, AbstractIncomingMessage] = {}
    for m in messages:
        try:
            channel = m.channel
        except ChannelInvalidStateError:
            continue
        if channel not in highest or (m.delivery_tag or 0) > (highest[channel].delivery_tag or 0):
            highest[channel] = m
    for m in highest.values():
        try:
            await m.ack(multiple=True)
        except LOST as exc:
            log.debug("acks lost with their channel", error=repr(exc))
