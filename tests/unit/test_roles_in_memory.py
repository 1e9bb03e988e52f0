"""The router's routing and the recorder's write path on the in-memory store and broker:
what they publish and record, without RabbitMQ or PostgreSQL. Their integration tests run
the same code on the real services."""

from __future__ import annotations

import orjson
import pytest

from webhook_router.events import parse_event
from webhook_router.jobs import Attempt, Outcome, Status
from webhook_router.planning import plan
from webhook_router.recorder import Recorder
from webhook_router.router import Router
from webhook_router.settings import Settings
from webhook_router.testing import MemoryExchange, MemoryMessage, MemoryStore, memory_topology
from webhook_router.webhooks import Match, Webhook, WebhookIndex

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(10)]

SETTINGS = Settings(engine_url="http://127.0.0.1:9")


def user_created(space: str = "acme", username: str = "ann") -> bytes:
    body = {
        "event": {"type": "User", "action": "Created"},
        "space": {"slug": space},
        "user": {"username": username},
    }
    return orjson.dumps(body)


def hook(name: str, url: str, filter: str | None = None) -> Webhook:
    ids = {
        "ok": "00000000-0000-4000-8000-000000000001",
        "bad": "00000000-0000-4000-8000-000000000002",
    }
    return Webhook(ids[name], "acme", None, name, "User", "Created", filter, url)


def published(exchange: object) -> list[tuple[str, object]]:
    assert isinstance(exchange, MemoryExchange)
    return [(key, orjson.loads(body)) for key, body in exchange.published]


async def test_route_publishes_a_delivery_per_match_and_records_every_job() -> None:
    router = Router(SETTINGS, MemoryStore())
    router.topology = memory_topology(SETTINGS.names)
    router.cache.index = WebhookIndex(
        [hook("ok", "/run/${user('username')}"), hook("bad", "http://x/${nope(}")]
    )
    assert await router.route(parse_event(user_created())) == 2
    [(key, [delivery])] = published(router.topology.deliveries)
    assert key == SETTINGS.names.delivery_key(hook("ok", "").id), "routed by webhook"
    assert delivery["url"] == "http://127.0.0.1:9/run/ann" and delivery["to_engine"]
    [(_, outcomes)] = published(router.topology.results)
    assert isinstance(outcomes, list)
    by_name = {o["delivery"]["webhook_name"]: o for o in outcomes}
    assert by_name["ok"]["status"] == Status.QUEUED
    assert by_name["bad"]["status"] == Status.FAILED, "a URL that cannot render fails its job"
    assert by_name["bad"]["summary"].startswith("url failed")


async def test_route_with_no_match_publishes_nothing() -> None:
    router = Router(SETTINGS, MemoryStore())
    router.topology = memory_topology(SETTINGS.names)
    router.cache.index = WebhookIndex([hook("ok", "/run", filter="false")])
    assert await router.route(parse_event(user_created())) == 0
    assert published(router.topology.deliveries) == published(router.topology.results) == []


async def test_the_recorder_writes_a_batch_applies_side_effects_then_acknowledges() -> None:
    store = MemoryStore()
    webhook = await store.insert_webhook(
        space="acme",
        kapp=None,
        name="ok",
        type="User",
        event="Created",
        filter=None,
        url="/run",
        auth_strategy=None,
    )
    assert webhook is not None
    _, [queued] = plan(parse_event(user_created()), [Match(webhook, "http://127.0.0.1:9/run")])
    answer = Attempt(1, queued.delivery.created_at, 5.0, 410, "gone", None, {"webhook-id": "x"})
    gone = Outcome(
        queued.delivery, Status.FAILED, "410 Gone", attempt=answer, disable_webhook="410"
    )
    recorder = Recorder(SETTINGS, store)
    recorder.topology = memory_topology(SETTINGS.names)
    first = MemoryMessage(orjson.dumps([queued]), delivery_tag=1)
    last = MemoryMessage(orjson.dumps([gone]), delivery_tag=2)
    for message in (first, last):
        await recorder.on_outcome(message)  # type: ignore[arg-type]
    await recorder._write(recorder._take(100))

    job = await store.get_job(queued.delivery.job_id)
    assert job is not None and (job.status, job.summary, job.attempts) == ("Failed", "410 Gone", 1)
    [attempt] = await store.job_attempts(queued.delivery.job_id)
    assert (attempt.response_status, attempt.request_headers) == (410, {"webhook-id": "x"})
    disabled = await store.get_webhook_by_id(webhook.id)
    assert disabled is not None and (disabled.enabled, disabled.disabled_reason) == (False, "410")
    assert last.acked, "one multiple-ack, carried by the batch's highest tag, after the write"


async def test_the_recorder_dead_letters_a_message_it_cannot_read() -> None:
    recorder = Recorder(SETTINGS, MemoryStore())
    recorder.topology = memory_topology(SETTINGS.names)
    garbage = MemoryMessage(b"{not json")
    await recorder.on_outcome(garbage)  # type: ignore[arg-type]
    assert garbage.acked and recorder._take(100) == []
    [(_, body)] = [(k, b) for k, b in recorder.topology.dead.published]  # type: ignore[attr-defined]
    assert body == b"{not json"
