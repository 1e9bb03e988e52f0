"""Planning an event's jobs: the deliveries to publish and the Queued (or Failed) records of
each match, and publishing both with broker confirms.

Pure but for `publish_jobs`; shared by the router and by admin retries (replay.py), so
neither imports the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from webhook_router import broker
from webhook_router.batching import MAX_BYTES, Batcher
from webhook_router.events import Event
from webhook_router.jobs import Delivery, Outcome, Status, bounded_summary, job_id, storable, utcnow
from webhook_router.operator_events import about_itself
from webhook_router.topology import RECORD_KEY, Topology
from webhook_router.trees import tree_of
from webhook_router.webhooks import Match

_PARENT_KEYS = {
    "Space": ("space", "slug"),
    "User": ("user", "username"),
    "Team": ("team", "slug"),
    "Datastore Form": ("form", "slug"),
    "Form": ("form", "slug"),
    "Datastore Submission": ("submission", "id"),
    "Submission": ("submission", "id"),
    "Webhook": ("webhook", "id"),
}


def parent_of(event: Event) -> str | None:
    """The key of what the event is about: submission id, form slug, username..."""
    entity, key = _PARENT_KEYS[event.type]
    value = event.body.get(entity, {}).get(key)
    if value is None and event.type == "Team":
        value = event.body.get("team", {}).get("name")
    return None if value is None else str(value)


def plan(
    event: Event,
    matches: Sequence[Match],
    *,
    replay: int = 0,
    trace: dict[str, str] | None = None,
) -> tuple[list[Delivery], list[Outcome]]:
    """The deliveries to publish and the outcomes to record for the event's matches; an
    operator event about a webhook makes no job of that webhook (no loops); each job carries
    `trace`, the context of the span that planned it."""
    trace = trace or {}
    tree = tree_of(event.type, event.action, event.body)
    body = event.encode().decode()
    created = utcnow().isoformat()
    parent = parent_of(event)
    deliveries: list[Delivery] = []
    outcomes: list[Outcome] = []
    for match in matches:
        w = match.webhook
        if about_itself(event, w.id):
            continue
        delivery = Delivery(
            job_id=job_id(event.id, w.id),
            event_id=event.id,
            event_at=event.timestamp.isoformat(),
            webhook_id=w.id,
            webhook_name=w.name,
            space=w.space,
            scope_type=w.scope_type,
            scope_id=w.scope_id,
            type=event.type,
            action=event.action,
            parent_type=event.type,
            parent_id=parent,
            tree_group=tree.group,
            tree_name=tree.name,
            url=match.url or "",
            body=body,
            auth_strategy=w.auth_strategy,
            to_engine=match.to_engine,
            headers=match.headers,
            replay=replay,
            created_at=created,
            trace=trace,
            trace_context=w.trace_context,
        )
        if match.error is not None:
            summary = bounded_summary(storable(match.error)[0] or "")
            outcomes.append(Outcome(delivery, Status.FAILED, summary=summary, trace=trace))
        else:
            deliveries.append(delivery)
            outcomes.append(Outcome(delivery, Status.QUEUED, trace=trace))
    return deliveries, outcomes


DELIVERY_BATCH = 16
"""Most deliveries in one message. A worker holds up to its concurrency in messages; kept
small, what it holds is posted well within the endpoint wait, and a few messages pinned by a
hanging endpoint cannot starve the rest."""


@dataclass(frozen=True, slots=True)
class Batchers:
    """A router's batchers: deliveries to the workers, Queued records to the recorder."""

    deliveries: Batcher[Delivery]
    outcomes: Batcher[Outcome]

    @classmethod
    def of(cls, topology: Topology, max_bytes: int = MAX_BYTES) -> Batchers:
        key = topology.names.delivery_key
        return cls(
            Batcher(
                lambda: topology.deliveries,
                lambda d: key(d.webhook_id),
                max_items=DELIVERY_BATCH,
                max_bytes=max_bytes,
            ),
            Batcher(lambda: topology.results, lambda _: RECORD_KEY, max_bytes=max_bytes),
        )

    async def drain(self) -> None:
        await self.deliveries.drain()
        await self.outcomes.drain()


async def publish_jobs(
    topology: Topology,
    deliveries: Sequence[Delivery],
    outcomes: Sequence[Outcome],
    batchers: Batchers | None = None,
) -> None:
    """Publish deliveries and their jobs' records; returns once the broker confirmed all."""
    if batchers is not None:
        waits = []
        if deliveries:
            waits.append(batchers.deliveries.submit(*deliveries))
        if outcomes:
            waits.append(batchers.outcomes.submit(*outcomes))
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)
        return
    publishes = [
        broker.publish(
            topology.deliveries, orjson.dumps([d]), topology.names.delivery_key(d.webhook_id)
        )
        for d in deliveries
    ]
    if outcomes:
        publishes.append(broker.publish(topology.results, orjson.dumps(list(outcomes)), RECORD_KEY))
    await asyncio.gather(*publishes)
