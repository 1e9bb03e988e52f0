"""Run numbers from the workflow engine's answers (domain reference §3).

Seen in the wild: `{"run": {"id": 3}, "message": "Initiated run #3 ..."}` and
`{"messageType": "success", "message": "Initiated run #1430.", "runId": "1430"}`.
An answer without one of these gives no run number: none is ever invented.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_INITIATED = re.compile(r"\bInitiated run #(\d+)\b")


def _as_run(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None


def run_id_of(content: str | bytes | None) -> str | None:
    """The run number in an engine's answer, or None."""
    if not content:
        return None
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    run = answer.get("run")
    if isinstance(run, dict) and (found := _as_run(run.get("id"))) is not None:
        return found
    if (found := _as_run(answer.get("runId"))) is not None:
        return found
    message = answer.get("message")
    if isinstance(message, str) and (match := _INITIATED.search(message)):
        return match.group(1)
    return None
