"""Encryption at rest on the real services: what the database holds, what receivers get,
a key rotation, and sealed job bodies read back through the API.

These tests run on a database and a namespace of their own: webhooks sealed under a key
would be unreadable to the package's shared stack, which runs without one."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks import Webhook as StandardWebhook

from webhook_router import store
from webhook_router.encryption import KeyMissing, Keyring, key_id, new_key, parse_key
from webhook_router.settings import Settings

from ..conftest import Services, _with_database, drop_namespace, eventually, free_port
from .conftest import Stack, answer_app, event_for, open_stack
from .test_cli import cli
from .test_cli_startup import up

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

OLD_KEY, NEW_KEY = new_key(), new_key()
ANSWER = "the receiver's private answer"


@pytest_asyncio.fixture(loop_scope="session")
async def sealed(services: Services, settings: Settings) -> AsyncIterator[Settings]:
    """Settings with OLD_KEY and sealed bodies, on a fresh database and namespace."""
    name = f"webhook_router_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(services.admin_database_url, name)
    pool = await store.connect(url)
    try:
        await store.migrate(pool)
    finally:
        await pool.close()
    namespace = f"wrtest_{uuid.uuid4().hex[:10]}"
    yield settings.model_copy(
        update={
            "database_url": url,
            "namespace": namespace,
            "encryption_keys": [OLD_KEY],
            "encrypt_payloads": True,
        }
    )
    await drop_namespace(services.amqp_url, namespace)
    admin = await asyncpg.connect(services.admin_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Receiver:
    """A webhook receiver on 127.0.0.1 keeping every POST's body and headers."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.read(), dict(request.headers)))
        return web.Response(text=ANSWER)

    def at(self, path: str) -> list[tuple[bytes, dict[str, str]]]:
        return [(body, headers) for p, body, headers in self.received if p == path]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    runner, url = await answer_app(got.handle)
    try:
        yield got, url
    finally:
        await runner.cleanup()


async def make_webhooks(stack: Stack, space: str, url: str) -> dict[str, Any]:
    """A signing webhook and a Basic one; (name -> webhook) as created."""
    signed = await stack.webhook(
        space, name="signed", type="User", event="Created", url=url + "/signed",
        auth_strategy="Signature",
    )  # fmt: skip
    basic = await stack.store.insert_webhook(
        space=space, kapp=None, name="basic", type="User", event="Created", filter=None,
        url=url + "/basic", auth_strategy="Basic",
        auth={"username": "jane", "password": "basic-password-1"},
    )  # fmt: skip
    assert basic is not None
    await stack.synced()
    return {"signed": signed, "basic": basic}


async def deliver(stack: Stack, space: str, receiver: Receiver, jobs: int, posts: int) -> None:
    """Publish one event to the space and wait until the space has `jobs` finished jobs
    and the receiver `posts` more POSTs."""
    before = len(receiver.received)
    await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "jo"}))
    await stack.settled(space, jobs)
    assert await eventually(lambda: _count(receiver, before + posts), timeout=10)


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


def check_delivered(receiver: Receiver, secrets: dict[str, str], posts: int) -> None:
    """Every signed POST verifies with its webhook's secret (`secrets`: path -> secret);
    every Basic one carries the credentials."""
    basic = receiver.at("/basic")
    assert len(basic) == posts
    for path, secret in secrets.items():
        signed = receiver.at(path)
        assert signed, f"nothing was posted to {path}"
        for body, headers in signed:
            StandardWebhook(secret).verify(body, headers)
    expected = "Basic " + base64.b64encode(b"jane:basic-password-1").decode()
    assert all(headers["Authorization"] == expected for _, headers in basic)


async def stored_secrets(database_url: str, space: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT name, secret, previous_secret, auth::text AS auth FROM webhooks"
                " WHERE space = $1 ORDER BY name",
                space,
            )
        )
    finally:
        await conn.close()


async def test_secret_columns_hold_no_plaintext_and_a_key_rotation_keeps_delivering(
    sealed: Settings, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    space = f"space-{uuid.uuid4().hex[:8]}"
    old_id, new_id = key_id(parse_key(OLD_KEY)), key_id(parse_key(NEW_KEY))

    # sealed under the old key; receivers still verify and authenticate
    async with open_stack(sealed) as stack:
        hooks = await make_webhooks(stack, space, url)
        secret = hooks["signed"].secret
        await deliver(stack, space, got, jobs=2, posts=2)
    check_delivered(got, {"/signed": secret}, 1)
    rows = await stored_secrets(sealed.database_url, space)
    for row in rows:
        assert row["secret"].startswith(f"enc:v1:{old_id}:")
        assert "whsec_" not in row["secret"]
    assert secret not in {r["secret"] for r in rows}
    [basic] = [r for r in rows if r["name"] == "basic"]
    assert "basic-password-1" not in basic["auth"] and "jane" not in basic["auth"]
    assert f"enc:v1:{old_id}:" in basic["auth"]

    # a webhook written before any key was set: plaintext, still read
    plain = store.Store(await store.connect(sealed.database_url))
    try:
        legacy = await plain.insert_webhook(
            space=space, kapp=None, name="legacy", type="User", event="Created", filter=None,
            url=url + "/legacy", auth_strategy="Signature",
        )  # fmt: skip
        assert legacy is not None and legacy.secret is not None
        # without the key, a sealed secret does not open, and says which key it needs
        unread = await plain.get_webhook(space, None, "signed")
        assert unread is not None and unread.secret is None
        assert f"key {old_id}, which is not configured" in (unread.unreadable or "")
    finally:
        await plain.pool.close()
    assert {r["name"]: r["secret"] for r in await stored_secrets(sealed.database_url, space)}[
        "legacy"
    ] == legacy.secret

    # the new key first, the old one after; rotate-key reseals everything under the new one
    both = sealed.model_copy(update={"encryption_keys": [NEW_KEY, OLD_KEY]})
    async with open_stack(both) as stack:
        await stack.synced()
        await deliver(stack, space, got, jobs=5, posts=3)
        code, out, err = await cli(both, "secrets", "rotate-key")
        assert code == 0, err
        assert out.strip() == "resealed 3 webhooks under the first key; 0 already were"
        code, out, err = await cli(both, "secrets", "rotate-key")
        assert code == 0, err
        assert out.strip() == "resealed 0 webhooks under the first key; 3 already were"
        status, body = await stack.api("GET", "/app/api/v1/auditLog")
        assert status == 200, body
        reseals = [e for e in body["auditLog"] if e["action"] == "secrets.resealed"]
        assert [(e["actor"], e["space"], e["after"]) for e in reseals] == [
            ("cli", None, {"resealed": 0, "alreadyCurrent": 3}),
            ("cli", None, {"resealed": 3, "alreadyCurrent": 0}),
        ]
    check_delivered(got, {"/signed": secret, "/legacy": legacy.secret}, 2)
    rows = await stored_secrets(sealed.database_url, space)
    assert all(r["secret"].startswith(f"enc:v1:{new_id}:") for r in rows)
    assert legacy.secret not in {r["secret"] for r in rows}
    [basic] = [r for r in rows if r["name"] == "basic"]
    assert f"enc:v1:{new_id}:" in basic["auth"]

    # the old key dropped: every webhook still delivers and signs with the same secret
    new_only = sealed.model_copy(update={"encryption_keys": [NEW_KEY]})
    async with open_stack(new_only) as stack:
        await stack.synced()
        await deliver(stack, space, got, jobs=8, posts=3)
        [found] = [w for w in await stack.store.space_webhooks(space) if w.name == "legacy"]
        assert found.secret == legacy.secret
    check_delivered(got, {"/signed": secret, "/legacy": legacy.secret}, 3)
    assert len(got.at("/legacy")) == 2

    # the old key alone opens nothing any more
    with pytest.raises(KeyMissing):
        Keyring([OLD_KEY]).open(rows[0]["secret"])


async def test_sealed_bodies_are_read_back_in_plaintext_through_the_api(
    sealed: Settings, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    space = f"space-{uuid.uuid4().hex[:8]}"
    username = f"user-{uuid.uuid4().hex[:8]}"
    async with open_stack(sealed) as stack:
        await stack.webhook(space, name="plain", type="User", event="Created", url=url + "/p")
        await stack.publisher.publish(
            event_for(space, "User", "Created", user={"username": username})
        )
        [job] = await stack.settled(space, 1)
        assert job["status"] == "Complete"
        conn = await asyncpg.connect(sealed.database_url)
        try:
            attempt = await conn.fetchval(
                "SELECT response_content FROM webhook_job_attempts WHERE job_id = $1", job["id"]
            )
        finally:
            await conn.close()
        for stored in (job["request_content"], job["response_content"], attempt):
            assert stored.startswith("enc:v1:")
        assert username not in job["request_content"]
        assert ANSWER not in job["response_content"] and ANSWER not in attempt

        status, body = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhookJobs/{job['id']}")
        assert status == 200, body
        shown = body["webhookJob"]
        assert username in shown["requestContent"]
        assert shown["responseContent"] == ANSWER
        assert [a["responseContent"] for a in shown["attemptHistory"]] == [ANSWER]
        [(posted, _)] = got.at("/p")
        assert username in posted.decode()


async def test_a_secret_under_a_key_not_configured_fails_only_its_own_jobs(
    sealed: Settings, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    space = f"space-{uuid.uuid4().hex[:8]}"
    stranger = new_key()
    async with open_stack(sealed) as stack:
        good = await stack.webhook(
            space, name="good", type="User", event="Created", url=url + "/good",
            auth_strategy="Signature",
        )  # fmt: skip
        other = store.Store(stack.store.pool, Keyring([stranger]))
        lost = await other.insert_webhook(
            space=space, kapp=None, name="lost", type="User", event="Created", filter=None,
            url=url + "/lost", auth_strategy="Signature",
        )  # fmt: skip
        assert lost is not None
        await stack.synced()
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "a"}))
        jobs = await stack.settled(space, 2)
        by_name = {j["webhook_name"]: j for j in jobs}
        assert by_name["good"]["status"] == "Complete"
        assert by_name["lost"]["status"] == "Failed"
        missing = f"key {key_id(parse_key(stranger))}, which is not configured"
        assert missing in by_name["lost"]["summary"]
        [(body, headers)] = got.at("/good")
        assert good.secret is not None
        StandardWebhook(good.secret).verify(body, headers)
        assert got.at("/lost") == []

        status, answer = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhooks/lost")
        assert status == 503 and missing in answer["error"], answer
        status, answer = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhooks")
        assert status == 200 and {w["name"] for w in answer["webhooks"]} == {"good", "lost"}

        code, _, err = await cli(sealed, "secrets", "rotate-key")
        assert code == 1 and missing in err and "nothing was changed" in err


async def test_migrate_warns_once_without_a_key_and_not_with_one(
    settings: Settings, sealed: Settings
) -> None:
    code, out, err = await cli(settings, "migrate")
    assert code == 0, err
    assert err.count("WEBHOOK_ROUTER_ENCRYPTION_KEYS is not set") == 1, err
    assert "plaintext" in err and "secrets new-key" in err
    code, out, err = await cli(sealed, "migrate")
    assert code == 0, err
    assert "ENCRYPTION_KEYS" not in err
    code, out, err = await cli(settings, "secrets", "rotate-key")
    assert code == 1 and "set WEBHOOK_ROUTER_ENCRYPTION_KEYS" in err
    code, out, err = await cli(settings, "secrets", "new-key")
    assert code == 0 and len(parse_key(out.strip())) == 32


async def job_bodies(database_url: str, space: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT j.request_content, j.response_content, a.response_content AS answered"
            " FROM webhook_jobs j JOIN webhook_job_attempts a ON a.job_id = j.id"
            " WHERE j.space = $1",
            space,
        )
    finally:
        await conn.close()
    return [v for r in rows for v in r.values()]


async def test_rotate_key_with_bodies_reseals_the_job_log_so_the_old_key_can_go(
    sealed: Settings, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    space = f"space-{uuid.uuid4().hex[:8]}"
    new_id = key_id(parse_key(NEW_KEY))
    plain = sealed.model_copy(update={"encrypt_payloads": False})
    async with open_stack(plain) as stack:  # bodies written before they were sealed
        await stack.webhook(space, name="h", type="User", event="Created", url=url + "/b")
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "a"}))
        await stack.settled(space, 1)
    async with open_stack(sealed) as stack:  # and under the old key
        await stack.synced()
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "b"}))
        await stack.settled(space, 2)
    bodies = await job_bodies(sealed.database_url, space)
    assert len(bodies) == 6 and sum(b.startswith("enc:v1:") for b in bodies) == 3

    both = sealed.model_copy(update={"encryption_keys": [NEW_KEY, OLD_KEY]})
    code, out, err = await cli(both, "secrets", "rotate-key", "--bodies")
    assert code == 0, err
    assert out.splitlines()[-1] == (
        "resealed the bodies of 2 jobs and 2 attempts; "
        "0 bodies no listed key opens were left as they are"
    )
    assert all(
        b.startswith(f"enc:v1:{new_id}:") for b in await job_bodies(both.database_url, space)
    )
    code, out, err = await cli(both, "secrets", "rotate-key", "--bodies")
    assert code == 0, err
    assert "the bodies of 0 jobs and 0 attempts" in out

    new_only = sealed.model_copy(update={"encryption_keys": [NEW_KEY]})
    async with open_stack(new_only) as stack:
        status, body = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhookJobs")
        assert status == 200, body
        sent = sorted(
            json.loads(j["requestContent"])["user"]["username"] for j in body["webhookJobs"]
        )
        assert sent == ["a", "b"]
        assert {j["responseContent"] for j in body["webhookJobs"]} == {ANSWER}


async def test_up_without_a_key_warns_once_in_its_log(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "api_port": free_port(),
            "api_token": ["up-token"],
        }
    )
    async with up(own) as (printed, log):
        assert "Stop with Ctrl-C." in printed
        events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    warned = [e for e in events if "WEBHOOK_ROUTER_ENCRYPTION_KEYS is not set" in e]
    assert len(warned) == 1, events


async def test_the_database_says_which_columns_may_be_sealed(sealed: Settings) -> None:
    conn = await asyncpg.connect(sealed.database_url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) AS note"
            " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
            " WHERE c.relname IN ('webhooks', 'webhook_jobs', 'webhook_job_attempts')"
            " AND col_description(c.oid, a.attnum) LIKE '%sealed%'"
        )
        views = await conn.fetch(
            "SELECT viewname, obj_description(format('%I', viewname)::regclass) AS note"
            " FROM pg_views WHERE viewname LIKE 'webhook%'"
        )
    finally:
        await conn.close()
    assert {(r["relname"], r["attname"]) for r in rows} == {
        ("webhooks", "secret"),
        ("webhooks", "previous_secret"),
        ("webhooks", "auth"),
        ("webhook_jobs", "request_content"),
        ("webhook_jobs", "response_content"),
        ("webhook_job_attempts", "response_content"),
    }
    assert len(views) == 5
    assert all("reads no body column" in (v["note"] or "") for v in views), views
