"""What an answer (or the lack of one) means for a job: complete, retry, fail, disable.

Pure: the worker measures, this decides. 2xx completes. Redirects are not followed and
fail. 408, 425, 429, 5xx and transport errors are retried, honouring Retry-After within
the schedule. 410 fails and disables the webhook. Any other 4xx fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from http import HTTPStatus

RETRIED_STATUSES = frozenset({408, 425, 429})


class Verdict(StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"
    FAIL = "fail"
    DISABLE = "disable"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    summary: str
    delay: float | None = None
    """Seconds to wait before the next attempt (retries only)."""
    exhausted: bool = False
    """Failed because the schedule ran out: the delivery goes to the dead letters."""


def summary_of(status: int) -> str:
    """`200 OK`, `404 Not Found`; the bare number for statuses without a phrase."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def pick_delay(schedule: tuple[float, ...], retry_number: int, asked: float | None) -> float:
    """The wait before retry `retry_number` (1-based): the schedule's step, or the
    shortest step at least as long as a Retry-After, capped at the longest step."""
    step = schedule[min(retry_number, len(schedule)) - 1]
    if asked is None or asked <= step:
        return step
    longer = [s for s in schedule if s >= asked]
    return min(longer) if longer else max(schedule)


def classify(
    *,
    status: int | None,
    error: str | None,
    attempt: int,
    schedule: tuple[float, ...],
    retry_after_header: str | None = None,
    refused: bool = False,
) -> Decision:
    """Decide after attempt number `attempt` (1-based) of a delivery. A target refused by
    the address guard fails at once: asking again cannot change the answer."""
    if status is not None and 200 <= status < 300:
        return Decision(Verdict.COMPLETE, summary_of(status))
    if refused:
        return Decision(Verdict.FAIL, error or "refused")
    if status is None:
        summary = error or "no answer"
        retryable = True
    elif status == 410:
        return Decision(Verdict.DISABLE, f"{summary_of(status)}: webhook disabled")
    elif 300 <= status < 400:
        return Decision(Verdict.FAIL, f"{summary_of(status)}: redirects are not followed")
    else:
        summary = summary_of(status)
        retryable = status in RETRIED_STATUSES or status >= 500
    if not retryable:
        return Decision(Verdict.FAIL, summary)
    if attempt > len(schedule):
        return Decision(
            Verdict.FAIL, f"{summary} (gave up after {attempt} attempts)", exhausted=True
        )
    delay = pick_delay(schedule, attempt, retry_after(retry_after_header))
    return Decision(Verdict.RETRY, summary, delay)
