"""Platform fidelity end to end: the standard webhooks deliver every sample event to its
own tree with its exact body; definitions that fail at run time fail their job, not the
router; the meta API serves the catalogue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from webhook_router.catalogue import entries, routing_key
from webhook_router.defaults import install_defaults
from webhook_router.trees import run_tree_path, tree_of

from .conftest import Stack

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]
SAMPLES = Path(__file__).parent.parent / "samples"


def sample(type_name: str, action: str, space: str) -> dict[str, Any]:
    event = json.loads((SAMPLES / f"{routing_key(type_name, action)}.json").read_text())
    event["space"]["slug"] = space
    event["event"]["id"] = str(uuid.uuid4())
    return event


async def test_standard_webhooks_deliver_every_sample_to_its_tree(stack: Stack) -> None:
    space = stack.space()
    await install_defaults(stack.store, stack.settings.tree_source, space, None)
    await install_defaults(stack.store, stack.settings.tree_source, space, "services")
    await stack.synced()
    sent = {}
    for entry, action in entries():
        if entry.extension:  # the router's own operator events have no standard webhook
            continue
        event = sample(entry.name, action, space)
        sent[event["event"]["id"]] = event
        await stack.publisher.publish(event)

    rows = await stack.settled(space, len(sent))
    assert len(rows) == len(sent) == 31
    posts = {p.json()["event"]["id"]: p for p in stack.received_for(space)}
    for row in rows:
        event = sent[row["event_id"]]
        tree = tree_of(row["type"], row["event"], event)
        assert (row["tree_group"], row["tree_name"]) == (tree.group, tree.name)
        assert row["status"] == "Complete", row["summary"]
        assert row["run_id"] is not None
        post = posts[row["event_id"]]
        assert post.path == run_tree_path(stack.settings.tree_source, tree)
        assert post.json() == event  # the body is the event, every key untouched
        assert json.loads(row["request_content"]) == event


@pytest.mark.parametrize(
    ("filter_", "url", "reason"),
    [
        (
            "values('Missing').startsWith('x')",
            "/x",
            "filter failed: cannot call startsWith on null",
        ),
        (None, "https://${values('Host')}/hook", "url failed"),
    ],
)
async def test_a_definition_failing_at_run_time_fails_its_job_with_the_reason(
    stack: Stack, filter_: str | None, url: str, reason: str
) -> None:
    space = stack.space()
    await stack.webhook(
        space,
        kapp="services",
        type="Submission",
        event="Submitted",
        filter=filter_,
        url=url,
        name="broken",
    )
    await stack.webhook(
        space,
        kapp="services",
        type="Submission",
        event="Submitted",
        url="/app/api/v1/run-tree/x/y/z",
        name="healthy",
    )
    await stack.publisher.publish(sample("Submission", "Submitted", space))
    rows = {r["webhook_name"]: r for r in await stack.settled(space, 2)}
    assert rows["broken"]["status"] == "Failed"
    assert reason in rows["broken"]["summary"]
    assert rows["healthy"]["status"] == "Complete"
    assert [p.path for p in stack.received_for(space)] == ["/app/api/v1/run-tree/x/y/z"]


async def test_meta_api_serves_the_catalogue(stack: Stack) -> None:
    status, body = await stack.api("GET", "/app/api/v1/meta/webhooks/types/kapp")
    assert status == 200
    assert body == {"types": ["Form", "Submission"]}
    status, body = await stack.api("GET", "/app/api/v1/meta/webhooks/events/space")
    assert status == 200
    assert body["events"]["User"] == [
        "Created",
        "Updated",
        "Deleted",
        "Login",
        "Logout",
        "Membership Change",
    ]
    assert "Submission" not in body["events"]
    status, _ = await stack.api("GET", "/app/api/v1/meta/webhooks/types/galaxy")
    assert status == 404
