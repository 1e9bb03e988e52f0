"""Answers are read whole: real receivers on 127.0.0.1 that write their answer in chunks with
pauses between them, beyond the limit, with a raw NUL or bytes that are not UTF-8."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from webhook_router.answers import TRUNCATED, answer_text
from webhook_router.http_client import Client
from webhook_router.ssrf import AddressPolicy

from .conftest import Stack, answer_app, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAUSE = 0.2


def chunked(*chunks: bytes, pause: float = PAUSE, status: int = 200) -> Handler:
    """A handler writing each chunk, flushed, with a pause before the next."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status)
        response.content_type = "application/json"
        await response.prepare(request)
        for n, chunk in enumerate(chunks):
            if n:
                await asyncio.sleep(pause)
            await response.write(chunk)
        await response.write_eof()
        return response

    return handler


@asynccontextmanager
async def receiver(handler: Handler) -> AsyncIterator[str]:
    runner, url = await answer_app(handler)
    try:
        yield url
    finally:
        await runner.cleanup()


async def answer_of(handler: Handler, limit: int) -> str:
    """The answer as the worker's client reads it and the job log keeps it."""
    loopback = AddressPolicy(allowed_networks=["127.0.0.0/8"])
    client = Client(loopback, connect_timeout=5, request_timeout=10, limit=limit, user_agent="t")
    try:
        async with receiver(handler) as url:
            answer = await client.post(url + "/hook", b"{}", {})
    finally:
        await client.close()
    return answer_text(answer.body, answer.truncated)


TWO_CHUNKS = (b'{"message": "Initiated ', b'run #4242."}')


async def test_an_answer_in_two_chunks_is_read_whole() -> None:
    assert await answer_of(chunked(*TWO_CHUNKS), 65536) == '{"message": "Initiated run #4242."}'


async def test_an_answer_beyond_the_limit_is_cut_at_the_limit_and_marked() -> None:
    chunks = [bytes([ord("a") + n]) * 40 for n in range(5)]  # 200 bytes in five writes
    text = await answer_of(chunked(*chunks, pause=0.05), 100)
    assert text == (b"".join(chunks)[:100]).decode() + TRUNCATED


async def test_an_answer_exactly_at_the_limit_is_not_marked() -> None:
    text = await answer_of(chunked(b"x" * 60, b"y" * 40, pause=0.05), 100)
    assert text == "x" * 60 + "y" * 40


@pytest.mark.parametrize("size", [99, 100, 101, 200])
async def test_an_answer_in_one_piece_is_cut_only_beyond_the_limit(size: int) -> None:
    """Whole in its first chunk: with a Content-Length, and in one chunk of a chunked
    answer."""

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * size)

    expected = "z" * min(size, 100) + (TRUNCATED if size > 100 else "")
    assert await answer_of(whole, 100) == expected
    assert await answer_of(chunked(b"z" * size), 100) == expected


async def test_a_raw_nul_and_bytes_that_are_not_utf8_read_fine() -> None:
    text = await answer_of(chunked(b"ok\x00", b"caf\xe9 \xff\xfe end"), 65536)
    assert text == "ok\x00caf\ufffd \ufffd\ufffd end"


def user_created(space: str) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": "jane"})


async def test_the_job_keeps_the_whole_answer_and_its_run_number(stack: Stack) -> None:
    """The run number is in the second chunk: it is found only if the answer was read whole."""
    space = stack.space()
    async with receiver(chunked(*TWO_CHUNKS)) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete"
    assert job["response_content"] == '{"message": "Initiated run #4242."}'
    assert job["run_id"] == "4242"


async def test_the_job_of_a_long_chunked_answer_is_marked_truncated(stack: Stack) -> None:
    limit = stack.settings.response_limit
    chunks = [b"z" * (limit // 4)] * 6  # one and a half times the limit, in six writes
    space = stack.space()
    async with receiver(chunked(*chunks, pause=0.05)) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete"
    assert job["response_content"] == "z" * limit + TRUNCATED
