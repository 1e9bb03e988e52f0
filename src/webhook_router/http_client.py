"""Posting a delivery: a lean HTTP/1.1 client made for webhook POSTs.

A POST here costs what it must and little more: its target parsed once per URL, an idle
keep-alive connection to its origin reused or a new one opened, the request written in one
send, the answer parsed by llhttp (httptools) as it arrives, its body kept up to the limit.
A general client's session machinery (cookies, redirects, proxies, per-request objects)
cost more than twice the CPU of the whole POST, and a delivery needs none of it.

What it keeps:

- the SSRF guard: a new connection goes only to an address the AddressPolicy allows, judged
  on the address it resolved to right before connecting (an IP literal and a numeric IPv4
  spelling such as `2130706433` on the address they mean). No proxy, no redirect is followed.
- TLS with the system's verification, and a webhook's own client certificate (mTLS): a
  connection is reused only for the same origin and the same TLS context.
- two timeouts: `connect_timeout` for each connection attempt (TLS handshake included),
  `request_timeout` for the whole POST.
- the answer read whole, in however many chunks it comes, up to `limit` bytes; beyond it
  the rest is not read and the connection is closed.
- keep-alive: a connection goes back to its origin's idle list only after a whole answer
  that lets it stay open; one the server closed while idle is dropped; none is kept idle
  longer than KEEP_IDLE. A kept connection closed before a byte of its answer came (the
  server closing it as it idled, racing the POST) sends the POST once more, on a new
  connection; any other failure is the attempt's, and the retry schedule decides.

Every failure is a PostFailed, with the wording the job log shows and whether the target
was refused (never sent) rather than failed.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httptools
from yarl import URL

from webhook_router.ssrf import AddressPolicy, TargetRefused, legacy_ipv4

DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_LIMIT = 64 * 1024
"""Most bytes of an answer's status line and headers."""
KEEP_IDLE = 15.0
"""Seconds an idle connection is kept for the next POST to its origin."""
DNS_TTL = 60.0
"""Seconds a host name's addresses are kept."""
ONE_SEND = 64 * 1024
"""Bodies up to this size are joined to the request head and sent in one write."""


class PostFailed(Exception):
    """A POST that got no whole answer: `message` for the job log; `refused` when nothing
    was sent because the target is not allowed or not valid."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused

    def __str__(self) -> str:
        return self.message


class _ClosedUnanswered(PostFailed):
    """The connection closed before a byte of the answer came. On a kept connection that
    is the server closing it as it idled, racing the POST: the POST goes once more, on a
    new connection (a server that closes without answering may have seen it: the
    `webhook-id` lets a receiver drop the second copy, as it does a retry's)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes
    """At most the limit's bytes."""
    truncated: bool
    """Whether the answer was longer than the limit."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's POST goes, and the request line and Host header that name it."""

    scheme: str
    host: str
    """As connected to and judged: lower case, IDNA-encoded, IPv6 without brackets."""
    port: int
    authority: str
    path: str
    authorization: str | None
    """Basic credentials written in the URL (`user:password@`), if any."""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """Parse a URL to POST to; PostFailed (refused) for one that cannot be sent."""
    try:
        parsed = URL(url)
        host = parsed.raw_host
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise PostFailed(f"bad URL: {url!r}: {exc}", refused=True) from None
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise PostFailed(f"bad URL: {url!r}: not http or https", refused=True)
    if not host:
        raise PostFailed(f"bad URL: {url!r}: no host", refused=True)
    host = host.rstrip(".").lower() or host
    port = port or DEFAULT_PORTS[scheme]
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    authorization = None
    if parsed.raw_user is not None:
        pair = f"{parsed.user or ''}:{parsed.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    path = parsed.raw_path_qs or "/"
    for text in (authority, path):
        if any(c in text for c in "\r\n\0 "):
            raise PostFailed(f"bad URL: {url!r}: a space or control character", refused=True)
    return Target(scheme, host, port, authority, path, authorization)


_BAD_NAME = re.compile(r"[\r\n\x00: ]")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_OURS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
"""Headers the client writes itself: one given is left out."""


def _request_head(
    target: Target, headers: Mapping[str, str], length: int, user_agent: str
) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"]
    has_authorization = has_user_agent = False
    for name, value in headers.items():
        if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise PostFailed(
                f"not sent: the header {name!r} holds CR, LF, NUL, or in its name a space or colon",
                refused=True,
            )
        lower = name.lower()
        if lower in _OURS:
            continue
        if lower == "authorization":
            has_authorization = True
        elif lower == "user-agent":
            has_user_agent = True
        lines.append(f"{name}: {value}\r\n")
    if not has_user_agent:
        lines.append(f"User-Agent: {user_agent}\r\n")
    if target.authorization and not has_authorization:
        lines.append(f"Authorization: {target.authorization}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()


class _Connection(asyncio.Protocol):
    """One connection to an origin, carrying one POST and its answer at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        """Ready for the next answer (the parser, at a message's end, is ready by itself)."""
        self._head = 0
        self._head_kept = 0
        self._received = 0
        self._headers_done = False
        self._informational = False
        self._framed = False
        self._status = 0
        self._retry_after: str | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._reusable = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection can carry no other POST
            return
        self._received += len(data)
        if not self._headers_done:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()  # 101: the answer is its status; the connection is not HTTP now
        except httptools.HttpParserError as exc:
            self._fail(PostFailed(f"bad answer: {exc}"))
            return
        if not self._headers_done and self._head > HEAD_LIMIT and not self._waiter.done():
            self._fail(PostFailed(f"bad answer: its headers are over {HEAD_LIMIT} bytes"))

    def eof_received(self) -> bool:
        self.closed = True  # the server is done with it: no POST may be sent on it now
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed and not self._informational:
            self._finish()  # a body without length or chunks ends when the connection does
            return
        stage = "the whole answer" if self._headers_done else "an answer"
        why = f": {exc}" if exc is not None else ""
        failure = _ClosedUnanswered if self._received == 0 else PostFailed
        waiter.set_exception(failure(f"connection closed before {stage}{why}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self._reusable = False  # a second answer to one request
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_kept += len(name) + len(value) + 4
        if self._head_kept > HEAD_LIMIT:
            self._fail(PostFailed(f"bad answer: its headers are over {HEAD_LIMIT} bytes"))
            return
        lower = name.lower()
        if lower == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        self._informational = 100 <= self._status < 200 and self._status != 101
        if self._status in (204, 304):
            self._framed = True

    def on_body(self, body: bytes) -> None:
        if self._informational:
            return
        self._chunks.append(body)
        self._size += len(body)
        if self._size > self.limit:
            self._finish()  # the rest is not read: the connection is closed, not kept

    def on_message_complete(self) -> None:
        if self._informational:  # 100 Continue and the like: the answer is still to come
            self._reset()
            return
        self._reusable = self._parser.should_keep_alive()
        self._finish()

    # the POST's side

    def send(self, data: bytes, body: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._reset()
        self._waiter = loop.create_future()
        if len(body) <= ONE_SEND:
            self.transport.write(data + body)
        else:
            self.transport.writelines((data, body))
        return self._waiter

    @property
    def reusable(self) -> bool:
        """Whether the answer just read leaves the connection fit for another POST."""
        return self._reusable and self.usable

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        truncated = len(body) > self.limit
        if truncated:
            body = body[: self.limit]
            self._reusable = False
        waiter.set_result(Answer(self._status, self._retry_after, body, truncated))
        if not self._reusable:
            self.close()

    def expire(self, timeout: float) -> None:
        """The POST's time is up: it fails, and the connection is closed."""
        self._fail(PostFailed(f"timed out after {timeout:g}s"))

    def _fail(self, exc: PostFailed) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


PoolKey = tuple[str, str, int, ssl.SSLContext | None]


class Client:
    """POSTs to webhook targets under one AddressPolicy, keeping connections per origin."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        connect_timeout: float,
        request_timeout: float,
        limit: int,
        user_agent: str,
    ) -> None:
        self.policy = policy
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.limit = limit
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._addresses: dict[str, tuple[float, list[str]]] = {}
        self._verified: ssl.SSLContext | None = None
        self.closed = False

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        tls: ssl.SSLContext | None = None,
    ) -> Answer:
        """POST `body` to `url`; the answer, or PostFailed. `tls`: a context of its own (a
        client certificate) for an https URL, else the system's verification."""
        if self.closed:
            raise PostFailed("not sent: the worker is stopping")
        target = target_of(url)
        head = _request_head(target, headers, len(body), self.user_agent)
        context = (tls or self._default_tls()) if target.tls else None
        key: PoolKey = (target.scheme, target.host, target.port, context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        connection = self._take(key)
        try:
            if connection is not None:
                answer = await self._exchange(connection, head, body, deadline)
                self._keep(key, connection)
                return answer
        except _ClosedUnanswered:
            pass  # the server closed the kept connection as it was reused: once more, anew
        try:
            async with asyncio.timeout_at(deadline):
                connection = await self._connect(target, context)
        except TimeoutError:
            raise PostFailed(f"timed out after {self.request_timeout:g}s") from None
        answer = await self._exchange(connection, head, body, deadline)
        self._keep(key, connection)
        return answer

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes, deadline: float
    ) -> Answer:
        loop = asyncio.get_running_loop()
        waiter = connection.send(head, body)
        timer = loop.call_at(deadline, connection.expire, self.request_timeout)
        self._busy.add(connection)
        try:
            return await waiter
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()
            self._busy.discard(connection)

    def _keep(self, key: PoolKey, connection: _Connection) -> None:
        if connection.reusable and not self.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(connection)

    def _take(self, key: PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        horizon = time.monotonic() - KEEP_IDLE
        while idle:
            connection = idle.pop()
            if connection.usable and connection.idle_since > horizon:
                if idle and idle[0].idle_since <= horizon:  # the oldest have outlived their wait
                    stale = [c for c in idle if c.idle_since <= horizon]
                    idle[:] = [c for c in idle if c.idle_since > horizon]
                    for c in stale:
                        c.close()
                return connection
            connection.close()
        return None

    def _default_tls(self) -> ssl.SSLContext:
        if self._verified is None:
            self._verified = ssl.create_default_context()
        return self._verified

    async def _connect(self, target: Target, context: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in await self._allowed(target.host, target.port):
            connection = _Connection(self.limit)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    transport, _ = await loop.create_connection(
                        lambda c=connection: c,
                        address,
                        target.port,
                        ssl=context,
                        server_hostname=target.host if context is not None else None,
                    )
            except TimeoutError:
                connection.close()
                raise PostFailed(f"connect timed out after {self.connect_timeout:g}s") from None
            except OSError as exc:  # ssl.SSLError is one
                connection.close()
                failure = exc
                continue
            connection.transport = transport  # uvloop may call connection_made later
            return connection
        raise PostFailed(f"connection failed: {failure}")

    async def _allowed(self, host: str, port: int) -> list[str]:
        """The addresses `host` may be connected to: judged right before connecting, on what
        it resolved to (or, for an IP literal or a numeric IPv4 spelling, what it means)."""
        literal: str | None
        try:
            literal = str(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            legacy = legacy_ipv4(host)
            literal = str(legacy) if legacy is not None else None
        if literal is not None:
            self._check(host, literal)
            return [host if ":" in host else literal]
        addresses = await self._resolve(host, port)
        try:
            return self.policy.filter(host, addresses)
        except TargetRefused as refusal:
            raise PostFailed(str(refusal), refused=True) from None

    def _check(self, host: str, address: str) -> None:
        try:
            self.policy.check(host, address)
        except TargetRefused as refusal:
            raise PostFailed(str(refusal), refused=True) from None

    async def _resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        kept = self._addresses.get(host)
        if kept is not None and kept[0] > now:
            return kept[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise PostFailed(f"connection failed: cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise PostFailed(f"connection failed: {host} resolved to no address")
        if len(self._addresses) > 4096:
            self._addresses.clear()
        self._addresses[host] = (now + DNS_TTL, addresses)
        return addresses

    async def close(self) -> None:
        """Close every connection: idle ones, and those a POST still waits on (it fails)."""
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        await asyncio.sleep(0)
