"""The ordered path's pure parts: a delivery's key, its shard, the events to bind."""

from __future__ import annotations

import pytest

from webhook_router.jobs import Delivery
from webhook_router.ordered import key_of, ordered_event_keys, shard_of
from webhook_router.webhooks import Webhook

pytestmark = pytest.mark.timeout(10)


def delivery(parent_id: str | None) -> Delivery:
    return Delivery(
        job_id="j",
        event_id="e",
        event_at="2024-05-01T00:00:00+00:00",
        webhook_id="w1",
        webhook_name="hook",
        space="acme",
        scope_type="Space",
        scope_id="acme",
        type="User",
        action="Updated",
        parent_type="User",
        parent_id=parent_id,
        tree_group="g",
        tree_name="n",
        url="https://x.test",
        body="{}",
    )


def test_a_key_is_the_webhook_and_the_events_parent() -> None:
    assert key_of(delivery("ada")) == "w1/User/ada"
    assert key_of(delivery(None)) == "w1/User/"


def test_a_key_has_one_shard_in_range_the_same_every_time() -> None:
    keys = [f"w1/Submission/{n}" for n in range(4000)]
    first = [shard_of(k, 16) for k in keys]
    assert first == [shard_of(k, 16) for k in keys]
    assert set(first) == set(range(16))  # 4,000 keys reach every shard
    assert max(first.count(s) for s in range(16)) < 2 * 4000 / 16  # and spread


def test_only_enabled_ordered_webhooks_bind_their_events() -> None:
    def hook(name: str, *, ordered: bool, enabled: bool = True, event: str = "Updated") -> Webhook:
        return Webhook(
            name, "acme", None, name, "User", event, None, "https://x.test",
            enabled=enabled, ordered=ordered,
        )  # fmt: skip

    webhooks = [
        hook("a", ordered=True),
        hook("b", ordered=False, event="Created"),
        hook("c", ordered=True, enabled=False, event="Deleted"),
    ]
    assert ordered_event_keys(webhooks) == {"user.updated"}
