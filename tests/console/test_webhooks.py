"""The webhook pages with plain HTTP: create, save, enable and disable, rotate the secret."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

URL = "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created"


def form(client: Client, **fields: str) -> dict[str, str]:
    base = {
        "csrf": client.csrf,
        "name": "User Created",
        "type": "User",
        "event": "Created",
        "filter": "",
        "url": URL,
        "authStrategy": "",
        "enabled": "on",
    }
    return base | fields


async def test_create_and_save_check_the_definition(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks", data=form(client, type="Submission", event="Created")
        )
        assert status == 422
        assert "Submission webhooks are defined on the kapp, not on the space" in html
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks", data=form(client, filter="user('x') ==")
        )
        assert status == 422 and 'id="filter-error"' in html and "at position 12" in html
        assert "user(&#39;x&#39;) ==\n" in html and "            ^" in html, "a caret at 12"
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks", data=form(client, url="example/path")
        )
        assert status == 422 and 'id="url-error"' in html
        assert "must start with &#39;/&#39; (a path on the workflow engine)" in html

        status, _, headers = await client.post(f"spaces/{space}/webhooks", data=form(client))
        assert status == 303
        created = await store.get_webhook(space, None, "User Created")
        assert created is not None and created.url == URL and created.filter is None
        assert headers["Location"].endswith(f"/webhooks/{created.id}")
        status, html, _ = await client.get(headers["Location"].removeprefix("/console/"))
        assert "Webhook User Created created." in html
        status, html, _ = await client.post(f"spaces/{space}/webhooks", data=form(client))
        assert status == 409 and "exists here" in html

        await client.post(
            f"spaces/{space}/webhooks", data=form(client, name="Other", event="Updated")
        )
        path = f"spaces/{space}/webhooks/{created.id}"
        status, _, _ = await client.post(path, data=form(client, name="Other"))
        assert status == 409
        status, _, _ = await client.post(
            path,
            data=form(client, filter="user('username') == 'jane'", authStrategy="Signature")
            | {"enabled": ""},
        )
        assert status == 303
        saved = await store.get_webhook_by_id(created.id)
        assert saved is not None
        assert (saved.filter, saved.auth_strategy, saved.enabled) == (
            "user('username') == 'jane'",
            "Signature",
            False,
        )


async def test_enable_disable_and_rotate_the_secret(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    hook = await console.stack.webhook(
        space, name="h", type="User", event="Created", url=URL, auth_strategy="Signature"
    )
    await store.disable_webhook(hook.id, "410 Gone")
    async with Client(console) as client:
        await client.login()
        path = f"spaces/{space}/webhooks/{hook.id}"
        _, html, _ = await client.get(path)
        assert "Disabled: 410 Gone" in html and hook.secret is not None and hook.secret in html

        status, _, _ = await client.post(
            f"{path}/enabled", data={"csrf": client.csrf, "enabled": "true"}
        )
        assert status == 303
        enabled = await store.get_webhook_by_id(hook.id)
        assert enabled is not None and enabled.enabled and enabled.disabled_reason is None

        before = datetime.now(UTC)
        status, _, _ = await client.post(f"{path}/rotate", data={"csrf": client.csrf})
        assert status == 303
        rotated = await store.get_webhook_by_id(hook.id)
        assert rotated is not None
        assert rotated.secret != hook.secret and rotated.previous_secret == hook.secret
        grace = timedelta(seconds=console.stack.settings.signature_grace)
        assert rotated.previous_secret_until is not None
        assert before + grace - timedelta(seconds=5) < rotated.previous_secret_until
        assert rotated.previous_secret_until < datetime.now(UTC) + grace + timedelta(seconds=5)
        _, html, _ = await client.get(path)
        assert "New signing secret" in html and rotated.secret is not None
        assert rotated.secret in html and "previous secret still signs" in html


async def test_other_spaces_are_not_reached_through_this_one(console: Console) -> None:
    store = console.stack.store
    mine, theirs = console.stack.space(), console.stack.space()
    hook = await console.stack.webhook(theirs, name="theirs", type="User", event="Created", url=URL)
    async with Client(console) as client:
        await client.login()
        status, _, _ = await client.get(f"spaces/{mine}/webhooks/{hook.id}")
        assert status == 404
        status, _, _ = await client.post(
            f"spaces/{mine}/webhooks/{hook.id}/enabled",
            data={"csrf": client.csrf, "enabled": "false"},
        )
        assert status == 404
        status, _, _ = await client.get(f"spaces/{mine}/webhooks/not-a-uuid")
        assert status == 404
        status, html, _ = await client.get(
            f"spaces/{mine}/retry/confirm?webhook={hook.id}&start=&end="
        )
        assert status == 422 and "choose one of this space" in html
        status, _, _ = await client.get(f"spaces/{mine}/jobs/00000000-0000-0000-0000-000000000000")
        assert status == 404
    still = await store.get_webhook_by_id(hook.id)
    assert still is not None and still.enabled


async def test_a_complete_job_is_not_retried(console: Console) -> None:
    stack = console.stack
    space = stack.space()
    await stack.webhook(space, type="User", event="Created", url=URL, name="users")
    await stack.publisher.publish(
        {
            "event": {"type": "User", "action": "Created"},
            "space": {"slug": space},
            "user": {"username": "jane"},
        }
    )
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete"
    async with Client(console) as client:
        await client.login()
        path = f"spaces/{space}/jobs/{job['id']}"
        _, html, _ = await client.get(path)
        assert 'id="retry"' not in html
        status, _, headers = await client.post(f"{path}/retry", data={"csrf": client.csrf})
        assert status == 303
        _, html, _ = await client.get(headers["Location"].removeprefix("/console/"))
        assert re.search(r"cannot be retried: only Failed or Cancelled jobs are retried", html)


async def test_the_rate_limit_is_a_field_of_the_form(console: Console) -> None:
    store = console.stack.store
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        for bad in ("fast", "0", "-2"):
            status, html, _ = await client.post(
                f"spaces/{space}/webhooks", data=form(client, rateLimit=bad)
            )
            assert status == 422 and 'id="rateLimit-error"' in html, bad
            assert "deliveries per second above 0" in html
        status, _, headers = await client.post(
            f"spaces/{space}/webhooks", data=form(client, rateLimit=" 2.5 ")
        )
        assert status == 303
        created = await store.get_webhook(space, None, "User Created")
        assert created is not None and created.rate_limit == 2.5
        _, html, _ = await client.get(headers["Location"].removeprefix("/console/"))
        assert 'name="rateLimit" value="2.5"' in html
        status, _, _ = await client.post(
            f"spaces/{space}/webhooks/{created.id}", data=form(client, rateLimit="")
        )
        assert status == 303
        saved = await store.get_webhook_by_id(created.id)
        assert saved is not None and saved.rate_limit is None
