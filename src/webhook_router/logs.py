"""structlog set-up: JSON lines when not on a terminal, readable lines on one; with tracing
on, a line logged in a sampled span carries its `trace_id` and `span_id`."""

from __future__ import annotations

import logging
import sys

import structlog

from webhook_router import tracing


def configure(fmt: str = "auto", level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        # plain tracebacks: a rich one would print local variables, secrets among them
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
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
