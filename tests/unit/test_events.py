"""Event validation: catalogue, required entities, pass-through of unknown keys."""

from __future__ import annotations

import pytest

from webhook_router.events import EventInvalid, parse_event

pytestmark = pytest.mark.timeout(30)


def submission(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event": {"type": "Submission", "action": "Submitted"},
        "space": {"slug": "acme"},
        "kapp": {"slug": "services"},
        "form": {"slug": "ipad-request"},
        "submission": {"id": "s1", "values": {"Status": "Open"}},
    }
    event.update(changes)
    return event


def fields(exc: pytest.ExceptionInfo[EventInvalid]) -> list[str]:
    return [e["field"] for e in exc.value.errors]


def test_valid_event_fills_id_and_timestamp_and_keeps_every_key() -> None:
    raw = submission(custom={"anything": [1, 2]}, previous={"submission": {"id": "s0"}})
    event = parse_event(raw)
    assert event.type == "Submission" and event.action == "Submitted"
    assert event.space == "acme" and event.kapp == "services"
    assert event.routing_key == "submission.submitted"
    assert event.body["custom"] == {"anything": [1, 2]}
    assert event.body["previous"] == {"submission": {"id": "s0"}}
    assert event.body["event"]["id"] == event.id
    assert event.body["event"]["timestamp"].endswith("Z")


def test_given_id_and_timestamp_are_kept() -> None:
    raw = submission(
        event={
            "type": "Submission",
            "action": "Submitted",
            "id": "e-1",
            "timestamp": "2026-11-27T10:00:00Z",
        }
    )
    event = parse_event(raw)
    assert event.id == "e-1"
    assert event.body["event"]["timestamp"] == "2026-11-27T10:00:00Z"
    assert event.timestamp.tzinfo is not None


def test_space_level_event_has_no_kapp() -> None:
    event = parse_event(
        {
            "event": {"type": "User", "action": "Created"},
            "space": {"slug": "acme"},
            "user": {"username": "u"},
        }
    )
    assert event.kapp is None


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"{nope", "body", "not JSON"),
        (b"[1, 2]", "body", "JSON object"),
        ({"space": {"slug": "a"}}, "event", "is required"),
        (
            {"event": {"type": "Robot", "action": "Created"}, "space": {"slug": "a"}},
            "event.type",
            "unknown type",
        ),
        (
            {"event": {"type": "User", "action": "Exploded"}, "space": {"slug": "a"}, "user": {}},
            "event",
            "unknown action",
        ),
        (
            {"event": {"type": "user", "action": "created"}, "space": {"slug": "a"}, "user": {}},
            "event.type",
            "unknown type",
        ),
        (
            {"event": {"type": "User", "action": "Created"}, "space": {"slug": "a"}},
            "body",
            "needs user",
        ),
        ({"event": {"type": "User", "action": "Created"}, "user": {}}, "space", "is required"),
        (
            {"event": {"type": "User", "action": "Created"}, "space": {"slug": ""}, "user": {}},
            "space.slug",
            "must not be empty",
        ),
        (
            {
                "event": {"type": "User", "action": "Created", "timestamp": "yesterday"},
                "space": {"slug": "a"},
                "user": {},
            },
            "event.timestamp",
            "must be a date-time",
        ),
    ],
)
def test_bad_events_name_the_field(raw: object, field: str, message: str) -> None:
    with pytest.raises(EventInvalid) as exc:
        parse_event(raw)  # type: ignore[arg-type]
    assert any(e["field"] == field and message in e["message"] for e in exc.value.errors), (
        exc.value.errors
    )


def test_submission_without_kapp_is_refused() -> None:
    raw = submission()
    del raw["kapp"]
    with pytest.raises(EventInvalid, match="needs kapp"):
        parse_event(raw)


def test_datastore_submission_needs_form_and_submission_only() -> None:
    parse_event(
        {
            "event": {"type": "Datastore Submission", "action": "Created"},
            "space": {"slug": "a"},
            "form": {"slug": "robots"},
            "submission": {"id": "1"},
        }
    )
    with pytest.raises(EventInvalid, match="needs form, submission"):
        parse_event(
            {"event": {"type": "Datastore Submission", "action": "Created"}, "space": {"slug": "a"}}
        )
