"""Text from outside made storable before it becomes an outcome: NUL replaced and said in
the summary, summaries bounded in bytes, run numbers bounded in digits."""

from __future__ import annotations

import pytest

from webhook_router.classify import Decision, Verdict
from webhook_router.jobs import SUMMARY_BYTES, Attempt, Delivery, bounded_summary, storable
from webhook_router.runs import run_id_of
from webhook_router.worker import outcome_of

pytestmark = pytest.mark.timeout(30)

DELIVERY = Delivery(
    job_id="j",
    event_id="e",
    event_at="2026-11-20T10:00:00+00:00",
    webhook_id="w",
    webhook_name="hook",
    space="acme",
    scope_type="Space",
    scope_id="acme",
    type="User",
    action="Created",
    parent_type="User",
    parent_id="u",
    tree_group="Users",
    tree_name="Created",
    url="http://127.0.0.1:9/",
    body="{}",
)


def test_nul_is_replaced_and_counted() -> None:
    assert storable("a\x00b\x00") == ("a\ufffdb\ufffd", 2)
    assert storable("clean \\u0000 escape") == ("clean \\u0000 escape", 0)
    assert storable(None) == (None, 0)


def test_an_answer_with_nul_is_recorded_altered_and_says_so() -> None:
    answer = '{"message": "Initiated run #42.", "x": "\x00"}'
    attempt = Attempt(1, "2026-11-20T10:00:01+00:00", 3.0, 200, answer, None)
    outcome = outcome_of(DELIVERY, attempt, Decision(Verdict.COMPLETE, "200 OK"))
    assert outcome.response_content is not None and "\x00" not in outcome.response_content
    assert outcome.response_content == answer.replace("\x00", "\ufffd")
    assert outcome.attempt is not None
    assert outcome.attempt.response_content == outcome.response_content
    assert outcome.summary == "200 OK (answer altered: 1 NUL replaced by U+FFFD)"
    assert outcome.run_id == "42"


def test_a_clean_answer_is_untouched() -> None:
    attempt = Attempt(1, "2026-11-20T10:00:01+00:00", 3.0, 200, "ok", None)
    outcome = outcome_of(DELIVERY, attempt, Decision(Verdict.COMPLETE, "200 OK"))
    assert outcome.summary == "200 OK" and outcome.attempt == attempt


def test_summaries_are_bounded_in_bytes() -> None:
    assert bounded_summary("short") == "short"
    wide = bounded_summary("\U0001f600" * 1000)
    assert len(wide.encode()) <= SUMMARY_BYTES and wide.endswith("\u2026")
    attempt = Attempt(1, "2026-11-20T10:00:01+00:00", 3.0, None, None, "x" * 5000)
    outcome = outcome_of(DELIVERY, attempt, Decision(Verdict.FAIL, "no answer"))
    assert outcome.summary is not None and len(outcome.summary.encode()) <= SUMMARY_BYTES
    assert outcome.attempt is not None and outcome.attempt.error == "x" * 5000


def test_a_run_number_longer_than_an_integer_is_none() -> None:
    assert run_id_of('{"runId": "' + "7" * 19 + '"}') == "7" * 19
    assert run_id_of('{"runId": "' + "7" * 20 + '"}') is None
    assert run_id_of('{"run": {"id": ' + "7" * 40 + "}}") is None


def test_what_is_left_of_a_refused_outcome_keeps_the_job_and_says_why() -> None:
    from dataclasses import replace

    from webhook_router.jobs import Outcome, without_contents

    attempt = Attempt(1, "2026-11-20T10:00:01+00:00", 3.0, 2**40, "a\x00", None, {"h": "v"})
    refused = Outcome(
        DELIVERY,
        "Complete",
        summary="200 OK",
        run_id="5",
        response_status=2**40,
        response_content="a\x00",
        attempt=attempt,
    )
    left = without_contents(refused, "not stored whole: refused")
    assert left.status == "Complete" and left.delivery == replace(DELIVERY, body="")
    assert left.summary == "200 OK; not stored whole: refused"
    assert left.response_content is None and left.response_status is None
    assert left.run_id is None
    assert left.attempt == replace(
        attempt,
        response_status=None,
        response_content=None,
        error=left.summary,
        request_headers={},
    )
