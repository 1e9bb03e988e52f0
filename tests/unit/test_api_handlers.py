"""The API's handlers through aiohttp's test client, on the in-memory store and broker:
the shapes they answer and the refusals they name. The integration tests fuzz the same
handlers on the real services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from webhook_router.admin import Admin
from webhook_router.api import Api
from webhook_router.settings import Settings
from webhook_router.testing import MemoryStore, memory_topology

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(10)]

AUTH = {"Authorization": "Bearer unit-token"}
V1 = "/app/api/v1"
USERS = {"name": "a/b", "type": "User", "event": "Created", "url": "/run-tree/users"}


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(api_token=["unit-token"], engine_url="http://127.0.0.1:9")
    store = MemoryStore()
    api = Api(settings, store)
    api.admin = Admin(settings, store, topology=memory_topology(settings.names))
    async with TestClient(TestServer(api.app(), host="127.0.0.1")) as test_client:
        yield test_client


async def test_a_webhook_round_trip_in_the_platform_shapes(client: TestClient[Any, Any]) -> None:
    made = await client.post(f"{V1}/webhooks", json={"webhook": USERS}, headers=AUTH)
    assert made.status == 201
    body = (await made.json())["webhook"]
    assert {"authStrategy", "disabledReason", "previousSecretUntil", "secret"} <= set(body)
    assert body["createdAt"].endswith("Z")
    one = f"{V1}/webhooks/a%2Fb"
    changed = await client.put(one, json={**body, "enabled": False}, headers=AUTH)
    assert changed.status == 200 and (await changed.json())["webhook"]["enabled"] is False
    listed = await (await client.get(f"{V1}/webhooks", headers=AUTH)).json()
    assert [w["name"] for w in listed["webhooks"]] == ["a/b"]
    assert "secret" not in listed["webhooks"][0], "lists leave the secret out"
    assert (await client.delete(one, headers=AUTH)).status == 200
    assert (await client.get(one, headers=AUTH)).status == 404


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name", "type", "event", "url"}),
        (USERS | {"filter": "values('a' =="}, {"filter"}),
        (USERS | {"enabled": "yes", "auth_strategy": None}, {"enabled", "auth_strategy"}),
    ],
)
async def test_a_bad_webhook_gets_422_naming_each_field(
    client: TestClient[Any, Any], body: dict[str, Any], fields: set[str]
) -> None:
    answer = await client.post(f"{V1}/spaces/bad/webhooks", json=body, headers=AUTH)
    assert answer.status == 422
    assert {e["field"] for e in (await answer.json())["errors"]} == fields


async def test_jobs_refuse_unknown_parameters_and_a_missing_webhook(
    client: TestClient[Any, Any],
) -> None:
    listed = await client.get(f"{V1}/webhookJobs?stauts=failed", headers=AUTH)
    assert listed.status == 422
    assert (await listed.json())["errors"] == [{"field": "stauts", "message": "unknown parameter"}]
    page = await client.get(f"{V1}/webhookJobs?status=FAILED&limit=3", headers=AUTH)
    assert await page.json() == {"webhookJobs": [], "nextPageToken": None}
    replay = await client.post(f"{V1}/webhookJobs/replay", json={"webhook": "x"}, headers=AUTH)
    assert replay.status == 404
    wrong = await client.get(f"{V1}/webhookJobs/replay", headers=AUTH)
    assert (wrong.status, wrong.headers["Allow"]) == (405, "POST")


async def test_no_token_no_answer(client: TestClient[Any, Any]) -> None:
    answer = await client.get(f"{V1}/webhooks")
    assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/healthz")).status == 200
