"""The event envelope platform services publish, and its validation.

The envelope is also the body webhooks receive, so validation checks what the router needs
(type and action from the catalogue, the entities the type implies, the slugs tree paths are
made of) and leaves every other key exactly as it came.

It also refuses what the job log could not store, so that an accepted event's jobs can
always be recorded: the keys the log indexes (event id, slugs, submission id, username,
team name) are valid Unicode without NUL within KEY_LIMITS (the event id also within the
255 bytes of an AMQP message id), and the timestamp lies within
EARLIEST..LATEST. The router and the HTTP ingest both validate here.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook_router.catalogue import TYPES, Level, routing_key
from webhook_router.wording import plain, where

SLUG_MAX = 128
"""Longest slug (space, kapp, form, team) in characters."""
KEY_MAX = 255
"""Longest submission id, username or team name in characters."""
EVENT_ID_MAX = 200
EVENT_ID_BYTES = 255
"""An event id also travels as the AMQP message id: at most 255 bytes."""
KEY_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("space", "slug", SLUG_MAX),
    ("kapp", "slug", SLUG_MAX),
    ("form", "slug", SLUG_MAX),
    ("team", "slug", SLUG_MAX),
    ("submission", "id", KEY_MAX),
    ("user", "username", KEY_MAX),
    ("team", "name", KEY_MAX),
)
"""The keys the job log indexes (tree group, parent, scope) and their longest length."""
EVENT_NAMESPACE = uuid.UUID("0f7b1c8e-3a52-4d6e-9b1f-2c4d5e6f7a81")
"""Namespace of the ids derived for events published without one."""
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""The event timestamps accepted: one day inside what a timestamp can hold everywhere it
goes (Python's years 1 to 9999 and PostgreSQL's range), whatever its offset."""


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

    id: str = Field(min_length=1, max_length=EVENT_ID_MAX)
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
    webhook: _Entity | None = None

    @model_validator(mode="after")
    def _entities_present(self) -> _Envelope:
        missing = [name for name in TYPES[self.event.type].entities if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"a {self.event.type} event needs {', '.join(missing)}"
                f" (missing: {', '.join(missing)})"
            )
        return self


_PLAIN_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9])?"
)
"""The timestamp events carry (`2026-11-27T10:15:30.123Z`), which `datetime.fromisoformat`
reads exactly as the models do."""
_SLUGGED = ("kapp", "form")
_ENTITIES = ("submission", "user", "team", "webhook")
"""The optional entities of `_Envelope`, with a slug and without."""


def _plain(data: dict[str, Any]) -> tuple[str, str, str, datetime] | None:
    """Id, type, action and timestamp of an envelope the models would plainly accept, read
    without them (the router's every event); None for anything else, which the models then
    judge, so that each error keeps their wording."""
    header = data.get("event")
    space = data.get("space")
    if type(header) is not dict or type(space) is not dict:
        return None
    id_ = header.get("id")
    type_ = header.get("type")
    action = header.get("action")
    stamp = header.get("timestamp")
    if type(id_) is not str or not 0 < len(id_) <= EVENT_ID_MAX:
        return None
    if type(type_) is not str or type(action) is not str:
        return None
    entry = TYPES.get(type_)
    if entry is None or action not in entry.actions:
        return None
    if type(stamp) is not str or _PLAIN_TIMESTAMP.fullmatch(stamp) is None:
        return None
    slug = space.get("slug")
    if type(slug) is not str or not slug:
        return None
    for name in _SLUGGED:
        value = data.get(name)
        if value is not None and (
            type(value) is not dict or type(value.get("slug")) is not str or not value["slug"]
        ):
            return None
    for name in _ENTITIES:
        value = data.get(name)
        if value is not None and type(value) is not dict:
            return None
    for name in entry.entities:
        if data.get(name) is None:
            return None
    try:
        timestamp = datetime.fromisoformat(stamp)
    except ValueError:  # a day or an hour that does not exist
        return None
    return id_, type_, action, timestamp


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: its header fields and the exact body webhooks receive."""

    id: str
    type: str
    action: str
    timestamp: datetime
    body: dict[str, Any]
    filled: tuple[str, ...] = ()
    """The header fields filled in because the event came without them (`id`, `timestamp`)."""

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


_STORED_KEYS = (("event", "id", EVENT_ID_MAX), *KEY_LIMITS)
"""Every key the job log stores, the event id among them, with its longest length."""


def _unstorable(data: Mapping[str, Any], timestamp: datetime) -> list[dict[str, str]]:
    """What of a valid envelope the job log could not store, by field."""
    errors: list[dict[str, str]] = []
    for entity, key, limit in _STORED_KEYS:
        part = data.get(entity)
        value = part.get(key) if type(part) is dict or isinstance(part, Mapping) else None
        if value is None:
            continue
        text = str(value)
        try:
            size = len(text) if text.isascii() else len(text.encode())
        except UnicodeEncodeError:
            message = "must be valid Unicode (no lone surrogates)"
        else:
            message = ""
            if "\x00" in text:
                message = "must not contain NUL (U+0000)"
            elif len(text) > limit:
                message = f"at most {limit} characters"
            elif entity == "event" and size > EVENT_ID_BYTES:
                message = f"at most {EVENT_ID_BYTES} bytes in UTF-8 (the AMQP message id)"
        if message:
            errors.append({"field": f"{entity}.{key}", "message": message})
    try:
        in_range = EARLIEST <= timestamp.astimezone(UTC) <= LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        errors.append(
            {
                "field": "event.timestamp",
                "message": f"must lie between {EARLIEST.date().isoformat()} and "
                f"{LATEST.date().isoformat()} (UTC)",
            }
        )
    return errors


def iso_timestamp(moment: datetime) -> str:
    """`2026-11-27T10:15:30.123Z`: a timestamp as events carry it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_timestamp() -> str:
    return iso_timestamp(datetime.now(UTC))


def derived_id(body: bytes, routing_key: str) -> str:
    """The id of an event published without `event.id`: a UUID derived from the routing key
    and the exact body, so that the same message seen again (a redelivery, or a publisher
    sending it again) is the same event. Not the AMQP message id: aio-pika stamps a random
    one on every message published without one, so it would differ between two sends."""
    digest = hashlib.sha256(routing_key.encode() + b"\n" + body).hexdigest()
    return str(uuid.uuid5(EVENT_NAMESPACE, digest))


def parse_event(
    raw: bytes | str | Mapping[str, Any],
    *,
    fill: bool = True,
    default_id: str | Callable[[], str] | None = None,
    default_timestamp: str | None = None,
) -> Event:
    """Validate an envelope; with `fill`, a missing `event.id`/`event.timestamp` is filled
    in: with `default_id` (a string, or a function computed only when the id is missing;
    else a random UUID) and `default_timestamp` (else now).

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
    filled: list[str] = []
    if fill and isinstance(header, dict):
        if "id" not in header or header["id"] is None:
            given = default_id() if callable(default_id) else default_id
            header = {**header, "id": given or str(uuid.uuid4())}
            filled.append("id")
        if "timestamp" not in header or header["timestamp"] is None:
            header = {**header, "timestamp": default_timestamp or now_timestamp()}
            filled.append("timestamp")
        data["event"] = header
    header_fields = _plain(data)
    if header_fields is None:
        try:
            envelope = _Envelope.model_validate(data)
        except ValidationError as exc:
            raise EventInvalid(
                [{"field": where(err), "message": plain(err)} for err in exc.errors()]
            ) from None
        e = envelope.event
        header_fields = (e.id, e.type, e.action, e.timestamp)
    id_, type_, action, timestamp = header_fields
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    unstorable = _unstorable(data, timestamp)
    if unstorable:
        raise EventInvalid(unstorable)
    return Event(
        id=id_,
        type=type_,
        action=action,
        timestamp=timestamp,
        body=data,
        filled=tuple(filled),
    )
