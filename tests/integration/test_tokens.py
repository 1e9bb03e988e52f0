"""API tokens on the real services: each role against each operation of the OpenAPI
document, space isolation, revocation within a second, and the `tokens` commands."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from webhook_router.admin import Admin
from webhook_router.deadletters import DeadLetter
from webhook_router.rights import Role

from ..conftest import eventually, free_port
from ..support.processes import role_process
from .conftest import Stack
from .test_api import NOWHERE, USERS_TREE, call, enc, prefix, user_created
from .test_cli import cli

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

ROLES_ALLOWED: dict[str, set[Role]] = {
    "metrics": {Role.ADMIN, Role.READER},
    "publishEvent": {Role.ADMIN, Role.PUBLISHER},
    "webhookTypes": {Role.ADMIN, Role.READER},
    "webhookEvents": {Role.ADMIN, Role.READER},
    "listWebhooks": {Role.ADMIN, Role.READER},
    "createWebhook": {Role.ADMIN},
    "getWebhook": {Role.ADMIN, Role.READER},
    "updateWebhook": {Role.ADMIN},
    "deleteWebhook": {Role.ADMIN},
    "rotateWebhookSecret": {Role.ADMIN},
    "listWebhookJobs": {Role.ADMIN, Role.READER},
    "replayWebhookJobs": {Role.ADMIN},
    "getWebhookJob": {Role.ADMIN, Role.READER},
    "retryWebhookJob": {Role.ADMIN},
    "listDeadLetters": {Role.ADMIN, Role.READER},
    "getDeadLetter": {Role.ADMIN, Role.READER},
    "requeueDeadLetter": {Role.ADMIN},
    "requeueDeadLetters": {Role.ADMIN},
    "listAuditLog": {Role.ADMIN},
}
"""Who may call each operation, by operation id without its scope suffix: written here,
apart from the code's table, so the two must agree. An operation of the document missing
here fails the test until someone decides who may call it."""
SUFFIXES = ("OfKappInSpace", "OfKapp", "InSpace")


def base_id(operation_id: str) -> str:
    for suffix in SUFFIXES:
        if operation_id.endswith(suffix) and operation_id.removesuffix(suffix) in ROLES_ALLOWED:
            return operation_id.removesuffix(suffix)
    return operation_id


async def make_token(stack: Stack, role: Role, *spaces: str) -> str:
    admin = Admin(stack.settings, stack.store)
    _, token = await admin.create_token(
        f"{role.value}-{uuid.uuid4().hex[:8]}", role, list(spaces), by="test"
    )
    return token


def concrete(path: str, space: str, name: str = "nobody", job: str | None = None) -> str:
    return (
        path.replace("{space}", enc(space))
        .replace("{kapp}", "services")
        .replace("{name}", name)
        .replace("{id}", job or str(uuid.uuid4()))
        .replace("{level}", "space")
    )


def body_of(operation_id: str, space: str) -> Any:
    if operation_id == "publishEvent":
        return user_created(space, "someone")
    return {}


async def operations(stack: Stack) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, operation id, the operation object) of every operation that needs a
    token, as the served document lists them."""
    answer = await call(stack, "GET", "/app/api/v1/openapi.json", token=None)
    assert answer.status == 200
    return [
        (method.upper(), path, op["operationId"], op)
        for path, methods in answer.body["paths"].items()
        for method, op in methods.items()
        if op.get("security") != []
    ]


async def test_every_operation_of_the_document_is_classified(stack: Stack) -> None:
    ops = await operations(stack)
    assert len(ops) >= 40, "the four scopes of every webhook and job operation, and the rest"
    unclassified = sorted({op_id for _, _, op_id, _ in ops if base_id(op_id) not in ROLES_ALLOWED})
    assert unclassified == [], (
        f"operations nobody decided who may call: {unclassified}; add each to "
        "rights.OPERATION_RIGHTS and to ROLES_ALLOWED here"
    )
    undeclared = sorted(op_id for _, _, op_id, op in ops if not op.get("x-right"))
    assert undeclared == [], f"operations the document states no right for: {undeclared}"


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_against_each_operation(stack: Stack, role: Role) -> None:
    """Outside its role a token gets 403 naming the right the operation needs; inside it,
    whatever the operation answers (here 2xx, 404 or 422: never 401 or 403)."""
    token = await make_token(stack, role)
    space = stack.space()
    seen = []
    for method, path, op_id, op in await operations(stack):
        url = concrete(path, space)
        answer = await call(stack, method, url, json=body_of(op_id, space), token=token)
        allowed = role in ROLES_ALLOWED.get(base_id(op_id), set())
        seen.append((op_id, answer.status))
        if allowed:
            assert answer.status not in (401, 403), (role, op_id, answer.status, answer.body)
        else:
            assert answer.status == 403, (role, op_id, answer.status, answer.body)
            assert f"'{op['x-right']}'" in answer.body["error"], answer.body
            assert role.value in answer.body["error"], answer.body
    assert len(seen) >= 40


async def test_a_reader_sees_a_webhook_without_its_secret_and_changes_nothing(
    stack: Stack,
) -> None:
    space = stack.space()
    hook = await stack.webhook(space, name="seen", type="User", event="Created", url=USERS_TREE)
    reader = await make_token(stack, Role.READER, space)
    one = prefix(space, None) + "/webhooks/seen"
    read = await call(stack, "GET", one, token=reader)
    assert read.status == 200 and read.body["webhook"]["name"] == "seen"
    assert "secret" not in read.body["webhook"] and hook.secret not in str(read.body)
    admin = await call(stack, "GET", one)
    assert admin.body["webhook"]["secret"] == hook.secret
    for method, path, body in (
        ("PUT", one, {"enabled": False}),
        ("DELETE", one, None),
        ("POST", one + "/secret", {}),
    ):
        refused = await call(stack, method, path, json=body, token=reader)
        assert refused.status == 403 and "'write'" in refused.body["error"]
    after = await stack.store.get_webhook_by_id(hook.id)
    assert after is not None and after.enabled and after.secret == hook.secret


async def failed_job(stack: Stack, space: str, name: str) -> str:
    """The id of a Failed job of a webhook `name` of `space` (its engine path is unknown)."""
    await stack.webhook(space, name=name, type="User", event="Created", url=NOWHERE)
    await stack.publisher.publish(user_created(space, f"u-{uuid.uuid4().hex[:6]}"))
    [row] = await stack.settled(space, 1)
    assert row["status"] == "Failed"
    return str(row["id"])


async def test_a_token_of_one_space_reaches_nothing_of_another(stack: Stack) -> None:
    mine, theirs = stack.space(), stack.space()
    job = await failed_job(stack, theirs, "theirs")
    admin_of_mine = await make_token(stack, Role.ADMIN, mine)
    nothing = {"error": "nothing here"}
    answers = {}
    for method, path, op_id, _ in await operations(stack):
        if "/meta/" in path or ("/webhooks" not in path and "/webhookJobs" not in path):
            continue  # not of a space: metrics, the catalogue, ingest (below)
        url = concrete(path, theirs, "theirs", job)  # the short paths: the default space
        body: Any = {"webhook": "theirs"} if op_id.startswith("replay") else {}
        answer = await call(stack, method, url, json=body, token=admin_of_mine)
        answers[op_id] = (answer.status, answer.body)
    assert answers and all(a == (404, nothing) for a in answers.values()), answers

    here = prefix(mine, None)
    for method, path, body in (
        ("GET", f"{here}/webhookJobs/{job}", None),
        ("PUT", f"{here}/webhookJobs/{job}", {"status": "Queued"}),
        ("GET", f"{here}/webhooks/theirs", None),
        ("POST", f"{here}/webhookJobs/replay", {"webhook": "theirs"}),
        ("GET", "/app/api/v1/webhooks", None),
        ("GET", f"/app/api/v1/webhookJobs/{job}", None),
    ):
        answer = await call(stack, method, path, json=body, token=admin_of_mine)
        assert answer.status == 404, (method, path, answer.body)
    listed = await call(stack, "GET", f"{here}/webhookJobs", token=admin_of_mine)
    assert listed.status == 200 and listed.body["webhookJobs"] == []
    [row] = await stack.jobs(theirs)
    assert (row["status"], row["replay"]) == ("Failed", 0), "nothing of theirs was retried"


async def test_dead_letters_are_seen_and_requeued_only_within_the_token_s_spaces(
    stack: Stack,
) -> None:
    """A dead letter of space B is nothing to a token of space A: not listed, 404 when
    named, not requeued one by one nor by filters. One of no known space is only for a
    token of every space."""
    mine, theirs = stack.space(), stack.space()
    stamp = datetime.now(UTC)
    letters = {
        space: DeadLetter(
            id=str(uuid.uuid4()),
            role="router",
            reason=f"isolation test {stamp.isoformat()}",
            dead_at=stamp,
            preview="{}",
            space=space,
            routing_key="user.created",
            body=b"{}",
        )
        for space in (mine, theirs, None)
    }
    for letter in letters.values():
        assert await stack.store.keep_dead_letter(letter)
    window = f"start={enc(stamp.isoformat())}&reason={enc(letters[mine].reason)}"
    admin_of_mine = await make_token(stack, Role.ADMIN, mine)

    listed = await call(stack, "GET", f"/app/api/v1/deadLetters?{window}", token=admin_of_mine)
    assert listed.status == 200, listed.body
    assert [d["id"] for d in listed.body["deadLetters"]] == [letters[mine].id]
    for out_of_reach in (letters[theirs], letters[None]):
        one = f"/app/api/v1/deadLetters/{out_of_reach.id}"
        for method, path in (("GET", one), ("POST", one + "/requeue")):
            answer = await call(stack, method, path, json={}, token=admin_of_mine)
            assert answer.status == 404, (method, path, answer.body)
    requeued = await call(
        stack,
        "POST",
        "/app/api/v1/deadLetters/requeue",
        json={"reason": letters[mine].reason, "start": stamp.isoformat()},
        token=admin_of_mine,
    )
    assert requeued.status == 200 and requeued.body == {"requeued": 1}, requeued.body
    for space in (theirs, None):
        kept = await stack.store.get_dead_letter(letters[space].id)
        assert kept is not None and kept.requeue_count == 0, "nothing out of reach was sent"

    everything = await call(stack, "GET", f"/app/api/v1/deadLetters?{window}")
    assert {d["id"] for d in everything.body["deadLetters"]} == {
        letter.id for letter in letters.values()
    }, "a token of every space sees them all"


async def test_the_404_of_a_space_out_of_reach_is_the_same_whether_it_holds_anything(
    stack: Stack,
) -> None:
    mine, used, unused = stack.space(), stack.space(), f"never-{uuid.uuid4().hex[:8]}"
    await stack.webhook(used, name="there", type="User", event="Created", url=USERS_TREE)
    reader = await make_token(stack, Role.READER, mine)
    for space in (used, unused):
        for path in ("/webhooks", "/webhooks/there", "/webhookJobs"):
            answer = await call(stack, "GET", prefix(space, None) + path, token=reader)
            assert (answer.status, answer.body) == (404, {"error": "nothing here"}), path


async def test_a_publisher_publishes_for_its_spaces_only(stack: Stack) -> None:
    mine, theirs = stack.space(), stack.space()
    publisher = await make_token(stack, Role.PUBLISHER, mine)
    events = "/app/api/v1/events"
    ok = await call(stack, "POST", events, json=user_created(mine, "a"), token=publisher)
    assert ok.status == 202 and ok.body["id"]
    refused = await call(stack, "POST", events, json=user_created(theirs, "b"), token=publisher)
    assert refused.status == 403 and repr(theirs) in refused.body["error"]
    reading = await call(stack, "GET", prefix(mine, None) + "/webhookJobs", token=publisher)
    assert reading.status == 403 and "'read'" in reading.body["error"]


async def test_a_revoked_token_is_refused_within_a_second(stack: Stack) -> None:
    space = stack.space()
    admin = Admin(stack.settings, stack.store)
    name = f"soon-gone-{uuid.uuid4().hex[:6]}"
    _, token = await admin.create_token(name, Role.READER, [space], by="test")
    jobs = prefix(space, None) + "/webhookJobs"
    assert (await call(stack, "GET", jobs, token=token)).status == 200
    await admin.revoke_token(name, by="test")
    revoked_at = time.monotonic()
    while (await call(stack, "GET", jobs, token=token)).status == 200:
        assert time.monotonic() - revoked_at < 1.0, "still accepted a second after revoking"
        await asyncio.sleep(0.05)
    assert time.monotonic() - revoked_at < 1.0
    answer = await call(stack, "GET", jobs, token=token)
    assert answer.status == 401


async def test_last_used_is_written_once_a_minute_not_per_request(stack: Stack) -> None:
    space = stack.space()
    admin = Admin(stack.settings, stack.store)
    name = f"used-{uuid.uuid4().hex[:6]}"
    _, token = await admin.create_token(name, Role.READER, [space], by="test")

    async def last_used() -> Any:
        return next(t for t in await admin.tokens() if t.name == name).last_used_at

    assert await last_used() is None
    jobs = prefix(space, None) + "/webhookJobs"
    assert (await call(stack, "GET", jobs, token=token)).status == 200
    first = await last_used()
    assert first is not None
    await asyncio.sleep(0.6)  # past the cache: the next request looks the token up again
    assert (await call(stack, "GET", jobs, token=token)).status == 200
    assert await last_used() == first


async def test_the_tokens_commands_make_list_and_revoke(stack: Stack) -> None:
    space = stack.space()
    own = stack.settings
    name = f"cli-{uuid.uuid4().hex[:6]}"
    code, out, err = await cli(
        own, "tokens", "create", "--name", name, "--role", "reader", "--space", space
    )
    assert code == 0, err
    token = out.strip()
    assert token.startswith("wrt_") and len(token) > 40 and "\n" not in token
    assert f"reader of {space}" in err
    jobs = prefix(space, None) + "/webhookJobs"
    assert (await call(stack, "GET", jobs, token=token)).status == 200

    code, listed, err = await cli(own, "tokens", "list")
    assert code == 0, err
    line = next(x for x in listed.splitlines() if x.startswith(name + " "))
    assert "reader" in line and space in line and token not in listed
    stored = await stack.store.pool.fetch("SELECT * FROM api_tokens WHERE name = $1", name)
    assert token not in str([dict(r) for r in stored]), "only the hash is stored"

    code, _, err = await cli(own, "tokens", "create", "--name", name, "--role", "admin")
    assert code != 0 and "exists" in err
    code, _, err = await cli(own, "tokens", "create", "--name", "x y", "--role", "admin")
    assert code != 0 and "name:" in err

    code, out, err = await cli(own, "tokens", "revoke", name)
    assert (code, out.strip()) == (0, f"revoked {name}"), err
    await asyncio.sleep(0.6)
    assert (await call(stack, "GET", jobs, token=token)).status == 401
    code, _, err = await cli(own, "tokens", "revoke", name)
    assert code != 0 and "no live token" in err
    code, listed, _ = await cli(own, "tokens", "list", "--json")
    [shown] = [t for t in json.loads(listed)["tokens"] if t["name"] == name]
    assert shown["revokedAt"] and shown["spaces"] == [space] and token not in listed


async def test_the_api_runs_without_settings_tokens_and_takes_the_stored_ones(
    stack: Stack,
) -> None:
    space = stack.space()
    reader = await make_token(stack, Role.READER, space)
    port = free_port()
    own = stack.settings.model_copy(update={"api_token": [], "api_port": port})
    async with role_process(own, "api") as process:
        assert process.stderr is not None
        first = await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"WEBHOOK_ROUTER_API_TOKEN is empty" in first and b"tokens create" in first
        base = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        assert await eventually(answers, timeout=30)
        jobs = base + prefix(space, None) + "/webhookJobs"
        async with aiohttp.ClientSession() as http:
            async with http.get(jobs, headers={"Authorization": f"Bearer {reader}"}) as ok:
                assert ok.status == 200
            async with http.get(jobs) as refused:
                assert refused.status == 401
