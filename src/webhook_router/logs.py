"""structlog set-up: JSON lines when not on a terminal, readable lines on one; with tracing
on, a line logged in a sampled span carries its `trace_id` and `span_id`.

JSON lines are encoded by orjson and written as bytes (the roles log a line per job and per
attempt at the default level, so this is on every delivery's path); a line orjson cannot
encode (a lone surrogate, an integer beyond 64 bits) falls back to the standard library's
encoder instead of losing the line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog

from webhook_router import tracing


def configure(fmt: str = "auto", level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor
    factory: Any
    if console:
        # plain tracebacks: a rich one would print local variables, secrets among them
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=json_line)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    structlog.configure(
        processors=[*processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def processors() -> list[structlog.typing.Processor]:
    """What every line goes through before it is rendered."""
    return [
        structlog.contextvars.merge_contextvars,
        tracing.log_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def json_line(event: Any, **kw: Any) -> bytes:
    """One log line as JSON bytes: orjson, else (what it refuses) the standard library's
    encoder, with the same fallback for objects neither knows (`repr`)."""
    fallback = kw.get("default", repr)
    try:
        return orjson.dumps(event, default=fallback)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(event, default=fallback).encode()
