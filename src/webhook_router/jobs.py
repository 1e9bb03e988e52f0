"""Webhook jobs: identity, statuses and the messages that move them along.

A job is one event sent to one webhook. Its id is derived from the event id and the webhook
id, so an event delivered twice never makes a second job. Every change of a job travels as
an `Outcome` to the recorder; outcomes are ordered by `(replay, attempt, rank)` so a late or
repeated one never moves a job back.

Text from outside (an endpoint's answer, an error) is made storable before it goes into an
outcome (`storable`): NUL, which no text column can hold, becomes U+FFFD, and the job's
summary says so; a summary is at most SUMMARY_BYTES bytes of UTF-8, so that with the longest
slugs and names an index row of failed jobs stays within PostgreSQL's 2704 bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from hashlib import sha1
from operator import itemgetter
from typing import Any, TypeVar

import orjson

JOB_NAMESPACE = uuid.UUID("5b0c7c62-4f0e-4a43-9d1e-6f1f3e0b7a10")
_NAMESPACE_BYTES = JOB_NAMESPACE.bytes
T = TypeVar("T")


class Status(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


RANK: dict[str, int] = {
    Status.QUEUED: 0,
    Status.IN_PROGRESS: 1,
    Status.COMPLETE: 2,
    Status.FAILED: 2,
    Status.CANCELLED: 2,
}
"""Each status's rank, found by its text too (a status read from a message is text)."""


SUMMARY_BYTES = 800
"""Longest summary in bytes of UTF-8: it is kept in an index of failed jobs."""
REPLACEMENT = "\ufffd"


def storable(text: str | None) -> tuple[str | None, int]:
    """`text` with every NUL replaced by U+FFFD, and how many were replaced."""
    if text is None or "\x00" not in text:
        return text, 0
    return text.replace("\x00", REPLACEMENT), text.count("\x00")


def bounded_summary(summary: str) -> str:
    """A summary cut to SUMMARY_BYTES bytes of UTF-8, the cut marked with an ellipsis."""
    encoded = summary.encode("utf-8", errors="replace")
    if len(encoded) <= SUMMARY_BYTES:
        return summary
    return encoded[: SUMMARY_BYTES - 3].decode("utf-8", errors="ignore") + "\u2026"


def without_contents(outcome: Outcome, reason: str) -> Outcome:
    """What of an outcome the database refused can still be recorded: the job and its
    status, without the request, the answer, the headers or an odd status code, the
    summary saying why."""
    note = bounded_summary(storable(f"{outcome.summary or outcome.status}; {reason}")[0] or "")
    status = outcome.response_status
    status = status if status is not None and 100 <= status <= 999 else None
    attempt = outcome.attempt
    if attempt is not None:
        attempt = replace(
            attempt,
            response_status=status,
            response_content=None,
            error=note,
            request_headers={},
        )
    return replace(
        outcome,
        delivery=replace(outcome.delivery, body=""),
        summary=note,
        run_id=None,
        response_status=status,
        response_content=None,
        attempt=attempt,
    )


@dataclass(frozen=True, slots=True)
class Unreadable:
    """One item of a deliveries or results message that is not what it must be, as it came,
    with why: it is dead-lettered alone, its neighbours are handled."""

    item: Any
    reason: str


def _items(raw: bytes) -> list[Any]:
    """The items of a message: a JSON array (an object is one item). Raises ValueError for
    a message that is not JSON at all (no item of it can be told from another)."""
    data = orjson.loads(raw)
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ValueError("an empty message")
    return items


def _strings(value: object) -> bool:
    """Whether `value` is an object of strings (a delivery's headers, a trace context)."""
    return isinstance(value, dict) and (
        not value or all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


def _reader(cls: type[T]) -> Callable[[Any], T]:
    """How a message's JSON object becomes a `cls`: by position when it holds every field
    and no other (what this version writes: binding 25 keywords costs more than the rest of
    the decoding), else by keyword, so that a message of an older version (fields missing,
    given their defaults) is read and a field unknown or missing is refused as ever."""
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    values = itemgetter(*names)
    count = len(names)

    def read(data: Any) -> T:
        if type(data) is dict and len(data) == count:
            try:
                given = values(data)
            except KeyError:
                return cls(**data)
            return cls(*given)
        return cls(**data)

    return read


def job_id(event_id: str, webhook_id: str) -> str:
    """The UUID version 5 of the event and webhook ids in JOB_NAMESPACE, as text: what
    `uuid.uuid5` makes, without its objects."""
    digest = bytearray(sha1(_NAMESPACE_BYTES + f"{event_id}\n{webhook_id}".encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # variant RFC 4122
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST to make: everything the worker needs, and the job it belongs to."""

    job_id: str
    event_id: str
    event_at: str
    webhook_id: str
    webhook_name: str
    space: str
    scope_type: str
    scope_id: str
    type: str
    action: str
    parent_type: str
    parent_id: str | None
    tree_group: str
    tree_name: str
    url: str
    body: str
    auth_strategy: str | None = None
    to_engine: bool = False
    """Sent to the workflow engine (a relative URL): never signed, always allowed."""
    headers: dict[str, str] = field(default_factory=dict)
    """The webhook's custom headers, rendered for this event. Credentials are never here:
    the worker looks them up by webhook id."""
    attempt: int = 1
    replay: int = 0
    created_at: str = ""
    trace: dict[str, str] = field(default_factory=dict)
    """The W3C trace context of the router's span for this job (empty: not traced); each
    job carries its own, a message of deliveries holding jobs of many events."""
    trace_context: bool = True
    """Whether the webhook's POSTs carry `traceparent`/`tracestate` (its `traceContext`)."""

    def __post_init__(self) -> None:
        if not _strings(self.headers):
            raise TypeError("a delivery's headers must be an object of strings")
        if not _strings(self.trace):
            raise TypeError("a delivery's trace must be an object of strings")

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> Delivery:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a delivery must be a JSON object")
        return _delivery(data)

    @classmethod
    def decode_batch(cls, raw: bytes) -> list[Delivery]:
        """A deliveries message: a JSON array of deliveries (an object is one delivery)."""
        data = orjson.loads(raw)
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(item, dict) for item in items):
            raise ValueError("a deliveries message must be an array of JSON objects")
        return [_delivery(item) for item in items]

    @classmethod
    def decode_each(cls, raw: bytes) -> list[Delivery | Unreadable]:
        """A deliveries message, item by item: each a Delivery or Unreadable."""
        decoded: list[Delivery | Unreadable] = []
        for item in _items(raw):
            try:
                if not isinstance(item, dict):
                    raise TypeError("a delivery must be a JSON object")
                decoded.append(_delivery(item))
            except (TypeError, ValueError) as exc:
                decoded.append(Unreadable(item, f"bad delivery: {exc}"))
        return decoded

    def next_attempt(self) -> Delivery:
        return replace(self, attempt=self.attempt + 1)


_delivery = _reader(Delivery)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP attempt gave."""

    number: int
    started_at: str
    duration_ms: float
    response_status: int | None
    response_content: str | None
    error: str | None
    request_headers: dict[str, str] = field(default_factory=dict)


_attempt = _reader(Attempt)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's new state, for the recorder. Carries the job's fields so that it can be
    recorded whichever outcome of a job arrives first."""

    delivery: Delivery
    status: str
    summary: str | None = None
    retry_count: int = 0
    scheduled_at: str | None = None
    run_id: str | None = None
    response_status: int | None = None
    response_content: str | None = None
    attempt: Attempt | None = None
    disable_webhook: str | None = None
    trace: dict[str, str] = field(default_factory=dict)
    """The trace context of the span that made this outcome (the router's, an attempt's),
    parent of its record span."""

    def __post_init__(self) -> None:
        if not _strings(self.trace):
            raise TypeError("an outcome's trace must be an object of strings")

    @property
    def attempts(self) -> int:
        """Attempts made in the job's current replay: none for a job that failed before
        sending (its filter or URL failed)."""
        return self.attempt.number if self.attempt else 0

    @property
    def version(self) -> tuple[int, int, int]:
        try:
            rank = RANK[self.status]
        except (KeyError, TypeError):
            raise ValueError(f"{self.status!r} is not a valid Status") from None
        return (self.delivery.replay, self.attempts, rank)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        data = dict(data)
        data["delivery"] = _delivery(data["delivery"])
        if data.get("attempt") is not None:
            data["attempt"] = _attempt(data["attempt"])
        return _outcome(data)

    @classmethod
    def decode_each(cls, raw: bytes) -> list[Outcome | Unreadable]:
        """A results message, item by item: each an Outcome or Unreadable."""
        decoded: list[Outcome | Unreadable] = []
        for item in _items(raw):
            try:
                if not isinstance(item, dict):
                    raise TypeError("an outcome must be a JSON object")
                outcome = cls.from_dict(item)
                outcome.version  # noqa: B018  (an unknown status raises here, not later)
                decoded.append(outcome)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                decoded.append(Unreadable(item, f"bad outcome: {exc!r}"))
        return decoded

    @classmethod
    def decode_batch(cls, raw: bytes) -> list[Outcome]:
        """A results message: a JSON array of outcomes (a single object is one outcome)."""
        data = orjson.loads(raw)
        items = data if isinstance(data, list) else [data]
        return [cls.from_dict(item) for item in items]


_outcome = _reader(Outcome)
