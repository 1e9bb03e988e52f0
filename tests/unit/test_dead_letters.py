"""Dead letters without services: a dead message read into a row whatever it holds, where a
row goes back to, and the list's query parameters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from webhook_router.deadletters import (
    DEAD_AT_HEADER,
    ID_HEADER,
    REQUEUED_HEADER,
    NotRequeued,
    dead_headers,
    read,
    requeue_plan,
)
from webhook_router.jobs import Delivery
from webhook_router.models import DeadLetterQuery, InputInvalid, encode_token
from webhook_router.topology import RECORD_KEY, Names

pytestmark = pytest.mark.timeout(10)

NAMES = Names("ns")
SHARDED = Names("ns", shards=3)
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def delivery(**fields: object) -> Delivery:
    base: dict[str, object] = {
        "job_id": str(uuid.uuid4()),
        "event_id": "e-1",
        "event_at": NOW.isoformat(),
        "webhook_id": str(uuid.uuid4()),
        "webhook_name": "hook",
        "space": "acme",
        "scope_type": "Space",
        "scope_id": "acme",
        "type": "User",
        "action": "Created",
        "parent_type": "User",
        "parent_id": "u",
        "tree_group": "Users",
        "tree_name": "Created",
        "url": "http://127.0.0.1:1/x",
        "body": "{}",
        "attempt": 4,
    }
    return Delivery(**(base | fields))  # type: ignore[arg-type]


def test_a_role_stamps_an_id_and_the_row_keeps_it() -> None:
    headers = dead_headers("router", "bad event: " + "x" * 5000, "user.created")
    assert len(headers["x-reason"]) == 1000
    letter = read(NAMES, b'{"event": {"type": "User"}}', headers, message_id="m")
    assert letter.id == headers[ID_HEADER]
    assert letter.dead_at == datetime.fromisoformat(headers[DEAD_AT_HEADER])
    assert (letter.role, letter.routing_key, letter.message_id) == ("router", "user.created", "m")
    assert dead_headers("router", "r", None)[ID_HEADER] != headers[ID_HEADER]


def test_an_unstamped_message_gets_the_same_id_for_the_same_bytes_and_headers() -> None:
    death = {"x-death": [{"queue": "ns.deliver", "reason": "delivery_limit", "time": NOW}]}
    first = read(NAMES, b"[1]", death, message_id="m", now=NOW)
    again = read(NAMES, b"[1]", death | {"x-delivery-count": 3}, message_id="m", now=NOW)
    other = read(NAMES, b"[2]", death, message_id="m", now=NOW)
    assert first.id == again.id != other.id
    assert first.role == "worker" and "delivery_limit" in first.reason
    assert first.dead_at == NOW
    assert first.headers["x-death"][0]["time"] == NOW.isoformat()


@pytest.mark.parametrize("body", [b"\x00\xff not json", b"", b"[]", b"3", b'"\\u0000"'])
def test_any_body_is_read_and_kept_exactly(body: bytes) -> None:
    letter = read(NAMES, body, {"x-reason": "r\x00", "x-failed-in": "worker"}, now=NOW)
    assert letter.body == body
    assert "\x00" not in letter.preview and "\x00" not in letter.reason
    assert letter.event_id is None and letter.webhook_id is None


def test_without_headers_the_role_is_unknown_and_not_requeued() -> None:
    letter = read(NAMES, b"{}", None, now=NOW)
    assert (letter.role, letter.reason, letter.dead_at) == ("unknown", "no reason given", NOW)
    with pytest.raises(NotRequeued):
        requeue_plan(NAMES, letter)


def test_what_a_message_is_about_comes_from_its_body() -> None:
    d = delivery()
    letter = read(NAMES, orjson.dumps([d]), {"x-failed-in": "worker"})
    assert (letter.event_id, letter.webhook_id, letter.webhook_name, letter.space) == (
        "e-1",
        d.webhook_id,
        "hook",
        "acme",
    )
    outcome = read(NAMES, orjson.dumps([{"delivery": d, "status": "Failed"}]), {})
    assert outcome.webhook_id == d.webhook_id
    event = read(NAMES, b'{"event": {"id": "ev"}, "space": {"slug": "s"}}', {})
    assert (event.event_id, event.space) == ("ev", "s")
    idless = read(NAMES, b'{"event": {}}', {"x-routing-key": "user.created"})
    assert idless.event_id is not None  # derived as the router derives it


def test_a_dead_delivery_goes_back_as_a_new_replay_to_its_webhooks_shard() -> None:
    d = delivery()
    headers = dead_headers("worker", "gave up", SHARDED.delivery_key(d.webhook_id))
    letter = read(SHARDED, d.encode(), headers | {"traceparent": "t"})
    plan = requeue_plan(SHARDED, letter)
    assert (plan.exchange, plan.routing_key) == ("deliveries", d.webhook_id)
    [again] = Delivery.decode_batch(plan.body)
    assert (again.attempt, again.replay, again.job_id) == (1, 1, d.job_id)
    assert plan.headers == {"traceparent": "t", REQUEUED_HEADER: letter.id}
    assert requeue_plan(NAMES, read(NAMES, d.encode(), headers)).routing_key == ""


def test_events_and_outcomes_go_back_to_their_exchanges() -> None:
    event = read(NAMES, b"{}", dead_headers("router", "r", "user.created"))
    assert (requeue_plan(NAMES, event).exchange, requeue_plan(NAMES, event).routing_key) == (
        "events",
        "user.created",
    )
    outcome = read(NAMES, b"[]", dead_headers("recorder", "r", RECORD_KEY))
    assert requeue_plan(NAMES, outcome).exchange == "results"
    # an unreadable delivery goes back as it came
    bad = read(NAMES, b"\x00", dead_headers("worker", "bad delivery", None))
    assert requeue_plan(NAMES, bad).body == b"\x00"


def test_the_query_parameters_are_checked() -> None:
    token = encode_token(NOW, str(uuid.uuid4()))
    q = DeadLetterQuery.parse({"role": "worker", "limit": "5", "pageToken": token})
    assert (q.role, q.limit, q.page_token and q.page_token[0]) == ("worker", 5, NOW)
    with pytest.raises(InputInvalid) as refused:
        DeadLetterQuery.parse({"limit": "0", "start": "later", "pageToken": "x", "what": "1"})
    fields = {e["field"]: e["message"] for e in refused.value.errors}
    assert set(fields) == {"limit", "start", "pageToken", "what"}
    assert fields["what"] == "unknown parameter"
