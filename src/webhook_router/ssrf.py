"""SSRF guard: refuse webhook targets that resolve into internal or non-routable networks.

Webhook URLs come from admins, but their hosts can resolve anywhere, and DNS answers can
change between a check and a connect. The decision is therefore taken on the resolved
address, by the HTTP client (http_client.py), right before the socket is opened.

The one exemption is the workflow engine, and only for what the router sends it itself: a
delivery whose webhook URL is relative, to the engine's own scheme, host and port
(`EngineExemption`). An absolute URL is checked like any other, even when it names the
engine's host or its very address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_CLASSES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), name)
    for net, name in (
        ("255.255.255.255/32", "broadcast"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "6to4-relay"),
        ("198.18.0.0/15", "benchmark"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_CLASSES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), name)
    for net, name in (
        ("64:ff9b:1::/48", "private"),
        ("100::/64", "reserved"),
        ("2001:2::/48", "benchmark"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "private"),
        ("fec0::/10", "private"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _low_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _classify_v4(address: ipaddress.IPv4Address) -> str | None:
    for network, name in _V4_CLASSES:
        if address in network:
            return name
    return None if address.is_global else "reserved"


def _classify_v6(address: ipaddress.IPv6Address) -> str | None:
    address = ipaddress.IPv6Address(int(address))
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address in _V4_MAPPED or address in _NAT64:
        return _classify_v4(_low_ipv4(address))
    if address in _V4_COMPATIBLE or address in _V4_TRANSLATED:
        return _classify_v4(_low_ipv4(address)) or "reserved"
    if address.sixtofour is not None:
        return _classify_v4(address.sixtofour)
    for network, name in _V6_CLASSES:
        if address in network:
            return name
    if address not in _GLOBAL_UNICAST or not address.is_global:
        return "reserved"
    return None


def classify(address: IPAddress) -> str | None:
    """Name the special-purpose class of `address`, or None when it is publicly routable.

    IPv6 forms that carry an IPv4 address (mapped, NAT64, compatible, 6to4) are judged by
    the IPv4 address they reach.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _classify_v4(address)
    return _classify_v6(address)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class TargetRefused(Exception):
    """A webhook target the policy will not connect to."""

    def __init__(self, host: str, address: str, reason: str, message: str | None = None) -> None:
        if message is None:
            message = f"refused: {address} is {_article(reason)} {reason} address (host {host})"
        super().__init__(message)
        self.message = message
        self.host = host
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.address, self.reason, self.message))


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _parse_address(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])


class AddressPolicy:
    """Which resolved addresses a delivery may connect to.

    `allowed_networks` opens internal ranges the deployment really delivers to;
    `allowed_hosts` names hosts (such as the workflow engine) trusted whatever they
    resolve to.
    """

    def __init__(
        self,
        allowed_networks: Iterable[str | IPNetwork] = (),
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(net) for net in allowed_networks
        )
        self.allowed_hosts: frozenset[str] = frozenset(_normalise_host(h) for h in allowed_hosts)

    def _is_allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            plain = ipaddress.IPv6Address(int(address))
            candidates = [plain]
            if plain.ipv4_mapped is not None:
                candidates.append(plain.ipv4_mapped)
        return any(
            candidate in network for candidate in candidates for network in self.allowed_networks
        )

    def refusal(self, host: str, address: str) -> TargetRefused | None:
        """Return why connecting to `address` for `host` is refused, or None if allowed."""
        if _normalise_host(host) in self.allowed_hosts:
            return None
        try:
            parsed = _parse_address(address)
        except ValueError:
            return TargetRefused(host, address, "invalid")
        reason = classify(parsed)
        if reason is None or self._is_allowed(parsed):
            return None
        return TargetRefused(host, address, reason)

    def check(self, host: str, address: str) -> None:
        """Raise TargetRefused unless connecting to `address` for `host` is allowed."""
        refusal = self.refusal(host, address)
        if refusal is not None:
            raise refusal

    def filter(self, host: str, addresses: Sequence[str]) -> list[str]:
        """Keep the allowed addresses `host` resolved to; refuse when none is left."""
        kept: list[str] = []
        first_refusal: TargetRefused | None = None
        for address in addresses:
            refusal = self.refusal(host, address)
            if refusal is None:
                kept.append(address)
            elif first_refusal is None:
                first_refusal = refusal
        if first_refusal is not None and not kept:
            raise first_refusal
        return kept


Origin = tuple[str, str, int | None]
"""Scheme, host and port, as the HTTP client will connect to them."""


@functools.lru_cache(maxsize=4096)
def origin_of(url: str) -> Origin:
    """The origin a URL is sent to, parsed as the HTTP client parses it; ValueError if none."""
    parsed = URL(url)
    if not parsed.absolute or not parsed.host:
        raise ValueError(f"{url!r} is not an absolute URL")
    return (parsed.scheme.lower(), _normalise_host(parsed.host), parsed.port)


class EngineExemption:
    """Which deliveries skip the address check: those the router addressed to the workflow
    engine (a relative webhook URL, `to_engine`), when they go to the engine's own scheme,
    host and port. Nothing else, whatever host it names."""

    def __init__(self, engine_url: str) -> None:
        self.origin = origin_of(engine_url)

    @property
    def host(self) -> str:
        return self.origin[1]

    def covers(self, url: str, *, to_engine: bool) -> bool:
        if not to_engine:
            return False
        try:
            return origin_of(url) == self.origin
        except ValueError:
            return False


_NUMERIC_PART = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Decode numeric IPv4 spellings other than a dotted quad (`2130706433`, `127.1`, octal
    `017700000001`, hex `0x7f.1`).

    The system resolver accepts them, so they must be judged by the address they mean.
    """
    if not host or not all(_NUMERIC_PART.fullmatch(part) for part in host.split(".")):
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
