"""What the address guard will make of a webhook URL, told at save time.

Only a host written out in the URL (an IP address in any spelling the guard decodes, or
`localhost`, which is loopback by definition) is judged, with the guard's own
classification (`ssrf`) and the deployment's allowed networks: nothing is resolved and
nothing is connected to. A name is judged by the guard when a delivery resolves it. A
relative URL goes to the workflow engine and is not judged. Pure: no IO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from webhook_router.ssrf import AddressPolicy, TargetRefused, legacy_ipv4
from webhook_router.webhooks import literal_host

LOOPBACK_NAMES = ("127.0.0.1", "::1")
"""What `localhost` and `*.localhost` name (RFC 6761), whatever a resolver says."""


def _addresses(host: str) -> list[str]:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return list(LOOPBACK_NAMES)
    try:
        return [str(ipaddress.ip_address(name.split("%", 1)[0]))]
    except ValueError:
        pass
    legacy = legacy_ipv4(name)  # 127.1, 2130706433, 0x7f.1: what the guard decodes them to
    return [str(legacy)] if legacy is not None else []


def refusal(url: str, allowed_networks: Iterable[str]) -> TargetRefused | None:
    """The guard's refusal of every delivery to `url`, when its host is literal and every
    address it names is refused; None when the guard may let it through."""
    host = literal_host(url)
    if host is None:
        return None
    policy = AddressPolicy(allowed_networks)
    refusals = [policy.refusal(host, address) for address in _addresses(host)]
    if not refusals or any(r is None for r in refusals):
        return None
    return refusals[0]


def warnings(url: str, allowed_networks: Iterable[str]) -> list[str]:
    """What to tell an admin saving `url`: empty, or why every delivery will fail."""
    refused = refusal(url, allowed_networks)
    if refused is None:
        return []
    reason = refused.message.removeprefix("refused: ")
    return [
        f"every delivery will be refused: {reason}; add its network to "
        "WEBHOOK_ROUTER_ALLOWED_NETWORKS if the router may reach it"
    ]
