"""The console's audit page: its own changes listed with the console as actor, no secret."""

from __future__ import annotations

import uuid

import pytest

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


async def test_a_change_in_the_console_shows_on_its_audit_page(console: Console) -> None:
    space = f"space-{uuid.uuid4().hex[:8]}"
    hook = await console.stack.store.insert_webhook(
        space=space, kapp=None, name="audited", type="User", event="Created", filter=None,
        url="http://127.0.0.1:9/never", auth_strategy="Signature",
    )  # fmt: skip
    assert hook is not None and hook.secret is not None
    async with Client(console) as client:
        status, _ = await client.login()
        assert status == 303
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks/{hook.id}/enabled",
            data={"enabled": "false", "csrf": client.csrf},
        )
        assert status == 303, html
        status, html, _ = await client.get(f"spaces/{space}/audit")
    assert status == 200, html
    [table] = html.split('<table class="list" id="audit">')[1:]
    rows = table.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 1, rows
    assert "token:settings" in rows[0] and "webhook.disabled" in rows[0], (
        "the console acts as its token"
    )
    assert "webhooks/audited" in rows[0]
    assert hook.secret not in html and "whsec_" not in html
