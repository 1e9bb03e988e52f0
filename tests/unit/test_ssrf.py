import ipaddress
import pickle

import pytest

from webhook_router.settings import Settings
from webhook_router.ssrf import (
    AddressPolicy,
    EngineExemption,
    TargetRefused,
    classify,
)
from webhook_router.store import Store
from webhook_router.worker import Worker

CLASSIFIED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.10", "documentation"),
    ("203.0.113.10", "documentation"),
    ("198.18.0.1", "benchmark"),
    ("198.19.255.255", "benchmark"),
    ("192.88.99.1", "6to4-relay"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmark"),
    ("2001:0:4136:e378::1", "reserved"),
    ("100::1", "reserved"),
    ("5f00::1", "reserved"),
    ("64:ff9b:1::a00:5", "private"),
    ("4000::1", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.5", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:100.64.0.1", "cgnat"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("64:ff9b::192.168.0.1", "private"),
    ("::127.0.0.1", "loopback"),
    ("::10.0.0.5", "private"),
    ("::8.8.8.8", "reserved"),
    ("::ffff:0:8.8.8.8", "reserved"),
    ("::ffff:0:127.0.0.1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a00:5::1", "private"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "172.32.0.1",
    "100.128.0.1",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "expected"), CLASSIFIED)
def test_classify_special_addresses(address: str, expected: str) -> None:
    assert classify(ipaddress.ip_address(address)) == expected


@pytest.mark.parametrize("address", PUBLIC)
def test_classify_public_addresses(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


def test_refusal_message_and_attributes() -> None:
    with pytest.raises(TargetRefused) as info:
        AddressPolicy().check("intranet.example", "10.0.0.5")
    refused = info.value
    assert str(refused) == "refused: 10.0.0.5 is a private address (host intranet.example)"
    assert (refused.host, refused.address, refused.reason) == (
        "intranet.example",
        "10.0.0.5",
        "private",
    )
    assert "an unspecified address" in str(AddressPolicy().refusal("h", "0.0.0.0"))


def test_refusal_survives_pickling() -> None:
    refused = TargetRefused("h.example", "127.0.0.1", "loopback")
    copy = pickle.loads(pickle.dumps(refused))
    assert (copy.host, copy.address, copy.reason, str(copy)) == (
        refused.host,
        refused.address,
        refused.reason,
        str(refused),
    )


def test_public_address_is_allowed_by_default() -> None:
    policy = AddressPolicy()
    assert policy.refusal("example.com", "93.184.215.14") is None
    assert policy.refusal("example.com", "2606:4700:4700::1111") is None
    policy.check("example.com", "93.184.215.14")
    # the same policy does refuse: a private address of the same host
    assert policy.refusal("example.com", "10.0.0.1") is not None


def test_unparseable_address_is_refused() -> None:
    with pytest.raises(TargetRefused, match="invalid"):
        AddressPolicy().check("example.com", "not-an-ip")


def test_allowed_networks_open_only_their_range() -> None:
    policy = AddressPolicy(allowed_networks=["10.1.0.0/16", ipaddress.ip_network("fd00::/8")])
    policy.check("svc", "10.1.2.3")
    policy.check("svc", "fd00::2")
    for address in ("10.2.0.1", "127.0.0.1", "fc00::1", "::1"):
        with pytest.raises(TargetRefused):
            policy.check("svc", address)


def test_allowed_ipv4_network_covers_its_mapped_form() -> None:
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8"])
    policy.check("svc", "::ffff:127.0.0.1")
    policy.check("svc", "::ffff:7f00:2")
    with pytest.raises(TargetRefused):
        policy.check("svc", "::1")
    with pytest.raises(TargetRefused):
        policy.check("svc", "64:ff9b::127.0.0.1")


def test_allowed_network_must_be_a_network() -> None:
    with pytest.raises(ValueError, match="host bits set"):
        AddressPolicy(allowed_networks=["10.0.0.5/8"])
    assert AddressPolicy(allowed_networks=["10.0.0.5"]).refusal("h", "10.0.0.5") is None


def test_allowed_hosts_skip_the_address_check_for_that_host_only() -> None:
    policy = AddressPolicy(allowed_hosts=["Engine.Internal."])
    policy.check("engine.internal", "10.0.0.5")
    policy.check("ENGINE.internal.", "127.0.0.1")
    with pytest.raises(TargetRefused):
        policy.check("other.internal", "10.0.0.5")


def test_filter_drops_refused_addresses_and_keeps_the_rest() -> None:
    addresses = ["10.0.0.5", "93.184.215.14"]
    assert AddressPolicy().filter("mixed.example", addresses) == ["93.184.215.14"]


def test_filter_refuses_when_nothing_is_left() -> None:
    with pytest.raises(TargetRefused, match=r"127\.0\.0\.1 is a loopback address"):
        AddressPolicy().filter("rebound.example", ["127.0.0.1", "::1"])


# --- the engine exemption: only relative webhook URLs, only to the engine's own origin -----

ENGINE = "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("url", "to_engine", "exempt"),
    [
        (ENGINE + "/app/api/v1/run-tree/a/b/c", True, True),
        ("HTTP://127.0.0.1:8081/x", True, True),
        # an absolute webhook URL is never exempt, whatever it names
        (ENGINE + "/x", False, False),
        ("http://127.0.0.1:9000/", False, False),
        # a delivery marked for the engine but not at its own scheme, host and port
        ("http://127.0.0.1:9000/x", True, False),
        ("https://127.0.0.1:8081/x", True, False),
        ("http://127.0.0.1/x", True, False),
        ("http://localhost:8081/x", True, False),
        ("http://127.0.0.1:8081@evil.example/x", True, False),
        ("/x", True, False),
        ("not a url", True, False),
    ],
)
def test_the_engine_exemption_covers_relative_deliveries_to_its_origin_only(
    url: str, to_engine: bool, exempt: bool
) -> None:
    assert EngineExemption(ENGINE).covers(url, to_engine=to_engine) is exempt


def test_the_engine_exemption_knows_default_ports_and_case() -> None:
    exemption = EngineExemption("HTTP://Engine.Internal")
    assert exemption.covers("http://engine.internal:80/x", to_engine=True)
    assert not exemption.covers("http://engine.internal:8080/x", to_engine=True)


def test_the_workers_guard_checks_the_engines_host_like_any_other() -> None:
    """The policy every absolute URL goes through no longer trusts the engine's host: with
    the engine on 127.0.0.1, `http://127.0.0.1:<any port>/` is refused as loopback."""
    settings = Settings(engine_url=ENGINE, allowed_networks=[])
    worker = Worker(settings, Store(None))  # type: ignore[arg-type]  # no database is used
    refusal = worker.policy.refusal("127.0.0.1", "127.0.0.1")
    assert refusal is not None and refusal.reason == "loopback"
    # only the engine's own client lets its host through
    assert worker.engine_policy.refusal("127.0.0.1", "127.0.0.1") is None
    assert worker.engine_policy.refusal("127.0.0.2", "127.0.0.2") is not None
