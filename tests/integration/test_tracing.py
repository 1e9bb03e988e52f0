"""OpenTelemetry tracing on the real services: the spans the roles export to an OTLP/HTTP
receiver on 127.0.0.1 (decoded with opentelemetry-proto), the `traceparent` the webhook's
endpoint gets, and the trace id the job log records.

The roles run in this process (the `stack` fixture), so tracing is set up here, from the
OTEL_* variables of the test, and torn down after it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from structlog.testing import LogCapture

from webhook_router import logs, tracing
from webhook_router.runtime import serve

from ..conftest import eventually, free_port
from .conftest import Stack, answer_app, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

EVENTS = "/app/api/v1/events"
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
)


@dataclass(frozen=True)
class Exported:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.requests = 0

    async def traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Exported(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            {a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        return web.Response(status=200, content_type="application/x-protobuf")

    def of(self, trace_id: str) -> list[Exported]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)
    try:
        yield found, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def log_lines() -> Iterator[LogCapture]:
    """Every line the roles log meanwhile, through the processors `logs.configure` sets."""
    saved = structlog.get_config()
    captured = LogCapture()
    structlog.configure(
        processors=[*logs.processors(), captured],
        cache_logger_on_first_use=False,
    )
    try:
        yield captured
    finally:
        structlog.configure(**saved)


@contextmanager
def tracing_on(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, sampler: str | None = None
) -> Iterator[None]:
    """Tracing set up in this process from OTEL_* variables, as a role process does."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    if sampler is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    assert tracing.setup("webhook-router-test")
    try:
        yield
    finally:
        tracing.shutdown()


async def flushed() -> None:
    """Every span ended so far exported (the exporter posts from its own thread to the
    receiver on this loop, so the loop must run meanwhile)."""
    assert await asyncio.to_thread(tracing.flush)


def counting(fail_first: int, seen: list[dict[str, str]]) -> Any:
    """A webhook endpoint answering 503 to its first `fail_first` POSTs, then 200; it
    keeps each POST's headers."""
    calls = itertools.count(1)

    async def answer(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if next(calls) <= fail_first:
            return web.Response(status=503, text="busy")
        return web.json_response({"messageType": "success"})

    return answer


def parent_of(header: str) -> tuple[str, str]:
    """(trace id, span id) of a `traceparent` header."""
    _, trace_id, span_id, _ = header.split("-")
    return trace_id, span_id


def sampled(header: str) -> bool:
    return bool(int(header.rsplit("-", 1)[1], 16) & 1)


async def test_one_event_two_webhooks_one_retried_make_one_trace(
    stack: Stack,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
    log_lines: LogCapture,
) -> None:
    found, endpoint = receiver
    space = stack.space()
    steady: list[dict[str, str]] = []
    flaky: list[dict[str, str]] = []
    with tracing_on(monkeypatch, endpoint):
        a_runner, a_url = await answer_app(counting(0, steady))
        b_runner, b_url = await answer_app(counting(1, flaky))
        try:
            await stack.webhook(space, name="steady", type="User", event="Created", url=a_url)
            await stack.webhook(space, name="flaky", type="User", event="Created", url=b_url)
            event = event_for(space, "User", "Created", user={"username": "jane"})
            status, _ = await stack.api("POST", EVENTS, json=event)
            assert status == 202
            jobs = await stack.settled(space, 2, statuses=("Complete",))
        finally:
            await a_runner.cleanup()
            await b_runner.cleanup()

        trace_ids = {job["trace_id"] for job in jobs}
        assert len(trace_ids) == 1, f"the event's jobs name {trace_ids}"
        [trace_id] = trace_ids
        assert trace_id is not None and len(trace_id) == 32

        async def everything() -> list[Exported] | None:
            await flushed()
            spans = found.of(trace_id)
            records = [s for s in spans if s.name == "record job"]
            return spans if len(records) >= 5 else None

        spans = await eventually(everything, timeout=15)
        assert spans, f"the trace's spans never all came: {found.of(trace_id)}"

    by_name: dict[str, list[Exported]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [ingest] = by_name["ingest event"]
    [router] = by_name["route event"]
    attempts = by_name["webhook attempt"]
    records = by_name["record job"]
    assert router.parent_id == ingest.span_id
    assert len(attempts) == 3
    assert {a.parent_id for a in attempts} == {router.span_id}
    assert sorted(
        (a.attributes["webhook_router.webhook"], a.attributes["webhook_router.attempt"])
        for a in attempts
    ) == [("flaky", 1), ("flaky", 2), ("steady", 1)]
    first_flaky = next(
        a
        for a in attempts
        if a.attributes["webhook_router.webhook"] == "flaky"
        and a.attributes["webhook_router.attempt"] == 1
    )
    assert first_flaky.attributes["http.response.status_code"] == 503
    assert first_flaky.attributes["webhook_router.verdict"] == "retry"
    assert first_flaky.attributes["webhook_router.retry_wait_s"] > 0
    assert first_flaky.attributes["server.address"] == "127.0.0.1"
    # the two Queued records under the router, each attempt's outcome under its attempt
    assert len(records) == 5
    parents = sorted(r.parent_id for r in records)
    assert parents == sorted([router.span_id] * 2 + [a.span_id for a in attempts])

    # each POST carried the traceparent of its own attempt's span
    posted = [parent_of(h["traceparent"]) for h in steady + flaky]
    assert {t for t, _ in posted} == {trace_id}
    assert sorted(s for _, s in posted) == sorted(a.span_id for a in attempts)

    job_path = f"/app/api/v1/spaces/{space}/webhookJobs/{jobs[0]['id']}"
    status, shown = await stack.api("GET", job_path)
    assert status == 200
    assert shown["webhookJob"]["traceId"] == trace_id

    # the job's log lines name its trace and the span they were logged in
    job_ids = {str(job["id"]) for job in jobs}
    made = [e for e in log_lines.entries if e["event"] == "attempt made" and e["job_id"] in job_ids]
    assert len(made) == 3
    assert {e["trace_id"] for e in made} == {trace_id}
    assert sorted(e["span_id"] for e in made) == sorted(a.span_id for a in attempts)
    queued = [e for e in log_lines.entries if e["event"] == "job queued" and e["job_id"] in job_ids]
    assert [e["span_id"] for e in queued] == [router.span_id] * 2


async def test_a_publishers_traceparent_is_continued_and_sampling_is_kept(
    stack: Stack, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampler parentbased_always_off: an event the publisher traced (sampled) continues
    its trace; one without a trace is not sampled: no span exported, no trace id kept. A
    webhook with traceContext off gets no traceparent."""
    found, endpoint = receiver
    space = stack.space()
    seen: list[dict[str, str]] = []
    hidden: list[dict[str, str]] = []
    publisher_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    publisher_span = "00f067aa0ba902b7"
    with tracing_on(monkeypatch, endpoint, sampler="parentbased_always_off"):
        runner, url = await answer_app(counting(0, seen))
        hidden_runner, hidden_url = await answer_app(counting(0, hidden))
        try:
            await stack.webhook(space, name="traced", type="User", event="Created", url=url)
            await stack.webhook(
                space,
                name="untraced",
                type="User",
                event="Created",
                url=hidden_url,
                trace_context=False,
            )
            parent = SpanContext(
                int(publisher_trace, 16),
                int(publisher_span, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
            try:
                await stack.publisher.publish(
                    event_for(space, "User", "Created", user={"username": "traced"})
                )
            finally:
                otel_context.detach(token)
            await stack.publisher.publish(
                event_for(space, "User", "Created", user={"username": "sampled-out"})
            )
            jobs = await stack.settled(space, 4, statuses=("Complete",))
        finally:
            await runner.cleanup()
            await hidden_runner.cleanup()

        async def routed() -> list[Exported] | None:
            await flushed()
            spans = found.of(publisher_trace)
            return spans if any(s.name == "route event" for s in spans) else None

        spans = await eventually(routed, timeout=15)
        assert spans, "the publisher's trace was not continued"
    [router] = [s for s in spans if s.name == "route event"]
    assert router.parent_id == publisher_span

    by_user = {(j["parent_id"], j["webhook_name"]): j["trace_id"] for j in jobs}
    assert by_user[("traced", "traced")] == publisher_trace
    assert by_user[("traced", "untraced")] == publisher_trace
    assert by_user[("sampled-out", "traced")] is None
    assert by_user[("sampled-out", "untraced")] is None

    headers = sorted(h["traceparent"] for h in seen)
    assert len(headers) == 2
    traced = [h for h in headers if parent_of(h)[0] == publisher_trace]
    untraced = [h for h in headers if parent_of(h)[0] != publisher_trace]
    assert len(traced) == 1 and sampled(traced[0])
    # the sampled-out event's context still travels, marked not sampled
    assert len(untraced) == 1 and not sampled(untraced[0])
    assert [h.get("traceparent") for h in hidden] == [None, None]
    assert {s.trace_id for s in found.spans} == {publisher_trace}


async def test_an_admins_retry_starts_a_trace_of_its_own(
    stack: Stack, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, endpoint = receiver
    space = stack.space()
    seen: list[dict[str, str]] = []
    answers = iter([422, 200])

    async def refuse_then_take(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=next(answers))

    with tracing_on(monkeypatch, endpoint):
        runner, url = await answer_app(refuse_then_take)
        try:
            await stack.webhook(space, type="User", event="Created", url=url)
            await stack.publisher.publish(
                event_for(space, "User", "Created", user={"username": "again"})
            )
            [failed] = await stack.settled(space, 1, statuses=("Failed",))
            first_trace = failed["trace_id"]
            assert first_trace is not None
            job_path = f"/app/api/v1/spaces/{space}/webhookJobs/{failed['id']}"
            status, _ = await stack.api("PUT", job_path, json={"webhookJob": {"status": "queued"}})
            assert status == 200
            [done] = await stack.settled(space, 1, statuses=("Complete",))
        finally:
            await runner.cleanup()
        retry_trace = done["trace_id"]
        assert retry_trace not in (None, first_trace)

        async def exported() -> list[Exported] | None:
            await flushed()
            spans = found.of(retry_trace)
            names = sorted(s.name for s in spans)
            return spans if names.count("record job") >= 2 else None

        spans = await eventually(exported, timeout=15)
        assert spans, f"the retry's trace never came whole: {found.of(retry_trace)}"
    [retry] = [s for s in spans if s.name == "retry job"]
    [attempt] = [s for s in spans if s.name == "webhook attempt"]
    assert retry.parent_id == "" and attempt.parent_id == retry.span_id
    assert attempt.attributes["webhook_router.replay"] == 1
    assert parent_of(seen[-1]["traceparent"]) == (retry_trace, attempt.span_id)


async def test_with_tracing_off_nothing_is_exported_or_sent(
    stack: Stack,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
    log_lines: LogCapture,
) -> None:
    found, endpoint = receiver
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # an endpoint alone would turn it on; without one and without an exporter it is off
    assert not tracing.setup("webhook-router-test")
    assert not tracing.enabled()
    space = stack.space()
    seen: list[dict[str, str]] = []
    runner, url = await answer_app(counting(0, seen))
    try:
        await stack.webhook(space, type="User", event="Created", url=url)
        status, _ = await stack.api(
            "POST",
            EVENTS,
            json=event_for(space, "User", "Created", user={"username": "off"}),
        )
        assert status == 202
        [job] = await stack.settled(space, 1, statuses=("Complete",))
    finally:
        await runner.cleanup()
    assert job["trace_id"] is None
    assert [h.get("traceparent") for h in seen] == [None]
    assert found.requests == 0 and found.spans == []
    [made] = [
        e
        for e in log_lines.entries
        if e["event"] == "attempt made" and e["job_id"] == str(job["id"])
    ]
    assert "trace_id" not in made and "span_id" not in made
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
