"""The recorder's side effects after a commit: a webhook that answered 410 is disabled even
when the first tries to disable it fail; the batch is given back and tried again, never
left unacknowledged for a later multiple-ack to swallow."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import web

from ..conftest import eventually
from .conftest import Stack
from .test_delivery import receiver, user_created

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_failed_disable_is_tried_again_not_swallowed(stack: Stack) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410, text="gone")

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    space = stack.space()
    other = stack.space()
    refuse = f"refuse_{uuid.uuid4().hex[:8]}"
    async with receiver(gone) as gone_url, receiver(fine) as fine_url:
        hook = await stack.webhook(space, type="User", event="Created", url=gone_url + "/hook")
        await stack.webhook(other, type="User", event="Created", url=fine_url + "/hook")
        # PostgreSQL refuses, for now, any change of this one webhook: the disable fails
        await stack.store.pool.execute(
            f"CREATE FUNCTION {refuse}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION 'changes of this webhook refused for the test'; END $$;"
            f"CREATE TRIGGER {refuse} BEFORE UPDATE ON webhooks FOR EACH ROW "
            f"WHEN (OLD.id = '{hook.id}') EXECUTE FUNCTION {refuse}()"
        )
        try:
            await stack.publisher.publish(user_created(space))
            [job] = await stack.settled(space, 1)
            assert job["status"] == "Failed"
            # later outcomes are recorded and acknowledged meanwhile
            await stack.publisher.publish(user_created(other))
            await stack.settled(other, 1)
            await asyncio.sleep(0.3)
        finally:
            await stack.store.pool.execute(
                f"DROP TRIGGER {refuse} ON webhooks; DROP FUNCTION {refuse}()"
            )

    async def disabled() -> bool:
        current = await stack.store.get_webhook_by_id(hook.id)
        return current is not None and not current.enabled

    assert await eventually(disabled, timeout=15), "the webhook that answered 410 is enabled"
    current = await stack.store.get_webhook_by_id(hook.id)
    assert current is not None and current.disabled_reason == "410 Gone: webhook disabled"
