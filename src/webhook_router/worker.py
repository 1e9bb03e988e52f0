"""Delivery worker role: POST each delivery, classify the answer, report the outcome.

One HTTP client (http_client.py) refuses private and internal addresses after resolution;
a second one, whose guard lets the engine's host through, carries only the deliveries the
engine exemption covers (a relative webhook URL, to the engine's own origin). Neither keeps
cookies: a receiver's Set-Cookie is sent back to no webhook, its own included.
A delivery is acknowledged only after its outcome (and, for a retry, the next attempt waiting
in its TTL queue) was confirmed by the broker: a worker killed mid-POST loses nothing, the
delivery comes back and is posted again under the same job id, which receivers get in
`webhook-id` to drop duplicates. An outcome too large for a message goes without the request
body, which the job's Queued record holds already.

Credentials (the signing secret, Basic and Bearer credentials, an mTLS client certificate)
are looked up by webhook id in the webhook cache as each POST is made, never carried in the
delivery, and never sent to the engine; an attempt records the `Authorization` header's
scheme only. An mTLS client certificate is presented through its webhook's own SSL
context, passed per request, so the client's guard still checks every address.

A webhook with a rate limit has each delivery take a slot shared by every worker
(ratelimit.py) before it takes one of its endpoint; one without never asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from webhook_router import __version__, broker, metrics, tracing
from webhook_router.answers import answer_text
from webhook_router.batching import Batcher, TooLarge
from webhook_router.cache import WebhookCache
from webhook_router.classify import Decision, Verdict, classify
from webhook_router.credentials import (
    AUTH_FIELDS,
    SETS_AUTHORIZATION,
    ClientCertificates,
    CredentialsInvalid,
    authorization,
)
from webhook_router.deadletters import dead_headers
from webhook_router.holder import Holder
from webhook_router.http_client import Client, PostFailed
from webhook_router.isolation import AT_LIMIT, EndpointGuard, Line, endpoint_of
from webhook_router.jobs import (
    Attempt,
    Delivery,
    Outcome,
    Status,
    bounded_summary,
    storable,
    utcnow,
)
from webhook_router.ratelimit import RateLimits
from webhook_router.runs import run_id_of
from webhook_router.service import (
    Drain,
    InFlight,
    SideTasks,
    dead_letter,
    dead_letter_unreadable,
    link,
)
from webhook_router.settings import Settings
from webhook_router.signing import signature_headers
from webhook_router.ssrf import AddressPolicy, EngineExemption
from webhook_router.store import Ledger, Store
from webhook_router.topology import (
    RECORD_KEY,
    RETRY_HEADER,
    Topology,
    delay_name,
)
from webhook_router.webhooks import Webhook

log = structlog.get_logger(__name__)

USER_AGENT = f"webhook-router/{__version__}"
RATE_LIMITED = "rate limit"
"""Why a delivery is deferred when its webhook's rate limit has no slot for it soon."""


class Worker:
    name = "worker"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.names = settings.names
        self.schedule = settings.schedule
        self.holder = Holder(self, Ledger(store.pool))
        self.side = SideTasks(self.name)
        self.cache = WebhookCache(store, settings.database_url, settings.webhook_refresh)
        self.guard = EndpointGuard(
            settings.endpoint_concurrency, settings.circuit_threshold, settings.circuit_cooldown
        )
        self.policy = AddressPolicy(settings.allowed_networks)
        self.engine = EngineExemption(settings.engine_url)
        self.engine_policy = AddressPolicy(
            settings.allowed_networks, allowed_hosts=[self.engine.host]
        )
        self.inflight = InFlight()
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self.client = self._client(self.policy)
        """Every delivery's client, but those the engine exemption covers."""
        self.engine_client = self._client(self.engine_policy)
        """Only for deliveries to the workflow engine's own origin (`EngineExemption`)."""
        self._consumer_tags: list[tuple[AbstractQueue, str]] = []
        self.batcher: Batcher[Outcome] | None = None
        self._posts = asyncio.Semaphore(settings.worker_concurrency)
        self._lines: dict[str, Line] = {}
        """Per endpoint, its slots and the deliveries waiting for one."""
        self.certificates = ClientCertificates()
        self.rates = RateLimits(store, settings.endpoint_wait)
        self.handed_to: Callable[[list[Outcome]], Awaitable[None]] | None = None
        """Where outcomes go in memory (a direct handoff: the recorder's `take`), returning
        once recorded; None: to the recorder through the results exchange."""

    async def direct(self, delivery: Delivery) -> None:
        """A delivery handed over in memory by the router of this process (a direct
        handoff): posted and its outcome recorded (or deferred, recorded Queued) before
        this returns; raises what would have the delivery's message given back."""
        with self.inflight.hold():
            await self.traced(delivery)

    async def start(self) -> None:
        s = self.settings
        self.side.watch(await self.cache.start())
        self.connection, self.topology = await link(s, self.name, prefetch=s.worker_concurrency)
        self.batcher = Batcher(
            lambda: self._results(), lambda _: RECORD_KEY, max_bytes=s.max_message_bytes
        )
        self._consumer_tags = [
            (queue, await queue.consume(self.on_delivery)) for queue in self.topology.deliver_queues
        ]
        self.side.start(self.holder.run(), "ordered-holder")
        log.info("worker started", queues=self.names.deliver_queues())

    def _client(self, policy: AddressPolicy) -> Client:
        s = self.settings
        return Client(
            policy,
            connect_timeout=s.connect_timeout,
            request_timeout=s.request_timeout,
            limit=s.response_limit,
            user_agent=USER_AGENT,
        )

    def client_for(self, delivery: Delivery) -> Client:
        """The engine's client for a delivery the exemption covers, else the guarded one."""
        exempt = self.engine.covers(delivery.url, to_engine=delivery.to_engine)
        return self.engine_client if exempt else self.client

    def _results(self) -> AbstractExchange:
        assert self.topology is not None
        return self.topology.results

    def ready(self) -> bool:
        return broker.connected(self.connection) and self.side.alive

    async def stop(self, deadline: float) -> None:
        drain = Drain(deadline, self.name)
        await broker.cancel(self._consumer_tags)
        self.side.retire()  # the holder's loop ends now, and that is no death
        await self.holder.stop(drain.left())
        await self.inflight.wait_idle(drain.left())
        if self.batcher is not None:
            await drain.step(self.batcher.drain(), "outcomes confirmed")
        if self.connection is not None:
            await broker.close(self.connection, drain.left())
        for client in (self.client, self.engine_client):
            await client.close()
        await self.side.stop()
        await self.cache.stop()

    async def on_delivery(self, message: AbstractIncomingMessage) -> None:
        """One message holds one or more deliveries (the router batches them under load);
        it is acknowledged once every one of them was posted and reported, or deferred. An
        item that is no delivery is dead-lettered alone; the others are posted."""
        assert self.topology is not None
        with self.inflight.hold():
            try:
                items = Delivery.decode_each(message.body)
            except (ValueError, TypeError) as exc:
                await dead_letter(
                    self.topology.dead, message, role=self.name, reason=f"bad delivery: {exc}"
                )
                await message.ack()
                return
            deliveries = [item for item in items if isinstance(item, Delivery)]
            try:
                await dead_letter_unreadable(self.topology.dead, items, message, role=self.name)
            except Exception:
                log.exception("bad deliveries not dead-lettered")
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
            try:
                if len(deliveries) == 1:
                    await self.traced(deliveries[0])  # alone: no task to run it beside others
                else:
                    await asyncio.gather(*(self.traced(d) for d in deliveries))
            except Exception:
                # the broker or a bug: give the message back; the delivery limit stops a loop
                log.exception("deliveries not handled", count=len(deliveries))
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
            await message.ack()

    async def traced(self, delivery: Delivery) -> None:
        """`deliver` in its attempt's span, child of the router's span of the job; without
        one when tracing is off."""
        if not tracing.enabled():
            await self.deliver(delivery)
            return
        with tracing.span(
            "webhook attempt",
            parent=delivery.trace,
            kind=tracing.CLIENT,
            attributes=tracing.attempt_attributes(delivery),
        ):
            await self.deliver(delivery)

    async def deliver(self, delivery: Delivery) -> None:
        tried = await self.attempt(delivery)
        if isinstance(tried, str):
            await self.defer(delivery, tried)
            return
        await self.report(delivery, *tried)

    async def attempt(self, delivery: Delivery) -> tuple[Attempt, Decision] | str:
        """POST the delivery once and classify the answer; or, without POSTing, why it must
        be deferred (its webhook's rate limit, its endpoint full, its circuit open). An
        ordered delivery's holder calls it too, so the rate limit holds on both paths."""
        if not await self.within_rate(delivery):
            return RATE_LIMITED
        endpoint = endpoint_of(delivery.url)
        wait = await self.slot(endpoint)
        if wait is not None:
            return wait
        healthy = True
        try:
            async with self._posts:
                attempt, retry_after_header, refused = await self.post(delivery)
            status = attempt.response_status
            healthy = refused or (status is not None and status < 500)
        finally:
            self.guard.release(endpoint, healthy=healthy, now=time.monotonic())
            self._lines[endpoint].release()
        decision = classify(
            status=attempt.response_status,
            error=attempt.error,
            attempt=delivery.attempt,
            schedule=self.schedule,
            retry_after_header=retry_after_header,
            refused=refused,
        )
        return attempt, decision

    async def within_rate(self, delivery: Delivery) -> bool:
        """Wait for the delivery's slot under its webhook's rate limit, if it has one;
        False: no slot soon (or the database cannot say), defer it."""
        webhook = self.cache.by_id.get(delivery.webhook_id)
        if webhook is None or webhook.rate_limit is None:
            return True
        try:
            return await self.rates.reach(webhook.id, webhook.rate_limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("rate limit slot not taken", webhook=webhook.name, error=repr(exc))
            return False

    async def slot(self, endpoint: str) -> str | None:
        """Take a slot of the endpoint, waiting up to `endpoint_wait` in line while it is
        full; None once taken, else why the delivery must be deferred."""
        if self.guard.is_open(endpoint, time.monotonic()):
            return "circuit open"
        line = self._lines.get(endpoint)
        if line is None:
            s = self.settings
            line = self._lines[endpoint] = Line(s.endpoint_concurrency, s.endpoint_wait)
        if not await line.take():
            return AT_LIMIT
        wait = self.guard.acquire(endpoint, time.monotonic())
        if wait is not None:
            line.release()
        return wait

    async def defer(self, delivery: Delivery, reason: str) -> None:
        """Hold a delivery back without spending an attempt: it waits in a retry queue
        (the schedule's first step; `endpoint_wait` under a rate limit, as far as the
        slots run ahead) and comes back as the same attempt."""
        assert self.topology is not None
        wait = self.settings.endpoint_wait if reason == RATE_LIMITED else self.schedule[0]
        published = broker.publish(
            self.topology.retry,
            orjson.dumps([delivery]),
            self.names.delivery_key(delivery.webhook_id),
            message_id=delivery.job_id,
            headers={RETRY_HEADER: delay_name(wait), "x-deferred": reason},
        )
        if self.handed_to is None:
            await published
        else:  # no router's Queued record before it: the job shows in the log from now
            queued = Outcome(delivery, Status.QUEUED, trace=delivery.trace)
            await asyncio.gather(published, self.handed_to([queued]))
        metrics.deferred()
        tracing.annotate({"webhook_router.deferred": reason}, name="webhook attempt deferred")
        log.debug(
            "delivery deferred",
            event_id=delivery.event_id,
            job_id=delivery.job_id,
            webhook=delivery.webhook_name,
            url=delivery.url,
            reason=reason,
        )

    async def report(
        self, delivery: Delivery, attempt: Attempt, decision: Decision, *, retry: bool = True
    ) -> None:
        """Publish the outcome (and the dead letter of an exhausted job) and, unless the
        caller keeps the retry itself (`retry=False`, the ordered holder), the next attempt."""
        assert self.topology is not None
        assert self.batcher is not None
        outcome = outcome_of(delivery, attempt, decision)
        tracing.attempt_done(attempt, decision)
        if carried := tracing.carrier():
            outcome = replace(outcome, trace=carried)
        publishes: list[Awaitable[None]] = [self.send_outcome(outcome)]
        if decision.verdict is Verdict.RETRY and retry:
            assert decision.delay is not None
            publishes.append(
                broker.publish(
                    self.topology.retry,
                    orjson.dumps([delivery.next_attempt()]),
                    self.names.delivery_key(delivery.webhook_id),
                    message_id=delivery.job_id,
                    headers={RETRY_HEADER: delay_name(decision.delay)},
                )
            )
        if decision.exhausted:
            publishes.append(
                broker.publish(
                    self.topology.dead,
                    delivery.encode(),
                    "",
                    message_id=delivery.job_id,
                    headers=dead_headers(
                        self.name, decision.summary, self.names.delivery_key(delivery.webhook_id)
                    ),
                )
            )
        if len(publishes) == 1:
            await publishes[0]  # the outcome alone, the common case: no gathering task
        else:
            await asyncio.gather(*publishes)
        metrics.delivery_done(decision, attempt.duration_ms / 1000)
        metrics.webhook_attempt(delivery, decision)
        log.info(
            "attempt made",
            event_id=delivery.event_id,
            job_id=delivery.job_id,
            webhook=delivery.webhook_name,
            attempt=delivery.attempt,
            url=delivery.url,
            summary=decision.summary,
            verdict=decision.verdict.value,
            duration_ms=round(attempt.duration_ms, 1),
        )

    async def send_outcome(self, outcome: Outcome) -> None:
        """Hand the outcome to the recorder. One too large for a message (a large event
        with a large answer) goes without the request body, which the job's Queued record
        holds already."""
        if self.handed_to is not None:
            await self.handed_to([outcome])
            return
        assert self.batcher is not None
        try:
            await self.batcher.add(outcome)
        except TooLarge:
            log.warning(
                "outcome sent without its request body",
                job_id=outcome.delivery.job_id,
                event_id=outcome.delivery.event_id,
            )
            await self.batcher.add(replace(outcome, delivery=replace(outcome.delivery, body="")))

    async def _webhook_of(self, delivery: Delivery, what: str) -> Webhook:
        webhook = self.cache.by_id.get(delivery.webhook_id)
        if webhook is None:
            await self.cache.reload()
            webhook = self.cache.by_id.get(delivery.webhook_id)
        if webhook is None:
            raise LookupError(f"its webhook was deleted, so there is no {what}")
        if webhook.unreadable is not None:
            raise LookupError(f"its webhook's {what} cannot be read: {webhook.unreadable}")
        return webhook

    async def _credentials(self, delivery: Delivery) -> dict[str, str]:
        """The delivery's strategy's credentials as its webhook holds them now."""
        strategy = delivery.auth_strategy or ""
        webhook = await self._webhook_of(delivery, f"{strategy} credential to send")
        fields = AUTH_FIELDS[strategy]
        auth = webhook.auth or {}
        if webhook.auth_strategy != strategy or any(k not in auth for k in fields):
            raise LookupError(f"its webhook no longer holds {strategy} credentials")
        return auth

    async def headers_for(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        """The delivery's custom headers, then the router's own and its credentials."""
        headers = delivery.headers | {
            "Content-Type": "application/json",
            "webhook-id": delivery.job_id,
        }
        if delivery.to_engine:
            return headers
        if delivery.auth_strategy in SETS_AUTHORIZATION:
            auth = await self._credentials(delivery)
            assert delivery.auth_strategy is not None
            return headers | {"Authorization": authorization(delivery.auth_strategy, auth)}
        if delivery.auth_strategy != "Signature":
            return headers
        webhook = await self._webhook_of(delivery, "secret to sign with")
        if webhook.secret is None:
            raise LookupError("its webhook was deleted, so there is no secret to sign with")
        secrets = [webhook.secret]
        until = webhook.previous_secret_until
        if webhook.previous_secret and until is not None and until > datetime.now(UTC):
            secrets.append(webhook.previous_secret)
        return headers | signature_headers(secrets, delivery.job_id, body)

    async def tls_for(self, delivery: Delivery) -> ssl.SSLContext | None:
        """The webhook's client certificate context for an mTLS delivery, else None (the
        client's default verification)."""
        if delivery.auth_strategy != "mTLS" or delivery.to_engine:
            return None
        auth = await self._credentials(delivery)
        self.certificates.forget_except(self.cache.by_id)
        try:
            return self.certificates.context(delivery.webhook_id, auth)
        except CredentialsInvalid as exc:
            raise LookupError(f"its client {exc.field} {exc.message}") from None

    async def post(self, delivery: Delivery) -> tuple[Attempt, str | None, bool]:
        """Make one HTTP attempt; never raises for anything the endpoint does.
        Returns the attempt, the Retry-After header and whether the target was refused."""
        client = self.client_for(delivery)
        body = delivery.body.encode()
        started = utcnow()
        clock = time.perf_counter()
        status: int | None = None
        content: str | None = None
        error: str | None = None
        retry_after: str | None = None
        refused = False
        headers: dict[str, str] = {}
        try:
            headers = await self.headers_for(delivery, body)
            if delivery.trace_context:
                tracing.inject(headers)
            tls = await self.tls_for(delivery)
            answer = await client.post(delivery.url, body, headers, tls)
            status, retry_after = answer.status, answer.retry_after
            content = answer_text(answer.body, answer.truncated)
        except LookupError as exc:
            error, refused = f"not sent: {exc}", True
        except PostFailed as exc:
            error, refused = exc.message, exc.refused
        duration = (time.perf_counter() - clock) * 1000
        shown = {k: v for k, v in headers.items() if k != "webhook-signature"}
        if "Authorization" in shown:
            shown["Authorization"] = shown["Authorization"].split(" ")[0] + " (hidden)"
        attempt = Attempt(
            number=delivery.attempt,
            started_at=started.isoformat(),
            duration_ms=duration,
            response_status=status,
            response_content=content,
            error=error,
            request_headers=shown,
        )
        return attempt, retry_after, refused


def outcome_of(delivery: Delivery, attempt: Attempt, decision: Decision) -> Outcome:
    """The job's new state after an attempt and its decision, its text made storable:
    NUL in the answer or the error replaced by U+FFFD, which the summary then says."""
    content, replaced = storable(attempt.response_content)
    error, replaced_in_error = storable(attempt.error)
    if replaced or replaced_in_error:
        attempt = replace(attempt, response_content=content, error=error)
    summary = decision.summary
    if error and decision.verdict is not Verdict.COMPLETE and error not in summary:
        summary = f"{summary}: {error}"
    summary = storable(summary)[0] or ""
    if replaced:
        summary = f"{summary} (answer altered: {replaced} NUL replaced by U+FFFD)"
    summary = bounded_summary(summary)
    status, retry_count = Status.FAILED, delivery.attempt - 1
    run_id = scheduled_at = disable_webhook = None
    if decision.verdict is Verdict.COMPLETE:
        status, run_id = Status.COMPLETE, run_id_of(content)
    elif decision.verdict is Verdict.RETRY:
        assert decision.delay is not None
        status, retry_count = Status.QUEUED, delivery.attempt
        scheduled_at = (utcnow() + timedelta(seconds=decision.delay)).isoformat()
    elif decision.verdict is Verdict.DISABLE:
        disable_webhook = decision.summary
    return Outcome(
        delivery,
        status,
        summary=summary,
        retry_count=retry_count,
        scheduled_at=scheduled_at,
        run_id=run_id,
        response_status=attempt.response_status,
        response_content=content,
        attempt=attempt,
        disable_webhook=disable_webhook,
    )
