"""PostgreSQL: migrations, webhooks, the job log and the dead letters. The only module that
speaks SQL.

Static queries live by name in sql/queries.sql; the job list and its counts, whose filters
vary, are put together here from fixed fragments, never from user text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import orjson

from webhook_router import tracing
from webhook_router.audit import Action, AuditEntry, shown, webhook_target
from webhook_router.deadletters import DeadLetter, DeadLetterFilter
from webhook_router.encryption import KeyMissing, Keyring, is_sealed
from webhook_router.jobs import Outcome, Status
from webhook_router.models import BRIEF_JOB_COLUMNS, JOB_COLUMNS, Attempt, Job, JobQuery
from webhook_router.rights import Principal, Role, TokenInfo
from webhook_router.signing import generate_secret
from webhook_router.webhooks import Webhook

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
MIGRATION_LOCK = 0x7765_6268_6F6F_6B  # advisory lock key: one migrator at a time
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_WAITING_RETRY = "space = $1 AND status = 'Queued' AND retry_count > 0"
"""Jobs of a space queued again after a failed attempt (index webhook_jobs_retry_due)."""


def _load_queries() -> dict[str, str]:
    text = resources.files("webhook_router.sql").joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


Q = _load_queries()
RECORDER_ACTOR = "recorder"
"""The audit trail's actor for what the recorder changes itself."""


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _uuid(text: str) -> str | uuid.UUID:
    """An id for a uuid parameter: its canonical text as it is (the driver reads that
    itself, for a fraction of the cost of a `uuid.UUID`), any other form read by
    `uuid.UUID`, which accepts or refuses it as it always has."""
    return text if type(text) is str and _CANONICAL_UUID.fullmatch(text) else uuid.UUID(text)


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as `width` column lists, the parameters of an `unnest` insert (empty lists for
    no rows)."""
    return (
        [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
    )


def like_escape(text: str) -> str:
    """`text` matched literally inside a LIKE pattern (escape character `\\`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def token_info_of(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        name=row["name"],
        role=Role(row["role"]),
        spaces=list(row["spaces"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


Announce = Callable[[Webhook], Awaitable[None]]
"""What to do about a webhook just disabled before that commits (publish the news)."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The job list's filters, all optional but the space; `after` and `limit` page it."""

    space: str
    kapp: str | None = None
    """None: every job of the space; a slug: jobs of that kapp's webhooks."""
    kapp_only: bool = False
    status: str | None = None
    webhook: str | None = None
    parent_type: str | None = None
    parent_key: str | None = None
    type: str | None = None
    event: str | None = None
    form: str | None = None
    """A form's slug: jobs about the form or its submissions, in any kapp or the datastore."""
    url_text: str | None = None
    """Text the URL contains, any case, wildcards taken literally."""
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 25
    after: tuple[datetime, str] | None = None

    @classmethod
    def of(cls, query: JobQuery, space: str, kapp: str | None = None) -> JobFilter:
        """What a job list query (API or CLI) asks for, in a space, or in one of its kapps."""
        fields = query.model_dump(exclude={"page_token"})
        return cls(space=space, kapp=kapp, after=query.page_token, **fields)


def _conditions(f: JobFilter, *, with_status: bool = True) -> tuple[list[str], list[Any]]:
    """The job list's WHERE conditions and their arguments, without its page."""
    where = ["space = $1"]
    args: list[Any] = [f.space]

    def add(fragment: str, value: Any) -> None:
        args.append(value)
        where.append(fragment.replace("?", f"${len(args)}"))

    if f.kapp is not None:
        add("scope_type = 'Kapp' AND scope_id = ?", f.kapp)
    elif f.kapp_only:
        where.append("scope_type = 'Space'")
    if with_status and f.status is not None:
        add("status = ?", f.status)
    if f.webhook is not None:
        add("webhook_name = ?", f.webhook)
    if f.parent_type is not None:
        add("parent_type = ?", f.parent_type)
    if f.parent_key is not None:
        add("parent_id = ?", f.parent_key)
    if f.type is not None:
        add("type = ?", f.type)
    if f.event is not None:
        add("event = ?", f.event)
    if f.form is not None:
        # Every tree group about a form ends with " > {form slug}" (trees.tree_of).
        add("tree_group LIKE ? ESCAPE '\\'", "% > " + like_escape(f.form))
    if f.url_text is not None:
        add("url ILIKE ? ESCAPE '\\'", "%" + like_escape(f.url_text) + "%")
    if f.start is not None:
        add("scheduled_at >= ?", f.start)
    if f.end is not None:
        add("scheduled_at < ?", f.end)
    return where, args


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def connect(database_url: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection
    )
    assert pool is not None
    return pool


async def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it does not exist yet (a fresh server); True if made.

    Connects to the server's `postgres` database for that, as the same user."""
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urlsplit(database_url)
    name = unquote(parts.path.lstrip("/"))
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    return True


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied, in order; returns what it applied."""
    folder = resources.files("webhook_router.sql").joinpath("migrations")
    files = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for name, sql in files:
            version = name.removesuffix(".sql")
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    await make_partitions(pool)
    return applied


async def make_partitions(pool: asyncpg.Pool, months_ahead: int = 3) -> None:
    """Monthly partitions from last month to `months_ahead` months ahead; one maker at a
    time, so roles starting together never race to create the same partition."""
    today = datetime.now(UTC).date()
    first = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(Q["make_partitions"], first, months_ahead + 2)


@dataclass(frozen=True, slots=True)
class Resealed:
    """What `Store.reseal_secrets` did: webhooks rewritten, and those already current."""

    resealed: int
    current: int


@dataclass(frozen=True, slots=True)
class BodiesResealed:
    """What `Store.reseal_bodies` did: bodies rewritten under the first key, per table, and
    those left as they were because no listed key opens them."""

    jobs: int
    attempts: int
    unreadable: int


async def _audit_disabled(conn: asyncpg.Connection, webhook: Webhook) -> None:
    """The audit row of a webhook the recorder disabled (410 Gone, failing for too long),
    in the transaction that disables it: the trail holds every change, not only the
    front ends'."""
    await conn.execute(
        Q["insert_audit"],
        RECORDER_ACTOR,
        webhook.space,
        Action.WEBHOOK_DISABLED,
        webhook_target(webhook),
        None,
        shown(webhook),
    )


class Store:
    """`keyring` seals signing secrets and credentials on the way in and opens them on the
    way out; with `seal_payloads`, job bodies too."""

    def __init__(
        self, pool: asyncpg.Pool, keyring: Keyring | None = None, *, seal_payloads: bool = False
    ) -> None:
        self.pool = pool
        self.keyring = keyring or Keyring()
        self.seal_payloads = seal_payloads
        self._bound = False
        """Whether `pool` is one connection in a transaction (a store of `transaction()`)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        """A store whose every statement runs in one transaction, committed when the block
        ends without an error: a change and its audit row are written together. Inside
        one already, a savepoint of it."""
        if self._bound:
            async with self.pool.transaction():
                yield self
            return
        async with self.pool.acquire() as conn, conn.transaction():
            bound = Store(conn, self.keyring, seal_payloads=self.seal_payloads)
            bound._bound = True
            yield bound

    # sealing

    def _sealed(self, text: str | None) -> str | None:
        return None if text is None else self.keyring.seal(text)

    def _sealed_auth(self, auth: dict[str, str] | None) -> dict[str, str] | str | None:
        """Credentials as the `auth` column holds them: a sealed JSON string, or the
        object itself while no key is set."""
        if auth is None or not self.keyring.active:
            return auth
        return self.keyring.seal(orjson.dumps(auth).decode())

    def _opened(self, stored: str | None, why: list[str]) -> str | None:
        """The plaintext, or None with the reason added to `why` when it does not open."""
        if stored is None:
            return None
        try:
            return self.keyring.open(stored)
        except KeyMissing as exc:
            why.append(str(exc))
            return None

    def _opened_auth(self, stored: Any) -> dict[str, str] | None:
        if isinstance(stored, str):
            return dict(orjson.loads(self.keyring.open(stored)))
        return None if stored is None else dict(stored)

    def _payload(self, text: str | None) -> str | None:
        return self.keyring.seal(text) if self.seal_payloads and text is not None else text

    def _job(self, row: asyncpg.Record) -> Job:
        fields = dict(row)
        for column in ("request_content", "response_content"):
            if fields.get(column) is not None:
                fields[column] = self.keyring.open_or_keep(fields[column])
        return Job.of(fields)

    def _attempt(self, row: asyncpg.Record) -> Attempt:
        fields = dict(row)
        if fields["response_content"] is not None:
            fields["response_content"] = self.keyring.open_or_keep(fields["response_content"])
        return Attempt.of(fields)

    def webhook_of(self, row: asyncpg.Record) -> Webhook:
        """The webhook of a row, its secrets and credentials opened; one that does not open
        is None, and `unreadable` says why (one webhook's missing key never stops the
        others from loading)."""
        why: list[str] = []
        auth = None
        if isinstance(row["auth"], str):
            opened = self._opened(row["auth"], why)
            auth = None if opened is None else dict(orjson.loads(opened))
        elif row["auth"] is not None:
            auth = dict(row["auth"])
        return Webhook(
            id=str(row["id"]),
            space=row["space"],
            kapp=row["kapp"],
            name=row["name"],
            type=row["type"],
            event=row["event"],
            filter=row["filter"],
            url=row["url"],
            auth_strategy=row["auth_strategy"],
            enabled=row["enabled"],
            headers=dict(row["headers"]),  # [name, value] pairs: jsonb keeps no key order
            auth=auth,
            auth_set_at=row["auth_set_at"],
            secret=self._opened(row["secret"], why),
            previous_secret=self._opened(row["previous_secret"], why),
            previous_secret_until=row["previous_secret_until"],
            disabled_reason=row["disabled_reason"],
            unreadable="; ".join(why) or None,
            rate_limit=row["rate_limit"],
            trace_context=row["trace_context"],
            ordered=row["ordered"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def reseal_secrets(self) -> Resealed:
        """Seal every webhook's secrets and credentials under the first key, in one
        transaction; values already under it are left alone, so running it again is a
        no-op."""
        resealed = current = 0
        async with self.transaction() as tx:
            conn = tx.pool
            for row in await conn.fetch(Q["webhook_secrets_for_update"]):
                stored = [row["secret"], row["previous_secret"], row["auth"]]
                if all(
                    v is None or (isinstance(v, str) and self.keyring.current(v)) for v in stored
                ):
                    current += 1
                    continue
                await conn.execute(
                    Q["reseal_webhook_secrets"],
                    row["id"],
                    self.keyring.seal(self.keyring.open(row["secret"])),
                    self._sealed(
                        None
                        if row["previous_secret"] is None
                        else self.keyring.open(row["previous_secret"])
                    ),
                    self._sealed_auth(self._opened_auth(row["auth"])),
                )
                resealed += 1
        return Resealed(resealed, current)

    def _resealed_body(self, text: str | None, unreadable: list[str]) -> str | None:
        """A job body sealed under the first key (plaintext stays so unless bodies are
        sealed); as it was, noted in `unreadable`, when no listed key opens it."""
        if text is None or not (is_sealed(text) or self.seal_payloads):
            return text
        try:
            return self.keyring.seal(self.keyring.open(text))
        except KeyMissing:
            unreadable.append(text)
            return text

    async def reseal_bodies(self, batch: int = 500) -> BodiesResealed:
        """Seal the job log's bodies under the first key: those sealed under another key,
        and with `seal_payloads` the plaintext ones. `batch` rows per transaction, so the
        roles go on writing meanwhile; a row the recorder rewrote since it was read is
        left alone (it was written under the first key). Running it again changes nothing."""
        prefix = self.keyring.current_prefix
        if prefix is None:
            raise KeyMissing("no encryption key is set to seal under")
        unreadable: list[str] = []
        counts = {"jobs": 0, "attempts": 0}
        first = (uuid.UUID(int=0), datetime.min.replace(tzinfo=UTC))
        after: tuple[Any, ...]
        for table, after in (("jobs", first), ("attempts", (*first, -1, -1))):
            while True:
                if table == "jobs":
                    rows = await self.pool.fetch(
                        Q["job_bodies_to_reseal"], *after, prefix, self.seal_payloads, batch
                    )
                else:
                    rows = await self.pool.fetch(
                        Q["attempt_bodies_to_reseal"], *after, prefix, self.seal_payloads, batch
                    )
                if not rows:
                    break
                changes = []
                old: tuple[Any, ...]
                key: tuple[Any, ...]
                for r in rows:
                    if table == "jobs":
                        old = (r["request_content"], r["response_content"])
                        new = tuple(self._resealed_body(v, unreadable) for v in old)
                        key = (r["id"], r["event_at"])
                    else:
                        old = (r["response_content"],)
                        new = (self._resealed_body(old[0], unreadable),)
                        key = (r["job_id"], r["event_at"], r["replay"], r["attempt"])
                    if new != old:
                        changes.append((*key, *new, *old))
                    after = key
                query = Q["reseal_job_bodies" if table == "jobs" else "reseal_attempt_body"]
                async with self.transaction() as tx:
                    await tx.pool.executemany(query, changes)
                counts[table] += len(changes)
        return BodiesResealed(counts["jobs"], counts["attempts"], len(unreadable))

    # the audit trail

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
        """Add a row to the audit trail (in the caller's transaction, on a store of
        `transaction()`)."""
        await self.pool.execute(Q["insert_audit"], actor, space, action, target, before, after)

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
        """The space's (None: every space's) audit rows, newest first, only of `spaces`
        when given (a token's reach); `after` (at, id) continues a page."""
        after_at, after_id = after if after is not None else (None, None)
        rows = await self.pool.fetch(
            Q["audit_log"],
            space,
            start,
            end,
            after_at,
            None if after_id is None else uuid.UUID(after_id),
            limit,
            None if spaces is None else sorted(spaces),
        )
        return [AuditEntry(**dict(r)) for r in rows]

    # webhooks

    async def webhook_revision(self) -> int:
        value = await self.pool.fetchval(Q["webhook_revision"])
        return int(value)

    async def all_webhooks(self) -> list[Webhook]:
        return [self.webhook_of(r) for r in await self.pool.fetch(Q["all_webhooks"])]

    async def scope_webhooks(self, space: str, kapp: str | None) -> list[Webhook]:
        return [self.webhook_of(r) for r in await self.pool.fetch(Q["scope_webhooks"], space, kapp)]

    async def space_webhooks(self, space: str) -> list[Webhook]:
        """Every webhook of the space, space-level first, then by kapp and name."""
        return [self.webhook_of(r) for r in await self.pool.fetch(Q["space_webhooks"], space)]

    async def known_spaces(self, limit: int = 200) -> list[str]:
        """Spaces that have webhooks, in order, at most `limit`."""
        return [str(r["space"]) for r in await self.pool.fetch(Q["known_spaces"], limit)]

    async def get_webhook(self, space: str, kapp: str | None, name: str) -> Webhook | None:
        row = await self.pool.fetchrow(Q["get_webhook"], space, kapp, name)
        return self.webhook_of(row) if row else None

    async def get_webhook_by_id(self, webhook_id: str) -> Webhook | None:
        row = await self.pool.fetchrow(Q["get_webhook_by_id"], uuid.UUID(webhook_id))
        return self.webhook_of(row) if row else None

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
        """The new webhook, or None when its name is taken in its scope."""
        row = await self.pool.fetchrow(
            Q["insert_webhook"],
            uuid.uuid4(),
            space,
            kapp,
            name,
            type,
            event,
            filter,
            url,
            auth_strategy,
            enabled,
            self.keyring.seal(generate_secret()),
            list((headers or {}).items()),
            self._sealed_auth(auth),
            rate_limit,
            trace_context,
            ordered,
        )
        return self.webhook_of(row) if row else None

    async def update_webhook(self, webhook: Webhook, *, auth_given: bool = False) -> Webhook | None:
        """Saves name, type, event, filter, url, auth strategy, headers, rate limit, trace
        context, ordered and enabled, and the credentials when `auth_given` (stamping when
        they were set); None on a name taken in the scope."""
        try:
            row = await self.pool.fetchrow(
                Q["update_webhook"],
                uuid.UUID(webhook.id),
                webhook.name,
                webhook.type,
                webhook.event,
                webhook.filter,
                webhook.url,
                webhook.auth_strategy,
                webhook.enabled,
                self._sealed_auth(webhook.auth),
                auth_given,
                list(webhook.headers.items()),
                webhook.rate_limit,
                webhook.trace_context,
                webhook.ordered,
            )
        except asyncpg.UniqueViolationError:
            return None
        return self.webhook_of(row) if row else None

    async def rotate_secret(self, webhook_id: str, grace_seconds: float) -> Webhook | None:
        row = await self.pool.fetchrow(
            Q["rotate_webhook_secret"],
            uuid.UUID(webhook_id),
            self.keyring.seal(generate_secret()),
            timedelta(seconds=grace_seconds),
        )
        return self.webhook_of(row) if row else None

    async def disable_webhook(
        self, webhook_id: str, reason: str, *, then: Announce | None = None
    ) -> Webhook | None:
        """The webhook as disabled now; None when it was disabled (or gone) already.
        `then` runs before the change commits: if it fails, nothing was disabled."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q["disable_webhook"], uuid.UUID(webhook_id), reason)
            disabled = self.webhook_of(row) if row else None
            if disabled is not None:
                await _audit_disabled(conn, disabled)
            if disabled is not None and then is not None:
                await then(disabled)
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
        """Disable those of the webhooks whose jobs have all failed for `after` seconds,
        at least `min_failed` of them (queries.sql: disable_failing_webhooks); `then` runs
        for each before the change commits."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q["disable_failing_webhooks"],
                [uuid.UUID(w) for w in webhook_ids],
                timedelta(seconds=after),
                min_failed,
                reason,
            )
            disabled = [self.webhook_of(r) for r in rows]
            for webhook in disabled:
                await _audit_disabled(conn, webhook)
            for webhook in disabled if then is not None else []:
                assert then is not None
                await then(webhook)
        return disabled

    async def take_rate_slot(
        self, webhook_id: str, spacing: float, horizon: float
    ) -> tuple[float | None, float]:
        """One delivery slot of a rate-limited webhook, `spacing` seconds after the last
        one taken by any worker, if it starts within `horizon` seconds: (seconds until it
        starts or None, seconds until the slots taken run out)."""
        row = await self.pool.fetchrow(Q["take_rate_slot"], uuid.UUID(webhook_id), spacing, horizon)
        assert row is not None
        return row["wait"], float(row["booked"] or 0.0)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.pool.execute(Q["delete_webhook"], uuid.UUID(webhook_id))

    # API tokens

    async def insert_api_token(
        self, name: str, role: Role, spaces: Sequence[str], digest: bytes
    ) -> TokenInfo | None:
        """The new token, or None when the name is taken (revoked tokens keep theirs)."""
        row = await self.pool.fetchrow(
            Q["insert_api_token"], name, role.value, list(spaces), digest
        )
        return token_info_of(row) if row else None

    async def list_api_tokens(self) -> list[TokenInfo]:
        return [token_info_of(r) for r in await self.pool.fetch(Q["list_api_tokens"])]

    async def revoke_api_token(self, name: str) -> TokenInfo | None:
        """The token as revoked now, or None when no live token has that name."""
        row = await self.pool.fetchrow(Q["revoke_api_token"], name)
        return token_info_of(row) if row else None

    async def api_token_by_hash(self, digest: bytes) -> Principal | None:
        row = await self.pool.fetchrow(Q["api_token_by_hash"], digest)
        if row is None:
            return None
        spaces = frozenset(row["spaces"]) or None
        return Principal(row["name"], Role(row["role"]), spaces)

    async def touch_api_token(self, name: str, when: datetime) -> None:
        await self.pool.execute(Q["touch_api_token"], name, when)

    # the job log

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of outcomes in one transaction; replays change nothing."""
        now = datetime.now(UTC)
        jobs = []
        attempts = []
        latest: dict[str, Outcome] = {}
        for o in outcomes:
            held = latest.get(o.delivery.job_id)
            if held is None or o.version > held.version:
                latest[o.delivery.job_id] = o
        for key in sorted(latest):
            o = latest[key]
            d = o.delivery
            event_at = datetime.fromisoformat(d.event_at)
            jobs.append(
                (
                    _uuid(d.job_id),
                    event_at,
                    d.event_id,
                    _uuid(d.webhook_id),
                    d.webhook_name,
                    d.space,
                    d.scope_type,
                    d.scope_id,
                    d.type,
                    d.action,
                    d.parent_type,
                    d.parent_id,
                    d.tree_group,
                    d.tree_name,
                    d.url,
                    self._payload(d.body) if d.body else None,
                    o.response_status,
                    self._payload(o.response_content),
                    o.summary,
                    o.run_id,
                    o.status,
                    o.retry_count,
                    o.attempts,
                    d.replay,
                    o.attempt.duration_ms if o.attempt else None,
                    _ts(o.scheduled_at) or _ts(d.created_at) or now,
                    _ts(d.created_at) or now,
                    now,
                    now if o.status in (Status.COMPLETE, Status.FAILED) else None,
                    tracing.trace_id_of(d.trace),
                )
            )
        for o in outcomes:
            if o.attempt is not None:
                d, a = o.delivery, o.attempt
                attempts.append(
                    (
                        _uuid(d.job_id),
                        datetime.fromisoformat(d.event_at),
                        d.replay,
                        a.number,
                        _uuid(d.webhook_id),
                        d.url,
                        datetime.fromisoformat(a.started_at),
                        a.duration_ms,
                        a.response_status,
                        self._payload(a.response_content),
                        a.error,
                        a.request_headers,
                    )
                )
        await self.pool.execute(Q["record"], *_columns(jobs, 30), *_columns(attempts, 12))

    async def event_time(self, event_id: str) -> datetime | None:
        """When the event with this id happened, as its recorded jobs say; None if none."""
        value = await self.pool.fetchval(Q["event_time"], event_id)
        return value if isinstance(value, datetime) else None

    async def get_job(self, job_id: str) -> Job | None:
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            return None
        row = await self.pool.fetchrow(Q["get_job"], key)
        return self._job(row) if row else None

    async def job_ids_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids of jobs whose hex digits start with `prefix` (hex digits, no dashes), in
        order, at most `limit`."""
        rest = 32 - len(prefix)
        low, high = uuid.UUID(prefix + "0" * rest), uuid.UUID(prefix + "f" * rest)
        rows = await self.pool.fetch(Q["job_ids_between"], low, high, limit)
        return [str(r["id"]) for r in rows]

    async def job_attempts(self, job_id: str) -> list[Attempt]:
        rows = await self.pool.fetch(Q["job_attempts"], uuid.UUID(job_id))
        return [self._attempt(r) for r in rows]

    async def key_neighbours(self, job: Job) -> dict[str, tuple[str, str]]:
        """The jobs of the job's webhook and key routed just before and after it, by side
        (`before`, `after`): (id, status)."""
        rows = await self.pool.fetch(
            Q["key_neighbours"],
            job.space,
            job.webhook_id,
            job.parent_type,
            job.parent_id,
            job.created_at,
        )
        return {r["side"]: (str(r["id"]), r["status"]) for r in rows}

    async def list_jobs(self, f: JobFilter, *, brief: bool = False) -> list[Job]:
        """Newest first by scheduledAt then id; `after` continues a page. `brief`: without
        the request and response contents, for pages that show many jobs but none of them."""
        where, args = _conditions(f)
        if f.after is not None:
            args.extend(f.after)
            where.append(f"(scheduled_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
        args.append(f.limit)
        sql = (
            f"SELECT {BRIEF_JOB_COLUMNS if brief else JOB_COLUMNS} FROM webhook_jobs WHERE "
            + " AND ".join(where)
            + f" ORDER BY scheduled_at DESC, id DESC LIMIT ${len(args)}"
        )
        return [self._job(r) for r in await self.pool.fetch(sql, *args)]

    async def count_by_status(self, f: JobFilter) -> dict[str, int]:
        """Jobs per status under every filter of `f` but the status and the page; every
        status is present."""
        where, args = _conditions(f, with_status=False)
        sql = "SELECT status, count(*) AS n FROM webhook_jobs WHERE " + " AND ".join(where)
        counts = {s.value: 0 for s in Status}
        for row in await self.pool.fetch(sql + " GROUP BY status", *args):
            counts[row["status"]] = int(row["n"])
        return counts

    async def retry_backlog(self, space: str, limit: int = 20) -> tuple[int, list[Job]]:
        """How many jobs of the space wait for a retry, and the `limit` next due (brief)."""
        total = await self.pool.fetchval(
            f"SELECT count(*) FROM webhook_jobs WHERE {_WAITING_RETRY}", space
        )
        rows = await self.pool.fetch(
            f"SELECT {BRIEF_JOB_COLUMNS} FROM webhook_jobs WHERE {_WAITING_RETRY}"
            " ORDER BY scheduled_at, id LIMIT $2",
            space,
            limit,
        )
        return int(total), [self._job(r) for r in rows]

    async def attempts_per_minute(self, space: str, since: datetime) -> list[asyncpg.Record]:
        """HTTP attempts (`deliveries`) and failed ones (`failures`: no answer or not 2xx)
        per `minute` since `since`, for the space's current webhooks; minutes without
        attempts are absent."""
        return list(await self.pool.fetch(Q["attempts_per_minute"], space, since))

    async def failing_webhooks(
        self, space: str, since: datetime, limit: int = 10
    ) -> list[asyncpg.Record]:
        """The webhooks with the most jobs that ended Failed since `since`, most first."""
        return list(await self.pool.fetch(Q["failing_webhooks"], space, since, limit))

    # retention

    async def partitions_ending_before(self, cutoff: datetime) -> list[asyncpg.Record]:
        """Monthly partitions of the job tables (`parent`, `name`, `ends`) whose whole
        range lies before `cutoff` and before the current month, oldest first."""
        return list(await self.pool.fetch(Q["partitions_ending_before"], cutoff))

    async def drop_partition(self, parent: str, name: str, lock_timeout: float) -> None:
        """Detach and drop one partition in one short transaction.

        Detaching needs the parent's exclusive lock (not CONCURRENTLY: PostgreSQL refuses
        that while a DEFAULT partition exists), and writers queue behind a waiting lock, so
        it waits at most `lock_timeout` seconds, then raises asyncpg.LockNotAvailableError.
        """
        await self.pool.execute(Q["drop_partition"], parent, name, timedelta(seconds=lock_timeout))

    async def delete_old_default_rows(self, cutoff: datetime, batch: int) -> int:
        """Delete the rows of events before `cutoff` from the DEFAULT partitions, `batch`
        rows per statement so that no statement holds many row locks for long."""
        deleted = 0
        for query in ("delete_old_default_attempts", "delete_old_default_jobs"):
            while True:
                done = int((await self.pool.execute(Q[query], cutoff, batch)).split()[-1])
                deleted += done
                if done == 0:
                    break
        return deleted

    async def analyze_job_log(self) -> None:
        """Refresh the planner's statistics of the job tables. Autovacuum analyzes each
        partition but never the partitioned tables themselves, whose statistics the views'
        plans rely on."""
        await self.pool.execute(Q["analyze_job_log"])

    # dead letters

    async def keep_dead_letter(self, letter: DeadLetter) -> bool:
        """Store a dead letter unless its id is stored; whether it was new."""
        status = await self.pool.execute(
            Q["keep_dead_letter"],
            uuid.UUID(letter.id),
            letter.role,
            letter.reason,
            letter.dead_at,
            letter.event_id,
            letter.webhook_id,
            letter.webhook_name,
            letter.space,
            letter.routing_key,
            letter.message_id,
            letter.headers,
            letter.body,
            letter.preview,
        )
        return bool(status == "INSERT 0 1")

    async def dead_letters(self, f: DeadLetterFilter) -> list[DeadLetter]:
        """A page of dead letters, newest first, without bodies or headers."""
        after_at, after_id = f.after if f.after is not None else (None, None)
        rows = await self.pool.fetch(
            Q["list_dead_letters"],
            f.role,
            like_escape(f.reason) if f.reason is not None else None,
            f.start,
            f.end,
            after_at,
            after_id,
            f.not_requeued,
            f.limit,
            None if f.spaces is None else sorted(f.spaces),
        )
        return [DeadLetter.of(r) for r in rows]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        row = await self.pool.fetchrow(Q["get_dead_letter"], uuid.UUID(letter_id))
        return DeadLetter.of(row) if row is not None else None

    async def mark_dead_letter_requeued(self, letter_id: str) -> tuple[datetime, int] | None:
        """Note that a dead letter was sent back: when, and how many times in all."""
        row = await self.pool.fetchrow(Q["mark_dead_letter_requeued"], uuid.UUID(letter_id))
        return (row["requeued_at"], row["requeue_count"]) if row is not None else None


class ShardLost(Exception):
    """A ledger write under an epoch the shard has moved past: another holder took it."""


@dataclass(frozen=True, slots=True)
class ShardState:
    """What the ledger holds of one ordered shard when a holder takes it."""

    epoch: int
    heads: list[tuple[str, bytes, datetime]]
    """(key, head delivery, when it is due)."""
    parked: list[tuple[str, str, bytes]]
    """(key, job id, delivery), in the order they were parked."""


class Ledger:
    """The ordered shards' ledger (docs/ordering.md). Every write but taking a shard is
    fenced by the writer's epoch: it raises ShardLost once another holder took the shard."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def take(self, shard: str, owner: str, keep_finals: timedelta) -> ShardState:
        async with self.pool.acquire() as conn, conn.transaction():
            epoch = await conn.fetchval(Q["take_ordered_shard"], shard, owner)
            heads = await conn.fetch(Q["ordered_heads"], shard)
            parked = await conn.fetch(Q["ordered_parked_of_shard"], shard)
        await self.pool.execute(Q["forget_old_ordered_finals"], keep_finals)
        return ShardState(
            int(epoch),
            [(r["key"], orjson.dumps(r["head"]), r["due_at"]) for r in heads],
            [(r["key"], str(r["job_id"]), orjson.dumps(r["delivery"])) for r in parked],
        )

    @staticmethod
    async def _fence(conn: asyncpg.Connection, shard: str, epoch: int) -> None:
        if not await conn.fetchval(Q["hold_ordered_shard"], shard, epoch):
            raise ShardLost(f"ordered shard {shard} moved past epoch {epoch}")

    async def park(self, shard: str, epoch: int, key: str, job: str, delivery: bytes) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn, shard, epoch)
            await conn.execute(
                Q["park_ordered"], key, shard, uuid.UUID(job), orjson.Fragment(delivery)
            )

    async def set_head(
        self, shard: str, epoch: int, key: str, head: bytes, due_at: datetime
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn, shard, epoch)
            await conn.execute(Q["set_ordered_head"], key, shard, orjson.Fragment(head), due_at)

    async def finish(self, shard: str, epoch: int, key: str, job: str, replay: int) -> bytes | None:
        """The job is final: recorded as such, and the key's first parked delivery, if any,
        made its head (returned); else the key leaves the ledger. One transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn, shard, epoch)
            await conn.execute(Q["add_ordered_final"], uuid.UUID(job), replay)
            nxt = await conn.fetchval(Q["take_first_parked"], key)
            if nxt is None:
                await conn.execute(Q["clear_ordered_head"], key)
                return None
            head = orjson.dumps(nxt)
            await conn.execute(
                Q["set_ordered_head"], key, shard, orjson.Fragment(head), datetime.now(UTC)
            )
            return head

    async def bound(self, namespace: str, routing_key: str) -> None:
        """The `ordered` queue is bound to this event routing key (the first time counts)."""
        await self.pool.execute(Q["add_ordered_binding"], namespace, routing_key)

    async def unbound(self, namespace: str, routing_key: str) -> None:
        await self.pool.execute(Q["drop_ordered_binding"], namespace, routing_key)

    async def bindings(self, namespace: str) -> dict[str, datetime]:
        """Each event routing key `ordered` is bound to, with when it was first bound."""
        rows = await self.pool.fetch(Q["ordered_bindings"], namespace)
        return {r["routing_key"]: r["bound_at"] for r in rows}

    async def final_at(self, job: str, replay: int) -> bool:
        """Whether a holder made the job final at this replay or a later one."""
        return bool(await self.pool.fetchval(Q["ordered_final_at"], uuid.UUID(job), replay))
