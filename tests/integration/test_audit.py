"""The audit trail on the real services: a row for each change made through the API and the
CLI, read back through the API (paged) and the CLI, never holding a secret."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from webhook_router.jobs import Status

from ..conftest import eventually
from .conftest import Stack, answer_app, event_for
from .test_cli import cli

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

PASSWORD = "audit-password-never-shown"


async def refuse(request: web.Request) -> web.Response:
    return web.Response(status=400, text="no")


async def audit_rows(database_url: str, space: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT actor, action, target, before::text AS before, after::text AS after"
                " FROM audit_log WHERE space = $1 ORDER BY at, id",
                space,
            )
        )
    finally:
        await conn.close()


async def read_all(stack: Stack, space: str, limit: int) -> list[dict[str, Any]]:
    """Every audit entry of the space through the API, `limit` a page."""
    entries: list[dict[str, Any]] = []
    query = f"space={space}&limit={limit}"
    while True:
        status, body = await stack.api("GET", f"/app/api/v1/auditLog?{query}")
        assert status == 200, body
        assert len(body["auditLog"]) <= limit
        entries += body["auditLog"]
        if body["nextPageToken"] is None:
            return entries
        query = f"space={space}&limit={limit}&pageToken={body['nextPageToken']}"


async def test_every_change_through_the_api_is_an_audit_row_without_secrets(
    stack: Stack,
) -> None:
    space = stack.space()
    base = f"/app/api/v1/spaces/{space}"
    runner, url = await answer_app(refuse)
    try:
        hook = {"name": "audited", "type": "User", "event": "Created", "url": url + "/a",
                "authStrategy": "Signature"}  # fmt: skip
        status, created = await stack.api("POST", f"{base}/webhooks", json={"webhook": hook})
        assert status == 201, created
        secrets = [created["webhook"]["secret"]]
        credentials = {"username": "jane", "password": PASSWORD}
        basic = {"name": "basic", "type": "User", "event": "Updated", "url": url + "/b",
                 "authStrategy": "Basic", "auth": credentials}  # fmt: skip
        status, _ = await stack.api("POST", f"{base}/webhooks", json={"webhook": basic})
        assert status == 201
        path = f"{base}/webhooks/audited"
        status, _ = await stack.api("PUT", path, json={"webhook": {"name": "basic"}})
        assert status == 409, "refused, and so not audited (its transaction rolled back)"
        status, _ = await stack.api("PUT", path, json={"webhook": {"url": url + "/moved"}})
        assert status == 200
        status, _ = await stack.api("PUT", path, json={"webhook": {"enabled": False}})
        assert status == 200
        status, _ = await stack.api("PUT", path, json={"webhook": {"enabled": True}})
        assert status == 200
        status, rotated = await stack.api("POST", f"{path}/secret", json={})
        assert status == 200
        secrets.append(rotated["webhook"]["secret"])
        await stack.synced()

        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "x"}))
        [job] = await stack.settled(space, 1)
        assert job["status"] == Status.FAILED
        status, _ = await stack.api(
            "PUT", f"{base}/webhookJobs/{job['id']}", json={"webhookJob": {"status": "Queued"}}
        )
        assert status == 200
        assert await eventually(lambda: _failed_again(stack, space), timeout=20)
        status, replayed = await stack.api(
            "POST", f"{base}/webhookJobs/replay", json={"webhook": "audited"}
        )
        assert status == 200 and replayed["queued"] == 1, replayed
        assert await eventually(lambda: _failed_again(stack, space, replays=2), timeout=20)
        status, _ = await stack.api("DELETE", path)
        assert status == 200
    finally:
        await runner.cleanup()

    entries = await read_all(stack, space, limit=3)
    assert [e["action"] for e in reversed(entries)] == [
        "webhook.created",
        "webhook.created",
        "webhook.updated",
        "webhook.disabled",
        "webhook.enabled",
        "webhook.secret_rotated",
        "job.retried",
        "jobs.replayed",
        "webhook.deleted",
    ]
    assert {e["actor"] for e in entries} == {"token:settings"}, (
        "the API acts as its token (settings tokens: `settings`)"
    )
    assert {e["space"] for e in entries} == {space}
    by_action = {e["action"]: e for e in entries}
    assert by_action["webhook.updated"]["before"]["url"] == url + "/a"
    assert by_action["webhook.updated"]["after"]["url"] == url + "/moved"
    assert by_action["webhook.disabled"]["after"]["enabled"] is False
    assert by_action["webhook.deleted"]["after"] is None
    assert by_action["webhook.created"]["before"] is None
    assert by_action["job.retried"]["target"] == f"webhookJobs/{job['id']}"
    assert by_action["jobs.replayed"]["after"]["queued"] == 1
    rotation = by_action["webhook.secret_rotated"]
    assert rotation["target"] == "webhooks/audited"
    assert rotation["before"]["updatedAt"] != rotation["after"]["updatedAt"]

    # nothing secret anywhere: neither in the API's answer nor in the table
    shown = json.dumps(entries)
    raw = json.dumps([dict(r) for r in await audit_rows(stack.settings.database_url, space)])
    for text in (shown, raw):
        for secret in [*secrets, PASSWORD, "whsec_"]:
            assert secret not in text
        assert '"auth"' not in text and '"secret"' not in text
    [basic_created] = [e for e in entries if e["target"] == "webhooks/basic"]
    assert basic_created["after"]["authSetAt"] is not None  # that credentials were set, only


async def _failed_again(stack: Stack, space: str, replays: int = 1) -> bool:
    [job] = await stack.jobs(space)
    return bool(job["replay"] >= replays and job["status"] == Status.FAILED)


async def test_the_cli_changes_are_audited_and_listed(stack: Stack) -> None:
    space = stack.space()
    settings = stack.settings
    code, _, err = await cli(
        settings, "webhooks", "create", "--space", space, "--name", "from-cli", "--type",
        "User", "--event", "Created", "--url", "http://127.0.0.1:9/never",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = await cli(settings, "webhooks", "update", "from-cli", "--space", space,
                             "--disable")  # fmt: skip
    assert code == 0, err
    code, out, err = await cli(settings, "webhooks", "install-defaults", "--space", space)
    assert code == 0, err
    defaults = int(out.split()[1])
    assert defaults > 0, out
    code, out, err = await cli(settings, "audit", "list", "--space", space, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["nextPageToken"] is None
    assert [(e["actor"], e["action"]) for e in listed["auditLog"]] == [
        ("cli", "webhook.created")
    ] * defaults + [("cli", "webhook.disabled"), ("cli", "webhook.created")]
    code, out, err = await cli(settings, "audit", "list", "--space", space, "--limit", "1")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and "webhook.created" in out  # a header and a row
    assert "--page-token" in err


async def test_the_audit_log_refuses_bad_parameters(stack: Stack) -> None:
    for query in ("limit=0", "pageToken=nope", "start=yesterday", "colour=red"):
        status, body = await stack.api("GET", f"/app/api/v1/auditLog?{query}")
        assert status == 422, (query, body)
        assert body["errors"], body
    status, _ = await stack.api("GET", "/app/api/v1/auditLog", token=None)
    assert status == 401
