"""Ingest errors named correctly, over real HTTP: everything wrong with an event's body is a
4xx decided before the broker is asked anything, a body shorter than its Content-Length is a
quick 400, and one bad request never costs the valid ones sent beside it their 202."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from webhook_router import metrics, store
from webhook_router.api import Api
from webhook_router.ingest import DEPTH_MAX
from webhook_router.runtime import serve
from webhook_router.settings import Settings
from webhook_router.store import Store

from ..conftest import eventually, free_port
from .conftest import Stack, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

EVENTS = "/app/api/v1/events"
AUTH = {"Authorization": "Bearer test-token"}
DEADLINE = 1.0


def user_created(space: str, username: str = "jane") -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": username})


def nested(space: str, depth: int) -> bytes:
    """A valid User Created event whose `user.extra` makes the body `depth` levels deep
    (the event object is level 1, `user` level 2)."""
    inner = depth - 2
    body = orjson.dumps(user_created(space)).decode()
    deep = '"extra": ' + "[" * inner + "]" * inner
    return body.replace('"username":"jane"', '"username":"jane",' + deep).encode()


@asynccontextmanager
async def own_api(settings: Settings, **changes: Any) -> AsyncIterator[str]:
    """An API of its own on 127.0.0.1, with `changes` to its settings; its base URL."""
    own = settings.model_copy(update={"body_timeout": DEADLINE, **changes})
    pool = await store.connect(own.database_url, max_size=2)
    api = Api(own, Store(pool))
    port = free_port()
    runner = await serve(api.app(), "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await api.close()
        await pool.close()


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    async with session.post(url + EVENTS, data=io.BytesIO(body), headers=AUTH) as response:
        return response.status, await response.json(content_type=None)


async def test_the_nested_helper_builds_the_depth_it_names() -> None:
    def depth(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0

    assert depth(orjson.loads(nested("s", 40))) == 40


BAD_BODIES = [
    pytest.param(b"\xff\xfe{}", 400, "not JSON", id="not-utf8"),
    pytest.param(b'{"event": "\\ud800"}', 400, "not JSON", id="lone-surrogate"),
    pytest.param(b"[1, 2]", 400, "JSON object", id="array"),
    pytest.param(b"{", 400, "not JSON", id="cut"),
    pytest.param(None, 400, f"deeper than {DEPTH_MAX}", id="depth-255"),
    pytest.param(None, 400, f"deeper than {DEPTH_MAX}", id="depth-1000"),
    pytest.param(None, 400, f"deeper than {DEPTH_MAX}", id="depth-5000"),
    pytest.param(b" " * (1024 * 1024 + 1), 413, "", id="over-1-MiB"),
    pytest.param(b'{"event": {"type": "User"}}', 422, "not valid", id="fields"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_BODIES)
async def test_a_bad_body_is_a_4xx_decided_before_the_broker_is_asked(
    settings: Settings, request: pytest.FixtureRequest, body: bytes | None, status: int, words: str
) -> None:
    """The API's broker is unreachable: a 503 would mean it was asked. A bad body must get
    its own 4xx, and a good one the 503 that proves the broker really is away."""
    if body is None:
        body = nested("s", int(request.node.callspec.id.removeprefix("depth-")))
    away = {"amqp_url": ["amqp://guest:guest@127.0.0.1:1/"]}
    async with own_api(settings, **away) as url, aiohttp.ClientSession() as session:
        answer_status, answer = await post(session, url, body)
        assert answer_status == status, answer
        assert words in answer["error"], answer
        good_status, _ = await post(session, url, orjson.dumps(user_created("s")))
        assert good_status == 503


async def test_a_body_at_the_depth_limit_is_accepted(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        status, answer = await post(session, stack.api_url, nested(stack.space(), DEPTH_MAX))
    assert status == 202, answer


async def test_valid_events_beside_deep_ones_all_get_202(stack: Stack) -> None:
    """400 valid events sent at the same moment as events nested 255 to 1024 levels deep:
    the deep ones are 400, and not one valid event loses its 202 to them."""
    space = stack.space()
    valid = [orjson.dumps(user_created(space, f"u{n}")) for n in range(400)]
    deep = [nested(space, depth) for depth in (255, 300, 500, 800, 1000, 1024) * 5]
    bodies = [(True, b) for b in valid] + [(False, b) for b in deep]
    # interleave the deep ones among the valid ones
    bodies.sort(key=lambda item: hash(item[1]) % 97)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        answers = await asyncio.gather(*(post(session, stack.api_url, b) for _, b in bodies))
    good = [status for (ok, _), (status, _) in zip(bodies, answers, strict=True) if ok]
    bad = [(status, a) for (ok, _), (status, a) in zip(bodies, answers, strict=True) if not ok]
    assert good == [202] * len(valid), {s: good.count(s) for s in set(good)}
    assert all(s == 400 and f"deeper than {DEPTH_MAX}" in a["error"] for s, a in bad), bad


async def raw_request(url: str, head: bytes, body: bytes, *, end: bool) -> tuple[bytes, float]:
    """Send a request by hand; with `end`, close the sending side after the body. The
    answer's first line and how long it took."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.perf_counter()
    try:
        writer.write(head + body)
        await writer.drain()
        if end:
            writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), DEADLINE + 10)
        await asyncio.wait_for(reader.read(4096), 5)
        return line, time.perf_counter() - started
    finally:
        writer.close()
        await writer.wait_closed()


def short_head(length: int) -> bytes:
    return (
        f"POST {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-token\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_body_shorter_than_its_content_length_is_400_within_the_deadline(
    settings: Settings,
) -> None:
    """The client sends 50 bytes less than it announced and waits: the API answers 400 when
    the body deadline passes (the raw read gives up 10 s after it)."""
    body = orjson.dumps(user_created("s"))
    async with own_api(settings) as url:
        line, took = await raw_request(url, short_head(len(body) + 50), body, end=False)
    assert line.startswith(b"HTTP/1.1 400"), line
    print(f"short body left open: 400 after {took:.2f} s (deadline {DEADLINE:g} s)")


def ingest_answers(status: int) -> float:
    """How many ingest requests this process's APIs answered with `status` so far."""
    labels = {"method": "POST", "route": EVENTS, "status": str(status)}
    return metrics.REGISTRY.get_sample_value("webhook_router_api_requests_total", labels) or 0.0


async def test_a_short_body_whose_sender_stops_sending_ends_at_once_as_a_400(
    settings: Settings,
) -> None:
    """The client sends less than it announced and closes its sending side: there is no
    body to wait for, so the request ends at once. aiohttp drops the connection (the
    client sees it close), and the API counts the request a 400, never a 503 that would
    blame the database or the broker."""
    body = orjson.dumps(user_created("s"))
    before = {status: ingest_answers(status) for status in (400, 503)}
    async with own_api(settings) as url:
        line, took = await raw_request(url, short_head(len(body) + 50), body, end=True)

        async def counted() -> bool:
            return ingest_answers(400) > before[400]

        assert await eventually(counted, timeout=5)
    assert line == b"" or line.startswith(b"HTTP/1.1 400"), line
    assert ingest_answers(503) == before[503]
    print(f"short body, sending side closed: {line!r} after {took:.2f} s")
