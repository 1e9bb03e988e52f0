"""Event validation: catalogue, required entities, pass-through of unknown keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from webhook_router.events import _PLAIN_TIMESTAMP, EventInvalid, _Envelope, _plain, parse_event

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


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"space": {"slug": "ac\x00me"}}, "space.slug"),
        ({"kapp": {"slug": "\x00"}}, "kapp.slug"),
        ({"form": {"slug": "f" * 129}}, "form.slug"),
        ({"submission": {"id": "s\x001"}}, "submission.id"),
        ({"submission": {"id": "s" * 256}}, "submission.id"),
        ({"event": {"type": "Submission", "action": "Submitted", "id": "e\x00"}}, "event.id"),
        # 64 characters of 4 bytes: more than an AMQP message id holds
        (
            {"event": {"type": "Submission", "action": "Submitted", "id": "\U0001f600" * 64}},
            "event.id",
        ),
        ({"user": {"username": "\ud800"}}, "user.username"),
        (
            {
                "event": {
                    "type": "Submission",
                    "action": "Submitted",
                    "timestamp": "9999-12-31T23:59:59-14:00",
                }
            },
            "event.timestamp",
        ),
        (
            {
                "event": {
                    "type": "Submission",
                    "action": "Submitted",
                    "timestamp": "0001-01-01T00:00:00+14:00",
                }
            },
            "event.timestamp",
        ),
    ],
)
def test_what_the_job_log_cannot_store_is_refused_by_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(EventInvalid) as exc:
        parse_event(submission(**change))
    assert fields(exc) == [field]


def test_keys_at_their_limits_and_far_but_storable_times_are_accepted() -> None:
    event = parse_event(
        submission(
            event={
                "type": "Submission",
                "action": "Submitted",
                "timestamp": "9999-12-29T09:59:59-14:00",
            },
            space={"slug": "s" * 128},
            kapp={"slug": "k" * 128},
            form={"slug": "f" * 128},
            submission={"id": "i" * 255, "values": {"NUL is fine here": "a\x00b"}},
        )
    )
    assert event.timestamp.year == 9999
    assert event.body["submission"]["values"]["NUL is fine here"] == "a\x00b"
    user = parse_event(
        {
            "event": {"type": "User", "action": "Created"},
            "space": {"slug": "acme"},
            "user": {"username": "u" * 255},
        }
    )
    assert user.body["user"]["username"] == "u" * 255


def test_an_id_less_event_gets_the_id_derived_from_its_message() -> None:
    from webhook_router.events import derived_id

    body = b'{"event": {"type": "User", "action": "Created"}, "space": {"slug": "a"}}'
    assert derived_id(body, "user.created") == derived_id(body, "user.created")
    assert derived_id(body, "user.created") != derived_id(body, "user.updated")
    assert derived_id(body, "user.created") != derived_id(body + b" ", "user.created")
    raw = (
        b'{"event": {"type": "User", "action": "Created"}, "space": {"slug": "a"},'
        b' "user": {"username": "u"}}'
    )
    event = parse_event(raw, default_id="given", default_timestamp="2026-11-20T10:00:00.000Z")
    assert event.id == "given" and event.filled == ("id", "timestamp")
    assert event.body["event"]["timestamp"] == "2026-11-20T10:00:00.000Z"
    assert parse_event(event.body, default_id="other").filled == ()


def _by_the_models(data: dict[str, Any]) -> tuple[str, str, str, datetime] | None:
    try:
        header = _Envelope.model_validate(data).event
    except ValidationError:
        return None
    return header.id, header.type, header.action, header.timestamp


@settings(max_examples=300, deadline=None)
@given(stamp=st.from_regex(_PLAIN_TIMESTAMP, fullmatch=True))
def test_a_timestamp_read_without_the_models_is_read_as_they_read_it(stamp: str) -> None:
    data = submission(event={"id": "e1", "type": "Submission", "action": "Submitted"})
    data["event"] = {**data["event"], "timestamp": stamp}  # type: ignore[dict-item]
    plain = _plain(data)
    if plain is not None:
        models = _by_the_models(data)
        assert models is not None and models == plain
        assert models[3].isoformat() == plain[3].isoformat()
        assert models[3].utcoffset() == plain[3].utcoffset()


@pytest.mark.parametrize("entity", ["space", "kapp", "form", "submission", "user", "webhook"])
@pytest.mark.parametrize("value", [None, {}, {"slug": ""}, {"slug": 1}, {"slug": "x"}, [], "x"])
def test_an_envelope_read_without_the_models_is_one_they_accept(entity: str, value: object) -> None:
    data = submission(event={"id": "e1", "type": "Submission", "action": "Submitted"})
    data["event"] = {**data["event"], "timestamp": "2026-11-27T10:15:30.123Z"}  # type: ignore[dict-item]
    data[entity] = value
    plain = _plain(data)
    assert plain is None or plain == _by_the_models(data)
