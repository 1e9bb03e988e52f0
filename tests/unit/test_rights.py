"""Rights, principals and the token lookup, on the in-memory store: the route table covers
every operation, an undeclared one is refused to all, the cache forgets within a second."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from webhook_router.admin import Admin
from webhook_router.api import Api, _guarded
from webhook_router.console.access import PUBLIC_ROUTES
from webhook_router.console.app import ROUTE_RIGHTS, console_app
from webhook_router.openapi import OPERATIONS, Operation
from webhook_router.rights import Principal, Right, Role, right_of
from webhook_router.settings import Settings
from webhook_router.testing import MemoryStore
from webhook_router.tokens import CACHE_SECONDS, TOUCH_SECONDS, Principals, token_hash

pytestmark = pytest.mark.timeout(10)
ASYNC = pytest.mark.asyncio(loop_scope="session")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_operation_that_needs_a_token_declares_its_right() -> None:
    undeclared = [
        op.operation_id for op in OPERATIONS if not op.public and not right_of(op.operation_id)
    ]
    assert undeclared == []
    assert right_of("listWebhooksOfKappInSpace") is Right.READ
    assert right_of("deadLettersSomething") is None


def test_every_console_route_that_needs_a_session_declares_its_right() -> None:
    settings = Settings(api_token=["unit-token"])
    store = MemoryStore()
    app = console_app(Admin(settings, store), store, settings, Principals(store, []))
    names = {name for name in app.router.named_resources()} | {
        route.name for route in app.router.routes() if route.name
    }
    assert "bulk_retry" in names and "logout" in names
    assert sorted(names - PUBLIC_ROUTES - set(ROUTE_RIGHTS)) == []


def test_roles_hold_their_rights_and_spaces_bound_them() -> None:
    reader = Principal("r", Role.READER, frozenset({"a"}))
    assert reader.may(Right.READ) and not reader.may(Right.SECRETS)
    assert not reader.may(Right.WRITE) and not reader.may(Right.PUBLISH)
    assert reader.reaches("a") and not reader.reaches("b")
    assert reader.visible(["b", "a", "c"]) == ["a"]
    everywhere = Principal("x", Role.ADMIN)
    assert all(everywhere.may(r) for r in Right) and everywhere.reaches("any")
    assert Principal("p", Role.PUBLISHER).may(Right.PUBLISH)


@ASYNC
async def test_an_operation_without_a_declared_right_is_refused_to_every_token() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="reached")

    settings = Settings(api_token=["unit-token"])
    api = Api(settings, MemoryStore())
    op = Operation("GET", "/new", "new", "listDeadLettersNew", "s", "t", {})
    app = api.app()
    app.router.add_get("/new", _guarded(op, "default", handler))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        answer = await client.get("/new", headers={"Authorization": "Bearer unit-token"})
        assert answer.status == 403
        assert "listDeadLettersNew" in (await answer.json())["error"]


@ASYNC
async def test_a_revoked_token_is_forgotten_after_the_cache_and_use_is_written_rarely() -> None:
    store = MemoryStore()
    clock = Clock()
    principals = Principals(store, ["from-settings"], clock=clock)
    await store.insert_api_token("r", Role.READER, ["a"], token_hash("t1"))
    assert await principals.of_token("from-settings") == Principal("settings", Role.ADMIN)
    found = await principals.of_token("t1")
    assert found == Principal("r", Role.READER, frozenset({"a"}))
    used = (await store.list_api_tokens())[0].last_used_at
    assert used is not None
    await store.revoke_api_token("r")
    assert await principals.of_token("t1") == found, "cached"
    clock.now += CACHE_SECONDS
    assert await principals.of_token("t1") is None
    assert await principals.of_token("") is None and await principals.of_token("nope") is None

    await store.insert_api_token("w", Role.ADMIN, [], token_hash("t2"))
    for step in range(5):
        clock.now += CACHE_SECONDS
        await principals.of_token("t2")
        if step == 0:
            first: Any = (await store.list_api_tokens())[1].last_used_at
    assert (await store.list_api_tokens())[1].last_used_at == first, "not written per request"
    clock.now += TOUCH_SECONDS
    await principals.of_token("t2")
    assert (await store.list_api_tokens())[1].last_used_at != first
