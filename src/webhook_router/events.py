"""The event envelope platform services publish, and its validation.

The envelope is also the body webhooks receive, so validation checks what the router needs
(type and action from the catalogue, the entities the type implies, the slugs tree paths are
made of) and leaves every other key exactly as it came.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook_router.catalogue import TYPES, Level, routing_key
from webhook_router.wording import plain, where


class EventInvalid(ValueError):
    """An event the router cannot deliver; `errors` name each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Slugged(_Entity):
    slug: str = Field(min_length=1)


class _Header(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: str
    action: str
    timestamp: datetime

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TYPES:
            raise ValueError(f"unknown type {value!r}; expected one of {', '.join(TYPES)}")
        return value

    @model_validator(mode="after")
    def _known_action(self) -> _Header:
        actions = TYPES[self.type].actions
        if self.action not in actions:
            raise ValueError(
                f"unknown action {self.action!r} for type {self.type!r}; "
                f"expected one of {', '.join(actions)}"
            )
        return self


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    event: _Header
    space: _Slugged
    kapp: _Slugged | None = None
    form: _Slugged | None = None
    submission: _Entity | None = None
    user: _Entity | None = None
    team: _Entity | None = None

    @model_validator(mode="after")
    def _entities_present(self) -> _Envelope:
        missing = [name for name in TYPES[self.event.type].entities if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"a {self.event.type} event needs {', '.join(missing)}"
                f" (missing: {', '.join(missing)})"
            )
        return self


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: its header fields and the exact body webhooks receive."""

    id: str
    type: str
    action: str
    timestamp: datetime
    body: dict[str, Any]

    @property
    def space(self) -> str:
        return str(self.body["space"]["slug"])

    @property
    def kapp(self) -> str | None:
        """The kapp slug for kapp-level types, None for space-level ones."""
        if TYPES[self.type].level is Level.SPACE:
            return None
        return str(self.body["kapp"]["slug"])

    @property
    def routing_key(self) -> str:
        return routing_key(self.type, self.action)

    def encode(self) -> bytes:
        return orjson.dumps(self.body)


def now_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_event(raw: bytes | str | Mapping[str, Any], *, fill: bool = True) -> Event:
    """Validate an envelope; with `fill`, a missing `event.id`/`event.timestamp` is filled in.

    Raises EventInvalid naming each bad field.
    """
    if isinstance(raw, bytes | str):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventInvalid([{"field": "body", "message": f"not JSON: {exc}"}]) from None
    else:
        data = dict(raw)
    if not isinstance(data, dict):
        raise EventInvalid([{"field": "body", "message": "must be a JSON object"}])
    header = data.get("event")
    if fill and isinstance(header, dict):
        if "id" not in header or header["id"] is None:
            header = {**header, "id": str(uuid.uuid4())}
        if "timestamp" not in header or header["timestamp"] is None:
            header = {**header, "timestamp": now_timestamp()}
        data["event"] = header
    try:
        envelope = _Envelope.model_validate(data)
    except ValidationError as exc:
        raise EventInvalid(
            [{"field": where(err), "message": plain(err)} for err in exc.errors()]
        ) from None
    timestamp = envelope.event.timestamp
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return Event(
        id=envelope.event.id,
        type=envelope.event.type,
        action=envelope.event.action,
        timestamp=timestamp,
        body=data,
    )
