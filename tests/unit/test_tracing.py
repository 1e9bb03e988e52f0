"""The tracing module without an exporter: when it is on, what a job records, and that off
it makes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from webhook_router import tracing

pytestmark = pytest.mark.timeout(10)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_on_only_when_an_exporter_or_endpoint_is_named(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing.wanted(environ) is on


@pytest.mark.parametrize(
    ("carried", "trace_id"),
    [
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}, TRACE),
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-03"}, TRACE),
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00"}, None),  # not sampled
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-02"}, None),
        ({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}, None),
        ({"traceparent": "garbage"}, None),
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-zz"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_a_job_records_the_trace_id_of_a_sampled_trace_only(
    carried: dict[str, str] | None, trace_id: str | None
) -> None:
    assert tracing.trace_id_of(carried) == trace_id


def test_off_nothing_is_made_or_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.setup("test")
    assert not tracing.enabled()
    parent = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    with tracing.span("x", parent=parent) as span:
        assert span is None
        headers: dict[str, str] = {}
        tracing.inject(headers)
        assert headers == {} and tracing.carrier() == {}
    assert tracing.log_ids(None, "info", {"event": "x"}) == {"event": "x"}


@pytest.mark.timeout(60)
def test_off_the_roles_do_not_even_import_opentelemetry() -> None:
    """Importing it takes a noticeable part of a second, which every CLI command would pay."""
    code = (
        "import sys, webhook_router.cli, webhook_router.api, webhook_router.router, "
        "webhook_router.worker, webhook_router.recorder; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"


def test_on_a_span_carries_its_context_into_headers_and_log_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert tracing.setup("test")
    try:
        parent = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        with tracing.span("x", parent=parent, kind=tracing.CLIENT) as span:
            assert span is not None
            headers: dict[str, str] = {}
            tracing.inject(headers)
            line = tracing.log_ids(None, "info", {"event": "x"})
        trace_id, span_id = headers["traceparent"].split("-")[1:3]
        assert trace_id == TRACE and span_id != "00f067aa0ba902b7"
        assert line == {"event": "x", "trace_id": TRACE, "span_id": span_id}
        assert tracing.trace_id_of(headers) == TRACE
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
    assert TRACE in capsys.readouterr().out, "the console exporter printed the span"


def test_an_endpoint_alone_turns_on_the_otlp_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert tracing.setup("test")
    tracing.shutdown()  # no span was made: nothing is sent
