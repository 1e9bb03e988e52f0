"""Save-time judgement of a webhook URL: its shape (webhooks.url_shape_problem) and what the
address guard will make of a host written out in it (targets), without resolving anything."""

from __future__ import annotations

import socket

import pytest

from webhook_router.ssrf import legacy_ipv4
from webhook_router.targets import refusal, warnings
from webhook_router.webhooks import literal_host, url_shape_problem

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    "url",
    [
        "/run-tree/x",
        "${form('slug')}",
        "http://hooks.example.com/x",
        "HTTPS://Hooks.Example.com",
        "https://${form('slug')}.example.com/x",
        "https://${values('host')}/x",
        "http://[::1]:8080/x",
    ],
)
def test_urls_that_can_be_sent_pass(url: str) -> None:
    assert url_shape_problem(url) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("example/path", "must start with '/'"),
        ("example/${form('slug')}", "must start with '/'"),
        ("http:x", "must start with '/'"),
        ("https:/x", "must start with '/'"),
        ("http://", "has no host"),
        ("http:///x", "has no host"),
        ("http://user@/x", "has no host"),
        ("http://x:port/", "cannot be read"),
        ("http://[::1/", "cannot be read"),
    ],
)
def test_urls_that_can_never_be_sent_are_named(url: str, words: str) -> None:
    problem = url_shape_problem(url)
    assert problem is not None and words in problem


def test_a_host_is_literal_only_when_written_out_whole() -> None:
    assert literal_host("http://Localhost:9/x") == "localhost"
    assert literal_host("http://[::1]/x") == "::1"
    assert literal_host("https://x.example.com?a=${values('a')}") == "x.example.com"
    assert literal_host("https://x.${values('d')}/") is None
    assert literal_host("/x") is None


@pytest.mark.parametrize(
    ("url", "address", "reason"),
    [
        ("http://localhost:9/x", "127.0.0.1", "loopback"),
        ("http://api.localhost/x", "127.0.0.1", "loopback"),
        ("http://127.1/x", "127.0.0.1", "loopback"),
        ("http://2130706433/x", "127.0.0.1", "loopback"),
        ("http://017700000001/x", "127.0.0.1", "loopback"),
        ("http://0x7f.1/x", "127.0.0.1", "loopback"),
        ("http://0X7F000001/x", "127.0.0.1", "loopback"),
        ("http://0xa.0x1.2.3/x", "10.1.2.3", "private"),
        ("http://[::1]/x", "::1", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "::ffff:7f00:1", "loopback"),
        ("http://10.1.2.3/x", "10.1.2.3", "private"),
        ("http://169.254.169.254/x", "169.254.169.254", "link-local"),
    ],
)
def test_a_written_out_host_the_guard_refuses_is_told(url: str, address: str, reason: str) -> None:
    refused = refusal(url, [])
    assert refused is not None and (refused.address, refused.reason) == (address, reason)
    [warning] = warnings(url, [])
    assert warning.startswith("every delivery will be refused: ")


def test_allowed_networks_names_and_paths_are_not_told() -> None:
    assert warnings("http://127.0.0.1/x", ["127.0.0.0/8"]) == []
    # localhost is loopback on both families: told only while neither is allowed
    assert warnings("http://localhost/x", ["127.0.0.0/8"]) == []
    assert warnings("http://localhost/x", ["::1/128"]) == []
    assert warnings("http://hooks.example.com/x", []) == []
    assert warnings("http://8.8.8.8/x", []) == []
    assert warnings("/x", []) == []
    assert warnings("http://${values('host')}/x", []) == []


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("127.0.0.1", None),  # a dotted quad is an address already, not a legacy spelling
        ("0x7g.1", None),
        ("127.1.", None),
        ("example.com", None),
        ("cafe", None),
        ("", None),
    ],
)
def test_legacy_spellings_decode_to_what_the_system_resolver_makes_of_them(
    host: str, address: str | None
) -> None:
    decoded = legacy_ipv4(host)
    assert (str(decoded) if decoded else None) == address
    if address is not None:  # the C library's own reading, which getaddrinfo shares
        assert socket.inet_ntoa(socket.inet_aton(host)) == address
