"""Sending a job's event again, as an admin does after fixing a webhook.

The job's recorded event goes through the webhook's *current* definition: its current URL
(rendered again) and authentication. The filter is not asked again: the admin asked for
this job. The replay counter moves on, so the new attempts never collide with the old ones
and a late outcome of the old run cannot overwrite the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from webhook_router import tracing
from webhook_router.events import EventInvalid, parse_event
from webhook_router.jobs import Status
from webhook_router.models import Job
from webhook_router.planning import plan, publish_jobs
from webhook_router.store import JobFilter, Store
from webhook_router.topology import Topology
from webhook_router.webhooks import Match, match_one

log = structlog.get_logger(__name__)


class ReplayRefused(ValueError):
    """The job cannot be sent again; the message says why."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    job_id: str
    status: str
    url: str | None
    out_of_order: bool = False
    """The job's webhook is ordered per key: a retry by hand does not wait for its key."""


async def replay_job(store: Store, topology: Topology, job: Job, engine_url: str) -> ReplayResult:
    if job.status not in (Status.FAILED, Status.CANCELLED):
        raise ReplayRefused(
            f"only Failed or Cancelled jobs are retried; this one is {job.status.value}"
        )
    webhook = await store.get_webhook_by_id(str(job.webhook_id))
    if webhook is None:
        raise ReplayRefused("its webhook was deleted")
    if job.request_content is None:
        raise ReplayRefused("its event was not recorded")
    try:
        event = parse_event(job.request_content, fill=False)
    except EventInvalid as exc:
        raise ReplayRefused(f"its recorded event is no longer valid: {exc}") from None
    match = match_one(webhook, event.body, engine_url, check_filter=False) or Match(webhook, None)
    attributes = {"webhook_router.job_id": str(job.id), "webhook_router.replay": job.replay + 1}
    with tracing.span("retry job", attributes=attributes):  # an admin's retry: its own trace
        deliveries, outcomes = plan(event, [match], replay=job.replay + 1, trace=tracing.carrier())
        await publish_jobs(topology, deliveries, outcomes)
    outcome = outcomes[0]
    log.info(
        "job retried",
        job_id=outcome.delivery.job_id,
        webhook=webhook.name,
        event_id=event.id,
        url=match.url,
        replay=outcome.delivery.replay,
        status=outcome.status,
        out_of_order=webhook.ordered,
    )
    return ReplayResult(outcome.delivery.job_id, outcome.status, match.url, webhook.ordered)


async def replay_failed(
    store: Store,
    topology: Topology,
    engine_url: str,
    *,
    space: str,
    kapp: str | None,
    webhook: str,
    start: datetime | None,
    end: datetime | None,
    dry_run: bool = False,
) -> int:
    """Retry every Failed job of a webhook in a window; returns how many were queued."""
    queued = 0
    after = None
    while True:
        page = await store.list_jobs(
            JobFilter(
                space=space,
                kapp=kapp,
                kapp_only=kapp is None,
                status=Status.FAILED,
                webhook=webhook,
                start=start,
                end=end,
                limit=500,
                after=after,
            )
        )
        for job in page:
            if dry_run:
                queued += 1
                continue
            try:
                await replay_job(store, topology, job, engine_url)
            except ReplayRefused:
                continue
            queued += 1
        if len(page) < 500:
            return queued
        after = (page[-1].scheduled_at, str(page[-1].id))
