"""Validation failures read in the house's words wherever they come from: event envelopes
(publish, ingest) and the admin bodies and queries (API, console, CLI)."""

from __future__ import annotations

from typing import Any

import pytest

from webhook_router.events import EventInvalid, parse_event
from webhook_router.models import (
    InputInvalid,
    JobQuery,
    Replay,
    SecretRotation,
    WebhookChange,
    parse_input,
)

pytestmark = pytest.mark.timeout(10)

PYDANTIC_WORDS = ("Input should", "Value error", "instance of", "String should", "_Slugged")


def event_errors(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(EventInvalid) as refused:
        parse_event(body)
    return {e["field"]: e["message"] for e in refused.value.errors}


def input_errors(call: Any) -> dict[str, str]:
    with pytest.raises(InputInvalid) as refused:
        call()
    return {e["field"]: e["message"] for e in refused.value.errors}


def test_event_envelope_failures_say_what_the_field_must_be() -> None:
    header = {"type": "User", "action": "Created"}
    assert event_errors({"event": header, "space": "acme", "user": {}}) == {
        "space": "must be an object"
    }
    assert event_errors({"event": header | {"id": 5}, "space": {"slug": ""}, "user": 3}) == {
        "event.id": "must be a string",
        "space.slug": "must not be empty",
        "user": "must be an object",
    }
    soon = {"event": header | {"timestamp": "soon"}, "space": {"slug": "a"}, "user": {}}
    assert event_errors(soon) == {
        "event.timestamp": "must be a date-time, e.g. 2024-05-01T00:00:00Z"
    }
    # A check of the domain's own keeps its words, without pydantic's prefix.
    assert event_errors({"event": {"type": "Nope", "action": "x"}, "space": {"slug": "a"}})[
        "event.type"
    ].startswith("unknown type 'Nope'; expected one of Space, User")
    assert event_errors({"event": header, "space": {"slug": "a"}}) == {
        "body": "a User event needs user (missing: user)"
    }


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda: WebhookChange.parse({"name": 5}), "name", "must be a string"),
        (lambda: WebhookChange.parse({"enabled": "yes"}), "enabled", "must be true or false"),
        (lambda: WebhookChange.parse({"colour": "red"}), "colour", "unknown field"),
        (lambda: parse_input(Replay, {}), "webhook", "is required"),
        (lambda: parse_input(Replay, {"webhook": "a", "dryRun": 1}), "dryRun", None),
        (lambda: parse_input(SecretRotation, {"graceSeconds": -1}), "graceSeconds", None),
        (lambda: JobQuery.parse({"limit": "0"}), "limit", "must be an integer from 1 to 1000"),
        (lambda: JobQuery.parse({"pageToken": "x"}), "pageToken", "is not a token this API gave"),
    ],
)
def test_admin_input_failures_never_show_pydantic_wording(
    call: Any, field: str, message: str | None
) -> None:
    errors = input_errors(call)
    assert field in errors, errors
    if message is not None:
        assert errors[field] == message
    for text in errors.values():
        assert not any(word in text for word in PYDANTIC_WORDS), text
