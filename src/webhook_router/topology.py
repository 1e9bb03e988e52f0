"""Names and shape of every exchange and queue, all under the namespace.

    events (topic, key type.action)      -> router            (quorum)
    deliveries (fanout, key webhook id)  -> deliver           (quorum)     one shard
    deliveries.sharded (consistent hash) -> deliver.0 .. N-1  (quorum)     N shards
    retry (headers, retry-wait)          -> retry.{wait}      (TTL, dead-letters into
                                                               the deliveries exchange)
    results (direct, key record)         -> record            (quorum)
    dead (fanout)                        -> dead              (quorum)

A delivery's routing key is its webhook's id, kept through the retry queues (they set no
dead-letter routing key), so with N shards one webhook's deliveries, first attempts and
retries alike, hash to one shard. Work queues dead-letter into `dead` after a delivery
limit, at least once, so a message that crashes its consumer again and again stops looping
and is never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

RECORD_KEY = "record"
# headers exchanges ignore binding keys starting with x-, so this one must not
RETRY_HEADER = "retry-wait"
DELIVERY_LIMIT = 10
CONSISTENT_HASH = "x-consistent-hash"


def delay_name(seconds: float) -> str:
    """A retry queue's suffix: `5s`, `2m`, `1h`, `1500ms`."""
    millis = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


@dataclass(frozen=True, slots=True)
class Names:
    namespace: str
    shards: int = 1
    ordered_shards: int = 16

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def router(self) -> str:
        return f"{self.namespace}.router"

    @property
    def deliveries(self) -> str:
        """The exchange deliveries are published to."""
        suffix = "" if self.shards == 1 else ".sharded"
        return f"{self.namespace}.deliveries{suffix}"

    @property
    def deliver(self) -> str:
        """The delivery queue (the first shard's when sharded)."""
        return self.deliver_queues()[0]

    def deliver_queues(self) -> tuple[str, ...]:
        if self.shards == 1:
            return (f"{self.namespace}.deliver",)
        return tuple(f"{self.namespace}.deliver.{i}" for i in range(self.shards))

    @property
    def retry(self) -> str:
        return f"{self.namespace}.retry"

    def retry_queue(self, seconds: float) -> str:
        return f"{self.namespace}.retry.{delay_name(seconds)}"

    @property
    def results(self) -> str:
        return f"{self.namespace}.results"

    @property
    def record(self) -> str:
        return f"{self.namespace}.record"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def ordered(self) -> str:
        """The queue of copies of the events ordered webhooks take (one sequencer reads it)."""
        return f"{self.namespace}.ordered"

    @property
    def ordered_deliveries(self) -> str:
        """The consistent-hash exchange spreading ordered deliveries by key over the shards."""
        return f"{self.namespace}.deliveries.ordered"

    def ordered_queues(self) -> tuple[str, ...]:
        return tuple(f"{self.namespace}.deliver.ordered.{i}" for i in range(self.ordered_shards))

    def delivery_key(self, webhook_id: str) -> str:
        """A delivery's routing key: its webhook when sharded (the hash keeps a webhook in
        one shard), else empty, so deliveries of every webhook share batches."""
        return webhook_id if self.shards > 1 else ""

    def work_queues(self) -> tuple[str, ...]:
        return (self.router, *self.deliver_queues(), self.record)

    def exchanges(self) -> tuple[str, ...]:
        return (self.events, self.deliveries, self.retry, self.results, self.dead)


def _work_queue_arguments(names: Names) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_ingress(channel: AbstractChannel, names: Names) -> AbstractExchange:
    """Just what publishing needs: the events exchange and the queue that keeps events
    until a router takes them, so that nothing published before the first router is lost."""
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(names.dead, aio_pika.ExchangeType.FANOUT, durable=True)
    router = await channel.declare_queue(
        names.router, durable=True, arguments=_work_queue_arguments(names)
    )
    await router.bind(events, routing_key="#")
    return events


@dataclass(frozen=True, slots=True)
class Topology:
    names: Names
    events: AbstractExchange
    deliveries: AbstractExchange
    retry: AbstractExchange
    results: AbstractExchange
    dead: AbstractExchange
    router: AbstractQueue
    deliver_queues: tuple[AbstractQueue, ...]
    record: AbstractQueue
    dead_queue: AbstractQueue

    @property
    def deliver(self) -> AbstractQueue:
        return self.deliver_queues[0]


async def declare(
    channel: AbstractChannel, names: Names, retry_delays: tuple[float, ...] = ()
) -> Topology:
    """Declare everything (idempotent); every role calls it on start."""
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    sharded = names.shards > 1
    deliveries = await channel.declare_exchange(
        names.deliveries,
        CONSISTENT_HASH if sharded else aio_pika.ExchangeType.FANOUT,
        durable=True,
    )
    retry = await channel.declare_exchange(names.retry, aio_pika.ExchangeType.HEADERS, durable=True)
    results = await channel.declare_exchange(
        names.results, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead = await channel.declare_exchange(names.dead, aio_pika.ExchangeType.FANOUT, durable=True)

    dead_queue = await channel.declare_queue(
        names.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead, routing_key="")
    router = await channel.declare_queue(
        names.router, durable=True, arguments=_work_queue_arguments(names)
    )
    await router.bind(events, routing_key="#")
    deliver_queues = []
    for name in names.deliver_queues():
        queue = await channel.declare_queue(
            name, durable=True, arguments=_work_queue_arguments(names)
        )
        # a consistent-hash binding key is the shard's weight
        await queue.bind(deliveries, routing_key="1" if sharded else "")
        deliver_queues.append(queue)
    record = await channel.declare_queue(
        names.record, durable=True, arguments=_work_queue_arguments(names)
    )
    await record.bind(results, routing_key=RECORD_KEY)
    for seconds in sorted(set(retry_delays)):
        wait = await channel.declare_queue(
            names.retry_queue(seconds),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": round(seconds * 1000),
                "x-dead-letter-exchange": names.deliveries,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await wait.bind(retry, arguments={"x-match": "all", RETRY_HEADER: delay_name(seconds)})
    return Topology(
        names,
        events,
        deliveries,
        retry,
        results,
        dead,
        router,
        tuple(deliver_queues),
        record,
        dead_queue,
    )
