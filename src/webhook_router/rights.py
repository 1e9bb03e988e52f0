"""Who may do what: the roles of API tokens, the rights each role holds, the principal a
token stands for, and the right each API operation needs.

A token acts as a principal: a name, a role and the spaces it reaches (None: every
space). The API checks the operation's right first (403 naming the right missing), then
the space of the path (404, the same answer whether the space holds anything or not, so a
token learns nothing of the spaces it does not reach). Every operation's right is declared
once, in OPERATION_RIGHTS; an operation missing there is refused to every token, and a test
over the OpenAPI document fails until it is classified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Right(StrEnum):
    READ = "read"
    """GET webhooks (without their secrets), jobs, dead letters, metrics, the catalogue."""
    SECRETS = "read-secrets"
    """See a webhook's signing secret."""
    AUDIT = "read-audit"
    """Read the audit trail of the token's spaces."""
    WRITE = "write"
    """Create, change, delete, enable, disable webhooks, rotate secrets, retry, replay."""
    PUBLISH = "publish"
    """POST events for the token's spaces."""


class Role(StrEnum):
    ADMIN = "admin"
    READER = "reader"
    PUBLISHER = "publisher"


ROLE_RIGHTS: dict[Role, frozenset[Right]] = {
    Role.ADMIN: frozenset(Right),
    Role.READER: frozenset({Right.READ}),
    Role.PUBLISHER: frozenset({Right.PUBLISH}),
}

OPERATION_RIGHTS: dict[str, Right] = {
    "metrics": Right.READ,
    "publishEvent": Right.PUBLISH,
    "webhookTypes": Right.READ,
    "webhookEvents": Right.READ,
    "listWebhooks": Right.READ,
    "createWebhook": Right.WRITE,
    "getWebhook": Right.READ,
    "updateWebhook": Right.WRITE,
    "deleteWebhook": Right.WRITE,
    "rotateWebhookSecret": Right.WRITE,
    "listWebhookJobs": Right.READ,
    "replayWebhookJobs": Right.WRITE,
    "getWebhookJob": Right.READ,
    "retryWebhookJob": Right.WRITE,
    "listDeadLetters": Right.READ,
    "getDeadLetter": Right.READ,
    "requeueDeadLetter": Right.WRITE,
    "requeueDeadLetters": Right.WRITE,
    "listAuditLog": Right.AUDIT,
}
"""The right each operation needs, by operation id without its scope suffix (`InSpace`,
`OfKapp`, `OfKappInSpace`: one entry covers the four scopes of an operation)."""

SCOPE_SUFFIXES = ("OfKappInSpace", "OfKapp", "InSpace")


def right_of(operation_id: str) -> Right | None:
    """The right an operation needs; None when it was never declared."""
    if operation_id in OPERATION_RIGHTS:
        return OPERATION_RIGHTS[operation_id]
    for suffix in SCOPE_SUFFIXES:
        base = operation_id.removesuffix(suffix)
        if base != operation_id and base in OPERATION_RIGHTS:
            return OPERATION_RIGHTS[base]
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token acts as. `spaces` None: every space."""

    name: str
    role: Role
    spaces: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """What admin actions record as having acted: `token:NAME`."""
        return f"token:{self.name}"

    def may(self, right: Right) -> bool:
        return right in ROLE_RIGHTS[self.role]

    def reaches(self, space: str) -> bool:
        return self.spaces is None or space in self.spaces

    def visible(self, spaces: Iterable[str]) -> list[str]:
        """The spaces of `spaces` this principal reaches, in their order."""
        return [s for s in spaces if self.reaches(s)]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token as `tokens list` shows it: never the token."""

    name: str
    role: Role
    spaces: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


SETTINGS_TOKEN = "settings"
"""The name of the tokens of WEBHOOK_ROUTER_API_TOKEN: admins of every space."""


def missing_right(right: Right, principal: Principal) -> str:
    """The 403 message: the right missing and the role that lacks it."""
    return f"this token ({principal.role.value} role) lacks the right '{right.value}'"


def space_list(spaces: frozenset[str] | None) -> str:
    return "every space" if spaces is None else ", ".join(sorted(spaces))
