"""The platform's standard webhooks: one per catalogue entry, each POSTing to the run-tree
path of its tree group and name, built with `${...}` bindings so one definition serves
every form of a kapp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from webhook_router.catalogue import PLATFORM, Level
from webhook_router.trees import RUN_TREE_PREFIX

if TYPE_CHECKING:
    from webhook_router.store import Store
    from webhook_router.webhooks import Webhook

_ENCODED = {
    "Space": "Space",
    "User": "Users",
    "Team": "Teams",
    "Datastore Form": "Datastore%20Forms%20%3E%20${form('slug')}",
    "Datastore Submission": "Datastore%20Submissions%20%3E%20${form('slug')}",
    "Form": "${kapp('slug')}%20%3E%20${form('slug')}",
    "Submission": "Submissions%20%3E%20${kapp('slug')}%20%3E%20${form('slug')}",
}


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    type: str
    event: str
    url: str


def default_url(source: str, type_name: str, action: str) -> str:
    """The relative run-tree URL template of a catalogue entry."""
    group = _ENCODED[type_name]
    return f"{RUN_TREE_PREFIX}/{quote(source, safe='')}/{group}/{quote(action, safe='')}"


def default_webhooks(source: str, level: Level) -> list[Definition]:
    """The standard set for a space (space-level types) or a kapp (kapp-level types)."""
    return [
        Definition(
            f"{entry.name} {action}", entry.name, action, default_url(source, entry.name, action)
        )
        for entry in PLATFORM
        if entry.level is level
        for action in entry.actions
    ]


Created = Callable[["Store", "Webhook"], Awaitable[None]]
"""Told of each webhook made, with the store of the transaction that made it."""


async def install_defaults(
    store: Store, source: str, space: str, kapp: str | None, *, created: Created | None = None
) -> list[str]:
    """Create the standard webhooks missing from the scope; returns the names created.
    `created` is called in each creation's transaction (the admin audits it there)."""
    level = Level.KAPP if kapp is not None else Level.SPACE
    names = []
    for d in default_webhooks(source, level):
        async with store.transaction() as tx:
            webhook = await tx.insert_webhook(
                space=space,
                kapp=kapp,
                name=d.name,
                type=d.type,
                event=d.event,
                filter=None,
                url=d.url,
                auth_strategy=None,
            )
            if webhook is not None:
                if created is not None:
                    await created(tx, webhook)
                names.append(webhook.name)
    return names
