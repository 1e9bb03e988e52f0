"""Dead letters: what a role could not handle, read from the `dead` queue into rows that
admins list and requeue and analysts query, and sent back to where it died on request.

The `dead` queue stays the buffer: its consumer (`DeadLetterKeeper`, run by the recorder)
acknowledges a message only once its row is committed, so while PostgreSQL is away the
messages wait in the queue. A row's id is the `x-dead-letter-id` header the role stamped
when it dead-lettered the message (`dead_headers`); one the broker dead-lettered itself (a
work queue's delivery limit) gets an id derived from its bytes and headers. Either way a
redelivered message is stored once, and a message that dies again after a requeue is a
new row.

Nothing of a message is refused: its body is kept as bytes, whatever they are; its headers
and the text taken from it (ids, the preview) have NUL replaced, as no text column can
hold it.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypedDict

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage

from webhook_router.events import derived_id
from webhook_router.jobs import REPLACEMENT, Delivery
from webhook_router.topology import RECORD_KEY, Names

log = structlog.get_logger(__name__)

ID_HEADER = "x-dead-letter-id"
DEAD_AT_HEADER = "x-dead-at"
REQUEUED_HEADER = "x-requeued-from"
DEAD_HEADERS = frozenset(
    {
        "x-reason",
        "x-failed-in",
        "x-routing-key",
        ID_HEADER,
        DEAD_AT_HEADER,
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
        "x-delivery-count",
    }
)
"""Headers about a death, dropped from a message sent back (it may die again, afresh)."""
REDELIVERY_HEADERS = frozenset({"x-delivery-count"})
"""Headers the broker changes on each redelivery: not part of a message's identity."""
ROLES = ("router", "worker", "recorder")
"""The roles whose messages can die, each with the place to send them back to."""
PREVIEW_CHARS = 300
REASON_CHARS = 1000
TEXT_CHARS = 1000
NAMESPACE = uuid.UUID("8f0d6c3e-2b7a-4c55-9a61-3d2e4f5a6b7c")


def dead_headers(role: str, reason: str, routing_key: str | None) -> dict[str, Any]:
    """The headers a role puts on what it dead-letters: why, where, when, and the id its
    row will have."""
    headers: dict[str, Any] = {
        "x-reason": reason[:REASON_CHARS],
        "x-failed-in": role,
        ID_HEADER: str(uuid.uuid4()),
        DEAD_AT_HEADER: datetime.now(UTC).isoformat(),
    }
    if routing_key:
        headers["x-routing-key"] = routing_key
    return headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead message, as stored: `body` is empty and `headers` too in a list's rows."""

    id: str
    role: str
    reason: str
    dead_at: datetime
    preview: str
    event_id: str | None = None
    webhook_id: str | None = None
    webhook_name: str | None = None
    space: str | None = None
    routing_key: str | None = None
    message_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    requeued_at: datetime | None = None
    requeue_count: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> DeadLetter:
        values = {k: row[k] for k in row.keys() if k in cls.__dataclass_fields__}  # noqa: SIM118
        values["id"] = str(values["id"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """The dead letter list's filters, all optional; `after` and `limit` page it."""

    role: str | None = None
    reason: str | None = None
    """Text the reason contains, any case, wildcards taken literally."""
    start: datetime | None = None
    end: datetime | None = None
    not_requeued: bool = False
    limit: int = 25
    after: tuple[datetime, str] | None = None
    spaces: frozenset[str] | None = None
    """Only dead letters of these spaces (a token's reach); None: every one, also those of
    no known space."""

    def reaches(self, letter: DeadLetter) -> bool:
        return self.spaces is None or letter.space in self.spaces


# a dead message into a row


def text(value: object, limit: int = TEXT_CHARS) -> str:
    """Any value as storable text: NUL replaced, at most `limit` characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).replace("\x00", REPLACEMENT)[:limit]


def plain(value: Any) -> Any:
    """A header value as JSON a jsonb column takes (AMQP tables hold bytes, times,
    decimals; text may hold NUL)."""
    if isinstance(value, Mapping):
        return {text(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return text(value, 100_000)


def role_of_queue(names: Names, queue: str) -> str | None:
    """The role that consumes a work queue."""
    if queue == names.router:
        return "router"
    if queue in names.deliver_queues():
        return "worker"
    if queue == names.record:
        return "recorder"
    return None


def _optional_text(value: object) -> str | None:
    return text(value, 200) if isinstance(value, str) and value else None


class About(TypedDict, total=False):
    event_id: str | None
    webhook_id: str | None
    webhook_name: str | None
    space: str | None


def _about(body: bytes, routing_key: str | None) -> About:
    """The event, webhook and space a message is about, as far as its body tells: an
    event, a delivery or an outcome (or a list of them: its first)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    item = data[0] if isinstance(data, list) and data else data
    if not isinstance(item, dict):
        return {}
    if isinstance(item.get("delivery"), dict):  # an outcome
        item = item["delivery"]
    header = item.get("event")
    if isinstance(header, dict):  # an event
        space = item.get("space")
        event_id = header.get("id") or derived_id(body, routing_key or "")
        return {
            "event_id": _optional_text(event_id),
            "space": _optional_text(space.get("slug") if isinstance(space, dict) else None),
        }
    return {
        "event_id": _optional_text(item.get("event_id")),
        "webhook_id": _optional_text(item.get("webhook_id")),
        "webhook_name": _optional_text(item.get("webhook_name")),
        "space": _optional_text(item.get("space")),
    }


def _derived_id(body: bytes, headers: Mapping[str, Any], message_id: str | None) -> str:
    """The id of a message dead-lettered without one: the same bytes and headers, the
    same id (the broker's death records carry their time, so a second death differs)."""
    kept = {k: v for k, v in headers.items() if k not in REDELIVERY_HEADERS}
    digest = hashlib.sha256(body)
    digest.update(orjson.dumps([message_id, kept], option=orjson.OPT_SORT_KEYS))
    return str(uuid.uuid5(NAMESPACE, digest.hexdigest()))


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return None


def read(
    names: Names,
    body: bytes,
    raw_headers: Mapping[str, Any] | None,
    *,
    message_id: str | None = None,
    now: datetime | None = None,
) -> DeadLetter:
    """A message of the `dead` queue as a row; never fails, whatever the message holds."""
    headers: dict[str, Any] = plain(dict(raw_headers or {}))
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    role = headers.get("x-failed-in")
    reason = headers.get("x-reason")
    routing_key = headers.get("x-routing-key")
    if not isinstance(role, str) and death:
        queue = text(death.get("queue", ""))
        role = role_of_queue(names, queue) or "broker"
        reason = f"the broker dead-lettered it from {queue}: {text(death.get('reason', ''))}"
        keys = death.get("routing-keys")
        if isinstance(keys, list) and keys:
            routing_key = keys[0]
    given = headers.get(ID_HEADER)
    try:
        letter_id = str(uuid.UUID(given)) if isinstance(given, str) else None
    except ValueError:
        letter_id = None
    routing_key = _optional_text(routing_key)
    return DeadLetter(
        id=letter_id or _derived_id(body, headers, message_id),
        role=text(role or "unknown", 50),
        reason=text(reason or "no reason given", REASON_CHARS),
        dead_at=(
            _time(headers.get(DEAD_AT_HEADER))
            or _time(death.get("time"))
            or now
            or datetime.now(UTC)
        ),
        preview=text(body, PREVIEW_CHARS),
        routing_key=routing_key,
        message_id=_optional_text(message_id),
        headers=headers,
        body=body,
        **_about(body, routing_key),
    )


# a row back to where it died


class NotRequeued(ValueError):
    """The dead letter cannot be sent back; the message says why."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """Where and what to publish to send a dead letter back."""

    exchange: str
    """The Topology attribute of the exchange: `events`, `deliveries` or `results`."""
    routing_key: str
    body: bytes
    headers: dict[str, Any]


def _again(item: Any) -> Any:
    """A delivery sent back starts a new replay at attempt 1, as a job retried does: its
    attempts never collide with the ones recorded, and it gets the whole schedule."""
    if not isinstance(item, dict):
        return item
    try:
        delivery = Delivery(**item)
    except (TypeError, ValueError):
        return item
    return replace(delivery, attempt=1, replay=delivery.replay + 1)


def requeue_plan(names: Names, letter: DeadLetter) -> Requeue:
    """Where a dead letter goes back to: the exchange of the role that failed it, with its
    routing key (a worker's: its webhook's, so a sharded delivery finds its shard)."""
    headers = {k: v for k, v in letter.headers.items() if k not in DEAD_HEADERS}
    headers[REQUEUED_HEADER] = letter.id
    if letter.role == "router":
        return Requeue("events", letter.routing_key or "", letter.body, headers)
    if letter.role == "recorder":
        return Requeue("results", RECORD_KEY, letter.body, headers)
    if letter.role == "worker":
        body = letter.body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict | list):
            items = data if isinstance(data, list) else [data]
            body = orjson.dumps([_again(item) for item in items])
        if letter.webhook_id is not None:
            key = names.delivery_key(letter.webhook_id)
        else:
            key = letter.routing_key or ""
        return Requeue("deliveries", key, body, headers)
    raise NotRequeued(f"no role {letter.role!r} to send it back to")


# the consumer


class Shelf(Protocol):
    async def keep_dead_letter(self, letter: DeadLetter) -> bool:
        """Store the row unless it is there; whether it was new."""


class KeeperStopped(Exception):
    """The keeper stopped while it waited for the database."""


class DeadLetterKeeper:
    """Moves the `dead` queue into the `dead_letters` table, one message at a time: each
    acknowledged only after its row is committed; while the database is away it waits,
    the message unacknowledged (and, the broker's prefetch being spent, the rest queued)."""

    def __init__(
        self,
        store: Shelf,
        names: Names,
        refused: Callable[[BaseException], bool],
        announce: Callable[[DeadLetter], Awaitable[object]] | None = None,
    ) -> None:
        """`refused`: whether an error is the database refusing the row's values (else it
        is taken for the database being away, and waited out). `announce`: what to do once
        a new dead letter is stored (publish the operator event), best effort."""
        self.store = store
        self.names = names
        self.refused = refused
        self.announce = announce
        self.database_ok = True
        self.stopped = False

    def stop(self) -> None:
        """Stop waiting for the database: what is in hand stays unacknowledged and goes
        back to the queue with the connection."""
        self.stopped = True

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        letter = read(self.names, message.body, message.headers, message_id=message.message_id)
        try:
            await self.keep(letter)
        except KeeperStopped:
            return
        except Exception:
            log.exception("dead letter not stored, left in the queue", id=letter.id)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def keep(self, letter: DeadLetter) -> None:
        """Where a dead letter becomes a row: stored (waiting while the database is away)
        and logged. A row the database refuses is stored again without its headers, the
        reason saying why. Whatever else a dead letter sets off belongs here, after the
        row is stored."""
        delay = 0.5
        while True:
            try:
                stored = await self.store.keep_dead_letter(letter)
                break
            except Exception as exc:
                if self.refused(exc):
                    if not letter.headers:
                        raise
                    log.warning("dead letter refused, stored without headers", error=repr(exc))
                    note = f"{letter.reason} (headers not stored: {exc!r})"
                    letter = replace(letter, headers={}, reason=text(note))
                    continue
                if self.stopped:
                    raise KeeperStopped from None
                if self.database_ok:
                    log.warning("database unavailable, holding dead letters", error=repr(exc))
                self.database_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.database_ok = True
        if stored:
            log.info(
                "dead letter stored",
                id=letter.id,
                role=letter.role,
                reason=letter.reason,
                event_id=letter.event_id,
                webhook=letter.webhook_name,
            )
            if self.announce is not None:
                try:
                    await self.announce(letter)
                except Exception as exc:  # the row is kept; the news is best effort
                    log.warning("dead letter not announced", id=letter.id, error=repr(exc))
