"""What each answer means, at the edges of its range, and what the job log says of it: the
summary is what an admin reads in the job log, so it is held word for word."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from webhook_router.classify import Verdict, classify, pick_delay, retry_after

pytestmark = pytest.mark.timeout(30)

SCHEDULE = (5.0, 30.0, 120.0)


@pytest.mark.parametrize(
    ("status", "verdict", "summary"),
    [
        (199, Verdict.FAIL, "199"),
        (200, Verdict.COMPLETE, "200 OK"),
        (299, Verdict.COMPLETE, "299"),
        (300, Verdict.FAIL, "300 Multiple Choices: redirects are not followed"),
        (399, Verdict.FAIL, "399: redirects are not followed"),
        (400, Verdict.FAIL, "400 Bad Request"),
        (401, Verdict.FAIL, "401 Unauthorized"),
        (410, Verdict.DISABLE, "410 Gone: webhook disabled"),
        (429, Verdict.RETRY, "429 Too Many Requests"),
        (499, Verdict.FAIL, "499"),
        (500, Verdict.RETRY, "500 Internal Server Error"),
        (599, Verdict.RETRY, "599"),
    ],
)
def test_each_status_at_the_edges_of_its_range(status: int, verdict: Verdict, summary: str) -> None:
    decision = classify(status=status, error=None, attempt=1, schedule=SCHEDULE)
    assert (decision.verdict, decision.summary) == (verdict, summary)
    assert decision.delay == (SCHEDULE[0] if verdict is Verdict.RETRY else None)
    assert not decision.exhausted


def test_without_an_answer_the_error_is_the_summary() -> None:
    timed_out = classify(status=None, error="timed out after 30s", attempt=1, schedule=SCHEDULE)
    assert (timed_out.verdict, timed_out.summary) == (Verdict.RETRY, "timed out after 30s")
    silent = classify(status=None, error=None, attempt=1, schedule=SCHEDULE)
    assert (silent.verdict, silent.summary) == (Verdict.RETRY, "no answer")


def test_a_refused_target_fails_with_the_reason() -> None:
    reason = "refused: 10.0.0.1 is private"
    refused = classify(status=None, error=reason, attempt=1, schedule=SCHEDULE, refused=True)
    assert (refused.verdict, refused.summary) == (Verdict.FAIL, reason)
    bare = classify(status=None, error=None, attempt=1, schedule=SCHEDULE, refused=True)
    assert (bare.verdict, bare.summary) == (Verdict.FAIL, "refused")
    # an answer wins over a refusal: it came from the target
    answered = classify(status=204, error=None, attempt=1, schedule=SCHEDULE, refused=True)
    assert answered.verdict is Verdict.COMPLETE


def test_the_last_attempt_fails_exhausted_naming_the_attempts() -> None:
    last = classify(status=503, error=None, attempt=len(SCHEDULE) + 1, schedule=SCHEDULE)
    assert last.verdict is Verdict.FAIL and last.exhausted and last.delay is None
    assert last.summary == "503 Service Unavailable (gave up after 4 attempts)"
    before = classify(status=503, error=None, attempt=len(SCHEDULE), schedule=SCHEDULE)
    assert before.verdict is Verdict.RETRY and before.delay == SCHEDULE[-1]


def test_a_retry_after_equal_to_a_step_takes_that_step() -> None:
    assert pick_delay(SCHEDULE, 1, 30.0) == 30.0
    assert pick_delay(SCHEDULE, 1, 5.0) == 5.0
    assert pick_delay(SCHEDULE, 2, 120.0) == 120.0


def test_a_retry_after_date_without_a_zone_is_utc_and_now_is_the_clock() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert retry_after("Fri, 27 Nov 2026 12:01:30", now) == 90.0
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    seconds = retry_after(ahead)
    assert seconds is not None and 80.0 <= seconds <= 90.0
