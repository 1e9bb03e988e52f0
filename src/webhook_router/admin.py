"""The admin actions every front end shares: the API, the console and the CLI each parse
their input, call one of these and render what it returns.

An action takes typed input (models.py), returns typed results and says no with a domain
error: `NotFound`, `Conflict`, `InputInvalid` (field errors) or `BrokerUnavailable`; a
front end chooses only the words and the status code. Each change is a row of the audit
trail (`audit`), written in the change's transaction where the change is a database write,
and right after it where it is a publish. The admin owns the one broker link
its retries and replays publish through, opened on first use, so reads work while the
broker is away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustConnection

from webhook_router import broker, targets
from webhook_router.audit import Action, AuditEntry, shown, webhook_target
from webhook_router.credentials import check_auth
from webhook_router.deadletters import (
    DeadLetter,
    DeadLetterFilter,
    NotRequeued,
    requeue_plan,
)
from webhook_router.defaults import install_defaults
from webhook_router.jobs import Status
from webhook_router.models import (
    SLUG_MAX,
    InputInvalid,
    Job,
    JobDetail,
    WebhookChange,
    decode_token,
    encode_token,
    text_problem,
)
from webhook_router.operator_events import DISABLED, ENABLED, publish_operator_event
from webhook_router.replay import ReplayRefused, ReplayResult, replay_failed, replay_job
from webhook_router.rights import Role, TokenInfo
from webhook_router.service import link
from webhook_router.settings import Settings
from webhook_router.store import BodiesResealed, JobFilter, Resealed, Store
from webhook_router.tokens import name_problem, new_token, token_hash
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


def _slug_problem(slug: str) -> str | None:
    return "must not be empty" if not slug.strip() else text_problem(slug, SLUG_MAX)


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    dead_letters: list[DeadLetter]
    next_token: str | None


REQUEUE_PAGE = 200
"""Dead letters read at a time by a requeue by filters."""


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
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
        async with self.store.transaction() as tx:
            created = await tx.insert_webhook(
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
                rate_limit=draft.rate_limit,
                trace_context=draft.trace_context,
                ordered=draft.ordered,
            )
            if created is None:
                raise Conflict(f"a webhook named {draft.name!r} already exists here", field="name")
            await self._webhook_changed(tx, Action.WEBHOOK_CREATED, None, created, by=by)
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
        async with self.store.transaction() as tx:
            saved = await tx.update_webhook(changed, auth_given=auth_given)
            if saved is None:
                raise Conflict(
                    f"a webhook named {changed.name!r} already exists here", field="name"
                )
            action = Action.WEBHOOK_UPDATED
            if saved.enabled != current.enabled:  # the switch is what an auditor looks for
                action = Action.WEBHOOK_ENABLED if saved.enabled else Action.WEBHOOK_DISABLED
            await self._webhook_changed(tx, action, current, saved, by=by)
        log.info(
            "webhook updated",
            webhook=saved.name,
            space=saved.space,
            kapp=saved.kapp,
            enabled=saved.enabled,
            by=by,
        )
        await self._announce(current, saved)
        return saved

    async def install_defaults(self, space: str, kapp: str | None, *, by: str) -> list[str]:
        """Create the standard webhooks missing from the scope, each audited as created;
        the names created."""

        async def created(tx: Store, webhook: Webhook) -> None:
            await self._webhook_changed(tx, Action.WEBHOOK_CREATED, None, webhook, by=by)

        return await install_defaults(
            self.store, self.settings.tree_source, space, kapp, created=created
        )

    async def reseal_secrets(self, *, by: str) -> Resealed:
        """Seal every webhook's secrets under the first key, audited in the same
        transaction (a row of no one space, with the counts)."""
        async with self.store.transaction() as tx:
            done = await tx.reseal_secrets()
            counts = {"resealed": done.resealed, "alreadyCurrent": done.current}
            await self.audit(
                Action.SECRETS_RESEALED,
                by=by,
                space=None,
                target="webhooks",
                after=counts,
                store=tx,
            )
        return done

    async def reseal_bodies(self, *, by: str) -> BodiesResealed:
        """Seal the job log's bodies under the first key, batch by batch; audited once
        done, with the counts."""
        done = await self.store.reseal_bodies()
        await self.audit(
            Action.SECRETS_RESEALED,
            by=by,
            space=None,
            target="webhookJobs",
            after={"jobs": done.jobs, "attempts": done.attempts, "unreadable": done.unreadable},
        )
        return done

    def warnings(self, webhook: Webhook) -> list[str]:
        """What an admin should hear about a webhook just saved: that the address guard will
        refuse its literal host (`targets`). Told, not refused: the networks may be allowed
        later, and nothing is resolved or connected to."""
        return targets.warnings(webhook.url, self.settings.allowed_networks)

    async def set_enabled(self, current: Webhook, enabled: bool, *, by: str) -> Webhook:
        action = Action.WEBHOOK_ENABLED if enabled else Action.WEBHOOK_DISABLED
        async with self.store.transaction() as tx:
            saved = await tx.update_webhook(replace(current, enabled=enabled))
            if saved is None:
                raise NotFound(f"no webhook named {current.name!r} here")
            await self._webhook_changed(tx, action, current, saved, by=by)
        log.info("webhook enabled" if enabled else "webhook disabled", webhook=saved.name, by=by)
        await self._announce(current, saved)
        return saved

    async def _announce(self, before: Webhook, after: Webhook) -> None:
        """Publish `Webhook Enabled` or `Webhook Disabled` when the change turned it on or
        off. The change is saved whatever the broker says: a broker away is logged."""
        if before.enabled == after.enabled:
            return
        action = ENABLED if after.enabled else DISABLED
        try:
            topology = await self.topology()
            await publish_operator_event(topology.events, action, after)
        except Exception as exc:  # any broker failure: the change stands, unannounced
            log.warning(
                "operator event not published", webhook=after.name, action=action, error=repr(exc)
            )

    async def delete_webhook(self, webhook: Webhook, *, by: str) -> None:
        async with self.store.transaction() as tx:
            await tx.delete_webhook(webhook.id)
            await self._webhook_changed(tx, Action.WEBHOOK_DELETED, webhook, None, by=by)
        log.info(
            "webhook deleted", webhook=webhook.name, space=webhook.space, kapp=webhook.kapp, by=by
        )

    async def rotate_secret(self, webhook: Webhook, grace: float | None, *, by: str) -> Webhook:
        seconds = round(self.settings.signature_grace if grace is None else grace, 3)
        async with self.store.transaction() as tx:
            rotated = await tx.rotate_secret(webhook.id, seconds)
            if rotated is None:
                raise NotFound(f"no webhook named {webhook.name!r} here")
            await self._webhook_changed(tx, Action.SECRET_ROTATED, webhook, rotated, by=by)
        log.info(
            "webhook secret rotated",
            webhook=rotated.name,
            space=rotated.space,
            kapp=rotated.kapp,
            grace_seconds=seconds,
            by=by,
        )
        return rotated

    # API tokens

    async def create_token(
        self, name: str, role: Role, spaces: list[str], *, by: str
    ) -> tuple[TokenInfo, str]:
        """A new token and its only copy in clear: the store keeps its hash."""
        if problem := name_problem(name):
            raise InputInvalid("the token is not valid", [{"field": "name", "message": problem}])
        bad = [{"field": "space", "message": p} for s in spaces if (p := _slug_problem(s))]
        if bad:
            raise InputInvalid("the token is not valid", bad)
        token = new_token()
        made = await self.store.insert_api_token(name, role, sorted(set(spaces)), token_hash(token))
        if made is None:
            raise Conflict(f"a token named {name!r} exists (revoked ones keep their name)")
        log.info("api token created", token=name, role=role.value, spaces=made.spaces, by=by)
        await self.audit(
            Action.TOKEN_CREATED,
            by=by,
            space=made.spaces[0] if len(made.spaces) == 1 else None,
            target=f"tokens/{name}",
            after={"name": name, "role": role.value, "spaces": made.spaces},
        )
        return made, token

    async def tokens(self) -> list[TokenInfo]:
        return await self.store.list_api_tokens()

    async def revoke_token(self, name: str, *, by: str) -> TokenInfo:
        revoked = await self.store.revoke_api_token(name)
        if revoked is None:
            raise NotFound(f"no live token named {name!r}")
        log.info("api token revoked", token=name, by=by)
        await self.audit(
            Action.TOKEN_REVOKED,
            by=by,
            space=revoked.spaces[0] if len(revoked.spaces) == 1 else None,
            target=f"tokens/{name}",
            before={"name": name, "role": revoked.role.value, "spaces": revoked.spaces},
        )
        return revoked

    # the audit trail

    async def audit(
        self,
        action: Action,
        *,
        by: str,
        space: str | None,
        target: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        store: Store | None = None,
    ) -> None:
        """Record a change in the audit trail; pass the `store` of the change's
        transaction to record it with the change. `before` and `after` must hold no
        secret (`audit.shown` makes a webhook safe)."""
        await (store or self.store).audit(
            actor=by, space=space, action=action, target=target, before=before, after=after
        )

    async def _webhook_changed(
        self, tx: Store, action: Action, before: Webhook | None, after: Webhook | None, *, by: str
    ) -> None:
        webhook = after or before
        assert webhook is not None
        await self.audit(
            action,
            by=by,
            space=webhook.space,
            target=webhook_target(webhook),
            before=None if before is None else shown(before),
            after=None if after is None else shown(after),
            store=tx,
        )

    async def audit_log(
        self,
        space: str | None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 25,
        after: tuple[datetime, str] | None = None,
        spaces: frozenset[str] | None = None,
    ) -> AuditPage:
        """A page of the audit trail, newest first, and the token of the next page; only
        rows of `spaces` when given (a token's reach)."""
        rows = await self.store.audit_log(
            space, start=start, end=end, limit=limit + 1, after=after, spaces=spaces
        )
        page = rows[:limit]
        more = len(rows) > limit
        return AuditPage(page, encode_token(page[-1].at, str(page[-1].id)) if more else None)

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
            result = await replay_job(self.store, topology, job, self.settings.engine_url)
        except ReplayRefused as exc:
            raise Conflict(f"the job cannot be retried: {exc}", reason=str(exc)) from None
        await self.audit(
            Action.JOB_RETRIED,
            by=by,
            space=job.space,
            target=f"webhookJobs/{job.id}",
            before={"status": job.status, "url": job.url},
            after={"status": result.status, "url": result.url},
        )
        return result

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
        if not dry_run:
            window = {"start": start and start.isoformat(), "end": end and end.isoformat()}
            await self.audit(
                Action.JOBS_REPLAYED,
                by=by,
                space=webhook.space,
                target=webhook_target(webhook),
                after=window | {"queued": queued},
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

    # dead letters

    async def dead_letters(self, query: DeadLetterFilter) -> DeadLetterPage:
        """A page of dead letters, newest first, and the token of the next one (None on the
        last page)."""
        found = await self.store.dead_letters(replace(query, limit=query.limit + 1))
        page = found[: query.limit]
        more = len(found) > query.limit
        return DeadLetterPage(page, encode_token(page[-1].dead_at, page[-1].id) if more else None)

    async def find_dead_letter(
        self, letter_id: str, spaces: frozenset[str] | None = None
    ) -> DeadLetter:
        """The dead letter, if it is of one of `spaces` (None: of any space, or of none)."""
        letter = await self.store.get_dead_letter(letter_id)
        if letter is None or not DeadLetterFilter(spaces=spaces).reaches(letter):
            raise NotFound(f"no dead letter {letter_id!r}")
        return letter

    async def requeue_dead_letter(self, letter: DeadLetter, *, by: str) -> DeadLetter:
        """Send a dead letter back to where it died (the exchange of the role that failed
        it, with its routing key) and note it; it may be sent back again."""
        try:
            plan = requeue_plan(self.settings.names, letter)
        except NotRequeued as exc:
            raise Conflict(f"the dead letter cannot be requeued: {exc}", reason=str(exc)) from None
        topology = await self._publishing("the requeue")
        exchange = getattr(topology, plan.exchange)
        try:
            await broker.publish(
                exchange,
                plan.body,
                plan.routing_key,
                message_id=letter.message_id,
                headers=plan.headers,
            )
        except Exception as exc:  # not confirmed: it may not be queued, it is not marked
            log.warning("requeue failed: broker unavailable", id=letter.id, error=repr(exc))
            raise BrokerUnavailable("the broker did not confirm the requeue") from None
        marked = await self.store.mark_dead_letter_requeued(letter.id)
        log.info("dead letter requeued", id=letter.id, role=letter.role, to=exchange.name, by=by)
        await self.audit(
            Action.DEAD_LETTER_REQUEUED,
            by=by,
            space=letter.space,
            target=f"deadLetters/{letter.id}",
            after={"role": letter.role, "to": exchange.name, "reason": letter.reason},
        )
        if marked is None:  # deleted meanwhile: it was sent all the same
            return letter
        return replace(letter, requeued_at=marked[0], requeue_count=marked[1])

    async def requeue_dead_letters(self, query: DeadLetterFilter, *, by: str) -> int:
        """Send back every dead letter the filters select that was never requeued; returns
        how many. One that cannot be requeued (no role to send it to) is skipped."""
        requeued = 0
        after = None
        while True:
            page = await self.store.dead_letters(
                replace(query, not_requeued=True, limit=REQUEUE_PAGE, after=after)
            )
            for brief in page:
                letter = await self.store.get_dead_letter(brief.id)
                if letter is None:
                    continue
                try:
                    await self.requeue_dead_letter(letter, by=by)
                except Conflict:
                    continue
                requeued += 1
            if len(page) < REQUEUE_PAGE:
                log.info("dead letters requeued", requeued=requeued, by=by)
                return requeued
            after = (page[-1].dead_at, page[-1].id)
