"""Operator events as published: valid events of the catalogue's `Webhook` type (so the
router routes them like any other), routed by type and action, the webhook in the body
without its secret or credentials, and never about the webhook they would trigger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest
from aio_pika.abc import AbstractExchange

from webhook_router.events import parse_event
from webhook_router.operator_events import (
    DEAD_LETTERED,
    DISABLED,
    ENABLED,
    about_itself,
    operator_event,
    publish_dead_lettered,
    publish_operator_event,
)
from webhook_router.testing import MemoryExchange
from webhook_router.webhooks import Webhook

pytestmark = pytest.mark.timeout(10)

HOOK = Webhook(
    id="0b6f7c1e-0000-4000-8000-000000000001",
    space="acme",
    kapp=None,
    name="Users to CRM",
    type="User",
    event="Created",
    filter=None,
    url="https://crm.example.com/hooks",
    auth_strategy="Bearer",
    enabled=False,
    auth={"token": "tok.en-secret"},
    secret="whsec_c2VjcmV0",
    disabled_reason="410 Gone",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 2, tzinfo=UTC),
)


@pytest.mark.asyncio(loop_scope="session")
async def test_each_action_is_a_valid_event_routed_by_type_and_action() -> None:
    events = MemoryExchange("events")
    for action in (DISABLED, ENABLED):
        await publish_operator_event(cast(AbstractExchange, events), action, HOOK)
    await publish_dead_lettered(
        cast(AbstractExchange, events), HOOK, dead_letter_id="dl-1", reason="poison"
    )
    keys = [key for key, _ in events.published]
    assert keys == ["webhook.disabled", "webhook.enabled", "webhook.dead_lettered"]
    bodies: list[dict[str, Any]] = events.decoded()
    for body in bodies:
        event = parse_event(body, fill=False)
        assert (event.type, event.space, event.kapp) == ("Webhook", "acme", None)
        assert body["webhook"]["id"] == HOOK.id and body["webhook"]["disabledReason"] == "410 Gone"
        text = orjson.dumps(body).decode()
        assert "tok.en-secret" not in text and "whsec_" not in text and '"auth"' not in text
    assert [b["event"]["action"] for b in bodies] == [DISABLED, ENABLED, DEAD_LETTERED]
    assert bodies[2]["deadLetter"] == {"id": "dl-1", "reason": "poison"}


def test_the_same_change_is_the_same_event_and_another_is_not() -> None:
    first = operator_event(DISABLED, HOOK)["event"]["id"]
    assert operator_event(DISABLED, HOOK)["event"]["id"] == first
    assert operator_event(ENABLED, HOOK)["event"]["id"] != first
    assert (
        operator_event(DEAD_LETTERED, HOOK, about="a")["event"]["id"]
        != (operator_event(DEAD_LETTERED, HOOK, about="b")["event"]["id"])
    )


def test_an_operator_event_is_about_its_webhook_only() -> None:
    event = parse_event(operator_event(DISABLED, HOOK), fill=False)
    assert about_itself(event, HOOK.id)
    assert not about_itself(event, "another")
    user = parse_event(
        {
            "event": {"type": "User", "action": "Created", "id": "e", "timestamp": 1},
            "space": {"slug": "acme"},
            "user": {"username": "u"},
            "webhook": {"id": HOOK.id},
        },
        fill=False,
    )
    assert not about_itself(user, HOOK.id), "only operator events are about a webhook"
