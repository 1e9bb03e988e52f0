"""Reading AMQP frames off the broker connection: aiormq's frame receiver, leaner.

aiormq reads each frame in three awaited reads into a BytesIO under a lock, then decodes
it with pamqp, whose decoders are generic (a lookup per field, a slice per value). A
consumed message is three frames (the delivery, its properties, its body) and reading
them cost a role more than anything else it does per message but a POST. `LeanFrameReceiver`
reads a frame in two reads and decodes the three frames of a delivery itself; every other
frame (confirms, heartbeats, channel and connection methods) still goes to pamqp. What it
returns is what aiormq's own receiver returns: the same pamqp objects with the same values,
the same errors for a closed or broken connection (tests/unit/test_frames.py holds it to
that, frame by frame). aiormq looks its receiver class up by name when it connects; `install`
puts this one there, for every connection of the process.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.connection import FrameReceiver
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, decode
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

_HEAD = struct.Struct(">BHI")
"""A frame's type, channel and payload size."""
_HEADER = struct.Struct(">HHQH")
"""A content header's class, weight, body size and property flags."""
_TAG = struct.Struct(">q")
"""A delivery tag, signed as pamqp reads it."""
_DELIVER = commands.Basic.Deliver.index.to_bytes(4, "big")
_METHOD, _CONTENT_HEADER, _BODY = 1, 2, 3
_FRAME_END = 0xCE

_Properties = commands.Basic.Properties
_Deliver = commands.Basic.Deliver
_PROPERTIES = tuple(
    (name, _Properties.flags[name], getattr(_Properties, "_" + name))
    for name in _Properties.__slots__
)
"""Each property in wire order: its name, its flag and its AMQP type."""
_DEFAULTS: dict[str, Any] = {name: None for name in _Properties.__slots__} | {"cluster_id": ""}
"""What pamqp gives a property a frame leaves out."""

Received = tuple[int, int, Any]
"""What a frame receiver yields: bytes read, channel number, the pamqp frame."""


class LeanFrameReceiver(FrameReceiver):
    async def get_frame(self) -> Received:
        reader = self.reader
        if reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        try:
            head = await reader.readexactly(7)
            if not self.started:
                if head.startswith(b"AMQP"):
                    raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                self.started = True
            kind, channel, size = _HEAD.unpack(head)
            payload = await reader.readexactly(size + 1)
        except asyncio.IncompleteReadError as e:
            raise AMQPConnectionError(
                "Server connection unexpectedly closed. "
                f"Read {len(e.partial)} bytes but {e.expected} bytes expected",
            ) from e
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        read = size + 8
        try:
            if payload[-1] == _FRAME_END:
                if kind == _BODY and size:  # pamqp refuses an empty one: so does this
                    return read, channel, ContentBody(payload[:-1])
                if kind == _METHOD and payload[:4] == _DELIVER:
                    return read, channel, deliver_of(payload)
                if kind == _CONTENT_HEADER:
                    return read, channel, content_header_of(payload)
        except (struct.error, ValueError, IndexError) as e:
            raise InvalidFrameError(f"{kind}: {e}") from e
        try:
            return pamqp.frame.unmarshal(head + payload)
        except PAMQPException as e:
            raise InvalidFrameError(str(e)) from e


def deliver_of(payload: bytes) -> commands.Basic.Deliver:
    """A Basic.Deliver method frame's payload (after its method index) decoded."""
    end = 5 + payload[4]
    consumer_tag = payload[5:end].decode()
    (delivery_tag,) = _TAG.unpack_from(payload, end)
    redelivered = bool(payload[end + 8] & 1)
    start = end + 10
    end = start + payload[end + 9]
    exchange = payload[start:end].decode()
    start = end + 1
    end = start + payload[end]
    if end != len(payload) - 1:
        raise ValueError(f"a Basic.Deliver of {end} bytes in {len(payload) - 1}")
    routing_key = payload[start:end].decode()
    frame = _Deliver.__new__(_Deliver)
    frame.consumer_tag = consumer_tag
    frame.delivery_tag = delivery_tag
    frame.redelivered = redelivered
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


def content_header_of(payload: bytes) -> ContentHeader:
    """A content header frame's payload decoded: its sizes and Basic properties."""
    class_id, weight, body_size, flags = _HEADER.unpack_from(payload, 0)
    if flags & 1:  # more flags follow: no broker sends them for Basic; pamqp says what it is
        header = ContentHeader()
        header.unmarshal(payload[:-1])
        return header
    values = dict(_DEFAULTS)
    at = 14
    for name, flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        if kind == "shortstr":
            end = at + 1 + payload[at]
            values[name] = payload[at + 1 : end].decode()
            at = end
        elif kind == "octet":
            values[name] = payload[at]
            at += 1
        elif kind == "table":
            used, values[name] = decode.field_table(payload[at:])
            at += used
        else:  # timestamp
            used, values[name] = _timestamp(payload[at : at + 8])
            at += used
    if at != len(payload) - 1:
        raise ValueError(f"properties of {at - 14} bytes in {len(payload) - 15}")
    properties = _Properties.__new__(_Properties)
    for name, value in values.items():
        setattr(properties, name, value)
    header = ContentHeader.__new__(ContentHeader)
    header.class_id = class_id
    header.weight = weight
    header.body_size = body_size
    header.properties = properties
    return header


def _timestamp(data: bytes) -> tuple[int, datetime.datetime]:
    if len(data) < 8:
        raise ValueError("a timestamp cut short")
    return decode.timestamp(data)


def install() -> None:
    """Have every aiormq connection of this process read its frames with LeanFrameReceiver."""
    aiormq.connection.FrameReceiver = LeanFrameReceiver  # type: ignore[misc]
