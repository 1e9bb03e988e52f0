"""Dot segments end to end: a URL template value of `..` never moves a POST to another path;
the receiver on 127.0.0.1 sees exactly the paths the values give, or nothing."""

from __future__ import annotations

import pytest
from aiohttp import web

from .conftest import Stack, answer_app, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_username_of_dots_never_reaches_another_path(stack: Stack) -> None:
    paths: list[str] = []

    async def receiver(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        return web.Response(text="ok")

    runner, url = await answer_app(receiver)
    space = stack.space()
    usernames = ["..", ".", "%2E%2E", "a..b"]
    try:
        await stack.webhook(
            space, type="User", event="Created", url=url + "/tenants/${user('username')}/hook"
        )
        for username in usernames:
            await stack.publisher.publish(
                event_for(space, "User", "Created", user={"username": username})
            )
        jobs = await stack.settled(space, len(usernames))
    finally:
        await runner.cleanup()
    assert sorted(paths) == ["/tenants/%252E%252E/hook", "/tenants/a..b/hook"]
    by_status = sorted((j["status"], j["summary"] or "") for j in jobs)
    failed = [summary for status, summary in by_status if status == "Failed"]
    assert len(failed) == 2
    assert all("path segment" in summary for summary in failed), failed
    assert [status for status, _ in by_status].count("Complete") == 2
