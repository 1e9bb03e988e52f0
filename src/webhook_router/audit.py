"""The audit trail: who changed what through the API, the console or the CLI.

An entry names the actor (the token's name, or the front end acting), the space, the
action, its target and the resource before and after, never its secrets: the signing
secrets are not part of a shown webhook, and its write-only fields (models.py) are dropped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from webhook_router.models import Webhook as WebhookShown
from webhook_router.models import WebhookChange
from webhook_router.webhooks import Webhook


class Action(StrEnum):
    """Every action the trail records; the names are the API's and the database's."""

    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_ENABLED = "webhook.enabled"
    WEBHOOK_DISABLED = "webhook.disabled"
    SECRET_ROTATED = "webhook.secret_rotated"
    SECRETS_RESEALED = "secrets.resealed"
    JOB_RETRIED = "job.retried"
    JOBS_REPLAYED = "jobs.replayed"
    DEAD_LETTER_REQUEUED = "dead_letter.requeued"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the trail."""

    id: uuid.UUID
    at: datetime
    actor: str
    space: str | None
    """None: a change of no one space (every webhook's keys, a token for every space)."""
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def webhook_target(webhook: Webhook) -> str:
    """A webhook as the API's paths name it within its space."""
    scope = f"kapps/{webhook.kapp}/" if webhook.kapp is not None else ""
    return f"{scope}webhooks/{webhook.name}"


def shown(webhook: Webhook) -> dict[str, Any]:
    """The webhook as a reader of the trail sees it: its API form, which holds no secret,
    less every write-only field."""
    wire = WebhookShown.of(webhook).wire()
    for field in WebhookChange.WRITE_ONLY:
        wire.pop(field, None)
    return wire
