"""Job identity, the delivery and outcome messages, and the order of outcomes that keeps
the job log from going back."""

from __future__ import annotations

import uuid

import orjson
import pytest

from webhook_router.jobs import (
    JOB_NAMESPACE,
    RANK,
    Attempt,
    Delivery,
    Outcome,
    Status,
    Unreadable,
    job_id,
)

pytestmark = pytest.mark.timeout(30)


def delivery(**changes: object) -> Delivery:
    fields: dict[str, object] = {
        "job_id": job_id("event-1", "hook-1"),
        "event_id": "event-1",
        "event_at": "2026-11-27T12:00:00+00:00",
        "webhook_id": "hook-1",
        "webhook_name": "w",
        "space": "acme",
        "scope_type": "Space",
        "scope_id": "acme",
        "type": "User",
        "action": "Created",
        "parent_type": "User",
        "parent_id": "jane",
        "tree_group": "Users",
        "tree_name": "Created",
        "url": "http://127.0.0.1:1/hook",
        "body": "{}",
    }
    fields.update(changes)
    return Delivery(**fields)  # type: ignore[arg-type]


def attempt(number: int) -> Attempt:
    return Attempt(number, "2026-11-27T12:00:01+00:00", 12.5, 503, "busy", None, {"a": "b"})


def test_a_job_id_is_the_same_for_the_same_event_and_webhook_only() -> None:
    first = job_id("event-1", "hook-1")
    assert first == job_id("event-1", "hook-1")
    # pinned: a job id must not change across versions, or an event delivered again after
    # an upgrade would make a second job
    assert first == "b1f4400d-8461-5a91-84e1-0a5f13f62196"
    others = {job_id("event-2", "hook-1"), job_id("event-1", "hook-2"), job_id("event-1h", "ook-1")}
    assert first not in others and len(others) == 3


def test_a_delivery_message_is_an_array_and_an_object_is_one_delivery() -> None:
    d = delivery()
    assert Delivery.decode(d.encode()) == d
    assert Delivery.decode_batch(orjson.dumps([d, delivery(attempt=2)])) == [
        d,
        delivery(attempt=2),
    ]
    assert Delivery.decode_batch(d.encode()) == [d]


@pytest.mark.parametrize("raw", [b"[]", b"[1]", b"[{}, 2]", b'"text"'])
def test_a_bad_deliveries_message_is_refused_saying_why(raw: bytes) -> None:
    # the reason goes with the message to the dead letters
    refused = r"^a deliveries message must be an array of JSON objects$"
    with pytest.raises(ValueError, match=refused):
        Delivery.decode_batch(raw)


def test_a_delivery_must_be_an_object() -> None:
    with pytest.raises(ValueError, match=r"^a delivery must be a JSON object$"):
        Delivery.decode(b"[1]")
    with pytest.raises(TypeError):
        Delivery.decode(b'{"job_id": "x"}')


def test_the_next_attempt_changes_the_attempt_only() -> None:
    d = delivery(replay=2)
    after = d.next_attempt()
    assert after == delivery(replay=2, attempt=2)
    assert after.next_attempt().attempt == 3


def test_an_outcome_survives_its_message() -> None:
    full = Outcome(
        delivery(),
        Status.QUEUED,
        summary="503 Service Unavailable",
        retry_count=1,
        scheduled_at="2026-11-27T12:00:06+00:00",
        response_status=503,
        response_content="busy",
        attempt=attempt(1),
    )
    bare = Outcome(delivery(job_id="other"), Status.FAILED, summary="bad filter")
    assert Outcome.decode_batch(orjson.dumps([full, bare])) == [full, bare]
    assert Outcome.decode_batch(orjson.dumps(full)) == [full]


def test_outcomes_are_ordered_by_replay_then_attempt_then_status_rank() -> None:
    queued = Outcome(delivery(), Status.QUEUED)
    assert queued.attempts == 0 and queued.version == (0, 0, 0)
    retry = Outcome(delivery(), Status.QUEUED, attempt=attempt(1))
    done = Outcome(delivery(), Status.COMPLETE, attempt=attempt(1))
    second = Outcome(delivery(attempt=2), Status.QUEUED, attempt=attempt(2))
    replayed = Outcome(delivery(replay=1), Status.QUEUED)
    assert retry.version == (0, 1, 0) and done.version == (0, 1, 2)
    ordered = [queued, retry, done, second, replayed]
    assert sorted(reversed(ordered), key=lambda o: o.version) == ordered
    # the end states rank alike, above the others: none replaces another at one attempt
    assert RANK[Status.COMPLETE] == RANK[Status.FAILED] == RANK[Status.CANCELLED]
    assert RANK[Status.QUEUED] < RANK[Status.IN_PROGRESS] < RANK[Status.COMPLETE]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_each_job_carries_its_own_trace_context_through_its_messages() -> None:
    traced = delivery(trace={"traceparent": TRACEPARENT}, trace_context=False)
    untraced = delivery(job_id="other")
    assert Delivery.decode_batch(orjson.dumps([traced, untraced])) == [traced, untraced]
    assert traced.next_attempt().trace == traced.trace
    outcome = Outcome(traced, Status.COMPLETE, trace={"traceparent": TRACEPARENT})
    assert Outcome.decode_batch(orjson.dumps([outcome])) == [outcome]
    # a delivery or outcome of an older version, without the fields, is read as untraced
    old = orjson.loads(untraced.encode())
    del old["trace"], old["trace_context"]
    assert Delivery.decode(orjson.dumps(old)) == untraced


@pytest.mark.parametrize("trace", [[], "x", {"traceparent": 1}])
def test_a_bad_trace_context_makes_its_item_unreadable_alone(trace: object) -> None:
    good = orjson.loads(delivery().encode())
    bad = {**good, "trace": trace}
    [first, second] = Delivery.decode_each(orjson.dumps([bad, good]))
    assert isinstance(first, Unreadable) and "trace" in first.reason
    assert second == delivery()
    outcome = orjson.loads(orjson.dumps(Outcome(delivery(), Status.QUEUED)))
    [refused, kept] = Outcome.decode_each(orjson.dumps([{**outcome, "trace": trace}, outcome]))
    assert isinstance(refused, Unreadable) and "trace" in refused.reason
    assert kept == Outcome(delivery(), Status.QUEUED)


@pytest.mark.parametrize(
    ("event", "webhook"), [("event-1", "hook-1"), ("", ""), ("é\u4e2d\U0001f600", "h\nook")]
)
def test_a_job_id_is_the_uuid5_of_the_event_and_webhook(event: str, webhook: str) -> None:
    assert job_id(event, webhook) == str(uuid.uuid5(JOB_NAMESPACE, f"{event}\n{webhook}"))


def test_a_field_unknown_or_missing_is_refused_even_when_the_count_matches() -> None:
    # every field but one, and one this version does not know: read by keyword, refused
    fields = orjson.loads(delivery().encode())
    del fields["body"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        Delivery.decode(orjson.dumps({**fields, "bogus": "x"}))
    [unreadable] = Delivery.decode_each(orjson.dumps([{**fields, "bogus": "x"}]))
    assert isinstance(unreadable, Unreadable) and "bogus" in unreadable.reason


def test_an_unknown_status_makes_its_item_unreadable_saying_so() -> None:
    outcome = orjson.loads(orjson.dumps(Outcome(delivery(), Status.QUEUED)))
    raw = orjson.dumps([{**outcome, "status": "Sent"}, {**outcome, "status": ["x"]}, outcome])
    [sent, listed, kept] = Outcome.decode_each(raw)
    assert isinstance(sent, Unreadable)
    assert sent.reason == "bad outcome: ValueError(\"'Sent' is not a valid Status\")"
    assert isinstance(listed, Unreadable)
    assert listed.reason == "bad outcome: ValueError(\"['x'] is not a valid Status\")"
    assert kept == Outcome(delivery(), Status.QUEUED)
