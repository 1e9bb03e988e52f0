"""The admin actions on the in-memory store and broker: what each refuses, what each stores
and what a retry or a replay publishes. The same actions run on the real services in the
API, console and CLI tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from webhook_router.admin import Admin, Conflict, NotFound
from webhook_router.jobs import Delivery, Outcome, Status, job_id
from webhook_router.models import InputInvalid, WebhookChange, decode_token
from webhook_router.settings import Settings
from webhook_router.store import JobFilter
from webhook_router.testing import MemoryExchange, MemoryStore, memory_topology
from webhook_router.webhooks import Webhook

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(10)]

SPACE = "acme"
USERS = {"name": "users", "type": "User", "event": "Created", "url": "/run-tree/users"}


class Setup:
    def __init__(self) -> None:
        self.settings = Settings(engine_url="http://127.0.0.1:9", signature_grace=60)
        self.store = MemoryStore()
        self.topology = memory_topology(self.settings.names)
        self.admin = Admin(self.settings, self.store, topology=self.topology)

    def published(self, exchange: Any) -> list[Any]:
        assert isinstance(exchange, MemoryExchange)
        return exchange.decoded()

    async def webhook(self, **fields: Any) -> Webhook:
        change = WebhookChange.parse(USERS | fields)
        return await self.admin.create_webhook(SPACE, None, change, by="test")

    async def failed_job(self, webhook: Webhook, n: int = 0, status: str = Status.FAILED) -> str:
        event = {
            "event": {"type": "User", "action": "Created", "id": f"e{n}", "timestamp": 1},
            "space": {"slug": SPACE},
            "user": {"username": f"u{n}"},
        }
        delivery = Delivery(
            job_id=job_id(f"e{n}", webhook.id),
            event_id=f"e{n}",
            event_at=datetime(2024, 5, 1, tzinfo=UTC).isoformat(),
            webhook_id=webhook.id,
            webhook_name=webhook.name,
            space=SPACE,
            scope_type="Space",
            scope_id=SPACE,
            type="User",
            action="Created",
            parent_type="User",
            parent_id=f"u{n}",
            tree_group="Users",
            tree_name="Created",
            url="http://127.0.0.1:9/x",
            body=orjson.dumps(event).decode(),
        )
        at = (datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n)).isoformat()
        await self.store.record([Outcome(delivery, status, summary="404", scheduled_at=at)])
        return delivery.job_id


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def test_a_webhook_is_created_once_per_name_and_scope(setup: Setup) -> None:
    created = await setup.webhook()
    assert (created.name, created.enabled, created.secret is not None) == ("users", True, True)
    with pytest.raises(Conflict, match="already exists here"):
        await setup.webhook()
    assert await setup.admin.find_webhook(SPACE, None, "users") == created
    with pytest.raises(NotFound):
        await setup.admin.find_webhook(SPACE, "services", "users")


async def test_a_webhook_missing_fields_or_unusable_is_refused_naming_each_field(
    setup: Setup,
) -> None:
    with pytest.raises(InputInvalid) as missing:
        await setup.admin.create_webhook(SPACE, None, WebhookChange.parse({}), by="test")
    assert {e["field"] for e in missing.value.errors} == {"name", "type", "event", "url"}
    with pytest.raises(InputInvalid) as bad:
        await setup.webhook(filter="values('a' ==", event="Closed")
    messages = {e["field"]: e["message"] for e in bad.value.errors}
    assert messages["filter"].startswith("at position 13: expected"), "positions kept"
    assert "expected one of" in messages["event"]
    assert await setup.store.all_webhooks() == [], "nothing stored"


async def test_update_rename_clash_enable_rotate_and_delete(setup: Setup) -> None:
    users = await setup.webhook()
    other = await setup.webhook(name="other")
    with pytest.raises(Conflict):
        await setup.admin.update_webhook(other, WebhookChange.parse({"name": "users"}), by="t")
    saved = await setup.admin.update_webhook(
        users, WebhookChange.parse({"url": "/run-tree/v2", "filter": None}), by="t"
    )
    assert (saved.url, saved.name, saved.type) == ("/run-tree/v2", "users", "User")
    off = await setup.admin.set_enabled(saved, False, by="t")
    assert off.enabled is False
    rotated = await setup.admin.rotate_secret(off, None, by="t")
    assert rotated.previous_secret == users.secret and rotated.secret != users.secret
    assert rotated.previous_secret_until is not None
    grace = rotated.previous_secret_until - datetime.now(UTC)
    assert timedelta(seconds=55) < grace <= timedelta(seconds=60), "the settings' grace"
    await setup.admin.delete_webhook(rotated, by="t")
    with pytest.raises(NotFound):
        await setup.admin.webhook_in_space(SPACE, users.id)


async def test_a_retry_publishes_the_event_again_through_the_current_url(setup: Setup) -> None:
    webhook = await setup.webhook()
    failed = await setup.admin.find_job(await setup.failed_job(webhook), SPACE)
    await setup.admin.update_webhook(webhook, WebhookChange.parse({"url": "/fixed"}), by="t")
    result = await setup.admin.retry_job(failed, by="test")
    assert (result.status, result.url) == (Status.QUEUED, "http://127.0.0.1:9/fixed")
    [[delivery]] = setup.published(setup.topology.deliveries)
    assert delivery["replay"] == 1 and delivery["job_id"] == str(failed.id)
    [[queued]] = setup.published(setup.topology.results)
    assert queued["status"] == Status.QUEUED


async def test_a_retry_is_refused_for_a_complete_job_or_a_deleted_webhook(setup: Setup) -> None:
    webhook = await setup.webhook()
    done = await setup.admin.find_job(await setup.failed_job(webhook, 1, Status.COMPLETE))
    with pytest.raises(Conflict, match="only Failed or Cancelled"):
        await setup.admin.retry_job(done, by="test")
    failed = await setup.admin.find_job(await setup.failed_job(webhook, 2))
    await setup.admin.delete_webhook(webhook, by="test")
    with pytest.raises(Conflict, match="deleted"):
        await setup.admin.retry_job(failed, by="test")
    assert setup.published(setup.topology.deliveries) == [], "nothing published"
    with pytest.raises(NotFound):
        await setup.admin.find_job(str(failed.id), "elsewhere")


async def test_replay_counts_dry_then_queues_each_failed_job_of_the_window(setup: Setup) -> None:
    webhook = await setup.webhook()
    for n in range(4):
        await setup.failed_job(webhook, n)
    start = datetime(2024, 5, 1, 0, 1, tzinfo=UTC)
    end = datetime(2024, 5, 1, 0, 3, tzinfo=UTC)
    count = await setup.admin.replay(webhook, start=start, end=end, dry_run=True, by="t")
    assert count == 2 and setup.published(setup.topology.deliveries) == []
    assert await setup.admin.replay(webhook, start=None, end=None, dry_run=False, by="t") == 4
    assert len(setup.published(setup.topology.deliveries)) == 4


async def test_job_pages_end_with_no_token_and_miss_nothing(setup: Setup) -> None:
    webhook = await setup.webhook()
    made = {await setup.failed_job(webhook, n) for n in range(5)}
    seen: list[str] = []
    query = JobFilter(space=SPACE, limit=2)
    while True:
        page = await setup.admin.jobs(query)
        seen += [str(j.id) for j in page.jobs]
        if page.next_token is None:
            break
        query = JobFilter(space=SPACE, limit=2, after=decode_token(page.next_token))
    assert len(seen) == 5 and set(seen) == made


async def test_refused_changes_leave_no_audit_row_and_pages_follow_each_other(
    setup: Setup,
) -> None:
    created = await setup.webhook(
        authStrategy="Basic", auth={"username": "jane", "password": "unit-secret"}
    )
    with pytest.raises(Conflict):
        await setup.webhook()
    bad = WebhookChange.parse({"event": "Exploded"})
    with pytest.raises(InputInvalid):
        await setup.admin.update_webhook(created, bad, by="test")
    await setup.admin.set_enabled(created, False, by="test")
    await setup.admin.rotate_secret(created, None, by="test")
    first = await setup.admin.audit_log(SPACE, limit=2)
    assert first.next_token is not None
    rest = await setup.admin.audit_log(SPACE, limit=2, after=decode_token(first.next_token))
    assert rest.next_token is None
    entries = [*first.entries, *rest.entries]
    assert [e.action for e in entries] == [
        "webhook.secret_rotated",
        "webhook.disabled",
        "webhook.created",
    ]
    assert entries[-1].after is not None and "auth" not in entries[-1].after
    assert "unit-secret" not in repr(entries) and "whsec_" not in repr(entries)
    assert await setup.admin.audit_log("elsewhere") == type(first)([], None)


async def test_enabling_and_disabling_announce_operator_events_without_secrets() -> None:
    setup = Setup()
    hook = await setup.webhook(authStrategy="Bearer", auth={"token": "tok.en-1"}, rateLimit=5)
    assert hook.rate_limit == 5.0
    await setup.store.disable_webhook(hook.id, "410 Gone")
    disabled = await setup.store.get_webhook_by_id(hook.id)
    assert disabled is not None
    enabled = await setup.admin.set_enabled(disabled, True, by="test")
    assert enabled.enabled and enabled.disabled_reason is None
    again = await setup.admin.set_enabled(enabled, True, by="test")
    off = await setup.admin.update_webhook(again, WebhookChange.parse({"enabled": False}), by="t")
    assert not off.enabled
    keys = [key for key, _ in setup.topology.events.published]  # type: ignore[attr-defined]
    assert keys == ["webhook.enabled", "webhook.disabled"], "one event per change, none else"
    bodies = setup.published(setup.topology.events)
    assert [b["event"]["action"] for b in bodies] == ["Enabled", "Disabled"]
    assert all(b["event"]["type"] == "Webhook" and b["space"] == {"slug": SPACE} for b in bodies)
    assert bodies[0]["webhook"]["id"] == hook.id and bodies[0]["webhook"]["rateLimit"] == 5.0
    text = orjson.dumps(bodies).decode()
    assert "tok.en-1" not in text and hook.secret not in text and '"auth"' not in text
