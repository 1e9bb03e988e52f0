"""In-memory stand-ins for the store and the broker, for unit tests of the admin actions,
the roles' handlers and the API without PostgreSQL or RabbitMQ.

`MemoryStore` keeps webhooks and the job log in dicts and answers the `Store` methods the
admin, the API, the router and the recorder call, with the same rules where they matter
(a name unique in its scope, a job's outcomes only moving forward). `memory_topology` gives
exchanges that keep what is published, confirmed at once. The integration tests run the
same code on the real services; these stand-ins never replace them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from aio_pika.abc import AbstractExchange, AbstractQueue

from webhook_router.audit import AuditEntry
from webhook_router.jobs import RANK, Outcome, Status
from webhook_router.models import Attempt, Job
from webhook_router.rights import Principal, Role, TokenInfo
from webhook_router.signing import generate_secret
from webhook_router.store import Announce, JobFilter, Store
from webhook_router.topology import Names, Topology
from webhook_router.webhooks import Webhook


class MemoryExchange:
    """Stands in for an exchange: every publish is kept as (routing key, body)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, message: Any, routing_key: str, **_: Any) -> None:
        self.published.append((routing_key, message.body))

    def decoded(self) -> list[Any]:
        return [orjson.loads(body) for _, body in self.published]


class MemoryMessage:
    """Stands in for an incoming message: its body, and whether it was acknowledged."""

    def __init__(self, body: bytes, delivery_tag: int = 1, channel: object = "channel") -> None:
        self.body = body
        self.delivery_tag = delivery_tag
        self.channel = channel
        self.headers: dict[str, Any] = {}
        self.message_id: str | None = None
        self.routing_key = "record"
        self.acked = False

    async def ack(self, multiple: bool = False) -> None:
        self.acked = True


def memory_topology(names: Names) -> Topology:
    """A topology whose exchanges keep what is published; queues are never consumed."""

    def exchange(name: str) -> AbstractExchange:
        return cast(AbstractExchange, MemoryExchange(name))

    queue = cast(AbstractQueue, None)
    return Topology(
        names,
        exchange(names.events),
        exchange(names.deliveries),
        exchange(names.retry),
        exchange(names.results),
        exchange(names.dead),
        queue,
        (queue,),
        queue,
        queue,
    )


class MemoryPool:
    """Answers the API's readiness query."""

    async def fetchval(self, query: str, *args: Any) -> Any:
        return 1


class MemoryStore(Store):
    def __init__(self) -> None:
        super().__init__(cast(Any, MemoryPool()))
        self.webhooks: dict[str, Webhook] = {}
        self.jobs: dict[str, tuple[Job, tuple[int, int, int]]] = {}
        self.rate_slots: dict[str, float] = {}
        """Per rate-limited webhook, when (monotonic) its next slot starts."""
        self.attempts: dict[str, list[Attempt]] = {}
        self.revision = 0
        self.tokens: dict[str, tuple[TokenInfo, bytes]] = {}
        self.audit_entries: list[AuditEntry] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        """The store itself: nothing is rolled back in memory."""
        yield self

    async def audit(
        self,
        *,
        actor: str,
        space: str | None,
        action: str,
        target: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        at = datetime.now(UTC)
        self.audit_entries.append(
            AuditEntry(uuid.uuid4(), at, actor, space, action, target, before, after)
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
    ) -> list[AuditEntry]:
        found = [
            e
            for e in sorted(self.audit_entries, key=lambda e: (e.at, str(e.id)), reverse=True)
            if (space is None or e.space == space)
            and (spaces is None or e.space in spaces)
            and (start is None or e.at >= start)
            and (end is None or e.at < end)
            and (after is None or (e.at, str(e.id)) < after)
        ]
        return found[:limit]

    # webhooks

    def _changed(self) -> None:
        self.revision += 1

    async def webhook_revision(self) -> int:
        return self.revision

    async def all_webhooks(self) -> list[Webhook]:
        return sorted(self.webhooks.values(), key=lambda w: (w.space, w.kapp or "", w.name))

    async def scope_webhooks(self, space: str, kapp: str | None) -> list[Webhook]:
        found = [w for w in self.webhooks.values() if (w.space, w.kapp) == (space, kapp)]
        return sorted(found, key=lambda w: w.name)

    async def space_webhooks(self, space: str) -> list[Webhook]:
        found = [w for w in self.webhooks.values() if w.space == space]
        return sorted(found, key=lambda w: (w.kapp is not None, w.kapp or "", w.name))

    async def known_spaces(self, limit: int = 200) -> list[str]:
        return sorted({w.space for w in self.webhooks.values()})[:limit]

    async def get_webhook(self, space: str, kapp: str | None, name: str) -> Webhook | None:
        found = [w for w in await self.scope_webhooks(space, kapp) if w.name == name]
        return found[0] if found else None

    async def get_webhook_by_id(self, webhook_id: str) -> Webhook | None:
        return self.webhooks.get(str(uuid.UUID(webhook_id)))

    async def insert_webhook(
        self,
        *,
        space: str,
        kapp: str | None,
        name: str,
        type: str,
        event: str,
        filter: str | None,
        url: str,
        auth_strategy: str | None,
        enabled: bool = True,
        headers: dict[str, str] | None = None,
        auth: dict[str, str] | None = None,
        rate_limit: float | None = None,
        trace_context: bool = True,
        ordered: bool = False,
    ) -> Webhook | None:
        if await self.get_webhook(space, kapp, name) is not None:
            return None
        now = datetime.now(UTC)
        webhook = Webhook(
            str(uuid.uuid4()),
            space,
            kapp,
            name,
            type,
            event,
            filter,
            url,
            auth_strategy,
            enabled,
            ordered=ordered,
            headers=headers or {},
            trace_context=trace_context,
            auth=auth,
            auth_set_at=now if auth is not None else None,
            secret=generate_secret(),
            rate_limit=rate_limit,
            created_at=now,
            updated_at=now,
        )
        self.webhooks[webhook.id] = webhook
        self._changed()
        return webhook

    async def update_webhook(self, webhook: Webhook, *, auth_given: bool = False) -> Webhook | None:
        clash = await self.get_webhook(webhook.space, webhook.kapp, webhook.name)
        if webhook.id not in self.webhooks or (clash is not None and clash.id != webhook.id):
            return None
        now = datetime.now(UTC)
        stored = self.webhooks[webhook.id]
        saved = replace(
            webhook,
            auth=webhook.auth if auth_given else stored.auth,
            auth_set_at=(now if webhook.auth is not None else None)
            if auth_given
            else stored.auth_set_at,
            disabled_reason=None if webhook.enabled else webhook.disabled_reason,
            updated_at=now,
        )
        self.webhooks[webhook.id] = saved
        self._changed()
        return saved

    # API tokens

    async def insert_api_token(
        self, name: str, role: Role, spaces: Sequence[str], digest: bytes
    ) -> TokenInfo | None:
        if name in self.tokens:
            return None
        info = TokenInfo(name, role, list(spaces), datetime.now(UTC), None, None)
        self.tokens[name] = (info, digest)
        return info

    async def list_api_tokens(self) -> list[TokenInfo]:
        return [info for _, (info, _) in sorted(self.tokens.items())]

    async def revoke_api_token(self, name: str) -> TokenInfo | None:
        info, digest = self.tokens.get(name, (None, b""))
        if info is None or info.revoked_at is not None:
            return None
        revoked = replace(info, revoked_at=datetime.now(UTC))
        self.tokens[name] = (revoked, digest)
        return revoked

    async def api_token_by_hash(self, digest: bytes) -> Principal | None:
        for info, stored in self.tokens.values():
            if stored == digest and info.revoked_at is None:
                return Principal(info.name, info.role, frozenset(info.spaces) or None)
        return None

    async def touch_api_token(self, name: str, when: datetime) -> None:
        info, digest = self.tokens[name]
        self.tokens[name] = (replace(info, last_used_at=when), digest)

    async def rotate_secret(self, webhook_id: str, grace_seconds: float) -> Webhook | None:
        current = self.webhooks.get(webhook_id)
        if current is None:
            return None
        now = datetime.now(UTC)
        rotated = replace(
            current,
            previous_secret=current.secret,
            previous_secret_until=now + timedelta(seconds=grace_seconds),
            secret=generate_secret(),
            updated_at=now,
        )
        self.webhooks[webhook_id] = rotated
        return rotated

    async def disable_webhook(
        self, webhook_id: str, reason: str, *, then: Announce | None = None
    ) -> Webhook | None:
        current = self.webhooks.get(webhook_id)
        if current is None or not current.enabled:
            return None
        disabled = replace(
            current, enabled=False, disabled_reason=reason, updated_at=datetime.now(UTC)
        )
        if then is not None:
            await then(disabled)  # raises before anything changed, as the rollback does
        self.webhooks[webhook_id] = disabled
        self._changed()
        return disabled

    async def disable_failing(
        self,
        webhook_ids: Sequence[str],
        after: float,
        *,
        min_failed: int,
        reason: str,
        then: Announce | None = None,
    ) -> list[Webhook]:
        """As the SQL does: failing since the later of the last change and last success."""
        now = datetime.now(UTC)
        disabled = []
        for webhook_id in webhook_ids:
            current = self.webhooks.get(webhook_id)
            if current is None or not current.enabled or current.updated_at is None:
                continue
            ended = [
                (job.completed_at, job.status)
                for job, _ in self.jobs.values()
                if str(job.webhook_id) == webhook_id and job.completed_at is not None
            ]
            since = max(
                [current.updated_at, *(at for at, status in ended if status == Status.COMPLETE)]
            )
            failed = [at for at, status in ended if status == Status.FAILED and at > since]
            if len(failed) >= min_failed and min(failed) <= now - timedelta(seconds=after):
                gone = await self.disable_webhook(webhook_id, reason, then=then)
                disabled += [gone] if gone else []
        return disabled

    async def take_rate_slot(
        self, webhook_id: str, spacing: float, horizon: float
    ) -> tuple[float | None, float]:
        now = time.monotonic()
        held = self.rate_slots.get(webhook_id)
        if held is not None and held > now + horizon:
            return None, held - now
        start = max(held or now, now)
        self.rate_slots[webhook_id] = start + spacing
        return start - now, start + spacing - now

    async def delete_webhook(self, webhook_id: str) -> None:
        self.webhooks.pop(webhook_id, None)
        self._changed()

    # the job log

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """As the SQL does: a job's row only moves forward (replay, attempts, status rank)."""
        now = datetime.now(UTC)
        for o in outcomes:
            d = o.delivery
            version = (d.replay, o.attempts, RANK[Status(o.status)])
            held = self.jobs.get(d.job_id)
            if held is None or version > held[1]:
                created = held[0].created_at if held else now
                job = Job(
                    id=uuid.UUID(d.job_id),
                    name=d.webhook_name,
                    event=d.action,
                    type=d.type,
                    webhook_id=uuid.UUID(d.webhook_id),
                    parent_id=d.parent_id,
                    parent_type=d.parent_type,
                    scope_id=d.scope_id,
                    scope_type=cast(Any, d.scope_type),
                    url=d.url,
                    request_content=d.body or (held[0].request_content if held else None),
                    response_content=o.response_content,
                    summary=o.summary,
                    retry_count=o.retry_count,
                    scheduled_at=datetime.fromisoformat(o.scheduled_at) if o.scheduled_at else now,
                    status=Status(o.status),
                    created_at=created,
                    updated_at=now,
                    run_id=o.run_id,
                    tree_group=d.tree_group,
                    tree_name=d.tree_name,
                    event_id=d.event_id,
                    event_at=datetime.fromisoformat(d.event_at),
                    attempts=o.attempts,
                    response_status=o.response_status,
                    duration_ms=o.attempt.duration_ms if o.attempt else None,
                    completed_at=now if o.status in (Status.COMPLETE, Status.FAILED) else None,
                    space=d.space,
                    replay=d.replay,
                )
                self.jobs[d.job_id] = (job, version)
            if o.attempt is not None:
                a = o.attempt
                kept = self.attempts.setdefault(d.job_id, [])
                if not any((x.replay, x.attempt) == (d.replay, a.number) for x in kept):
                    kept.append(
                        Attempt(
                            replay=d.replay,
                            attempt=a.number,
                            url=d.url,
                            started_at=datetime.fromisoformat(a.started_at),
                            duration_ms=a.duration_ms,
                            response_status=a.response_status,
                            response_content=a.response_content,
                            error=a.error,
                            request_headers=a.request_headers,
                        )
                    )

    async def get_job(self, job_id: str) -> Job | None:
        held = self.jobs.get(job_id)
        return held[0] if held else None

    async def job_attempts(self, job_id: str) -> list[Attempt]:
        return sorted(self.attempts.get(job_id, []), key=lambda a: (a.replay, a.attempt))

    def _matching(self, f: JobFilter, *, with_status: bool = True) -> list[Job]:
        def keep(j: Job) -> bool:
            checks = [
                j.space == f.space,
                f.kapp is None or (j.scope_type, j.scope_id) == ("Kapp", f.kapp),
                not (f.kapp is None and f.kapp_only) or j.scope_type == "Space",
                not with_status or f.status is None or j.status == f.status,
                f.webhook is None or j.name == f.webhook,
                f.parent_type is None or j.parent_type == f.parent_type,
                f.parent_key is None or j.parent_id == f.parent_key,
                f.type is None or j.type == f.type,
                f.event is None or j.event == f.event,
                f.form is None or j.tree_group.endswith(" > " + f.form),
                f.url_text is None or f.url_text.lower() in (j.url or "").lower(),
                f.start is None or j.scheduled_at >= f.start,
                f.end is None or j.scheduled_at < f.end,
            ]
            return all(checks)

        return [j for j, _ in self.jobs.values() if keep(j)]

    async def list_jobs(self, f: JobFilter, *, brief: bool = False) -> list[Job]:
        jobs = sorted(self._matching(f), key=lambda j: (j.scheduled_at, str(j.id)), reverse=True)
        if f.after is not None:
            jobs = [j for j in jobs if (j.scheduled_at, str(j.id)) < f.after]
        page = jobs[: f.limit]
        if brief:
            page = [
                j.model_copy(update={"request_content": None, "response_content": None})
                for j in page
            ]
        return page

    async def count_by_status(self, f: JobFilter) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for j in self._matching(f, with_status=False):
            counts[j.status.value] += 1
        return counts
