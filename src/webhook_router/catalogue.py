"""The platform's event catalogue: every webhook type, its level and its actions.

One table, read by everything else (validation, routing keys, tree paths, the meta API,
default webhooks), so that adding an action is a one-line change.

The platform's own types come first; the router's own operator events (`Webhook`:
disabled, enabled, dead-lettered) are extensions: webhooks may be defined on them like on
any other, but the platform's catalogue answers and its standard webhooks leave them out
unless asked for extensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """Where a webhook of a type is defined: on the space or on one kapp."""

    SPACE = "space"
    KAPP = "kapp"


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    level: Level
    actions: tuple[str, ...]
    entities: tuple[str, ...]
    """Entities an event of this type must carry besides `space`."""
    extension: bool = False
    """Published by the router itself, not by the platform (operator events)."""


CATALOGUE: tuple[EventType, ...] = (
    EventType("Space", Level.SPACE, ("Login Failure",), ()),
    EventType(
        "User",
        Level.SPACE,
        ("Created", "Updated", "Deleted", "Login", "Logout", "Membership Change"),
        ("user",),
    ),
    EventType(
        "Team",
        Level.SPACE,
        ("Created", "Updated", "Deleted", "Restored", "Membership Change"),
        ("team",),
    ),
    EventType(
        "Datastore Form",
        Level.SPACE,
        ("Created", "Updated", "Deleted", "Restored"),
        ("form",),
    ),
    EventType(
        "Datastore Submission",
        Level.SPACE,
        ("Created", "Updated", "Deleted", "Saved", "Submitted"),
        ("form", "submission"),
    ),
    EventType("Form", Level.KAPP, ("Created", "Updated", "Deleted", "Restored"), ("kapp", "form")),
    EventType(
        "Submission",
        Level.KAPP,
        ("Created", "Updated", "Deleted", "Saved", "Submitted", "Closed"),
        ("kapp", "form", "submission"),
    ),
    EventType("Webhook", Level.SPACE, ("Disabled", "Enabled", "Dead Lettered"), ("webhook",), True),
)
EXTENSIONS = "extensions"
"""The meta API's query parameter asking for the extensions too (`?extensions=true`)."""
PLATFORM: tuple[EventType, ...] = tuple(entry for entry in CATALOGUE if not entry.extension)
"""The platform's own catalogue, without the router's extensions."""

TYPES: dict[str, EventType] = {entry.name: entry for entry in CATALOGUE}


def routing_key(type_name: str, action: str) -> str:
    """The events exchange's routing key: `submission.submitted`, `user.membership_change`."""
    return f"{type_name}.{action}".lower().replace(" ", "_")


def entries() -> list[tuple[EventType, str]]:
    """Every (type, action) pair, in catalogue order."""
    return [(entry, action) for entry in CATALOGUE for action in entry.actions]


def types_at(level: Level, *, extensions: bool = False) -> list[str]:
    chosen = CATALOGUE if extensions else PLATFORM
    return [entry.name for entry in chosen if entry.level is level]


def events_at(level: Level, *, extensions: bool = False) -> dict[str, list[str]]:
    chosen = CATALOGUE if extensions else PLATFORM
    return {entry.name: list(entry.actions) for entry in chosen if entry.level is level}
