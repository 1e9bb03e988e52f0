"""End to end through the delivery HTTP client against servers on loopback only."""

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from webhook_router.http_client import Answer, Client, PostFailed
from webhook_router.ssrf import AddressPolicy

pytestmark = [pytest.mark.timeout(30)]


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


def _client(policy: AddressPolicy) -> Client:
    return Client(policy, connect_timeout=5, request_timeout=5, limit=65536, user_agent="test")


async def _post(policy: AddressPolicy, url: str) -> Answer:
    client = _client(policy)
    try:
        return await client.post(url, b"{}", {"Content-Type": "application/json"})
    finally:
        await client.close()


async def _refusal(policy: AddressPolicy, url: str) -> PostFailed:
    with pytest.raises(PostFailed) as info:
        await _post(policy, url)
    assert info.value.refused, f"not refused by the guard: {info.value}"
    return info.value


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
    refused = await _refusal(AddressPolicy(), receiver.url(host))
    assert "is a loopback address" in str(refused)
    assert str(refused).startswith("refused: ")
    assert receiver.paths == []


@pytest.mark.asyncio
async def test_a_refusal_names_the_address_and_the_host(receiver: Receiver) -> None:
    refused = await _refusal(AddressPolicy(), receiver.url("127.0.0.1"))
    assert str(refused) == "refused: 127.0.0.1 is a loopback address (host 127.0.0.1)"


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
    answer = await _post(policy, receiver.url(host, "/hook"))
    assert answer.status == 200
    assert receiver.paths == ["/hook"]


@pytest.mark.asyncio
async def test_allowed_host_passes_while_its_address_stays_refused(receiver: Receiver) -> None:
    client = _client(AddressPolicy(allowed_hosts=["localhost"]))
    try:
        answer = await client.post(receiver.url("localhost", "/engine"), b"{}", {})
        assert answer.status == 200
        with pytest.raises(PostFailed) as info:
            await client.post(receiver.url("127.0.0.1"), b"{}", {})
    finally:
        await client.close()
    assert info.value.refused
    assert str(info.value).endswith("(host 127.0.0.1)")
    assert receiver.paths == ["/engine"]


@pytest.mark.asyncio
async def test_a_redirect_is_an_answer_not_followed(receiver: Receiver) -> None:
    """A 302 to a refused address is the answer itself: nothing is sent to its Location."""
    target = receiver.url("127.0.0.1", "/inside")
    url = receiver.url("localhost", f"/redirect?to={target}")
    answer = await _post(AddressPolicy(allowed_hosts=["localhost"]), url)
    assert answer.status == 302
    assert receiver.paths == ["/redirect"]


@pytest.mark.asyncio
async def test_names_are_judged_by_what_they_resolve_to(receiver: Receiver) -> None:
    """`localhost` is a name the resolver answers with loopback, as a rebinding DNS server
    would answer any name: the address decides, not the name."""
    refused = await _refusal(AddressPolicy(), receiver.url("localhost"))
    assert "(host localhost)" in str(refused)
    assert receiver.paths == []
