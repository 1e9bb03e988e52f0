"""LeanFrameReceiver against aiormq's own receiver, on the same bytes: every frame a
consumer gets decodes to the same pamqp object with the same values, every other frame
still decodes (through pamqp), and a broken or cut stream fails with the same error.
The bytes are pamqp's own encoding of each frame; the end-to-end tests run the receiver
against the broker itself (broker.connect installs it)."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal
from typing import Any

import pytest
from aiormq.connection import FrameReceiver
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from webhook_router.frames import LeanFrameReceiver

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(10)]

Basic = commands.Basic

BODY = b'{"event":{"id":"e-1","type":"User","action":"Created"},"space":{"slug":"acme"}}'


def deliveries() -> list[Any]:
    return [
        Basic.Deliver("ctag1.abc", 1, False, "ns.events", "User.Created"),
        Basic.Deliver("c" * 255, 2**63 - 1, True, "", "r" * 255),
        Basic.Deliver("", 7, True, "ns.retry", ""),
        Basic.Deliver("tag", 8, False, "x", "Submission.Submitted.é✓"),
    ]


def headers() -> list[Any]:
    stamp = datetime.datetime(2026, 12, 4, 5, 19, 25, tzinfo=datetime.UTC)
    return [
        ContentHeader(0, len(BODY), Basic.Properties()),
        ContentHeader(
            0,
            len(BODY),
            Basic.Properties(
                content_type="application/json", delivery_mode=2, message_id="e-1", headers={}
            ),
        ),
        ContentHeader(
            0,
            0,
            Basic.Properties(
                content_type="application/json",
                content_encoding="utf-8",
                headers={
                    "traceparent": "00-abc-def-01",
                    "x-death": [{"count": 3, "reason": "expired", "queue": "q"}],
                    "x-delay": 1500,
                    "flag": True,
                    "ratio": Decimal("1.5"),
                    "nested": {"a": {"b": [1, -2, "three"]}},
                    "when": stamp,
                    "é": "✓",
                },
                delivery_mode=1,
                priority=9,
                correlation_id="corr",
                reply_to="amq.rabbitmq.reply-to",
                expiration="60000",
                message_id="m" * 255,
                timestamp=stamp,
                message_type="type",
                user_id="guest",
                app_id="webhook-router",
            ),
        ),
        ContentHeader(0, 2**40, Basic.Properties(timestamp=stamp, app_id="a")),
    ]


def others() -> list[Any]:
    """Frames the lean path leaves to pamqp."""
    return [
        Basic.Ack(delivery_tag=5, multiple=True),
        Basic.Nack(delivery_tag=6, requeue=False),
        Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="k"),
        Basic.ConsumeOk(consumer_tag="ctag"),
        commands.Channel.CloseOk(),
        commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 40),
        commands.Connection.Blocked(reason="low on memory"),
    ]


def encoded(frames: list[Any], channel: int = 1) -> bytes:
    return b"".join(
        f.marshal() if isinstance(f, Heartbeat) else frame.marshal(f, channel) for f in frames
    )


def state(value: Any) -> Any:
    """What a decoded frame holds, to compare two decodings of it."""
    if isinstance(value, ContentHeader):
        return (
            "header",
            value.class_id,
            value.weight,
            value.body_size,
            state(value.properties),
        )
    if isinstance(value, ContentBody):
        return ("body", value.value)
    slots = getattr(type(value), "__slots__", ())
    return (type(value), tuple((name, getattr(value, name, "unset")) for name in slots))


async def read_all(receiver_class: type[FrameReceiver], data: bytes, *, eof: bool = True) -> Any:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    receiver = receiver_class(reader)
    receiver.started = True
    got = []
    try:
        while True:
            got.append(await receiver.get_frame())
    except StopAsyncIteration:
        return got
    except Exception as exc:  # the error is part of what must match
        return [*got, (type(exc), str(exc))]


def decoded(got: list[Any]) -> list[Any]:
    return [(item[0], item[1], state(item[2])) if len(item) == 3 else item for item in got]


async def same(data: bytes) -> list[Any]:
    lean = decoded(await read_all(LeanFrameReceiver, data))
    theirs = decoded(await read_all(FrameReceiver, data))
    assert lean == theirs
    return lean


async def test_a_delivery_decodes_as_aiormq_decodes_it() -> None:
    for deliver in deliveries():
        for header in headers():
            got = await same(encoded([deliver, header, ContentBody(BODY)], channel=3))
            assert [g[2][0] for g in got] == [Basic.Deliver, "header", "body"]
            assert {g[1] for g in got} == {3}
    assert len(deliveries()) * len(headers()) == 16


async def test_every_field_of_a_delivery_is_read() -> None:
    """Against the values themselves, not only against pamqp."""
    deliver, header = deliveries()[3], headers()[2]
    (_, _, d), (_, _, h), (size, _, b) = await read_all(
        LeanFrameReceiver, encoded([deliver, header, ContentBody(BODY)])
    )
    assert (d.consumer_tag, d.delivery_tag, d.redelivered, d.exchange, d.routing_key) == (
        "tag",
        8,
        False,
        "x",
        "Submission.Submitted.é✓",
    )
    assert h.properties.headers["x-death"] == [{"count": 3, "reason": "expired", "queue": "q"}]
    assert h.properties.headers["é"] == "✓"
    assert h.properties.timestamp == datetime.datetime(2026, 12, 4, 5, 19, 25, tzinfo=datetime.UTC)
    assert (h.properties.priority, h.properties.app_id, h.properties.cluster_id) == (
        9,
        "webhook-router",
        "",
    )
    assert (b.value, size) == (BODY, len(BODY) + 8)


async def test_other_frames_and_heartbeats_still_decode() -> None:
    got = await same(encoded([*others(), Heartbeat()]))
    assert [g[2][0] for g in got] == [type(f) for f in others()] + [Heartbeat]


async def test_a_body_in_several_frames_and_an_empty_body() -> None:
    parts = [ContentBody(BODY[:10]), ContentBody(BODY[10:]), ContentBody(b"")]
    got = await same(encoded(parts))
    assert [g[2][1] for g in got[:2]] == [BODY[:10], BODY[10:]]
    assert got[2][0] is InvalidFrameError  # a body frame of no bytes: no broker sends one


@pytest.mark.parametrize(
    "damage",
    [
        "frame end",
        "deliver cut short",
        "deliver too long",
        "properties cut short",
        "properties too long",
        "bad utf-8",
        "method unknown",
    ],
)
async def test_a_broken_frame_is_an_invalid_frame(damage: str) -> None:
    """Whatever is wrong in it, the frame is refused with InvalidFrameError, as aiormq's
    receiver refuses it (the connection is then closed and reopened): never decoded
    into something else, never an error of another kind."""
    deliver = frame.marshal(deliveries()[0], 1)
    header = frame.marshal(headers()[1], 1)
    data = {
        "frame end": deliver[:-1] + b"\x00",
        "deliver cut short": _resized(deliver, -3),
        "deliver too long": _resized(deliver, +2),
        "properties cut short": _resized(header, -4),
        "properties too long": _resized(header, +3),
        "bad utf-8": deliver.replace(b"ctag1.abc", b"ctag1.\xff\xfe\xfd"),
        "method unknown": deliver[:7] + b"\x00\x3c\x00\x3f" + deliver[11:],
    }[damage]
    lean = await read_all(LeanFrameReceiver, data)
    theirs = await read_all(FrameReceiver, data)
    assert lean[-1][0] is InvalidFrameError, lean
    assert len(lean) == 1  # nothing decoded from it
    if damage in LENIENT:  # aiormq's receiver decodes what the frame holds and goes on
        assert theirs[-1][0] is not InvalidFrameError, theirs
    else:
        assert theirs[-1][0] is InvalidFrameError, theirs


LENIENT = {"deliver cut short", "deliver too long", "properties too long"}
"""Damage pamqp does not notice."""


def _resized(data: bytes, change: int) -> bytes:
    """A frame whose payload is `change` bytes longer or shorter, its size field to match."""
    size = int.from_bytes(data[3:7], "big")
    payload = data[7:-1]
    payload = payload[:change] if change < 0 else payload + b"\x00" * change
    return data[:3] + (size + change).to_bytes(4, "big") + payload + b"\xce"


async def test_a_stream_cut_mid_frame_is_a_closed_connection() -> None:
    data = encoded([deliveries()[0], headers()[1], ContentBody(BODY)])
    for cut in (3, 7, 20, len(data) - 1):
        lean = await read_all(LeanFrameReceiver, data[:cut])
        theirs = await read_all(FrameReceiver, data[:cut])
        assert decoded(lean[:-1]) == decoded(theirs[:-1])  # the frames before the cut
        assert lean[-1][0] is theirs[-1][0] is AMQPConnectionError
        assert "unexpectedly closed" in lean[-1][1]


async def test_a_protocol_header_before_the_first_frame_is_refused() -> None:
    """A broker that does not speak our protocol version answers with its own header."""
    reader = asyncio.StreamReader()
    reader.feed_data(b"AMQP\x00\x00\x09\x01")
    reader.feed_eof()
    with pytest.raises(ProtocolSyntaxError):
        await LeanFrameReceiver(reader).get_frame()


async def test_frames_split_across_reads_are_put_together() -> None:
    """An answer in many chunks: the frames come in byte by byte."""
    data = encoded([deliveries()[1], headers()[2], ContentBody(BODY)])
    reader = asyncio.StreamReader()
    receiver = LeanFrameReceiver(reader)
    receiver.started = True

    async def trickle() -> None:
        for i in range(len(data)):
            reader.feed_data(data[i : i + 1])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(trickle())
    got = [await receiver.get_frame() for _ in range(3)]
    await feeding
    assert decoded(got) == decoded(await read_all(FrameReceiver, data))
