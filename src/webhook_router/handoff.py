"""Direct handoff: the router, the worker and the recorder of one process passing an event's
jobs in memory instead of through the broker (`up` with WEBHOOK_ROUTER_DIRECT_HANDOFF).

Between roles in separate processes a broker message keeps each step safe: the delivery
until it is posted, the outcome until it is committed, and the Queued record makes the job
visible meanwhile. In one process the event does that: it is acknowledged only once every
one of its jobs was recorded, posted or, if its endpoint was full or its answer asked for a
retry, waiting in a retry queue and recorded Queued. A process that dies mid-event loses
nothing: the event comes back and is routed again, its jobs keep their ids and the receiver
may get a POST twice with the same `webhook-id`, as when a worker dies mid-POST; so may it
when the recorder gives a batch back (its side effects failed three times), since the event
is then given back too. Retries, deferrals, dead letters and ordered webhooks go through the
broker as ever.

What it saves per delivery: three messages (the delivery, the Queued record and the
outcome: each encoded, published, confirmed, consumed, decoded and acknowledged) and the
job's first write. What it gives up: a job shows in the log once attempted or deferred,
not when routed; while the database is away deliveries wait with their events in the
events queue instead of going on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from webhook_router.jobs import Delivery, Outcome, Status
from webhook_router.recorder import Recorder
from webhook_router.router import Router
from webhook_router.service import Role
from webhook_router.worker import Worker

ROLES = frozenset({"router", "worker", "recorder"})
"""The roles a process must run for a direct handoff."""
NEEDS = "WEBHOOK_ROUTER_DIRECT_HANDOFF needs the router, the worker and the recorder in one process"


class DirectHandoff:
    """The router's `handoff`: each delivery to the worker, each job that failed before
    sending (its filter or URL) to the recorder; returns once all are done, else raises the
    first failure once every one has ended (none is left running behind the event)."""

    def __init__(self, worker: Worker, recorder: Recorder) -> None:
        self.worker = worker
        self.recorder = recorder

    async def __call__(self, deliveries: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
        failed = [o for o in outcomes if o.status != Status.QUEUED]
        if len(deliveries) == 1 and not failed:
            await self.worker.direct(deliveries[0])  # the common case: no gathering task
            return
        steps = [self.worker.direct(d) for d in deliveries]
        if failed:
            steps.append(self.recorder.take(failed))
        ended = await asyncio.gather(*steps, return_exceptions=True)
        for result in ended:
            if isinstance(result, BaseException):
                raise result


def connect(roles: Sequence[Role]) -> list[Role]:
    """Wire the router, the worker and the recorder among `roles` for a direct handoff;
    returns the roles in the order to start them (the worker before the router, so the
    router stops first and nothing is handed to a stopped worker). Raises ValueError
    without all three."""
    by_type = {type(role): role for role in roles}
    router, worker, recorder = by_type.get(Router), by_type.get(Worker), by_type.get(Recorder)
    if not (
        isinstance(router, Router) and isinstance(worker, Worker) and isinstance(recorder, Recorder)
    ):
        raise ValueError(NEEDS)
    worker.handed_to = recorder.take
    router.handoff = DirectHandoff(worker, recorder)
    rest = [role for role in roles if role not in (router, worker, recorder)]
    return [recorder, worker, router, *rest]
