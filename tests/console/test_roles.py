"""The console by role and space, over plain HTTP: a reader sees no edit, retry or secret
controls and the server refuses those actions; a token of one space sees nothing of
another; a revoked token's session ends; others' wrong tokens never lock out a browser
that logged in before."""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import pytest

from tests.integration.conftest import Stack
from tests.integration.test_api import NOWHERE, user_created
from webhook_router.admin import Admin
from webhook_router.rights import Role

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def make_token(stack: Stack, role: Role, *spaces: str) -> tuple[str, str]:
    name = f"console-{role.value}-{uuid.uuid4().hex[:8]}"
    _, token = await Admin(stack.settings, stack.store).create_token(
        name, role, list(spaces), by="test"
    )
    return name, token


async def failed_job(stack: Stack, space: str) -> tuple[str, str]:
    """(webhook id, job id) of a Failed job in `space`."""
    hook = await stack.webhook(space, name="fails", type="User", event="Created", url=NOWHERE)
    await stack.publisher.publish(user_created(space, "u"))
    [row] = await stack.settled(space, 1)
    assert row["status"] == "Failed"
    return hook.id, str(row["id"])


def from_address(client: Client, address: str) -> None:
    """Send the client's requests from another loopback address (a throttle of its own)."""
    client.session = aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(local_addr=(address, 0)),
    )


async def test_a_reader_sees_no_edit_retry_or_secret_controls_and_cannot_use_them(
    console: Console,
) -> None:
    stack = console.stack
    space = stack.space()
    hook_id, job_id = await failed_job(stack, space)
    hook = await stack.store.get_webhook_by_id(hook_id)
    assert hook is not None
    _, token = await make_token(stack, Role.READER, space)
    async with Client(console) as client:
        assert (await client.login(token))[0] == 303
        status, html, _ = await client.get(f"spaces/{space}/webhooks")
        assert status == 200 and "fails" in html
        assert "New webhook" not in html and "/enabled" not in html and "Bulk retry" not in html
        status, html, _ = await client.get(f"spaces/{space}/webhooks/{hook_id}")
        assert status == 200 and 'value="fails"' in html
        assert 'id="save"' not in html and 'id="rotate"' not in html
        assert 'id="secret"' not in html and hook.secret not in html
        assert 'method="post" class="webhook"' not in html
        status, html, _ = await client.get(f"spaces/{space}/jobs/{job_id}")
        assert status == 200 and "Failed" in html and 'id="retry"' not in html
        status, body, _ = await client.post(
            "check",
            json={"kind": "url", "text": "/x"},
            headers={"X-CSRF-Token": client.csrf, "Accept": "application/json"},
        )
        assert status == 200 and '"ok":true' in body, "the page's URL check reads, changes nothing"

        csrf = {"csrf": client.csrf}
        for path, data in (
            (f"spaces/{space}/jobs/{job_id}/retry", csrf),
            (f"spaces/{space}/webhooks/{hook_id}/rotate", csrf),
            (f"spaces/{space}/webhooks/{hook_id}/enabled", csrf | {"enabled": "false"}),
            (f"spaces/{space}/webhooks/{hook_id}", csrf | {"name": "renamed"}),
            (f"spaces/{space}/retry", csrf | {"webhook": hook_id}),
        ):
            status, html, _ = await client.post(path, data=data)
            assert status == 403 and "lacks the right &#39;write&#39;" in html, path
        for path in (f"spaces/{space}/retry", f"spaces/{space}/webhooks/new"):
            assert (await client.get(path))[0] == 403, path
    after = await stack.store.get_webhook_by_id(hook_id)
    assert after is not None and (after.name, after.enabled, after.secret) == (
        "fails",
        True,
        hook.secret,
    )
    [row] = await stack.jobs(space)
    assert (row["status"], row["replay"]) == ("Failed", 0)


async def test_a_publisher_logs_in_and_reads_nothing(console: Console) -> None:
    space = console.stack.space()
    _, token = await make_token(console.stack, Role.PUBLISHER, space)
    async with Client(console) as client:
        status, html, _ = await client.get("login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', html)
        assert nonce is not None
        data = {"token": token, "nonce": nonce.group(1), "next": "/console/"}
        assert (await client.post("login", data=data))[0] == 303
        status, html, _ = await client.get(f"spaces/{space}/jobs")
        assert status == 403 and "&#39;read&#39;" in html


async def test_a_token_of_one_space_sees_nothing_of_another_in_the_console(
    console: Console,
) -> None:
    stack = console.stack
    mine, theirs = stack.space(), stack.space()
    await stack.webhook(mine, name="mine", type="User", event="Created", url=NOWHERE)
    hook_id, job_id = await failed_job(stack, theirs)
    _, token = await make_token(stack, Role.ADMIN, mine)
    async with Client(console) as client:
        assert (await client.login(token))[0] == 303
        status, html, _ = await client.get(f"spaces/{mine}/jobs")
        assert status == 200 and theirs not in html, "the space list shows only its spaces"
        for path in (
            f"spaces/{theirs}/jobs",
            f"spaces/{theirs}/jobs/{job_id}",
            f"spaces/{theirs}/webhooks",
            f"spaces/{theirs}/webhooks/{hook_id}",
            f"spaces/{theirs}/overview",
            f"spaces/{theirs}/retry/confirm?webhook={hook_id}",
            f"spaces/{mine}/jobs/{job_id}",
            f"spaces/{mine}/webhooks/{hook_id}",
        ):
            status, html, _ = await client.get(path)
            assert status == 404 and hook_id not in html, path
        csrf = {"csrf": client.csrf}
        for path, data in (
            (f"spaces/{theirs}/retry", csrf | {"webhook": hook_id}),
            (f"spaces/{theirs}/jobs/{job_id}/retry", csrf),
            (f"spaces/{mine}/jobs/{job_id}/retry", csrf),
        ):
            assert (await client.post(path, data=data))[0] == 404, path
        status, _, headers = await client.post(
            f"spaces/{mine}/retry", data=csrf | {"webhook": hook_id}
        )
        assert status == 303 and "/retry" in headers["Location"], "refused: not of this space"
    [row] = await stack.jobs(theirs)
    assert (row["status"], row["replay"]) == ("Failed", 0), "nothing of theirs was retried"


async def test_a_revoked_tokens_session_ends(console: Console) -> None:
    stack = console.stack
    space = stack.space()
    name, token = await make_token(stack, Role.READER, space)
    async with Client(console) as client:
        assert (await client.login(token))[0] == 303
        assert (await client.get(f"spaces/{space}/jobs"))[0] == 200
        await Admin(stack.settings, stack.store).revoke_token(name, by="test")
        await asyncio.sleep(0.6)
        status, _, headers = await client.get(f"spaces/{space}/jobs")
        assert status == 303 and "/console/login" in headers["Location"]
        assert (await client.login(token))[0] == 401


async def test_wrong_tokens_from_an_address_do_not_lock_out_a_browser_known_here(
    console: Console,
) -> None:
    address = "127.0.0.2"
    async with Client(console) as known, Client(console) as guesser:
        for client in (known, guesser):
            await client.session.close()
            from_address(client, address)
        assert (await known.login())[0] == 303, "a first login gives the browser its cookie"
        assert (await known.post("logout", data={"csrf": known.csrf}))[0] == 303
        for _ in range(10):
            assert (await guesser.login("wrong"))[0] == 401
        assert (await guesser.login("wrong"))[0] == 429
        assert (await guesser.login())[0] == 429, "the guessing browser is locked out"
        assert (await known.login())[0] == 303, "the known browser is not"
