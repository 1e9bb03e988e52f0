"""End to end: events through the real broker to real HTTP POSTs, jobs in the database."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import quote

import pytest

from .conftest import Stack, event_for
from .test_delivery import find_dead

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

STANDARD_URL = (
    "/app/api/v1/run-tree/Kinetic%20Request%20CE/"
    "Submissions%20%3E%20${kapp('slug')}%20%3E%20${form('slug')}/Submitted"
)
IPAD_PATH = (
    "/app/api/v1/run-tree/Kinetic%20Request%20CE/"
    "Submissions%20%3E%20services%20%3E%20ipad-request/Submitted"
)


def submission(space: str, kapp: str = "services", form: str = "ipad-request", **values: str):  # type: ignore[no-untyped-def]
    return event_for(
        space,
        "Submission",
        "Submitted",
        kapp={"slug": kapp},
        form={"slug": form},
        submission={"id": "sub-1", "coreState": "Submitted", "values": values},
    )


async def test_submission_submitted_reaches_its_tree_and_is_recorded(stack: Stack) -> None:
    space = stack.space()
    await stack.webhook(
        space, kapp="services", type="Submission", event="Submitted", url=STANDARD_URL
    )
    event_id = await stack.publisher.publish(submission(space, Status="Open"))

    [job] = await stack.settled(space, 1)
    posts = stack.received_for(space)
    assert [p.path for p in posts] == [IPAD_PATH]
    sent = posts[0].json()
    assert sent["event"]["id"] == event_id
    assert sent["submission"]["values"] == {"Status": "Open"}
    assert posts[0].headers["webhook-id"] == str(job["id"])

    assert job["status"] == "Complete"
    assert job["summary"] == "200 OK"
    # the run id is the engine's number of the run it started for this POST
    assert job["run_id"] == str(json.loads(job["response_content"])["run"]["id"])
    assert f"Initiated run #{job['run_id']}" in job["response_content"]
    assert json.loads(job["request_content"]) == sent
    assert job["url"] == stack.settings.engine_url + IPAD_PATH
    assert (job["tree_group"], job["tree_name"]) == (
        "Submissions > services > ipad-request",
        "Submitted",
    )
    assert job["event_id"] == event_id
    assert job["scope_type"] == "Kapp" and job["scope_id"] == "services"
    attempts = await stack.store.job_attempts(str(job["id"]))
    assert [(a.attempt, a.response_status) for a in attempts] == [(1, 200)]


@pytest.mark.parametrize(
    "change",
    ["other type", "other event", "other kapp", "other space", "false filter"],
)
async def test_no_match_means_no_post_and_no_job(stack: Stack, change: str) -> None:
    space = stack.space()
    fields = {"type": "Submission", "event": "Submitted", "url": STANDARD_URL, "kapp": "services"}
    if change == "false filter":
        fields["filter"] = "values('Status') == 'Open'"
    await stack.webhook(space, **fields)  # type: ignore[arg-type]
    # a second webhook that does match, so we know when the event was handled
    marker_space = space
    if change == "other type":
        event = event_for(
            space,
            "Form",
            "Created",
            kapp={"slug": "services"},
            form={"slug": "ipad-request"},
        )
    elif change == "other event":
        event = submission(space)
        event["event"]["action"] = "Saved"
    elif change == "other kapp":
        event = submission(space, kapp="hr")
    elif change == "other space":
        marker_space = stack.space()
        event = submission(marker_space)
    else:
        event = submission(space, Status="Closed")
    await stack.webhook(
        marker_space,
        kapp=event.get("kapp", {}).get("slug"),
        type=event["event"]["type"],
        event=event["event"]["action"],
        url="/marker/${form('slug')}",
        name="marker",
    )
    await stack.publisher.publish(event)
    rows = await stack.settled(marker_space, 1)
    rows += await stack.jobs(space) if marker_space != space else []
    assert [r["webhook_name"] for r in rows] == ["marker"]
    assert not [p for p in stack.received_for(space) if not p.path.startswith("/marker")]


async def test_fan_out_two_webhooks_two_posts_two_jobs(stack: Stack) -> None:
    space = stack.space()
    for name in ("first", "second"):
        await stack.webhook(
            space,
            kapp="services",
            name=name,
            type="Submission",
            event="Submitted",
            url=STANDARD_URL,
        )
    await stack.publisher.publish(submission(space))
    rows = await stack.settled(space, 2)
    assert sorted(r["webhook_name"] for r in rows) == ["first", "second"]
    assert len({r["id"] for r in rows}) == 2
    assert len(stack.received_for(space)) == 2


async def test_a_webhook_changed_while_running_governs_the_next_event(stack: Stack) -> None:
    space = stack.space()
    hook = await stack.webhook(
        space, kapp="services", type="Submission", event="Submitted", url="/first/${form('slug')}"
    )
    await stack.publisher.publish(submission(space))
    await stack.settled(space, 1)
    changed = await stack.store.update_webhook(replace(hook, url="/second/${form('slug')}"))
    assert changed is not None
    await stack.synced()
    await stack.publisher.publish(submission(space))
    await stack.settled(space, 2)
    assert [p.path for p in stack.received_for(space)] == [
        "/first/ipad-request",
        "/second/ipad-request",
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (
            b'{"event": {"type": "Robot", "action": "Created"}, "space": {"slug": "x"}}',
            "unknown type",
        ),
        (
            b'{"event": {"type": "User", "action": "Exploded"}, "space": {"slug": "x"},'
            b' "user": {}}',
            "unknown action",
        ),
        (
            b'{"event": {"type": "Submission", "action": "Submitted"}, "space": {"slug": "x"},'
            b' "form": {"slug": "f"}, "submission": {}}',
            "needs kapp",
        ),
    ],
)
async def test_bad_events_are_dead_lettered_and_the_next_is_delivered(
    stack: Stack, body: bytes, reason: str
) -> None:
    from webhook_router import broker

    space = stack.space()
    await stack.webhook(
        space, kapp="services", type="Submission", event="Submitted", url=STANDARD_URL
    )
    exchange = stack.router.topology.events  # type: ignore[union-attr]
    marker = quote(space)
    await broker.publish(
        exchange,
        body.replace(b'"x"', f'"{marker}"'.encode()),
        "submission.submitted",
        message_id=f"bad-{space}",
    )
    await stack.publisher.publish(submission(space))
    await stack.settled(space, 1)

    found = await find_dead(stack, f"bad-{space}")
    assert found is not None
    assert reason in str(found.headers["x-reason"])
    assert found.headers["x-failed-in"] == "router"
    assert len(stack.received_for(space)) == 1
