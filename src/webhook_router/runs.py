"""Run numbers from the workflow engine's answers (domain reference §3).

Seen in the wild: `{"run": {"id": 3}, "message": "Initiated run #3 ..."}` and
`{"messageType": "success", "message": "Initiated run #1430.", "runId": "1430"}`.
An answer without one of these gives no run number: none is ever invented, and a "number"
of more than RUN_DIGITS digits is none (the log indexes run numbers).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

RUN_DIGITS = 19
_INITIATED = re.compile(rf"\bInitiated run #(\d{{1,{RUN_DIGITS}}})\b")


def _as_run(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10**RUN_DIGITS:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= RUN_DIGITS:
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
