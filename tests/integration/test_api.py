"""The admin API over real HTTP: webhooks in every scope, webhook jobs filtered and paged,
retries and bulk replays, tokens, and a 4xx naming the field for every bad request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from webhook_router import store
from webhook_router.api import Api
from webhook_router.expressions import FILTER_MAX, URL_MAX
from webhook_router.openapi import OPERATIONS, PUBLIC_PATHS
from webhook_router.runtime import serve
from webhook_router.store import JobFilter, Store

from ..conftest import eventually, free_port
from .conftest import Stack, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

V1 = "/app/api/v1"
USERS_TREE = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"
SUBMISSIONS_TREE = (
    "/app/api/v1/run-tree/Kinetic%20Request%20CE/"
    "Submissions%20%3E%20${kapp('slug')}%20%3E%20${form('slug')}/Submitted"
)
NOWHERE = "/nowhere"
"""The local engine answers 404 here: a job that fails at once."""


@dataclass
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]

    def fields(self) -> set[str]:
        return {e["field"] for e in self.body.get("errors", [])}


async def call(
    stack: Stack,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    query: Mapping[str, str] | None = None,
    token: str | None = "test-token",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request with `path` sent exactly as written (already percent-encoded)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if query:
        path += "?" + urlencode(query, quote_via=quote)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, URL(stack.api_url + path, encoded=True), json=json, data=data, headers=sent
        ) as response,
    ):
        raw = await response.read()
        body: Any = raw.decode() if raw else None
        if raw and response.content_type == "application/json":
            body = await response.json()
        return Answer(response.status, body, response.headers)


def enc(name: str) -> str:
    return quote(name, safe="")


def definition(kapp: str | None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = (
        {"type": "Submission", "event": "Submitted", "url": SUBMISSIONS_TREE}
        if kapp
        else {"type": "User", "event": "Created", "url": USERS_TREE}
    )
    return {"name": f"hook {uuid.uuid4().hex[:6]}", **base, **fields}


def prefix(space: str | None, kapp: str | None) -> str:
    """The path before `/webhooks`: the short form for space None (the default space)."""
    path = V1 if space is None else f"{V1}/spaces/{enc(space)}"
    return path + (f"/kapps/{enc(kapp)}" if kapp else "")


def user_created(space: str, username: str) -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": username})


def submitted(space: str, kapp: str, submission_id: str) -> dict[str, Any]:
    return event_for(
        space,
        "Submission",
        "Submitted",
        kapp={"slug": kapp},
        form={"slug": "ipad-request"},
        submission={"id": submission_id, "values": {}},
    )


# access


def _concrete(path: str) -> str:
    return (
        path.replace("{space}", "acme")
        .replace("{kapp}", "services")
        .replace("{name}", "x")
        .replace("{id}", str(uuid.uuid4()))
        .replace("{level}", "space")
    )


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_every_route_but_health_and_the_document_needs_the_token(
    stack: Stack, token: str | None
) -> None:
    for op in OPERATIONS:
        answer = await call(stack, op.method, _concrete(op.path), token=token, json={})
        if op.path in PUBLIC_PATHS:
            assert answer.status == 200, op.path
            continue
        assert answer.status == 401, f"{op.method} {op.path}"
        assert answer.body == {"error": "a valid bearer token is required"}
        assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_another_scheme_or_an_unknown_path_gets_401_too(stack: Stack) -> None:
    basic = await call(
        stack, "GET", f"{V1}/webhooks", token=None, headers={"Authorization": "Basic dGVzdA=="}
    )
    assert basic.status == 401
    assert (await call(stack, "GET", f"{V1}/nothing-here", token=None)).status == 401
    known = await call(stack, "GET", f"{V1}/nothing-here")
    assert (known.status, known.body) == (404, {"error": "Not Found"})


async def test_a_method_a_route_lacks_gets_405_with_allow(stack: Stack) -> None:
    answer = await call(stack, "PATCH", f"{V1}/webhooks")
    assert answer.status == 405
    assert set(answer.headers["Allow"].split(",")) == {"GET", "POST"}
    assert answer.body == {"error": "Method Not Allowed"}


# webhooks

SCOPES = [
    pytest.param(None, None, id="default-space"),
    pytest.param(None, "services", id="default-space-kapp"),
    pytest.param("explicit", None, id="space"),
    pytest.param("explicit", "services", id="space-kapp"),
]


@pytest.mark.parametrize(("space_kind", "kapp"), SCOPES)
async def test_webhook_lifecycle_in_every_scope(
    stack: Stack, space_kind: str | None, kapp: str | None
) -> None:
    space = stack.space() if space_kind else None
    base = prefix(space, kapp) + "/webhooks"
    body = definition(kapp, filter="values('Status') == 'Open'" if kapp else None)
    name = body["name"]

    created = await call(stack, "POST", base, json=body)
    assert created.status == 201, created.body
    hook = created.body["webhook"]
    assert created.body["warnings"] == []
    assert {k: hook[k] for k in ("name", "type", "event", "url", "filter")} == {
        k: body[k] for k in ("name", "type", "event", "url", "filter")
    }
    assert hook["enabled"] is True and hook["authStrategy"] is None
    assert hook["secret"].startswith("whsec_") and hook["previousSecretUntil"] is None
    stored = await stack.store.get_webhook(space or stack.settings.default_space, kapp, name)
    assert stored is not None and stored.id == hook["id"]

    listed = await call(stack, "GET", base)
    assert listed.status == 200
    [entry] = [w for w in listed.body["webhooks"] if w["name"] == name]
    assert "secret" not in entry and entry["id"] == hook["id"]

    one = f"{base}/{enc(name)}"
    got = await call(stack, "GET", one)
    assert got.status == 200 and got.body["webhook"] == hook

    changed = await call(stack, "PUT", one, json={"webhook": {"url": NOWHERE, "enabled": False}})
    assert changed.status == 200, changed.body
    after = changed.body["webhook"]
    assert after["url"] == NOWHERE and after["enabled"] is False
    assert {k: after[k] for k in ("name", "type", "event", "filter", "secret", "id")} == {
        k: hook[k] for k in ("name", "type", "event", "filter", "secret", "id")
    }

    deleted = await call(stack, "DELETE", one)
    assert deleted.status == 200 and deleted.body["webhook"]["id"] == hook["id"]
    assert "secret" not in deleted.body["webhook"]
    assert (await call(stack, "GET", one)).status == 404
    assert await stack.store.get_webhook(space or stack.settings.default_space, kapp, name) is None


@pytest.mark.parametrize(
    "name",
    ["a/b", "100% sure", "with spaces", "what?#x", "héllo wörld ✓", "a+b=c&d", "%2F as written"],
)
async def test_names_with_any_character_are_addressed_percent_encoded(
    stack: Stack, name: str
) -> None:
    for base in (prefix(stack.space(), "services"), prefix(None, None)):
        hooks = f"{base}/webhooks"
        kapp = "services" if "kapps" in base else None
        created = await call(stack, "POST", hooks, json=definition(kapp, name=name))
        assert created.status == 201, created.body
        one = f"{hooks}/{enc(name)}"
        got = await call(stack, "GET", one)
        assert (got.status, got.body["webhook"]["name"]) == (200, name)
        changed = await call(stack, "PUT", one, json={"url": NOWHERE})
        assert (changed.status, changed.body["webhook"]["url"]) == (200, NOWHERE)
        rotated = await call(stack, "POST", f"{one}/secret")
        assert rotated.status == 200
        assert (await call(stack, "DELETE", one)).status == 200
        assert (await call(stack, "GET", one)).status == 404


async def test_put_can_rename_and_refuses_a_name_taken_in_the_scope(stack: Stack) -> None:
    hooks = prefix(stack.space(), None) + "/webhooks"
    first, second = definition(None), definition(None)
    for body in (first, second):
        assert (await call(stack, "POST", hooks, json=body)).status == 201
    clash = await call(stack, "PUT", f"{hooks}/{enc(first['name'])}", json={"name": second["name"]})
    assert clash.status == 409
    assert second["name"] in clash.body["error"]
    renamed = await call(stack, "PUT", f"{hooks}/{enc(first['name'])}", json={"name": "renamed"})
    assert (renamed.status, renamed.body["webhook"]["name"]) == (200, "renamed")
    assert (await call(stack, "GET", f"{hooks}/renamed")).status == 200
    assert (await call(stack, "GET", f"{hooks}/{enc(first['name'])}")).status == 404


async def test_a_name_is_unique_per_scope_only(stack: Stack) -> None:
    space = stack.space()
    body = definition(None)
    hooks = prefix(space, None) + "/webhooks"
    assert (await call(stack, "POST", hooks, json=body)).status == 201
    again = await call(stack, "POST", hooks, json=body)
    assert again.status == 409 and body["name"] in again.body["error"]
    elsewhere = await call(stack, "POST", prefix(stack.space(), None) + "/webhooks", json=body)
    assert elsewhere.status == 201
    in_kapp = definition("services", name=body["name"])
    assert (
        await call(stack, "POST", prefix(space, "services") + "/webhooks", json=in_kapp)
    ).status == 201


async def test_unknown_names_get_404(stack: Stack) -> None:
    one = prefix(stack.space(), "services") + "/webhooks/nobody"
    for method, path in (
        ("GET", one),
        ("PUT", one),
        ("DELETE", one),
        ("POST", one + "/secret"),
    ):
        answer = await call(stack, method, path, json={"url": NOWHERE})
        assert answer.status == 404, (method, path)
        assert "nobody" in answer.body["error"]


INVALID_DEFINITIONS = [
    pytest.param(None, {"type": "Robot"}, {"type"}, "unknown type", id="unknown-type"),
    pytest.param(None, {"event": "Submitted"}, {"event"}, "unknown event", id="event-not-of-type"),
    pytest.param(
        None,
        {"type": "Submission", "event": "Submitted"},
        {"type"},
        "kapp",
        id="kapp-type-on-space",
    ),
    pytest.param(
        "services", {"type": "User", "event": "Created"}, {"type"}, "space", id="space-type-on-kapp"
    ),
    pytest.param(None, {"filter": "values('a' =="}, {"filter"}, "position 13", id="filter"),
    pytest.param(None, {"url": "http://x/${form('slug'"}, {"url"}, "position", id="url"),
    pytest.param(None, {"authStrategy": "Digest"}, {"authStrategy"}, "Bearer", id="auth"),
    pytest.param(None, {"enabled": "yes"}, {"enabled"}, "true or false", id="enabled"),
    pytest.param(None, {"name": 5}, {"name"}, "string", id="name-type"),
    pytest.param(None, {"name": "  "}, {"name"}, "empty", id="name-blank"),
    pytest.param(None, {"name": ".."}, {"name"}, "path", id="name-dots"),
    pytest.param(None, {"name": "a\x00b"}, {"name"}, "NUL", id="name-nul"),
    pytest.param(None, {"url": "http://x/\x00"}, {"url"}, "NUL", id="url-nul"),
    pytest.param(None, {"name": "n" * 256}, {"name"}, "255", id="name-long"),
    pytest.param(
        None, {"auth_strategy": "Signature"}, {"auth_strategy"}, "unknown", id="unknown-field"
    ),
    pytest.param(None, {"filter": 3}, {"filter"}, "string or null", id="filter-type"),
    pytest.param(None, {"url": "example/path"}, {"url"}, "start with '/'", id="url-relative"),
    pytest.param(
        "services", {"url": "example/${form('slug')}"}, {"url"}, "start with '/'", id="url-rel-expr"
    ),
    pytest.param(None, {"url": "http:///x"}, {"url"}, "has no host", id="url-no-host"),
    pytest.param(None, {"url": "https:x"}, {"url"}, "https://", id="url-no-slashes"),
    pytest.param(
        None, {"filter": "true" + " " * FILTER_MAX}, {"filter"}, "at most", id="filter-long"
    ),
    pytest.param(None, {"url": "/" + "x" * URL_MAX}, {"url"}, "at most", id="url-long"),
    pytest.param(None, {"filter": "(" * 10_000}, {"filter"}, "at most", id="filter-10000-parens"),
    pytest.param(None, {"filter": "(" * 4000}, {"filter"}, "nested too deeply", id="filter-deep"),
]


@pytest.mark.parametrize(("kapp", "change", "fields", "words"), INVALID_DEFINITIONS)
async def test_an_invalid_definition_gets_422_naming_the_field(
    stack: Stack, kapp: str | None, change: dict[str, Any], fields: set[str], words: str
) -> None:
    space = stack.space()
    hooks = prefix(space, kapp) + "/webhooks"
    created = await call(stack, "POST", hooks, json=definition(kapp, **change))
    assert created.status == 422, created.body
    assert created.fields() == fields
    assert any(words in e["message"] for e in created.body["errors"]), created.body
    assert await stack.store.scope_webhooks(space, kapp) == []

    good = definition(kapp)
    assert (await call(stack, "POST", hooks, json=good)).status == 201
    updated = await call(stack, "PUT", f"{hooks}/{enc(good['name'])}", json=change)
    assert updated.status == 422 and updated.fields() == fields
    [kept] = await stack.store.scope_webhooks(space, kapp)
    assert (kept.name, kept.url) == (good["name"], good["url"])


@pytest.mark.parametrize(
    ("url", "address", "reason"),
    [
        ("http://10.0.0.5/hook", "10.0.0.5", "private"),
        ("http://167772165:8080/${form('slug')}", "10.0.0.5", "private"),
        ("http://[fd00::1]/hook", "fd00::1", "private"),
        ("http://[::ffff:192.168.1.1]/hook", "::ffff:c0a8:101", "private"),
        ("http://169.254.169.254/latest", "169.254.169.254", "link-local"),
        ("http://0.0.0.0:9/hook", "0.0.0.0", "unspecified"),
    ],
)
async def test_a_url_whose_written_host_the_guard_refuses_is_saved_with_a_warning(
    stack: Stack, url: str, address: str, reason: str
) -> None:
    """Saved (the networks may be allowed later), and said: nothing is resolved or
    connected to, and no event is published to this space."""
    hooks = prefix(stack.space(), "services") + "/webhooks"
    body = definition("services", url=url)
    created = await call(stack, "POST", hooks, json=body)
    assert created.status == 201, created.body
    [warning] = created.body["warnings"]
    assert f"{address} is {'an' if reason[0] in 'aeiou' else 'a'} {reason} address" in warning
    assert "WEBHOOK_ROUTER_ALLOWED_NETWORKS" in warning
    one = f"{hooks}/{enc(body['name'])}"
    fixed = await call(stack, "PUT", one, json={"url": "https://example.com/hook"})
    assert (fixed.status, fixed.body["warnings"]) == (200, [])
    again = await call(stack, "PUT", one, json={"url": url})
    assert again.status == 200 and again.body["warnings"] == created.body["warnings"]
    # A name is judged when a delivery resolves it; a path goes to the engine; the test
    # settings allow loopback (WEBHOOK_ROUTER_ALLOWED_NETWORKS), so localhost is reached.
    names = ("http://hooks.example.com/x", "https://${form('slug')}.example.com/", "/x")
    for quiet in (*names, "http://localhost:9/x", "http://127.1/x", "http://[::1]/x"):
        assert (await call(stack, "PUT", one, json={"url": quiet})).body["warnings"] == []


async def test_a_created_webhook_needs_name_type_event_and_url(stack: Stack) -> None:
    answer = await call(stack, "POST", prefix(stack.space(), None) + "/webhooks", json={})
    assert answer.status == 422
    assert answer.fields() == {"name", "type", "event", "url"}


@pytest.mark.parametrize(
    ("raw", "words"),
    [(b"{not json", "not JSON"), (b"[1, 2]", "JSON object"), (b"", "not JSON")],
)
async def test_a_body_that_is_not_a_json_object_gets_400(
    stack: Stack, raw: bytes, words: str
) -> None:
    space = stack.space()
    hooks = prefix(space, None) + "/webhooks"
    body = definition(None)
    assert (await call(stack, "POST", hooks, json=body)).status == 201
    one = f"{hooks}/{enc(body['name'])}"
    for method, path in (
        ("POST", hooks),
        ("PUT", one),
        ("POST", f"{V1}/events"),
        ("POST", prefix(space, None) + "/webhookJobs/replay"),
    ):
        answer = await call(stack, method, path, data=raw)
        assert answer.status == 400, (method, path, answer.body)
        assert words in answer.body["error"]


async def test_bad_path_parameters_get_422_naming_them(stack: Stack) -> None:
    nul = await call(stack, "GET", f"{V1}/spaces/a%00b/webhooks")
    assert nul.status == 422 and nul.fields() == {"space"}
    long_kapp = await call(stack, "GET", f"{V1}/kapps/{'k' * 129}/webhooks")
    assert long_kapp.status == 422 and long_kapp.fields() == {"kapp"}
    long_name = await call(stack, "DELETE", f"{V1}/webhooks/{'n' * 256}")
    assert long_name.status == 422 and long_name.fields() == {"name"}


async def test_rotating_the_secret_keeps_the_old_one_for_the_grace(stack: Stack) -> None:
    space = stack.space()
    hooks = prefix(space, None) + "/webhooks"
    body = definition(None, authStrategy="Signature")
    old = (await call(stack, "POST", hooks, json=body)).body["webhook"]["secret"]
    one = f"{hooks}/{enc(body['name'])}"

    began = datetime.now(UTC)
    rotated = await call(stack, "POST", f"{one}/secret")
    assert rotated.status == 200
    new = rotated.body["webhook"]["secret"]
    assert new.startswith("whsec_") and new != old
    until = datetime.fromisoformat(rotated.body["webhook"]["previousSecretUntil"])
    grace = timedelta(seconds=stack.settings.signature_grace)
    assert began + grace - timedelta(seconds=5) < until < began + grace + timedelta(seconds=5)
    stored = await stack.store.get_webhook(space, None, body["name"])
    assert stored is not None and (stored.secret, stored.previous_secret) == (new, old)
    assert (await call(stack, "GET", one)).body["webhook"]["secret"] == new

    now = await call(stack, "POST", f"{one}/secret", json={"graceSeconds": 0})
    assert now.status == 200
    until = datetime.fromisoformat(now.body["webhook"]["previousSecretUntil"])
    assert until < datetime.now(UTC) + timedelta(seconds=1)

    for bad, field in (
        ({"graceSeconds": -1}, "graceSeconds"),
        ({"graceSeconds": "1"}, "graceSeconds"),
        ({"graceSeconds": True}, "graceSeconds"),
        ({"graceSeconds": 1e12}, "graceSeconds"),
        ({"grace": 5}, "grace"),
    ):
        answer = await call(stack, "POST", f"{one}/secret", json=bad)
        assert answer.status == 422 and answer.fields() == {field}, bad
    assert (await call(stack, "POST", f"{one}/secret", data=b"nope")).status == 400


async def test_the_catalogue_by_level(stack: Stack) -> None:
    types = await call(stack, "GET", f"{V1}/meta/webhooks/types/kapp")
    assert types.body == {"types": ["Form", "Submission"]}
    events = await call(stack, "GET", f"{V1}/meta/webhooks/events/space")
    assert events.body["events"]["Space"] == ["Login Failure"]
    assert (await call(stack, "GET", f"{V1}/meta/webhooks/types/galaxy")).status == 404


async def test_events_are_ingested_or_refused_naming_the_field(stack: Stack) -> None:
    space = stack.space()
    accepted = await call(stack, "POST", f"{V1}/events", json=user_created(space, "ann"))
    assert accepted.status == 202 and uuid.UUID(accepted.body["id"])
    refused = await call(
        stack, "POST", f"{V1}/events", json={"event": {"type": "User"}, "space": {"slug": space}}
    )
    assert refused.status == 422 and "event.action" in refused.fields()


# webhook jobs


@dataclass
class JobSpace:
    space: str
    ok: str
    failing: str
    kapp_hook: str


async def jobs_space(stack: Stack) -> JobSpace:
    """A space with 8 jobs: 3 Complete and 3 Failed of two space webhooks (users u0..u2),
    2 Complete of a kapp webhook (submissions s0, s1)."""
    space = stack.space()
    ok = await stack.webhook(space, name="ok", type="User", event="Created", url=USERS_TREE)
    failing = await stack.webhook(space, name="failing", type="User", event="Created", url=NOWHERE)
    kapp_hook = await stack.webhook(
        space,
        kapp="services",
        name="submitted",
        type="Submission",
        event="Submitted",
        url=SUBMISSIONS_TREE,
    )
    for i in range(3):
        await stack.publisher.publish(user_created(space, f"u{i}"))
    for i in range(2):
        await stack.publisher.publish(submitted(space, "services", f"s{i}"))
    await stack.settled(space, 8)
    return JobSpace(space, ok.name, failing.name, kapp_hook.name)


async def listed(stack: Stack, path: str, **query: str) -> Answer:
    answer = await call(stack, "GET", path, query=query)
    assert answer.status == 200, answer.body
    return answer


async def test_jobs_are_filtered_by_every_parameter(stack: Stack) -> None:
    js = await jobs_space(stack)
    jobs = prefix(js.space, None) + "/webhookJobs"

    every = (await listed(stack, jobs)).body
    assert len(every["webhookJobs"]) == 8 and every["nextPageToken"] is None
    times = [j["scheduledAt"] for j in every["webhookJobs"]]
    assert times == sorted(times, reverse=True)

    in_kapp = (await listed(stack, prefix(js.space, "services") + "/webhookJobs")).body
    assert {j["name"] for j in in_kapp["webhookJobs"]} == {js.kapp_hook}
    assert len(in_kapp["webhookJobs"]) == 2

    for status in ("failed", "Failed", "FAILED"):
        failed = (await listed(stack, jobs, status=status)).body["webhookJobs"]
        assert len(failed) == 3 and {j["status"] for j in failed} == {"Failed"}
    complete = (await listed(stack, jobs, status="complete")).body["webhookJobs"]
    assert len(complete) == 5
    assert (await listed(stack, jobs, status="queued")).body["webhookJobs"] == []

    by_hook = (await listed(stack, jobs, webhook=js.ok)).body["webhookJobs"]
    assert len(by_hook) == 3 and {j["name"] for j in by_hook} == {js.ok}

    by_parent = (await listed(stack, jobs, parentType="User", parentKey="u1")).body
    assert {(j["name"], j["parentId"]) for j in by_parent["webhookJobs"]} == {
        (js.ok, "u1"),
        (js.failing, "u1"),
    }
    by_submission = (await listed(stack, jobs, parentType="Submission", parentKey="s0")).body
    assert [j["parentId"] for j in by_submission["webhookJobs"]] == ["s0"]

    middle = every["webhookJobs"][3]
    since = (await listed(stack, jobs, start=middle["scheduledAt"])).body["webhookJobs"]
    before = (await listed(stack, jobs, end=middle["scheduledAt"])).body["webhookJobs"]
    assert middle["id"] in {j["id"] for j in since}
    assert middle["id"] not in {j["id"] for j in before}
    assert len(since) + len(before) == 8
    assert all(j["scheduledAt"] < middle["scheduledAt"] for j in before)
    window = (
        await listed(
            stack,
            jobs,
            start=every["webhookJobs"][5]["scheduledAt"],
            end=every["webhookJobs"][1]["scheduledAt"],
        )
    ).body["webhookJobs"]
    assert [j["id"] for j in window] == [j["id"] for j in every["webhookJobs"][2:6]]

    page = (await listed(stack, jobs, limit="3")).body
    assert [j["id"] for j in page["webhookJobs"]] == [j["id"] for j in every["webhookJobs"][:3]]
    assert page["nextPageToken"]
    rest = (await listed(stack, jobs, limit="5", pageToken=page["nextPageToken"])).body
    assert [j["id"] for j in rest["webhookJobs"]] == [j["id"] for j in every["webhookJobs"][3:]]
    assert rest["nextPageToken"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1_0"}, "limit"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2024-05-01T00:00:00"}, "start"),
        ({"end": "2024-05-01"}, "end"),
        ({"end": "2024-02-30T00:00:00Z"}, "end"),
        ({"pageToken": "not-a-token"}, "pageToken"),
        ({"parentType": "User"}, "parentKey"),
        ({"parentKey": "u1"}, "parentType"),
        ({"parentType": "Robot", "parentKey": "r"}, "parentType"),
        ({"webhook": "a\x00b"}, "webhook"),
    ],
)
async def test_bad_job_parameters_get_422_naming_them(
    stack: Stack, query: dict[str, str], field: str
) -> None:
    answer = await call(stack, "GET", f"{V1}/webhookJobs", query=query)
    assert answer.status == 422, answer.body
    assert answer.fields() == {field}


async def test_a_plus_in_a_time_zone_must_be_encoded(stack: Stack) -> None:
    encoded = await call(stack, "GET", f"{V1}/webhookJobs?start=2024-05-01T00:00:00%2B02:00")
    assert encoded.status == 200
    literal = await call(stack, "GET", f"{V1}/webhookJobs?start=2024-05-01T00:00:00+02:00")
    assert literal.status == 422 and "%2B" in literal.body["errors"][0]["message"]


async def test_paging_to_the_end_misses_and_repeats_no_job_while_jobs_arrive(
    stack: Stack,
) -> None:
    space = stack.space()
    await stack.webhook(space, type="User", event="Created", url=USERS_TREE)
    for i in range(30):
        await stack.publisher.publish(user_created(space, f"old{i}"))
    old = {str(r["id"]) for r in await stack.settled(space, 30)}

    async def keep_publishing() -> None:
        for i in range(20):
            await stack.publisher.publish(user_created(space, f"new{i}"))
            await asyncio.sleep(0.02)

    async def newer_recorded() -> bool:
        return len(await stack.jobs(space)) > 30

    publishing = asyncio.create_task(keep_publishing())
    seen: list[str] = []
    times: list[str] = []
    token: str | None = None
    pages = 0
    try:
        while True:
            query = {"limit": "4"} | ({"pageToken": token} if token else {})
            page = (await listed(stack, prefix(space, None) + "/webhookJobs", **query)).body
            seen += [j["id"] for j in page["webhookJobs"]]
            times += [j["scheduledAt"] for j in page["webhookJobs"]]
            pages += 1
            token = page["nextPageToken"]
            if token is None:
                break
            if pages == 1:
                assert await eventually(newer_recorded, timeout=10)
            await asyncio.sleep(0.03)
    finally:
        await publishing
    arrived = await stack.settled(space, 50)
    assert len(arrived) == 50
    assert pages >= 8
    assert len(seen) == len(set(seen)), "a job was listed twice"
    assert old <= set(seen), "a job was missed"
    assert times == sorted(times, reverse=True)


async def test_one_job_with_its_attempts_in_its_scopes_only(stack: Stack) -> None:
    js = await jobs_space(stack)
    [kapp_job] = await stack.store.list_jobs(JobFilter(space=js.space, kapp="services", limit=1))
    job_id = str(kapp_job.id)
    for base in (prefix(js.space, None), prefix(js.space, "services")):
        answer = await call(stack, "GET", f"{base}/webhookJobs/{job_id}")
        assert answer.status == 200
        job = answer.body["webhookJob"]
        assert (job["id"], job["status"], job["summary"]) == (job_id, "Complete", "200 OK")
        assert job["runId"] and job["scopeType"] == "Kapp" and job["scopeId"] == "services"
        [attempt] = job["attemptHistory"]
        assert (attempt["replay"], attempt["attempt"], attempt["responseStatus"]) == (0, 1, 200)
        assert attempt["requestHeaders"]["webhook-id"] == job_id
    for elsewhere in (
        prefix(js.space, "other"),
        prefix(stack.space(), None),
        prefix(None, None),
    ):
        assert (await call(stack, "GET", f"{elsewhere}/webhookJobs/{job_id}")).status == 404
    assert (await call(stack, "GET", prefix(js.space, None) + "/webhookJobs/42")).status == 404


async def test_a_failed_job_is_retried_through_put(stack: Stack) -> None:
    js = await jobs_space(stack)
    base = prefix(js.space, None)
    failed = (await listed(stack, f"{base}/webhookJobs", status="failed")).body["webhookJobs"]
    job = failed[0]
    assert job["status"] == "Failed" and job["summary"] == "404 Not Found"
    one = f"{base}/webhookJobs/{job['id']}"

    wrong = await call(stack, "PUT", one, json={"status": "Complete"})
    assert wrong.status == 422 and wrong.fields() == {"status"}
    assert (await call(stack, "PUT", one, data=b"{")).status == 400

    fixed = await call(stack, "PUT", f"{base}/webhooks/failing", json={"url": USERS_TREE})
    assert fixed.status == 200
    retried = await call(stack, "PUT", one, json={"webhookJob": {"status": "queued"}})
    assert retried.status == 200, retried.body
    assert retried.body["webhookJob"]["status"] == "Queued"
    assert retried.body["webhookJob"]["url"] == stack.settings.engine_url + USERS_TREE

    async def complete() -> dict[str, Any] | None:
        answer = await call(stack, "GET", one)
        body: dict[str, Any] = answer.body["webhookJob"]
        return body if body["status"] == "Complete" else None

    done = await eventually(complete, timeout=15)
    assert done is not None, "the retried job did not complete"
    assert [(a["replay"], a["responseStatus"]) for a in done["attemptHistory"]] == [
        (0, 404),
        (1, 200),
    ]
    again = await call(stack, "PUT", one, json={"status": "Queued"})
    assert again.status == 409 and "Complete" in again.body["error"]


async def test_bulk_replay_counts_then_queues_the_failed_jobs_of_a_webhook(
    stack: Stack,
) -> None:
    space = stack.space()
    await stack.webhook(space, name="flaky", type="User", event="Created", url=NOWHERE)
    for i in range(4):
        await stack.publisher.publish(user_created(space, f"r{i}"))
    rows = await stack.settled(space, 4)
    assert {r["status"] for r in rows} == {"Failed"}
    times = sorted(r["scheduled_at"] for r in rows)
    replay = prefix(space, None) + "/webhookJobs/replay"

    dry = await call(stack, "POST", replay, json={"webhook": "flaky", "dryRun": True})
    assert (dry.status, dry.body) == (200, {"queued": 4, "dryRun": True})
    window = {"start": times[1].isoformat(), "end": times[3].isoformat()}
    some = await call(stack, "POST", replay, json={"webhook": "flaky", "dryRun": True} | window)
    assert some.body["queued"] == 2
    other = await call(stack, "POST", replay, json={"webhook": "nobody"})
    assert other.status == 404 and "nobody" in other.body["error"]
    in_kapp = await call(
        stack, "POST", prefix(space, "services") + "/webhookJobs/replay", json={"webhook": "flaky"}
    )
    assert in_kapp.status == 404, "the webhook is the space's, not the kapp's"
    assert {r["replay"] for r in await stack.jobs(space)} == {0}

    await call(stack, "PUT", prefix(space, None) + "/webhooks/flaky", json={"url": USERS_TREE})
    real = await call(stack, "POST", replay, json={"webhook": "flaky"})
    assert (real.status, real.body) == (200, {"queued": 4, "dryRun": False})

    async def all_complete() -> bool:
        jobs = await stack.jobs(space)
        return all(j["status"] == "Complete" and j["replay"] == 1 for j in jobs)

    assert await eventually(all_complete, timeout=20)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"webhook"}),
        ({"webhook": ""}, {"webhook"}),
        ({"webhook": "x", "start": "soon"}, {"start"}),
        ({"webhook": "x", "end": 5}, {"end"}),
        ({"webhook": "x", "dryRun": "yes"}, {"dryRun"}),
        ({"webhook": "x", "dry_run": True}, {"dry_run"}),
    ],
)
async def test_a_bad_replay_gets_422_naming_the_field(
    stack: Stack, body: dict[str, Any], fields: set[str]
) -> None:
    answer = await call(stack, "POST", f"{V1}/webhookJobs/replay", json=body)
    assert answer.status == 422 and answer.fields() == fields


async def test_without_database_or_broker_the_api_answers_503(stack: Stack) -> None:
    pool = await store.connect(stack.settings.database_url, max_size=1)
    await pool.close()
    settings = stack.settings.model_copy(update={"amqp_url": ["amqp://guest:guest@127.0.0.1:1/"]})
    api = Api(settings, Store(pool))
    port = free_port()
    runner = await serve(api.app(), "127.0.0.1", port)
    away = replace(stack, api_url=f"http://127.0.0.1:{port}")
    try:
        listed = await call(away, "GET", f"{V1}/webhooks")
        assert (listed.status, listed.body) == (503, {"error": "the database is unavailable"})
        ingested = await call(away, "POST", f"{V1}/events", json=user_created("s", "u"))
        assert ingested.status == 503 and "broker" in ingested.body["error"]
        ready = await call(away, "GET", "/readyz", token=None)
        assert ready.status == 503
        assert set(ready.body["problems"]) == {"database", "broker"}
        assert (await call(away, "GET", "/healthz", token=None)).status == 200
        # the gauge holds the queues while the broker is there (the stack's own API)...
        present = await call(stack, "GET", "/metrics")
        assert present.status == 200
        assert queue_gauge(present.body), "no queue depth while the broker is there"
        # ...and none while it is away: the family is still declared, its samples are gone
        metrics = await call(away, "GET", "/metrics")
        assert metrics.status == 200
        families = {f.name for f in text_string_to_metric_families(metrics.body)}
        assert "webhook_router_queue_messages" in families
        assert queue_gauge(metrics.body) == {}
    finally:
        await runner.cleanup()
        await api.close()


def queue_gauge(text: str) -> dict[str, float]:
    """The queue-depth samples of a scrape, by queue."""
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "webhook_router_queue_messages"
        for sample in family.samples
    }


async def test_an_undeclared_method_gets_405_with_exactly_the_declared_ones(stack: Stack) -> None:
    replay = await call(stack, "GET", f"{V1}/webhookJobs/replay")
    assert replay.status == 405, "not taken for a job id"
    assert replay.headers["Allow"] == "POST"
    one = await call(stack, "PATCH", f"{V1}/webhooks/x")
    assert one.status == 405 and set(one.headers["Allow"].split(",")) == {"GET", "PUT", "DELETE"}
    assert (await call(stack, "DELETE", f"{V1}/webhookJobs")).headers["Allow"] == "GET"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/webhookJobs", {"stauts": "failed"}),
        ("/webhookJobs", {"status": "failed", "limit": "5", "offset": "5"}),
        ("/webhooks", {"kapp": "services"}),
    ],
)
async def test_an_unknown_query_parameter_gets_422_naming_it(
    stack: Stack, path: str, query: dict[str, str]
) -> None:
    answer = await call(stack, "GET", V1 + path, query=query)
    assert answer.status == 422, "a misspelt filter must not list everything"
    assert answer.fields() == {k for k in query if k not in ("status", "limit")}
