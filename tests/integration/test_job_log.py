"""The analysts' views give the right numbers for a small job log made by hand.

Jobs are written through Store.record, as the recorder writes them, in a space of this
test's own and to endpoints no other test uses, on a day three days ago.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from webhook_router.isolation import endpoint_of
from webhook_router.jobs import Attempt, Delivery, Outcome, Status, job_id
from webhook_router.store import Store

from ..conftest import free_port

pytestmark = pytest.mark.timeout(60)
in_session_loop = pytest.mark.asyncio(loop_scope="session")

SUBMITTED = ("Submissions > services > ipad-request", "Submitted")
CREATED = ("Users", "Created")


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Log:
    """Builds one webhook's jobs and the outcomes the recorder would get for them."""

    space: str
    webhook_name: str
    tree: tuple[str, str]
    url: str
    webhook_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    outcomes: list[Outcome] = field(default_factory=list)

    def delivery(self, event_at: datetime) -> Delivery:
        event_id = str(uuid.uuid4())
        return Delivery(
            job_id=job_id(event_id, self.webhook_id),
            event_id=event_id,
            event_at=event_at.isoformat(),
            webhook_id=self.webhook_id,
            webhook_name=self.webhook_name,
            space=self.space,
            scope_type="Space",
            scope_id=self.space,
            type="Submission",
            action=self.tree[1],
            parent_type="Submission",
            parent_id=str(uuid.uuid4()),
            tree_group=self.tree[0],
            tree_name=self.tree[1],
            url=self.url,
            body='{"event": {}}',
            created_at=event_at.isoformat(),
        )

    def job(
        self,
        event_at: datetime,
        answers: list[tuple[int | None, float]],
        final: Status,
        *,
        run_id: str | None = None,
        next_attempt_at: datetime | None = None,
        error: str = "timed out after 5s",
    ) -> Delivery:
        """A job whose attempts got `answers` (status or None, milliseconds), ending in
        `final`; every attempt but the last was a retried failure."""
        d = self.delivery(event_at)
        self.outcomes.append(Outcome(d, Status.QUEUED))
        for number, (status, ms) in enumerate(answers, start=1):
            attempt = Attempt(
                number=number,
                started_at=(event_at + timedelta(minutes=number)).isoformat(),
                duration_ms=ms,
                response_status=status,
                response_content=None if status is None else "{}",
                error=error if status is None else None,
            )
            said = error if status is None else str(status)
            last = number == len(answers)
            if not last or final is Status.QUEUED:
                outcome = Outcome(
                    d,
                    Status.QUEUED,
                    summary=said,
                    retry_count=number,
                    scheduled_at=(next_attempt_at or event_at).isoformat(),
                    response_status=status,
                    attempt=attempt,
                )
            else:
                gave_up = f" (gave up after {number} attempts)" if number > 1 else ""
                outcome = Outcome(
                    d,
                    final,
                    summary=said + gave_up,
                    retry_count=number - 1,
                    run_id=run_id,
                    response_status=status,
                    attempt=attempt,
                )
            self.outcomes.append(outcome)
        return d

    def unsent(self, event_at: datetime, reason: str) -> Delivery:
        """A job the router failed before sending (its URL could not be made)."""
        d = self.delivery(event_at)
        self.outcomes.append(Outcome(d, Status.FAILED, summary=reason))
        return d


@pytest.fixture
def day() -> date:
    return datetime.now(UTC).date() - timedelta(days=3)


@in_session_loop
async def test_views_count_a_hand_made_log(st: Store, day: date) -> None:
    space = f"space-{uuid.uuid4().hex[:8]}"
    engine = f"http://127.0.0.1:{free_port()}"
    other = f"http://127.0.0.1:{free_port()}"
    morning = datetime.combine(day, time(9), tzinfo=UTC)
    retry_at = datetime.now(UTC) + timedelta(hours=1)

    a = Log(space, "Submitted", SUBMITTED, engine + "/app/api/v1/run-tree/x")
    a.job(morning, [(200, 100.0)], Status.COMPLETE, run_id="11")
    a.job(morning, [(503, 300.0), (200, 200.0)], Status.COMPLETE, run_id="12")
    a.job(morning, [(404, 50.0)], Status.FAILED)
    a.job(morning, [(None, 5000.0)] * 3, Status.FAILED)
    waiting = a.job(morning, [(503, 400.0)], Status.QUEUED, next_attempt_at=retry_at)
    a.unsent(morning, "URL: kapp('slug') is null")

    b = Log(space, "Created", CREATED, other + "/hooks/users")
    b.job(morning, [(200, 120.0)], Status.COMPLETE, run_id="21")
    b.job(morning - timedelta(days=1), [(200, 80.0)], Status.COMPLETE)

    await st.record(a.outcomes + b.outcomes)
    pool = st.pool

    success = {
        (r["day"], r["webhook_name"]): r
        for r in await pool.fetch("SELECT * FROM webhook_job_success_daily WHERE space = $1", space)
    }
    assert set(success) == {(day, "Submitted"), (day, "Created"), (day - timedelta(1), "Created")}
    submitted = success[(day, "Submitted")]
    assert (submitted["jobs"], submitted["complete"], submitted["failed"]) == (6, 2, 3)
    assert (submitted["pending"], submitted["cancelled"]) == (1, 0)
    assert submitted["success_rate"] == Decimal("0.4")
    assert submitted["webhook_id"] == uuid.UUID(a.webhook_id)
    assert success[(day, "Created")]["success_rate"] == 1

    latency = {
        r["endpoint"]: r
        for r in await pool.fetch(
            "SELECT * FROM webhook_endpoint_latency WHERE day = $1 AND endpoint = ANY($2)",
            day,
            [engine, other],
        )
    }
    assert set(latency) == {engine, other}
    times = [100.0, 300.0, 200.0, 50.0, 5000.0, 5000.0, 5000.0, 400.0]
    e = latency[engine]
    assert (e["attempts"], e["answered"], e["succeeded"]) == (8, 5, 2)
    assert e["p50_ms"] == pytest.approx(percentile_cont(times, 0.5))
    assert e["p95_ms"] == pytest.approx(percentile_cont(times, 0.95))
    assert e["max_ms"] == 5000.0
    assert (latency[other]["attempts"], latency[other]["p50_ms"]) == (1, 120.0)

    failures = {
        (r["response_status"], r["error"]): r["jobs"]
        for r in await pool.fetch(
            "SELECT * FROM webhook_job_failures WHERE space = $1 AND day = $2", space, day
        )
    }
    assert failures == {
        (404, None): 1,
        (None, "timed out after 5s"): 1,
        (None, "URL: kapp('slug') is null"): 1,
    }

    runs = {
        (r["tree_group"], r["tree_name"]): (r["jobs"], r["runs"], r["failed"])
        for r in await pool.fetch(
            "SELECT * FROM webhook_runs_per_tree WHERE space = $1 AND day = $2", space, day
        )
    }
    assert runs == {SUBMITTED: (6, 2, 3), CREATED: (1, 1, 0)}

    retrying = await pool.fetch("SELECT * FROM webhook_jobs_waiting_retry WHERE space = $1", space)
    assert [str(r["id"]) for r in retrying] == [waiting.job_id]
    assert retrying[0]["retry_count"] == 1
    assert retrying[0]["scheduled_at"] == retry_at
    assert retrying[0]["overdue"] is False
    assert retrying[0]["summary"] == "503"


@in_session_loop
async def test_endpoint_is_scheme_host_and_port_as_the_worker_groups_them(st: Store) -> None:
    urls = [
        "http://engine.internal:8081/app/api/v1/run-tree/a/b/c",
        "HTTPS://user:secret@Hooks.Example.com/in?x=1",
        "https://hooks.example.com:443/other",
        "http://[::1]:9000/x",
        "http://127.0.0.1/",
        "http://host:0080/p",
    ]
    got = await st.pool.fetch(
        "SELECT u, webhook_router_endpoint(u) AS e FROM unnest($1::text[]) AS u", urls
    )
    assert {r["u"]: r["e"] for r in got} == {u: endpoint_of(u) for u in urls}


def test_docs_show_each_view_as_migrated() -> None:
    root = Path(__file__).resolve().parents[2]
    migration = (root / "src/webhook_router/sql/migrations/0002_job_log_views.sql").read_text()
    docs = (root / "docs/jobs.md").read_text()
    views = re.findall(r"^CREATE VIEW .*?;$", migration, re.DOTALL | re.MULTILINE)
    assert len(views) == 5
    for view in views:
        assert view in docs, view.splitlines()[0]
