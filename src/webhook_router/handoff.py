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

Each event waits in hand until its jobs are recorded, so the router holds more events
(`direct_prefetch`) than between processes, enough to fill the recorder's batches, while
the worker still POSTs at most `worker_concurrency` deliveries at once.

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
    first failure once every one has ended (none is left running behind the event).

    The worker POSTs at most `worker_concurrency` of the deliveries at once, as its
    consumer's prefetch bounds it between processes: a delivery takes a slot before it is
    handed over and gives it back once its outcome reaches the recorder (not once that is
    written), so the events in hand (`direct_prefetch`, enough to fill the recorder's
    batches) never crowd an endpoint's line past its wait."""

    def __init__(self, worker: Worker, recorder: Recorder) -> None:
        self.worker = worker
        self.recorder = recorder
        self.slots = asyncio.Semaphore(worker.settings.worker_concurrency)
        self.posting: dict[str, list[_Slot]] = {}
        """Per job handed to the worker, the slots of its deliveries whose outcome has not
        reached the recorder yet."""

    async def __call__(self, deliveries: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
        failed = [o for o in outcomes if o.status != Status.QUEUED]
        if len(deliveries) == 1 and not failed:
            await self._post(deliveries[0])  # the common case: no gathering task
            return
        steps = [self._post(d) for d in deliveries]
        if failed:
            steps.append(self.recorder.take(failed))
        ended = await asyncio.gather(*steps, return_exceptions=True)
        for result in ended:
            if isinstance(result, BaseException):
                raise result

    async def _post(self, delivery: Delivery) -> None:
        await self.slots.acquire()
        slot = _Slot(self.slots)
        held = self.posting.setdefault(delivery.job_id, [])
        held.append(slot)
        try:
            await self.worker.direct(delivery)
        finally:  # given back here if it failed before its outcome was handed on
            slot.release()
            if slot in held:
                held.remove(slot)
            if not held and self.posting.get(delivery.job_id) is held:
                del self.posting[delivery.job_id]

    async def hand(self, outcomes: list[Outcome]) -> None:
        """The worker's way to the recorder: the outcomes' slots are free from now."""
        for outcome in outcomes:
            held = self.posting.get(outcome.delivery.job_id)
            if held:
                held.pop().release()
        await self.recorder.take(outcomes)


class _Slot:
    """One delivery's hold on a POST slot, given back once (a copy of an event in hand
    twice has two slots per job; either may be given back first)."""

    __slots__ = ("held", "semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


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
    router.handoff = handoff = DirectHandoff(worker, recorder)
    worker.handed_to = handoff.hand
    rest = [role for role in roles if role not in (router, worker, recorder)]
    return [recorder, worker, router, *rest]
