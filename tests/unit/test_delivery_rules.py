"""Run numbers, answer classification, retry delays and endpoint isolation."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from webhook_router.classify import Verdict, classify, pick_delay, retry_after, summary_of
from webhook_router.durations import parse_duration, parse_schedule
from webhook_router.isolation import AT_LIMIT, EndpointGuard, Line, endpoint_of
from webhook_router.runs import run_id_of
from webhook_router.topology import Names, delay_name

pytestmark = pytest.mark.timeout(30)

SCHEDULE = (5.0, 30.0, 120.0)


@pytest.mark.parametrize(
    ("answer", "run"),
    [
        ('{"message": "Initiated run #3 for the tree.", "run": {"id": 3}}', "3"),
        ('{"messageType": "success", "message": "Initiated run #1430.", "runId": "1430"}', "1430"),
        ('{"message": "Initiated run #77."}', "77"),
        ('{"run": {"id": "12"}}', "12"),
        ('{"message": "The \\"x\\" tree does not exist."}', None),
        ('{"run": {"id": true}}', None),
        ('{"runId": "abc"}', None),
        ("[1, 2]", None),
        ("not json", None),
        ("", None),
        (None, None),
        ('{"message": "run #5 queued"}', None),
    ],
)
def test_run_numbers_only_from_known_shapes(answer: str | None, run: str | None) -> None:
    assert run_id_of(answer) == run


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        (200, None, Verdict.COMPLETE),
        (204, None, Verdict.COMPLETE),
        (301, None, Verdict.FAIL),
        (302, None, Verdict.FAIL),
        (400, None, Verdict.FAIL),
        (404, None, Verdict.FAIL),
        (408, None, Verdict.RETRY),
        (410, None, Verdict.DISABLE),
        (425, None, Verdict.RETRY),
        (429, None, Verdict.RETRY),
        (500, None, Verdict.RETRY),
        (503, None, Verdict.RETRY),
        (None, "timed out after 30s", Verdict.RETRY),
        (None, "connection failed: refused", Verdict.RETRY),
    ],
)
def test_answers_are_classified(status: int | None, error: str | None, verdict: Verdict) -> None:
    decision = classify(status=status, error=error, attempt=1, schedule=SCHEDULE)
    assert decision.verdict is verdict
    if verdict is Verdict.RETRY:
        assert decision.delay == 5.0


def test_summaries_read_like_the_platform() -> None:
    assert summary_of(200) == "200 OK"
    assert summary_of(404) == "404 Not Found"
    assert summary_of(599) == "599"
    redirect = classify(status=302, error=None, attempt=1, schedule=SCHEDULE)
    assert "redirects are not followed" in redirect.summary


def test_the_schedule_runs_out_and_the_job_fails_exhausted() -> None:
    delays = [classify(status=503, error=None, attempt=n, schedule=SCHEDULE) for n in (1, 2, 3)]
    assert [d.delay for d in delays] == [5.0, 30.0, 120.0]
    last = classify(status=503, error=None, attempt=4, schedule=SCHEDULE)
    assert last.verdict is Verdict.FAIL and last.exhausted
    assert "gave up after 4 attempts" in last.summary


def test_refused_targets_fail_at_once() -> None:
    d = classify(
        status=None,
        error="refused: 10.0.0.1 is private",
        attempt=1,
        schedule=SCHEDULE,
        refused=True,
    )
    assert d.verdict is Verdict.FAIL and not d.exhausted


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_retry_after_is_honoured_within_the_schedule() -> None:
    assert pick_delay(SCHEDULE, 1, None) == 5.0
    assert pick_delay(SCHEDULE, 1, 3.0) == 5.0
    assert pick_delay(SCHEDULE, 1, 20.0) == 30.0
    assert pick_delay(SCHEDULE, 1, 10_000.0) == 120.0
    decision = classify(
        status=429, error=None, attempt=1, schedule=SCHEDULE, retry_after_header="25"
    )
    assert decision.delay == 30.0


def test_durations() -> None:
    assert parse_schedule("5s,30s,2m,10m,30m,1h,3h,6h,12h,24h")[-1] == 86400.0
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("7") == 7.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert [delay_name(s) for s in (5, 120, 3600, 0.25, 1.5)] == [
        "5s",
        "2m",
        "1h",
        "250ms",
        "1500ms",
    ]


def test_endpoints() -> None:
    assert endpoint_of("https://Hooks.Example.com/a?b") == "https://hooks.example.com:443"
    assert endpoint_of("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"


def test_endpoint_limit_holds_back_the_excess() -> None:
    guard = EndpointGuard(limit=2, threshold=3, cooldown=10)
    assert guard.acquire("a", 0) is None
    assert guard.acquire("a", 0) is None
    assert guard.acquire("a", 0) == AT_LIMIT
    assert guard.acquire("b", 0) is None
    guard.release("a", healthy=True, now=0)
    assert guard.acquire("a", 0) is None


def test_circuit_opens_after_failures_and_half_opens_after_cooldown() -> None:
    guard = EndpointGuard(limit=10, threshold=3, cooldown=10)
    for _ in range(3):
        assert guard.acquire("a", 0) is None
        guard.release("a", healthy=False, now=0)
    assert guard.acquire("a", 5) == "circuit open"
    assert guard.is_open("a", 5)
    assert guard.acquire("a", 11) is None  # the trial
    assert guard.acquire("a", 11) == "circuit half-open, a trial is in progress"
    guard.release("a", healthy=False, now=11)
    assert guard.acquire("a", 12) == "circuit open"
    assert guard.acquire("a", 22) is None
    guard.release("a", healthy=True, now=22)
    assert guard.acquire("a", 22) is None
    assert guard.acquire("a", 22) is None


@pytest.mark.asyncio
async def test_a_line_serves_first_come_first_and_bounds_every_wait() -> None:
    line = Line(slots=1, wait=0.2)
    assert await line.take()  # free: at once
    served: list[str] = []

    async def waits(name: str) -> bool:
        taken = await line.take()
        if taken:
            served.append(name)
        return taken

    first, second = asyncio.create_task(waits("first")), asyncio.create_task(waits("second"))
    await asyncio.sleep(0.05)
    line.release()  # handed to the first in line, not to a newcomer
    assert await first
    assert not line.free
    started = time.monotonic()
    assert not await second  # nobody released in time: turned away after its wait
    assert 0.1 <= time.monotonic() - started < 1
    assert served == ["first"]
    line.release()
    assert line.free == 1
    assert await line.take()


@pytest.mark.asyncio
async def test_a_cancelled_waiter_leaves_its_slot_to_the_next() -> None:
    line = Line(slots=1, wait=5)
    assert await line.take()
    cancelled, next_one = asyncio.create_task(line.take()), asyncio.create_task(line.take())
    await asyncio.sleep(0)
    line.release()  # handed to the first waiter, cancelled before it could run
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await asyncio.wait_for(next_one, 1)
    waiting = asyncio.create_task(line.take())
    await asyncio.sleep(0)
    waiting.cancel()  # cancelled while waiting: nothing handed to it is lost
    with pytest.raises(asyncio.CancelledError):
        await waiting
    line.release()
    assert line.free == 1


def test_names_of_shards() -> None:
    assert Names("n").deliver_queues() == ("n.deliver",)
    assert Names("n", 3).deliver_queues() == ("n.deliver.0", "n.deliver.1", "n.deliver.2")
    assert Names("n", 3).deliveries == "n.deliveries.sharded"
    assert Names("n").deliveries == "n.deliveries"
    assert list(itertools.islice(Names("n", 2).work_queues(), 4)) == [
        "n.router",
        "n.deliver.0",
        "n.deliver.1",
        "n.record",
    ]
