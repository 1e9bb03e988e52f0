"""OpenTelemetry tracing: one trace per event, from its publisher to the job log.

Configured by the standard variables only (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_*`,
`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_PROPAGATORS`, `OTEL_BSP_*`). Tracing
is on when an exporter or an OTLP endpoint is named and `OTEL_SDK_DISABLED` is not true;
otherwise every function here returns at once (no span, no header, no context lookup), and
the OpenTelemetry packages are not even imported (that alone takes a noticeable part of a
second, which every CLI command would pay).

W3C trace context travels in the AMQP headers of an event, and per job in its delivery and
outcome (`trace`, a small carrier of `traceparent`/`tracestate`), since one message of
deliveries or outcomes holds jobs of many events. The router's span is the parent of each
attempt's span and of the Queued record's span; an attempt's span is the parent of its
outcome's record span. Sampling is decided once, where the trace starts (ParentBased by
default): a sampled-out event costs no export in any role, and its jobs record no trace id.

The SDK's provider is kept here, not installed globally, so a process (or a test) can set
tracing up and tear it down again; the maintained instrumentations are not used (see
docs/operations.md, "Tracing").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from webhook_router.classify import Decision, Verdict
from webhook_router.jobs import Attempt, Delivery, Outcome

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger(__name__)

CONSUMER = "CONSUMER"
CLIENT = "CLIENT"
SERVER = "SERVER"
INTERNAL = "INTERNAL"
"""Span kinds, by their name in `opentelemetry.trace.SpanKind`."""

Carrier = dict[str, str]
CARRIED = ("traceparent", "tracestate")
"""The carrier's keys kept in a delivery or outcome (W3C trace context)."""

_provider: Any = None
_tracer: Tracer | None = None
_propagate: Any = None
_trace: Any = None
"""The `opentelemetry.propagate` and `opentelemetry.trace` modules, once tracing is on."""


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup(service: str) -> bool:
    """Start exporting spans as the OTEL_* variables say; `service` names the process
    when OTEL_SERVICE_NAME does not. Returns whether tracing is on."""
    global _provider, _tracer, _propagate, _trace
    if _provider is not None:
        return True
    environ = os.environ
    if not wanted(environ):
        return False
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    from webhook_router import __version__

    names = [
        n.strip()
        for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",")
        if n.strip() and n.strip() != "none"
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning("only OTLP over HTTP with protobuf is sent", asked=protocol)

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            # the stdout of now: the exporter's default is the one of its import
            exporters.append(ConsoleSpanExporter(out=sys.stdout))
        else:
            log.warning("trace exporter not known, ignored", exporter=name)
    if not exporters:
        return False
    attributes: dict[str, str] = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _propagate, _trace = propagate, trace
    _provider = provider
    _tracer = provider.get_tracer("webhook_router", __version__)
    log.info("tracing on", exporters=names)
    return True


def shutdown() -> None:
    """Export what is buffered and stop; tracing is off afterwards."""
    global _provider, _tracer, _propagate, _trace
    provider, _provider, _tracer = _provider, None, None
    _propagate = _trace = None
    if provider is not None:
        provider.shutdown()


def flush(timeout_ms: int = 10_000) -> bool:
    """Export every span ended so far; True when done (or tracing is off)."""
    return _provider is None or bool(_provider.force_flush(timeout_ms))


def enabled() -> bool:
    return _tracer is not None


def extract(carrier: Mapping[str, Any] | None) -> Context | None:
    """The trace context a carrier (AMQP headers, HTTP headers, a job's `trace`) holds;
    None when tracing is off or the carrier is empty."""
    if _propagate is None or not carrier:
        return None
    text = {k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in carrier.items()}
    context: Context = _propagate.extract(text)
    return context


def carrier(*, ambient: bool = False) -> Carrier:
    """The current span's context as a carrier; empty when no span is current, or when
    tracing is off here and not `ambient`: the caller's own tracing, for a publisher, which
    can only have a span when it imported OpenTelemetry itself."""
    propagate = _propagate
    if propagate is None:
        if not ambient or "opentelemetry.trace" not in sys.modules:
            return {}
        from opentelemetry import propagate
    found: Carrier = {}
    propagate.inject(found)
    return {k: v for k, v in found.items() if k in CARRIED}


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's `traceparent` (and `tracestate`) to outgoing headers."""
    headers.update(carrier())


@contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    kind: str = INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span made current for the block, child of the context in `parent` (a carrier)
    or else of the current span; None, and nothing done, when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name,
        context=extract(parent),
        kind=_trace.SpanKind[kind],
        attributes=attributes,
        record_exception=True,
    ) as current:
        yield current


def record(
    name: str,
    parent: Mapping[str, Any] | None,
    *,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
) -> None:
    """A span that already happened (a job's part of a batch write), child of `parent`."""
    if _tracer is None or not parent:
        return
    made = _tracer.start_span(
        name, context=extract(parent), attributes=attributes, start_time=start_ns
    )
    made.end(end_time=end_ns)


def annotate(attributes: Mapping[str, Any], *, name: str | None = None) -> None:
    """Add attributes to the current span (and rename it), when tracing is on."""
    if _tracer is None:
        return
    current = _trace.get_current_span()
    current.set_attributes(attributes)
    if name is not None:
        current.update_name(name)


def attempt_attributes(delivery: Delivery) -> dict[str, Any]:
    """What an attempt's span says from the start: the job, its webhook and host."""
    if _tracer is None:
        return {}
    return {
        "webhook_router.job_id": delivery.job_id,
        "webhook_router.event_id": delivery.event_id,
        "webhook_router.webhook": delivery.webhook_name,
        "webhook_router.webhook_id": delivery.webhook_id,
        "webhook_router.attempt": delivery.attempt,
        "webhook_router.replay": delivery.replay,
        "http.request.method": "POST",
        "server.address": urlsplit(delivery.url).hostname or "",
    }


def attempt_done(attempt: Attempt, decision: Decision) -> None:
    """What an attempt's span says once decided: status, verdict, the retry's wait."""
    if _tracer is None:
        return
    current = _trace.get_current_span()
    found: dict[str, Any] = {
        "webhook_router.verdict": decision.verdict.value,
        "webhook_router.summary": decision.summary,
    }
    if attempt.response_status is not None:
        found["http.response.status_code"] = attempt.response_status
    if decision.delay is not None:
        found["webhook_router.retry_wait_s"] = decision.delay
    if attempt.error is not None:
        found["error.type"] = attempt.error
    current.set_attributes(found)
    if decision.verdict is not Verdict.COMPLETE:
        current.set_status(_trace.Status(_trace.StatusCode.ERROR, decision.summary))


def recorded(outcomes: Sequence[Outcome], started_ns: int) -> None:
    """A span per outcome written in one batch, from the batch's start to now, child of
    the span that made the outcome (the router's for Queued, else its attempt's)."""
    if _tracer is None:
        return
    ended = time.time_ns()
    for outcome in outcomes:
        record(
            "record job",
            outcome.trace or outcome.delivery.trace,
            start_ns=started_ns,
            end_ns=ended,
            attributes={
                "webhook_router.job_id": outcome.delivery.job_id,
                "webhook_router.status": outcome.status,
                "webhook_router.attempt": outcome.attempts,
                "webhook_router.batch_size": len(outcomes),
            },
        )


def trace_id_of(carried: Mapping[str, str] | None) -> str | None:
    """The trace id (32 hex digits) a job's carrier names, when its trace is sampled."""
    if not carried:
        return None
    parent = carried.get("traceparent", "")
    parts = parent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        sampled = int(parts[3][:2], 16) & 1
    except ValueError:
        return None
    return parts[1] if sampled else None


def log_ids(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: `trace_id` and `span_id` of the current sampled span."""
    if _tracer is None:
        return event
    found = _trace.get_current_span().get_span_context()
    if found.is_valid and found.trace_flags.sampled:
        event.setdefault("trace_id", format(found.trace_id, "032x"))
        event.setdefault("span_id", format(found.span_id, "016x"))
    return event
