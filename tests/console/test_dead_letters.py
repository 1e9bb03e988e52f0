"""The dead letter pages with plain HTTP: the list and its filters, one dead letter whole,
the requeue button."""

from __future__ import annotations

import html as markup
import uuid

import orjson
import pytest

from tests.integration.test_delivery import find_dead
from webhook_router import broker

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_dead_letter_is_listed_shown_and_requeued(console: Console) -> None:
    stack = console.stack
    space = stack.space()
    marker = uuid.uuid4().hex
    body = orjson.dumps({"event": {"type": "User", "action": "Created", "id": marker}, "x": 1})
    topology = stack.router.topology
    assert topology is not None
    await broker.publish(topology.events, body, "user.created", message_id=marker)
    letter = await find_dead(stack, marker)
    assert letter is not None
    async with Client(console) as client:
        await client.login()
        status, page, _ = await client.get(f"spaces/{space}/jobs")
        assert status == 200 and f'href="/console/spaces/{space}/dead-letters"' in page

        status, page, _ = await client.get(f"spaces/{space}/dead-letters?role=router")
        assert status == 200, page
        assert f'data-dead-letter="{letter.id}"' in page
        assert markup.escape(letter.reason) in page
        status, page, _ = await client.get(f"spaces/{space}/dead-letters?role=worker")
        assert f'data-dead-letter="{letter.id}"' not in page
        status, page, _ = await client.get(f"spaces/{space}/dead-letters?start=yesterday")
        assert status == 200 and "start:" in page and "data-dead-letter=" not in page

        path = f"spaces/{space}/dead-letters/{letter.id}"
        status, page, _ = await client.get(path)
        assert status == 200
        assert marker in page and 'id="requeue"' in page and "never" in page
        status, _, headers = await client.post(f"{path}/requeue", data={"csrf": client.csrf})
        assert status == 303 and headers["Location"].endswith(path)
        _, page, _ = await client.get(path)
        assert "Sent back to the router." in page and "1 time, last" in page
        stored = await stack.store.get_dead_letter(letter.id)
        assert stored is not None and stored.requeue_count == 1

        status, _, _ = await client.post(f"{path}/requeue", data={"csrf": "wrong"})
        assert status == 403
        status, page, _ = await client.get(f"spaces/{space}/dead-letters/{uuid.uuid4()}")
        assert status == 404 and "no such dead letter" in page
