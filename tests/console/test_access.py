"""Access to the console with plain HTTP: sessions, the login form, CSRF, escaping, headers."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest

from .conftest import Client, Console

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    "path",
    ["", "spaces/acme/jobs?status=Failed", "spaces/acme/overview", "spaces/acme/webhooks"],
)
async def test_pages_without_a_session_go_to_the_login_form(console: Console, path: str) -> None:
    async with Client(console) as client:
        status, _, headers = await client.get(path)
    assert status == 303
    location = urlsplit(headers["Location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query)["next"] == ["/console/" + path]


async def test_json_and_posts_without_a_session_are_refused(console: Console) -> None:
    space = console.stack.space()
    hook = await console.stack.webhook(space, name="n", type="User", event="Created", url="/x")
    async with Client(console) as client:
        status, body, _ = await client.post("check", json={"kind": "filter", "text": "1"})
        assert status == 401 and orjson.loads(body)["error"]
        for path in (
            f"spaces/{space}/webhooks/{hook.id}/enabled",
            f"spaces/{space}/webhooks/{hook.id}/rotate",
            f"spaces/{space}/retry",
            "logout",
        ):
            status, _, _ = await client.post(path, data={"enabled": "false", "csrf": "x"})
            assert status == 401, path
        status, _, _ = await client.get(
            f"spaces/{space}/jobs", headers={"Accept": "application/json"}
        )
        assert status == 401
    after = await console.stack.store.get_webhook_by_id(hook.id)
    assert after is not None and after.enabled and after.secret == hook.secret


async def test_login_needs_a_token_the_api_accepts(console: Console) -> None:
    async with Client(console) as client:
        status, headers = await client.login("not-the-token")
        assert status == 401
        assert "console_session" not in headers.get("Set-Cookie", "")
        status, _, _ = await client.get("spaces/acme/jobs")
        assert status == 303

        status, headers = await client.login()
        assert status == 303
        cookie = next(c for c in headers.getall("Set-Cookie") if c.startswith("console_session="))
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "samesite", "path"} <= attributes
        assert "SameSite=Strict" in cookie and "Path=/console/" in cookie
        status, html, _ = await client.get("spaces/acme/jobs")
        assert status == 200 and "<h1>Jobs" in html


async def test_the_login_form_needs_its_own_nonce(console: Console) -> None:
    async with Client(console) as client:
        status, html, _ = await client.post(
            "login", data={"token": "test-token", "nonce": "made-up", "next": "/console/"}
        )
        assert status == 403 and "expired" in html
        status, _, _ = await client.get("spaces/acme/jobs")
        assert status == 303, "no session was opened"


async def test_posts_need_the_sessions_csrf_token(console: Console) -> None:
    space = console.stack.space()
    hook = await console.stack.webhook(space, name="csrf", type="User", event="Created", url="/x")
    path = f"spaces/{space}/webhooks/{hook.id}/enabled"
    async with Client(console) as client, Client(console) as other:
        await client.login()
        await other.login()
        assert client.csrf and other.csrf and client.csrf != other.csrf
        for data in ({"enabled": "false"}, {"enabled": "false", "csrf": other.csrf}):
            status, html, _ = await client.post(path, data=data)
            assert status == 403 and "CSRF" in html
        status, _, _ = await client.post("check", json={"kind": "filter", "text": "true"})
        assert status == 403
        unchanged = await console.stack.store.get_webhook_by_id(hook.id)
        assert unchanged is not None and unchanged.enabled

        status, _, _ = await client.post(path, data={"enabled": "false", "csrf": client.csrf})
        assert status == 303
        changed = await console.stack.store.get_webhook_by_id(hook.id)
        assert changed is not None and not changed.enabled
        status, body, _ = await client.post(
            "check",
            json={"kind": "filter", "text": "true"},
            headers={"X-CSRF-Token": client.csrf},
        )
        assert status == 200 and orjson.loads(body) == {"ok": True}


async def test_logout_ends_the_session(console: Console) -> None:
    async with Client(console) as client:
        _, headers = await client.login()
        found = re.search(r"console_session=([^;]+)", " ".join(headers.getall("Set-Cookie")))
        assert found is not None
        status, _, _ = await client.post("logout", data={"csrf": client.csrf})
        assert status == 303
        status, _, _ = await client.get("spaces/acme/jobs")
        assert status == 303
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as replay,
        replay.get(
            console.url("spaces/acme/jobs"),
            headers={"Cookie": f"console_session={found.group(1)}"},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 303, "the old session id opens nothing"


async def test_the_check_endpoint_points_at_the_parsers_position(console: Console) -> None:
    async with Client(console) as client:
        await client.login()
        headers = {"X-CSRF-Token": client.csrf}
        status, body, _ = await client.post(
            "check", json={"kind": "filter", "text": "values('Status') =="}, headers=headers
        )
        result = orjson.loads(body)
        assert status == 200 and result["ok"] is False
        assert result["position"] == 19 and result["line"] == 1 and result["column"] == 20
        assert result["message"].startswith("at position 19: expected")
        status, body, _ = await client.post(
            "check", json={"kind": "url", "text": "ftp://x/${form('slug')}"}, headers=headers
        )
        assert orjson.loads(body)["ok"] is False and "ftp" in orjson.loads(body)["message"]
        # It parses, but could never be sent: said as it is typed, as the save will say it.
        status, body, _ = await client.post(
            "check", json={"kind": "url", "text": "example/path"}, headers=headers
        )
        assert orjson.loads(body) == {
            "ok": False,
            "message": "The URL must start with '/' (a path on the workflow engine) or be an "
            "http:// or https:// URL, not 'example/path'.",
        }
        status, body, _ = await client.post("check", json={"kind": "sql"}, headers=headers)
        assert status == 400


async def test_everything_shown_is_escaped(console: Console) -> None:
    space = console.stack.space()
    hook = await console.stack.webhook(
        space,
        name="<script>alert('name')</script>",
        type="User",
        event="Created",
        url="/x/${user('username')}",
        filter="user('username') == '<img src=x onerror=alert(1)>'",
    )
    async with Client(console) as client:
        await client.login()
        for path in (f"spaces/{space}/webhooks", f"spaces/{space}/webhooks/{hook.id}"):
            status, html, _ = await client.get(path)
            assert status == 200
            assert "<script>alert" not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html
        status, html, _ = await client.get("spaces/%3Cb%3Ebold%3C%2Fb%3E/jobs")
        assert status == 200 and "<b>bold</b>" not in html and "&lt;b&gt;bold" in html


async def test_pages_carry_a_strict_content_security_policy(console: Console) -> None:
    async with Client(console) as client:
        await client.login()
        status, _, headers = await client.get("spaces/acme/jobs")
        assert status == 200
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        status, css, headers = await client.get("static/console.css")
        assert status == 200 and headers["Content-Type"].startswith("text/css") and ":root" in css
        status, _, _ = await client.get("static/..%2Fapp.py")
        assert status == 404


async def test_the_login_page_needs_no_session_and_static_files_are_public(
    console: Console,
) -> None:
    async with Client(console) as client:
        status, html, _ = await client.get("login")
        assert status == 200 and 'name="token"' in html and 'type="password"' in html
        assert re.search(r'name="nonce" value="[^"]{20,}"', html)
        status, _, _ = await client.get("static/console.js")
        assert status == 200
