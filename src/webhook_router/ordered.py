"""Ordered delivery per key, what the sequencer (routers) and the holders (workers) share:
the key of a delivery, the queues and exchange of the ordered path, and its own broker link.

    events (type.action of ordered webhooks) -> ordered (quorum, single active consumer)
    deliveries.ordered (direct, shard number)  -> deliver.ordered.0 .. M-1 (quorum, SAC)

The sequencer picks a key's shard by hashing the key (`shard_of`), so the path needs no
broker plugin.

Both ends use a plain (not robust) connection: once the broker dropped it, nothing more can
be published or acknowledged on it, and nothing is resumed on a restored channel; the role
connects again and starts afresh (docs/ordering.md).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from webhook_router import broker
from webhook_router.catalogue import routing_key
from webhook_router.jobs import Delivery
from webhook_router.topology import DELIVERY_LIMIT, Names
from webhook_router.webhooks import Webhook

log = structlog.get_logger(__name__)

REDELIVERED = "x-redelivered"
"""Header of a shard message the sequencer published again (its event was redelivered)."""
TICK = "x-tick"
"""Header of a tick: a message with no delivery, so an idle shard still reaches a holder."""


def key_of(delivery: Delivery) -> str:
    """A delivery's key: its webhook and its event's parent."""
    return f"{delivery.webhook_id}/{delivery.parent_type}/{delivery.parent_id or ''}"


def shard_of(key: str, shards: int) -> int:
    """The shard a key's deliveries go to: the same in every process and every run."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def ordered_event_keys(webhooks: Iterable[Webhook]) -> set[str]:
    """The event routing keys ordered webhooks take: what the `ordered` queue is bound to."""
    return {routing_key(w.type, w.event) for w in webhooks if w.enabled and w.ordered}


def _arguments(names: Names) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass(frozen=True, slots=True)
class OrderedTopology:
    events: AbstractExchange
    results: AbstractExchange
    ordered: AbstractQueue
    deliveries: AbstractExchange
    shards: tuple[AbstractQueue, ...]


async def declare_ordered(channel: AbstractChannel, names: Names) -> OrderedTopology:
    """The ordered path's queues and exchanges (idempotent); the others exist already."""
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    results = await channel.declare_exchange(
        names.results, aio_pika.ExchangeType.DIRECT, durable=True
    )
    ordered = await channel.declare_queue(names.ordered, durable=True, arguments=_arguments(names))
    deliveries = await channel.declare_exchange(
        names.ordered_deliveries, aio_pika.ExchangeType.DIRECT, durable=True
    )
    shards = []
    for index, name in enumerate(names.ordered_queues()):
        queue = await channel.declare_queue(name, durable=True, arguments=_arguments(names))
        await queue.bind(deliveries, routing_key=str(index))
        shards.append(queue)
    return OrderedTopology(events, results, ordered, deliveries, tuple(shards))


async def connect_plain(urls: Sequence[str], name: str) -> AbstractConnection:
    """A connection to the first reachable node, never restored once lost."""
    last: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(
                url, client_properties={"connection_name": name}, timeout=10
            )
        except Exception as exc:
            last = exc
    assert last is not None
    raise last


CLOSE_TIMEOUT = 5.0
"""How long closing an ordered-delivery connection waits for the broker's answers."""


async def close_quietly(connection: AbstractConnection | None) -> None:
    """Close a connection that may be broken already; its errors, and a broker that does
    not answer within CLOSE_TIMEOUT (broker.within), are not the caller's concern."""
    if connection is not None and not connection.is_closed:
        with contextlib.suppress(Exception):
            await broker.within(connection.close(), CLOSE_TIMEOUT)
