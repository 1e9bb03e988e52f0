"""Reading and checking a request body before anything else is touched.

A body is read within a deadline: a client that sends less than its Content-Length, or
trickles it, is answered 400 when the deadline passes, never left hanging. Everything wrong
with an event's body is named here as a 4xx (400 for the body as a whole: not UTF-8 JSON,
not an object, nested deeper than the broker's encoder goes, cut short; 413 over the size
limit, raised by aiohttp; 422 naming each field; 403 for a space the publishing token does
not reach) before the broker is asked anything, so a
503 from ingest always means the broker, and a bad request never costs another its publish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from webhook_router.events import Event, EventInvalid, parse_event
from webhook_router.rights import Principal

DEPTH_MAX = 254
"""Deepest nesting of objects and arrays an event may have (the event itself is level 1):
the deepest the JSON encoder can write again."""

FieldErrors = list[dict[str, str]]


class BodyRefused(Exception):
    """A body refused before anything was done with it: status, message, fields at fault."""

    def __init__(self, status: int, message: str, errors: FieldErrors | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


async def read_body(request: web.Request, deadline: float) -> bytes:
    """The whole body, or BodyRefused(400) when it does not arrive within `deadline`
    seconds or ends before its Content-Length. Over the size limit aiohttp raises 413."""
    try:
        async with asyncio.timeout(deadline):
            return await request.read()
    except TimeoutError:
        raise BodyRefused(
            400, f"the body{_size(request)} did not arrive within {deadline:g} s; nothing was done"
        ) from None
    except (ConnectionError, BadHttpMessage):
        # the client stopped sending before the end: aiohttp calls it a lost connection,
        # which must not pass for a database or broker failure
        raise BodyRefused(
            400, f"the body{_size(request)} ended before it was whole; nothing was done"
        ) from None


def _size(request: web.Request) -> str:
    expected = request.content_length
    return f" of {expected} bytes" if expected is not None else ""


def _too_deep(message: str) -> bool:
    return "depth limit" in message or "Recursion limit" in message


DEPTH_MESSAGE = f"the body is nested deeper than {DEPTH_MAX} levels of objects and arrays"


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BodyRefused(400) saying why it is not one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if _too_deep(str(exc)):
            raise BodyRefused(400, DEPTH_MESSAGE) from None
        raise BodyRefused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BodyRefused(400, "the body must be a JSON object")
    return data


async def read_object(
    request: web.Request, deadline: float, *, empty_ok: bool = False
) -> dict[str, Any]:
    """A JSON object body read within `deadline`; `{}` for an empty body when `empty_ok`."""
    raw = await read_body(request, deadline)
    if empty_ok and not raw.strip():
        return {}
    return parse_object(raw)


async def read_event(request: web.Request, deadline: float, *, publisher: Principal) -> Event:
    """The event a request carries, validated and known to encode again for the broker;
    BodyRefused naming what is wrong otherwise, and 403 for an event of a space the
    publishing token does not reach (it may publish, so the space is no secret to it)."""
    data = await read_object(request, deadline)
    try:
        event = parse_event(data)
    except EventInvalid as exc:
        raise BodyRefused(422, "the event is not valid", exc.errors) from None
    if not publisher.reaches(event.space):
        raise BodyRefused(403, f"this token may not publish events of space {event.space!r}")
    try:
        event.encode()
    except orjson.JSONEncodeError as exc:
        message = DEPTH_MESSAGE if _too_deep(str(exc)) else f"the body cannot be encoded: {exc}"
        raise BodyRefused(400, message) from None
    return event
