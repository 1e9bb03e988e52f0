"""The delivery HTTP client against raw servers on 127.0.0.1 that answer exactly the bytes
a test gives them: keep-alive and its ends, answers framed every way, hostile answers, and
requests that must not be sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from webhook_router import http_client
from webhook_router.http_client import Client, PostFailed
from webhook_router.ssrf import AddressPolicy

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

LOOPBACK = AddressPolicy(allowed_networks=["127.0.0.0/8"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    """Each request's head and body, as received."""
    closed_by_client: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


Answerer = Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answering(*answers: bytes, then_close: bool = False) -> Answerer:
    """Answer each request on a connection with the next of `answers` (the last one again
    once they run out); close after each answer when `then_close`."""

    async def answer(server: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = 0
        while True:
            try:
                server.requests.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                server.closed_by_client += 1
                return
            w.write(answers[min(n, len(answers) - 1)])
            await w.drain()
            n += 1
            if then_close:
                return

    return answer


@asynccontextmanager
async def serving(answer: Answerer) -> AsyncIterator[Server]:
    server = Server(port=0)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await answer(server, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        await listening.wait_closed()


@asynccontextmanager
async def a_client(limit: int = 65536) -> AsyncIterator[Client]:
    client = Client(LOOPBACK, connect_timeout=5, request_timeout=5, limit=limit, user_agent="t/1")
    try:
        yield client
    finally:
        await client.close()


async def test_the_request_names_its_target_and_length_and_keeps_the_headers_given() -> None:
    async with serving(answering(OK)) as server, a_client() as client:
        url = f"http://127.0.0.1:{server.port}/app/run%20tree?x=1&y=2#frag"
        answer = await client.post(url, b'{"a": 1}', {"webhook-id": "j1", "User-Agent": "own"})
    assert (answer.status, answer.body, answer.truncated) == (200, b"ok", False)
    [request] = server.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /app/run%20tree?x=1&y=2 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 8" in lines and b"webhook-id: j1" in lines
    assert [line for line in lines if line.lower().startswith(b"user-agent")] == [
        b"User-Agent: own"
    ]
    assert body == b'{"a": 1}'


async def test_a_kept_connection_carries_the_next_post_to_its_origin() -> None:
    async with serving(answering(OK)) as server, a_client() as client:
        for _ in range(5):
            assert (await client.post(server.url(), b"{}", {})).status == 200
    assert server.connections == 1 and len(server.requests) == 5


async def test_a_kept_connection_closed_unanswered_sends_the_post_once_more_anew() -> None:
    """The server reads the second POST on a kept connection and closes it without a byte
    of answer, as a server closing an idle connection does when a POST crosses its close:
    the POST goes once more, on a new connection, and that answer is the attempt's."""

    async def first_only(
        server: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        server.requests.append(await read_request(reader))
        w.write(OK)
        await w.drain()
        server.requests.append(await read_request(reader))  # read, never answered

    async with serving(first_only) as server, a_client() as client:
        assert (await client.post(server.url(), b"{}", {})).status == 200
        assert (await client.post(server.url(), b'{"n": 2}', {})).status == 200
    assert server.connections == 2
    assert [r.endswith(b'{"n": 2}') for r in server.requests] == [False, True, True]


async def test_a_new_connection_closed_unanswered_fails_the_attempt() -> None:
    """On a connection opened for this POST, a close without answer is the endpoint's
    doing: the attempt fails and the retry schedule decides; the POST is not sent again."""
    async with serving(answering(b"", then_close=True)) as server, a_client() as client:
        with pytest.raises(PostFailed, match="connection closed before an answer"):
            await client.post(server.url(), b"{}", {})
    assert server.connections == 1 and len(server.requests) == 1


async def test_connection_close_in_the_answer_is_obeyed() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answering(close)) as server, a_client() as client:
        for _ in range(3):
            assert (await client.post(server.url(), b"{}", {})).body == b"ok"
    assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    """The server answers as if it kept the connection, then closes it: the next POST goes
    on a new connection and gets its answer; no attempt is lost to the stale one."""
    async with serving(answering(OK, then_close=True)) as server, a_client() as client:
        for _ in range(3):
            assert (await client.post(server.url(), b"{}", {})).status == 200
            await asyncio.sleep(0.05)  # the server's close arrives while the connection idles
    assert server.connections == 3 and len(server.requests) == 3


async def test_an_answer_without_length_ends_with_its_connection() -> None:
    until_close = b"HTTP/1.1 200 OK\r\n\r\nthe whole answer"
    async with serving(answering(until_close, then_close=True)) as server, a_client() as client:
        answer = await client.post(server.url(), b"{}", {})
    assert (answer.status, answer.body) == (200, b"the whole answer")


async def test_an_answer_beyond_the_limit_is_cut_and_its_connection_closed() -> None:
    """The rest is not read: the connection cannot carry another POST and is closed."""
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000
    async with serving(answering(long)) as server, a_client(limit=100) as client:
        first = await client.post(server.url(), b"{}", {})
        second = await client.post(server.url(), b"{}", {})
    assert (first.body, first.truncated) == (b"z" * 100, True)
    assert second.truncated and server.connections == 2


async def test_an_informational_answer_is_skipped_for_the_real_one() -> None:
    answers = (
        b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nrun"
    )
    async with serving(answering(answers)) as server, a_client() as client:
        answer = await client.post(server.url(), b"{}", {})
    assert (answer.status, answer.body) == (201, b"run")


async def test_retry_after_is_read_from_the_answer() -> None:
    busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n"
    async with serving(answering(busy)) as server, a_client() as client:
        answer = await client.post(server.url(), b"{}", {})
    assert (answer.status, answer.retry_after, answer.body) == (503, "120", b"")


@pytest.mark.parametrize(
    ("answer", "wording"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "bad answer: "),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "connection closed before the whole"),
        (b"", "connection closed before an answer"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * (70 * 1024) + b"\r\n\r\n",
            "bad answer: its headers are over 65536 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(20000)),
            "bad answer: its headers are over 65536 bytes",
        ),
    ],
    ids=["not-http", "short-body", "nothing", "one-huge-header", "endless-headers"],
)
async def test_a_broken_answer_fails_the_post_with_its_reason(answer: bytes, wording: str) -> None:
    async with serving(answering(answer, then_close=True)) as server, a_client() as client:
        with pytest.raises(PostFailed) as info:
            await client.post(server.url(), b"{}", {})
    assert str(info.value).startswith(wording), info.value
    assert not info.value.refused


async def test_a_hostile_endpoint_costs_its_neighbours_nothing() -> None:
    """One client, POSTs at once to a good endpoint and to one answering endless headers,
    NULs and all: the bad ones fail on their own, each on a connection of its own closed
    after it; every good one gets its whole answer."""
    hostile = b"HTTP/1.1 200 OK\r\n" + b"X-\0: \0\0\r\n" * 30000
    async with (
        serving(answering(OK)) as good,
        serving(answering(hostile, then_close=True)) as bad,
        a_client() as client,
    ):
        posts = [client.post(good.url(), b"{}", {}) for _ in range(20)]
        posts += [client.post(bad.url(), b"{}", {}) for _ in range(5)]
        results = await asyncio.gather(*posts, return_exceptions=True)
    assert all(getattr(r, "body", None) == b"ok" for r in results[:20]), results[:20]
    assert all(isinstance(r, PostFailed) and str(r).startswith("bad answer") for r in results[20:])
    assert len(good.requests) == 20 and bad.connections == 5


async def test_bytes_after_the_answer_close_the_connection() -> None:
    """Bytes no request asked for make a connection unfit to carry another POST."""
    extra = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    async with serving(answering(extra)) as server, a_client() as client:
        first = await client.post(server.url(), b"{}", {})
        await asyncio.sleep(0.05)
        second = await client.post(server.url(), b"{}", {})
    assert first.body == second.body == b"ok"
    assert server.connections == 2


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: 1"}, {"X-Evil": "nul\0"}, {"Bad Name": "v"}, {"X\nY": "v"}],
)
async def test_a_header_that_would_split_the_request_is_refused_unsent(
    headers: dict[str, str],
) -> None:
    async with serving(answering(OK)) as server, a_client() as client:
        with pytest.raises(PostFailed) as info:
            await client.post(server.url(), b"{}", headers)
    assert info.value.refused and str(info.value).startswith("not sent: the header ")
    assert server.connections == 0


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "http:///nohost", "/relative", "http://127.0.0.1:99999/"]
)
async def test_a_url_that_cannot_be_posted_to_is_refused(url: str) -> None:
    async with a_client() as client:
        with pytest.raises(PostFailed) as info:
            await client.post(url, b"{}", {})
    assert info.value.refused and str(info.value).startswith("bad URL: ")


async def test_a_refused_connection_is_a_failure_not_a_refusal() -> None:
    async with serving(answering(OK)) as server:
        port = server.port
    async with a_client() as client:
        with pytest.raises(PostFailed) as info:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {})
    assert str(info.value).startswith("connection failed: ") and not info.value.refused


async def test_idle_connections_are_not_kept_beyond_their_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_client, "KEEP_IDLE", 0.05)
    async with serving(answering(OK)) as server, a_client() as client:
        await client.post(server.url(), b"{}", {})
        await asyncio.sleep(0.1)
        await client.post(server.url(), b"{}", {})
        await asyncio.sleep(0.05)
    assert server.connections == 2 and server.closed_by_client >= 1


async def test_a_large_body_is_sent_whole() -> None:
    body = b"[" + b"1," * 300_000 + b"1]"
    async with serving(answering(OK)) as server, a_client() as client:
        await client.post(server.url(), body, {})
    assert server.requests[0].endswith(body)
