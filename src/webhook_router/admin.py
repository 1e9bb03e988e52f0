"""The admin actions every front end shares: the API, the console and the CLI each parse
their input, call one of these and render what it returns.

An action takes typed input (models.py), returns typed results and says no with a domain
error: `NotFound`, `Conflict`, `InputInvalid` (field errors) or `BrokerUnavailable`; a
front end chooses only the words and the status code. The admin owns the one broker link
its retries and replays publish through, opened on first use, so reads work while the
broker is away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from aio_pika.abc import AbstractRobustConnection

from webhook_router import targets
from webhook_router.credentials import check_auth
from webhook_router.jobs import Status
from webhook_router.models import (
    InputInvalid,
    Job,
    JobDetail,
    WebhookChange,
    decode_token,
    encode_token,
)
from webhook_router.replay import ReplayRefused, ReplayResult, replay_failed, replay_job
from webhook_router.service import link
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.topology import Topology
from webhook_router.webhooks import Webhook, WebhookInvalid, check_definition

log = structlog.get_logger(__name__)

REQUIRED = ("name", "type", "event", "url")
__all__ = ["Admin", "BrokerUnavailable", "Conflict", "InputInvalid", "NotFound", "decode_token"]


class NotFound(LookupError):
    """Nothing of that name or id in the scope asked."""


class Conflict(ValueError):
    """The action clashes with what is stored: a taken name, a job that cannot be retried."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class BrokerUnavailable(ConnectionError):
    """No broker: nothing was queued."""


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_token: str | None


class Admin:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        who: str = "api",
        topology: Topology | None = None,
    ) -> None:
        """`topology`: publish there and never connect (the in-memory one of testing.py)."""
        self.settings = settings
        self.store = store
        self.who = who
        self.connection: AbstractRobustConnection | None = None
        self._topology = topology
        self._given = topology is not None
        self._connecting = asyncio.Lock()

    # the broker link

    async def topology(self) -> Topology:
        """Connect on first use; one caller connects while the others wait for it."""
        async with self._connecting:
            if self._given and self._topology is not None:
                return self._topology
            if self._topology is None or self.connection is None or self.connection.is_closed:
                self.connection, self._topology = await link(self.settings, self.who)
            return self._topology

    async def _publishing(self, what: str) -> Topology:
        try:
            return await self.topology()
        except Exception as exc:  # any broker failure: nothing was queued
            log.warning(f"{what} failed: broker unavailable", error=repr(exc))
            raise BrokerUnavailable(f"the broker is unavailable; {what} queued nothing") from None

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    # webhooks

    async def find_webhook(self, space: str, kapp: str | None, name: str) -> Webhook:
        webhook = await self.store.get_webhook(space, kapp, name)
        if webhook is None:
            raise NotFound(f"no webhook named {name!r} here")
        return webhook

    async def webhook_in_space(self, space: str, webhook_id: str) -> Webhook:
        try:
            webhook = await self.store.get_webhook_by_id(webhook_id)
        except ValueError:
            webhook = None
        if webhook is None or webhook.space != space:
            raise NotFound("There is no such webhook in this space.")
        return webhook

    @staticmethod
    def _check(webhook: Webhook) -> None:
        errors = []
        try:
            check_definition(
                kapp=webhook.kapp,
                name=webhook.name,
                type=webhook.type,
                event=webhook.event,
                filter=webhook.filter,
                url=webhook.url,
                auth_strategy=webhook.auth_strategy,
                headers=webhook.headers,
            )
        except WebhookInvalid as exc:
            errors = exc.errors
        if not any(e["field"] == "authStrategy" for e in errors):
            errors += check_auth(webhook.auth_strategy, webhook.auth)
        if errors:
            raise InputInvalid("the webhook is not valid", errors)

    async def create_webhook(
        self, space: str, kapp: str | None, change: WebhookChange, *, by: str
    ) -> Webhook:
        given = change.changes()
        missing = [k for k in REQUIRED if k not in given]
        if missing:
            errors = [{"field": k, "message": "is required"} for k in missing]
            raise InputInvalid("the webhook is not valid", errors)
        draft = Webhook(id="", space=space, kapp=kapp, **{"filter": None, **given})
        self._check(draft)
        created = await self.store.insert_webhook(
            space=space,
            kapp=kapp,
            name=draft.name,
            type=draft.type,
            event=draft.event,
            filter=draft.filter,
            url=draft.url,
            auth_strategy=draft.auth_strategy,
            enabled=draft.enabled,
            headers=draft.headers,
            auth=draft.auth,
            ordered=draft.ordered,
        )
        if created is None:
            raise Conflict(f"a webhook named {draft.name!r} already exists here", field="name")
        log.info("webhook created", webhook=created.name, space=space, kapp=kapp, by=by)
        return created

    async def update_webhook(self, current: Webhook, change: WebhookChange, *, by: str) -> Webhook:
        """Credentials not given are kept while the auth strategy stays; a new strategy
        drops them (and needs its own, if it takes any)."""
        changed = replace(current, **change.changes())
        auth_given = "auth" in change.model_fields_set
        if not auth_given and changed.auth_strategy != current.auth_strategy:
            changed, auth_given = replace(changed, auth=None), current.auth is not None
        self._check(changed)
        saved = await self.store.update_webhook(changed, auth_given=auth_given)
        if saved is None:
            raise Conflict(f"a webhook named {changed.name!r} already exists here", field="name")
        log.info(
            "webhook updated",
            webhook=saved.name,
            space=saved.space,
            kapp=saved.kapp,
            enabled=saved.enabled,
            by=by,
        )
        return saved

    def warnings(self, webhook: Webhook) -> list[str]:
        """What an admin should hear about a webhook just saved: that the address guard will
        refuse its literal host (`targets`). Told, not refused: the networks may be allowed
        later, and nothing is resolved or connected to."""
        return targets.warnings(webhook.url, self.settings.allowed_networks)

    async def set_enabled(self, current: Webhook, enabled: bool, *, by: str) -> Webhook:
        saved = await self.store.update_webhook(replace(current, enabled=enabled))
        if saved is None:
            raise NotFound(f"no webhook named {current.name!r} here")
        log.info("webhook enabled" if enabled else "webhook disabled", webhook=saved.name, by=by)
        return saved

    async def delete_webhook(self, webhook: Webhook, *, by: str) -> None:
        await self.store.delete_webhook(webhook.id)
        log.info(
            "webhook deleted", webhook=webhook.name, space=webhook.space, kapp=webhook.kapp, by=by
        )

    async def rotate_secret(self, webhook: Webhook, grace: float | None, *, by: str) -> Webhook:
        seconds = round(self.settings.signature_grace if grace is None else grace, 3)
        rotated = await self.store.rotate_secret(webhook.id, seconds)
        if rotated is None:
            raise NotFound(f"no webhook named {webhook.name!r} here")
        log.info(
            "webhook secret rotated",
            webhook=rotated.name,
            space=rotated.space,
            kapp=rotated.kapp,
            grace_seconds=seconds,
            by=by,
        )
        return rotated

    # jobs

    async def jobs(self, query: JobFilter, *, brief: bool = False) -> JobPage:
        """A page of jobs and the token of the next one (None on the last page)."""
        jobs = await self.store.list_jobs(replace(query, limit=query.limit + 1), brief=brief)
        page = jobs[: query.limit]
        more = len(jobs) > query.limit
        return JobPage(
            page, encode_token(page[-1].scheduled_at, str(page[-1].id)) if more else None
        )

    async def find_job(self, job_id: str, space: str | None = None, kapp: str | None = None) -> Job:
        """The job, if it belongs to `space` (and to `kapp`'s webhooks when given)."""
        job = await self.store.get_job(job_id)
        if (
            job is None
            or (space is not None and job.space != space)
            or (kapp is not None and (job.scope_type, job.scope_id) != ("Kapp", kapp))
        ):
            raise NotFound(f"no webhook job {job_id!r} here")
        return job

    async def job_detail(self, job: Job) -> JobDetail:
        attempts = await self.store.job_attempts(str(job.id))
        fields = {k: getattr(job, k) for k in Job.model_fields}
        fields |= {"attempt_history": attempts} | await self._key_moves(job)
        return JobDetail.model_validate(fields)

    async def _key_moves(self, job: Job) -> dict[str, str]:
        """For a job of an ordered webhook: the failed job its key moved on past, and for
        a failed job the job its key moved on to."""
        webhook = await self.store.get_webhook_by_id(str(job.webhook_id))
        if webhook is None or not webhook.ordered:
            return {}
        near = await self.store.key_neighbours(job)
        moves = {}
        if "before" in near and near["before"][1] == Status.FAILED:
            moves["after_failed_job"] = near["before"][0]
        if "after" in near and job.status == Status.FAILED:
            moves["key_moved_on_to"] = near["after"][0]
        return moves

    async def retry_job(self, job: Job, *, by: str) -> ReplayResult:
        """Send a Failed or Cancelled job again through its webhook's current definition."""
        topology = await self._publishing("the retry")
        try:
            return await replay_job(self.store, topology, job, self.settings.engine_url)
        except ReplayRefused as exc:
            raise Conflict(f"the job cannot be retried: {exc}", reason=str(exc)) from None

    async def replay(
        self,
        webhook: Webhook,
        *,
        start: datetime | None,
        end: datetime | None,
        dry_run: bool,
        by: str,
    ) -> int:
        """Retry (or, dry, count) every Failed job of a webhook scheduled in a window."""
        topology = await self._publishing("the replay")
        queued = await replay_failed(
            self.store,
            topology,
            self.settings.engine_url,
            space=webhook.space,
            kapp=webhook.kapp,
            webhook=webhook.name,
            start=start,
            end=end,
            dry_run=dry_run,
        )
        log.info(
            "failed jobs counted for a replay" if dry_run else "failed jobs replayed",
            webhook=webhook.name,
            space=webhook.space,
            kapp=webhook.kapp,
            queued=queued,
            by=by,
        )
        return queued
