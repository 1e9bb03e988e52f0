"""Operator events: what the router itself says about a webhook (disabled, enabled, one of
its deliveries dead-lettered), published as events of the catalogue's `Webhook` type at
space level through the events exchange, so admins attach webhooks to them (a chat channel,
a pager) like to any other event.

The body carries the webhook as the API shows it (`models.Webhook`: never its secret nor
its credentials). An operator event about a webhook never triggers that same webhook
(`about_itself`, applied when jobs are planned), so a webhook on `Webhook Disabled` that is
disabled itself cannot loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from aio_pika.abc import AbstractExchange

from webhook_router import broker
from webhook_router.catalogue import routing_key
from webhook_router.deadletters import DeadLetter
from webhook_router.events import Event, now_timestamp
from webhook_router.models import Webhook as WebhookView
from webhook_router.webhooks import Webhook

TYPE = "Webhook"
DISABLED = "Disabled"
ENABLED = "Enabled"
DEAD_LETTERED = "Dead Lettered"
_NAMESPACE = uuid.UUID("4b0d3f52-6a1e-4c8f-9d27-5e8a1c3b7f60")
"""Namespace of operator event ids: the same change announced twice is the same event."""


def operator_event(
    action: str, webhook: Webhook, *, about: str = "", extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The event's body; its id is derived from the webhook, the action, when the webhook
    last changed and `about` (e.g. a dead letter's id), so a repeat is recognised."""
    stamp = webhook.updated_at.isoformat() if webhook.updated_at else ""
    event_id = uuid.uuid5(_NAMESPACE, f"{webhook.id}\n{action}\n{stamp}\n{about}")
    return {
        "event": {
            "id": str(event_id),
            "type": TYPE,
            "action": action,
            "timestamp": now_timestamp(),
        },
        "space": {"slug": webhook.space},
        "webhook": WebhookView.of(webhook).wire(),
        **(extra or {}),
    }


async def publish_operator_event(
    events: AbstractExchange,
    action: str,
    webhook: Webhook,
    *,
    about: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Publish through the events exchange (`webhook.disabled`, ...) and wait for the
    broker's confirm. `extra`: more top-level keys, e.g. the dead letter's reason."""
    body = operator_event(action, webhook, about=about, extra=extra)
    await broker.publish(
        events, orjson.dumps(body), routing_key(TYPE, action), message_id=body["event"]["id"]
    )


async def publish_dead_lettered(
    events: AbstractExchange, webhook: Webhook, *, dead_letter_id: str, reason: str
) -> None:
    """Announce that a delivery of `webhook` was dead-lettered (for the dead-letter
    consumer to call once the dead letter is stored)."""
    await publish_operator_event(
        events,
        DEAD_LETTERED,
        webhook,
        about=dead_letter_id,
        extra={"deadLetter": {"id": dead_letter_id, "reason": reason}},
    )


def of_operator_event(body: bytes) -> bool:
    """Whether a dead message is a delivery (or an outcome) of an operator event. Its death
    is not announced: two operator webhooks that both fail would otherwise announce each
    other's dead letters forever."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    item = data[0] if isinstance(data, list) and data else data
    if isinstance(item, dict) and isinstance(item.get("delivery"), dict):  # an outcome
        item = item["delivery"]
    return isinstance(item, dict) and item.get("type") == TYPE


class WebhookFinder(Protocol):
    async def get_webhook_by_id(self, webhook_id: str) -> Webhook | None: ...


async def announce_dead_letter(
    events: AbstractExchange, webhooks: WebhookFinder, letter: DeadLetter
) -> bool:
    """Publish `Webhook Dead Lettered` for a stored dead letter about a webhook that still
    exists; whether it was published (not for a message about no webhook, nor for a
    delivery of an operator event)."""
    if letter.webhook_id is None or of_operator_event(letter.body):
        return False
    webhook = await webhooks.get_webhook_by_id(letter.webhook_id)
    if webhook is None:
        return False
    await publish_dead_lettered(events, webhook, dead_letter_id=letter.id, reason=letter.reason)
    return True


def about_itself(event: Event, webhook_id: str) -> bool:
    """Whether `event` is an operator event about the webhook `webhook_id`."""
    if event.type != TYPE:
        return False
    subject = event.body.get("webhook")
    return isinstance(subject, Mapping) and str(subject.get("id")) == webhook_id
