"""Durations as people write them in settings and on the command line: `5s`, `2m`, `90d`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number is seconds. ValueError names the bad text."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 5s, 2m, 1h, 90d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_schedule(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations, e.g. the retry schedule `5s,30s,2m`."""
    return tuple(parse_duration(part) for part in text.split(",") if part.strip())
