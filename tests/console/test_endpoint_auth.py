"""The webhook form's headers editor and credential inputs: what they save, what they
refuse (naming the field) and that no page ever shows a stored credential."""

from __future__ import annotations

import pytest
import trustme

from .conftest import Client, Console
from .test_webhooks import form

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

TOKEN = "tok.en-console-1"


async def test_headers_and_a_bearer_token_are_saved_and_the_token_never_shown(
    console: Console,
) -> None:
    store = console.stack.store
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks",
            data=form(
                client,
                url="https://x.test/hook",
                headers="X-Tenant: ${space('slug')}\n\nX-Team: blue\n",
                authStrategy="Bearer",
                **{"auth.token": TOKEN},
            ),
        )
        assert status == 303, html
        created = await store.get_webhook(space, None, "User Created")
        assert created is not None
        assert created.headers == {"X-Tenant": "${space('slug')}", "X-Team": "blue"}
        assert created.auth == {"token": TOKEN} and created.auth_set_at is not None
        path = f"spaces/{space}/webhooks/{created.id}"
        for page in (path, f"spaces/{space}/webhooks"):
            status, html, _ = await client.get(page)
            assert status == 200 and TOKEN not in html
        _, html, _ = await client.get(path)
        assert "Credentials are set (Bearer" in html
        assert "X-Tenant: ${space(&#39;slug&#39;)}\nX-Team: blue\n" in html

        # left blank, the token is kept; the headers editor takes JSON as well
        status, html, _ = await client.post(
            path,
            data=form(
                client, url="https://x.test/hook", headers='{"X-A": "1"}', authStrategy="Bearer"
            ),
        )
        assert status == 303, html
        saved = await store.get_webhook_by_id(created.id)
        assert saved is not None and saved.headers == {"X-A": "1"}
        assert saved.auth == {"token": TOKEN} and saved.auth_set_at == created.auth_set_at


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"headers": "no colon"}, "line 1: expected &#39;Name: value&#39;"),
        ({"headers": "Content-Type: text/plain"}, "Content-Type: set by the router"),
        ({"headers": '{"X-A": 1}'}, "names to text values"),
        ({"authStrategy": "Basic", "auth.username": "a:b", "auth.password": "p"}, "username"),
        ({"authStrategy": "mTLS"}, "is required for mTLS"),
    ],
)
async def test_bad_headers_or_credentials_are_refused_on_the_form(
    console: Console, fields: dict[str, str], words: str
) -> None:
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks", data=form(client, url="https://x.test/", **fields)
        )
        assert status == 422 and words in html, html
        assert "a:b" not in html, "typed credentials are not shown back"
        assert await console.stack.store.scope_webhooks(space, None) == []


async def test_an_mtls_certificate_and_key_are_taken_as_pem_text(console: Console) -> None:
    cert = trustme.CA().issue_cert("client.test")
    pem, key = cert.cert_chain_pems[0].bytes().decode(), cert.private_key_pem.bytes().decode()
    space = console.stack.space()
    async with Client(console) as client:
        await client.login()
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks",
            data=form(
                client,
                url="https://x.test/",
                authStrategy="mTLS",
                **{"auth.certificate": pem, "auth.key": pem},
            ),
        )
        assert status == 422 and "key: is not an unencrypted PEM private key" in html
        assert "PRIVATE KEY" not in html and "BEGIN CERTIFICATE" not in html
        status, html, _ = await client.post(
            f"spaces/{space}/webhooks",
            data=form(
                client,
                url="https://x.test/",
                authStrategy="mTLS",
                **{"auth.certificate": pem, "auth.key": key},
            ),
        )
        assert status == 303, html
        [hook] = await console.stack.store.scope_webhooks(space, None)
        assert hook.auth == {"certificate": pem, "key": key}
        _, html, _ = await client.get(f"spaces/{space}/webhooks/{hook.id}")
        assert "PRIVATE KEY" not in html and "BEGIN CERTIFICATE" not in html
