"""Delivery guarantees against real HTTP receivers on 127.0.0.1: retries, dead letters,
410, Retry-After, retry after a fix, isolation, signatures, the address guard."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook as StandardWebhook

from webhook_router import metrics
from webhook_router.deadletters import DeadLetter
from webhook_router.jobs import Delivery
from webhook_router.settings import Settings
from webhook_router.ssrf import AddressPolicy
from webhook_router.store import Store
from webhook_router.topology import delay_name
from webhook_router.worker import Worker

from ..conftest import TEST_SCHEDULE, eventually, free_port
from .conftest import Stack, answer_app, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def receiver(handler: Handler) -> AsyncIterator[str]:
    runner, url = await answer_app(handler)
    try:
        yield url
    finally:
        await runner.cleanup()


def user_created(space: str) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": "jane"})


async def attempts_of(stack: Stack, job_id: Any) -> list[Any]:
    return await stack.store.job_attempts(str(job_id))


def a_delivery(url: str) -> Delivery:
    """One delivery of an empty event to `url`, for tests that call `Worker.post` alone."""
    return Delivery(
        job_id="00000000-0000-0000-0000-000000000001",
        event_id="e",
        event_at="2026-11-27T00:00:00+00:00",
        webhook_id="00000000-0000-0000-0000-000000000002",
        webhook_name="w",
        space="s",
        scope_type="Space",
        scope_id="s",
        type="User",
        action="Created",
        parent_type="User",
        parent_id="u",
        tree_group="Users",
        tree_name="Created",
        url=url,
        body="{}",
    )


async def test_a_flaky_endpoint_completes_on_the_third_attempt(stack: Stack) -> None:
    calls = itertools.count(1)

    async def flaky(request: web.Request) -> web.Response:
        if next(calls) <= 2:
            return web.Response(status=503, text="busy")
        return web.json_response({"messageType": "success", "runId": "1430"})

    space = stack.space()
    async with receiver(flaky) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete"
    assert job["run_id"] == "1430"
    assert job["retry_count"] == 2
    assert next(calls) == 4  # three POSTs in all: no attempt went out twice
    attempts = await attempts_of(stack, job["id"])
    assert [(a.attempt, a.response_status) for a in attempts] == [
        (1, 503),
        (2, 503),
        (3, 200),
    ]


async def test_an_always_failing_endpoint_fails_after_the_schedule_and_is_dead_lettered(
    stack: Stack,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    space = stack.space()
    async with receiver(broken) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1, timeout=30)
    assert job["status"] == "Failed"
    assert f"gave up after {len(TEST_SCHEDULE) + 1} attempts" in job["summary"]
    assert job["response_content"] == "boom"
    attempts = await attempts_of(stack, job["id"])
    assert [a.response_status for a in attempts] == [500] * (len(TEST_SCHEDULE) + 1)
    dead = await find_dead(stack, str(job["id"]))
    assert dead is not None
    assert "gave up" in str(dead.headers["x-reason"])
    assert Delivery.decode(dead.body).job_id == str(job["id"])


async def find_dead(stack: Stack, message_id: str, timeout: float = 10) -> DeadLetter | None:
    """The dead letter with this message id, once the recorder moved it from the
    dead-letter queue into the dead_letters table."""

    async def find() -> DeadLetter | None:
        letter_id = await stack.store.pool.fetchval(
            "SELECT id FROM dead_letters WHERE message_id = $1 ORDER BY dead_at DESC LIMIT 1",
            message_id,
        )
        return None if letter_id is None else await stack.store.get_dead_letter(str(letter_id))

    return await eventually(find, timeout=timeout)


async def test_gone_fails_and_disables_the_webhook(stack: Stack) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410, text="gone")

    space = stack.space()
    async with receiver(gone) as url:
        hook = await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1)
    assert job["status"] == "Failed"
    assert job["summary"].startswith("410 Gone")

    async def disabled() -> bool:
        current = await stack.store.get_webhook_by_id(hook.id)
        return current is not None and not current.enabled

    assert await eventually(disabled)
    current = await stack.store.get_webhook_by_id(hook.id)
    assert current is not None and "410 Gone" in (current.disabled_reason or "")
    status, body = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhooks/{hook.name}")
    assert status == 200
    assert body["webhook"]["enabled"] is False
    assert "410" in body["webhook"]["disabledReason"]

    # a disabled webhook sends nothing more: a marker webhook on the same event shows the
    # router handled the next one, and only the marker made a job of it
    marker = await stack.webhook(space, type="User", event="Created", url="/marker", name="marker")
    await stack.synced()
    await stack.publisher.publish(user_created(space))
    rows = await stack.settled(space, 2)
    assert sorted(r["webhook_name"] for r in rows) == sorted([hook.name, marker.name])
    assert [p.path for p in stack.received_for(space)] == ["/marker"]


async def test_retry_after_is_honoured_within_the_schedule(stack: Stack) -> None:
    """A Retry-After longer than the schedule's longest step waits that step: longer than
    the first step (taken without the header), never what was asked."""
    arrivals: list[float] = []
    asked = 20

    async def throttled(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return web.Response(status=429, headers={"Retry-After": str(asked)})
        return web.json_response({"ok": True})

    capped = max(TEST_SCHEDULE)
    assert TEST_SCHEDULE[0] < capped < asked
    queued_before = retries_into(capped)
    space = stack.space()
    async with receiver(throttled) as url:
        await stack.webhook(space, type="User", event="Created", url=url + "/hook")
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1, timeout=capped + stack.settle_bound())
    assert job["status"] == "Complete"
    assert retries_into(capped) - queued_before == 1, f"the retry did not wait {capped:g}s"
    gap = arrivals[1] - arrivals[0]
    # a TTL queue never gives a message back early; what was asked is far beyond the cap
    assert capped <= gap < asked, (
        f"{gap:.2f}s between attempts: Retry-After {asked}s, capped at the schedule's "
        f"longest step {capped:g}s"
    )


def retries_into(delay: float) -> float:
    """Next attempts this process's workers put into the retry queue of `delay`."""
    value = metrics.REGISTRY.get_sample_value(
        "webhook_router_retries_total", {"delay": delay_name(delay)}
    )
    return value or 0.0


async def test_retrying_a_failed_job_after_fixing_the_webhook_reaches_the_new_url(
    stack: Stack,
) -> None:
    space = stack.space()
    hook = await stack.webhook(space, type="User", event="Created", url="/nowhere/${space('slug')}")
    event_id = await stack.publisher.publish(user_created(space))
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Failed" and job["summary"].startswith("404")

    fixed = await stack.store.update_webhook(
        replace(hook, url="/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created")
    )
    assert fixed is not None
    status, body = await stack.api(
        "PUT", f"/app/api/v1/spaces/{space}/webhookJobs/{job['id']}", json={"status": "Queued"}
    )
    assert status == 200, body
    assert body["webhookJob"]["status"] == "Queued"

    async def complete() -> Any:
        rows = await stack.jobs(space)
        return rows[0] if rows and rows[0]["status"] == "Complete" else None

    done = await eventually(complete)
    assert done is not None, await stack.jobs(space)
    assert done["id"] == job["id"] and done["event_id"] == event_id
    assert done["run_id"] is not None and done["replay"] == 1
    paths = [p.path for p in stack.received_for(space)]
    assert paths == [
        f"/nowhere/{space}",
        "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created",
    ]
    attempts = await attempts_of(stack, job["id"])
    assert [(a.replay, a.attempt, a.response_status) for a in attempts] == [
        (0, 1, 404),
        (1, 1, 200),
    ]
    # a Complete job is not retried again
    status, body = await stack.api(
        "PUT", f"/app/api/v1/spaces/{space}/webhookJobs/{job['id']}", json={"status": "Queued"}
    )
    assert status == 409


async def test_a_hanging_endpoint_does_not_stall_a_healthy_one(stack: Stack) -> None:
    """The hanging endpoint holds at most its limit; the rest of its deliveries are deferred
    without spending an attempt, and once it answers again every one of them completes on
    its first attempt, before its receiver goes away (nothing is left retrying)."""
    release = asyncio.Event()
    hung = 0

    async def hanging(request: web.Request) -> web.Response:
        nonlocal hung
        hung += 1
        await release.wait()
        return web.json_response({})

    async def healthy(request: web.Request) -> web.Response:
        return web.json_response({"message": "Initiated run #1."})

    space = stack.space()
    limit = stack.settings.endpoint_concurrency
    slow_count = limit * 4
    deferred_before = deferrals()
    async with receiver(hanging) as slow_url, receiver(healthy) as fast_url:
        await stack.webhook(space, type="User", event="Created", url=slow_url + "/hook")
        await stack.webhook(space, type="User", event="Updated", url=fast_url + "/hook")
        for _ in range(slow_count):
            await stack.publisher.publish(user_created(space))
        for _ in range(20):
            await stack.publisher.publish(
                event_for(space, "User", "Updated", user={"username": "jane"})
            )
        try:
            rows = await stack.settled(space, 20, timeout=20)
            healthy_done = [
                r for r in rows if r["event"] == "Updated" and r["status"] == "Complete"
            ]
            assert len(healthy_done) == 20
            # every healthy delivery finished while the hanging endpoint still held its
            # POSTs, and it never held more than its limit
            assert not release.is_set()
            assert 0 < hung <= limit

            # the deliveries beyond the limit wait `endpoint_wait` in line, then are deferred
            async def all_deferred() -> bool:
                return deferrals() - deferred_before >= slow_count - limit

            wait = stack.settings.endpoint_wait
            assert await eventually(all_deferred, timeout=wait + 10), (
                f"{deferrals() - deferred_before:g} of {slow_count - limit} deliveries beyond "
                f"the endpoint's limit deferred, {wait:g}s (endpoint_wait) + 10s after"
            )
            assert 0 < hung <= limit
        finally:
            release.set()
        # the receiver stays up until every delivery of the hanging endpoint completed
        rows = await stack.settled(space, slow_count + 20, timeout=stack.settle_bound())
    slow = [r for r in rows if r["event"] == "Created"]
    assert len(slow) == slow_count
    assert {r["status"] for r in slow} == {"Complete"}
    # a deferred delivery spends no attempt: each job went out exactly once, as attempt 1
    assert {r["retry_count"] for r in slow} == {0}
    assert hung == slow_count
    for row in slow:
        attempts = await attempts_of(stack, row["id"])
        assert [(a.attempt, a.response_status) for a in attempts] == [(1, 200)]


def deferrals() -> float:
    """Deliveries deferred in this process so far (the worker's own counter)."""
    value = metrics.REGISTRY.get_sample_value("webhook_router_deliveries_deferred_total")
    return value or 0.0


async def test_signatures_verify_with_a_standard_verifier_before_and_during_rotation(
    stack: Stack,
) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.json_response({})

    space = stack.space()
    async with receiver(record) as url:
        hook = await stack.webhook(
            space, type="User", event="Created", url=url + "/hook", auth_strategy="Signature"
        )
        assert hook.secret is not None and hook.secret.startswith("whsec_")
        await stack.publisher.publish(user_created(space))
        await stack.settled(space, 1)

        rotated = await stack.store.rotate_secret(hook.id, grace_seconds=3600)
        assert rotated is not None and rotated.secret != hook.secret
        await stack.synced()
        await eventually(lambda: _worker_has(stack.worker, rotated.secret))
        await stack.publisher.publish(user_created(space))
        await stack.settled(space, 2)

    (body1, headers1), (body2, headers2) = received
    for headers in (headers1, headers2):
        assert headers["webhook-id"] in {str(r["id"]) for r in await stack.jobs(space)}
    StandardWebhook(hook.secret).verify(body1, headers1)
    # during the grace period both the old and the new secret verify
    StandardWebhook(hook.secret).verify(body2, headers2)
    StandardWebhook(rotated.secret).verify(body2, headers2)
    assert len(headers2["webhook-signature"].split(" ")) == 2
    with pytest.raises(Exception, match="signature"):
        StandardWebhook(rotated.secret).verify(body1, headers1)


async def _worker_has(worker: Worker, secret: str | None) -> bool:
    return any(w.secret == secret for w in worker.cache.by_id.values())


async def test_the_engine_is_never_signed(stack: Stack) -> None:
    space = stack.space()
    await stack.webhook(
        space,
        type="User",
        event="Created",
        auth_strategy="Signature",
        url="/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created",
    )
    await stack.publisher.publish(user_created(space))
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete"
    [post] = stack.received_for(space)
    assert "webhook-signature" not in post.headers
    assert post.headers["webhook-id"] == str(job["id"])


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]", "localhost", "[::1]"]
)
async def test_loopback_targets_are_refused_unless_allowed(settings: Settings, host: str) -> None:
    """The worker's own HTTP path, without the test allowance: refused before connecting,
    the job fails with the reason; with the network allowed, the POST arrives."""
    hits = 0

    async def count(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    for bind in ("127.0.0.1", "::1"):
        try:
            await web.TCPSite(runner, bind, port).start()
        except OSError:
            if bind == "127.0.0.1" or host == "[::1]":
                raise
    delivery = a_delivery(f"http://{host}:{port}/hook")
    guarded = settings.model_copy(
        update={"allowed_networks": [], "engine_url": "http://engine.invalid"}
    )
    try:
        for allowed, expect_refused in (([], True), (["127.0.0.0/8", "::1/128"], False)):
            worker = Worker(guarded, Store(None))  # type: ignore[arg-type]
            worker.client = worker._client(AddressPolicy(allowed, allowed_hosts=["engine.invalid"]))
            try:
                attempt, _, refused = await worker.post(delivery)
            finally:
                await worker.client.close()
            assert refused is expect_refused, attempt.error
            if expect_refused:
                assert attempt.error is not None and "refused" in attempt.error
                assert "loopback" in attempt.error
                assert attempt.response_status is None
                assert hits == 0
            else:
                assert attempt.response_status == 200
                assert hits == 1
    finally:
        await runner.cleanup()


async def test_a_receivers_cookies_are_never_sent_back(settings: Settings) -> None:
    """A Set-Cookie in one answer is not kept: no later POST carries it, whichever webhook
    of the host it is for (a host name, whose cookies a default jar would keep)."""
    cookies: list[str | None] = []

    async def sets_a_cookie(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        response = web.json_response({})
        response.set_cookie("session", "of-the-first-webhook", path="/")
        return response

    async with receiver(sets_a_cookie) as url:
        worker = Worker(settings, Store(None))  # type: ignore[arg-type]  # no database is used
        try:
            for path in ("/first", "/second", "/first"):
                delivery = a_delivery(url.replace("127.0.0.1", "localhost") + path)
                attempt, _, _ = await worker.post(delivery)
                assert attempt.response_status == 200, attempt.error
        finally:
            await worker.client.close()
    assert cookies == [None, None, None]
