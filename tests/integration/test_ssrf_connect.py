"""End to end through aiohttp against servers on loopback only."""

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from webhook_router.ssrf import AddressPolicy, TargetRefused, guarded_connector, refusal_of

pytestmark = [pytest.mark.timeout(30)]

TIMEOUT = aiohttp.ClientTimeout(total=5)


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _ipv6_loopback_available()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="IPv6 loopback (::1) is unavailable")


@dataclass
class Receiver:
    port: int
    paths: list[str] = field(default_factory=list)

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """One app listening on 127.0.0.1 and, when possible, on ::1 at the same port."""
    state = Receiver(port=0)

    async def hook(request: web.Request) -> web.Response:
        state.paths.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for _ in range(20):
            v4 = web.TCPSite(runner, "127.0.0.1", 0)
            await v4.start()
            state.port = runner.addresses[0][1]
            if not IPV6:
                break
            try:
                await web.TCPSite(runner, "::1", state.port).start()
                break
            except OSError:
                await v4.stop()
        else:
            pytest.skip("could not bind 127.0.0.1 and ::1 on one port")
        yield state
    finally:
        await runner.cleanup()


def _session(policy: AddressPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=guarded_connector(policy, **kwargs), timeout=TIMEOUT)


async def _refusal(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> TargetRefused:
    with pytest.raises((aiohttp.ClientError, OSError)) as info:
        async with session.post(url, data=b"{}", **kwargs):
            pass
    refused = refusal_of(info.value)
    assert refused is not None, f"not refused by the guard: {info.value!r}"
    return refused


LOOPBACK_HOSTS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "017700000001",
    "0x7f.1",
    "[::ffff:127.0.0.1]",
    "localhost",
    pytest.param("[::1]", marks=needs_ipv6),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_loopback_forms_are_refused_without_reaching_the_server(
    receiver: Receiver, host: str
) -> None:
    async with _session(AddressPolicy()) as session:
        refused = await _refusal(session, receiver.url(host))
    assert refused.reason == "loopback"
    assert str(refused).startswith("refused: ")
    assert receiver.paths == []


@pytest.mark.asyncio
async def test_refusal_is_named_in_aiohttp_error(receiver: Receiver) -> None:
    async with _session(AddressPolicy()) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.post(receiver.url("127.0.0.1"))
    assert "refused: 127.0.0.1 is a loopback address (host 127.0.0.1)" in str(info.value)
    assert isinstance(info.value.os_error, TargetRefused)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "017700000001",
        "0x7f.1",
        "localhost",
        pytest.param("[::ffff:127.0.0.1]", marks=needs_ipv6),
        pytest.param("[::1]", marks=needs_ipv6),
    ],
)
async def test_allowed_networks_let_loopback_through(receiver: Receiver, host: str) -> None:
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8", "::1/128"])
    async with (
        _session(policy) as session,
        session.post(receiver.url(host, "/hook"), data=b"{}") as response,
    ):
        assert response.status == 200
    assert receiver.paths == ["/hook"]


@pytest.mark.asyncio
async def test_allowed_host_passes_while_its_address_stays_refused(receiver: Receiver) -> None:
    async with _session(AddressPolicy(allowed_hosts=["localhost"])) as session:
        async with session.post(receiver.url("localhost", "/engine"), data=b"{}") as response:
            assert response.status == 200
        refused = await _refusal(session, receiver.url("127.0.0.1"))
    assert refused.host == "127.0.0.1"
    assert receiver.paths == ["/engine"]


@pytest.mark.asyncio
async def test_redirect_to_a_refused_address_is_refused(receiver: Receiver) -> None:
    target = receiver.url("127.0.0.1", "/inside")
    async with _session(AddressPolicy(allowed_hosts=["localhost"])) as session:
        await _refusal(session, receiver.url("localhost", "/redirect"), params={"to": target})
    assert receiver.paths == ["/redirect"]


class _RebindingResolver(AbstractResolver):
    """Answers every name with loopback, as a rebinding DNS server would."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


@pytest.mark.asyncio
async def test_names_are_judged_by_what_they_resolve_to(receiver: Receiver) -> None:
    async with _session(AddressPolicy(), resolver=_RebindingResolver()) as session:
        refused = await _refusal(session, receiver.url("hooks.example.com"))
    assert (refused.host, refused.address) == ("hooks.example.com", "127.0.0.1")
    assert receiver.paths == []


@pytest.mark.asyncio
async def test_proxied_requests_are_refused(receiver: Receiver) -> None:
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8"])
    async with _session(policy) as session:
        refused = await _refusal(
            session, receiver.url("hooks.example.com"), proxy=receiver.url("127.0.0.1")
        )
    assert refused.reason == "proxy"
    assert receiver.paths == []
