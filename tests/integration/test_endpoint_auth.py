"""Custom headers and auth strategies end to end, on the real services: webhooks made through
the API, events through the broker, and receivers on 127.0.0.1 that check what arrived
(headers, Basic and Bearer credentials, the client certificate over TLS). The credentials
are written once and never read back by any front end."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import trustme
from aiohttp import web

from ..conftest import eventually, free_port
from .conftest import Stack, answer_app, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRETS = ("s3cret-pässword", "tok.en-123", "PRIVATE KEY")
"""Text of the credentials these tests set: no answer of any front end may hold it."""


def hooks(space: str) -> str:
    return f"/app/api/v1/spaces/{space}/webhooks"


def user_created(space: str, username: str = "jane") -> dict[str, Any]:
    return event_for(space, "User", "Created", user={"username": username})


def shows_no_secret(answer: Any) -> bool:
    text = orjson.dumps(answer).decode()
    return not any(s in text for s in SECRETS) and '"auth"' not in text


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.requests.append((dict(request.headers), peer))
        return web.json_response({})


@asynccontextmanager
async def receiver(handler: Handler) -> AsyncIterator[str]:
    runner, url = await answer_app(handler)
    try:
        yield url
    finally:
        await runner.cleanup()


async def create(stack: Stack, space: str, url: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "hook", "type": "User", "event": "Created", "url": url, **fields}
    status, answer = await stack.api("POST", hooks(space), json=body)
    assert status == 201, answer
    assert shows_no_secret(answer)
    hook: dict[str, Any] = answer["webhook"]
    await stack.synced()
    await eventually(_worker_holds(stack, hook["id"]), timeout=10)
    return hook


def _worker_holds(stack: Stack, webhook_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return webhook_id in stack.worker.cache.by_id

    return check


async def test_templated_headers_and_basic_credentials_arrive_and_are_never_shown(
    stack: Stack,
) -> None:
    recorder = Recorder()
    space = stack.space()
    async with receiver(recorder.handle) as url:
        hook = await create(
            stack,
            space,
            url + "/hook",
            headers={"X-Tenant": "${space('slug')}", "X-User": "${user('username')}"},
            authStrategy="Basic",
            auth={"username": "router", "password": "s3cret-pässword"},
        )
        assert hook["authStrategy"] == "Basic" and hook["authSetAt"] is not None
        await stack.publisher.publish(user_created(space, "jane doe/ü"))
        [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete", job["summary"]
    [(headers, _)] = recorder.requests
    assert headers["X-Tenant"] == space
    assert headers["X-User"] == "jane doe/ü", "rendered as text, not percent-encoded"
    pair = base64.b64encode("router:s3cret-pässword".encode()).decode()
    assert headers["Authorization"] == f"Basic {pair}"
    assert "webhook-signature" not in headers

    [attempt] = await stack.store.job_attempts(str(job["id"]))
    assert attempt.request_headers["Authorization"] == "Basic (hidden)"
    assert attempt.request_headers["X-User"] == "jane doe/ü"

    one = f"{hooks(space)}/hook"
    for path in (one, hooks(space)):
        status, answer = await stack.api("GET", path)
        assert status == 200 and shows_no_secret(answer), answer
    status, answer = await stack.api("GET", one)
    assert answer["webhook"]["headers"] == {
        "X-Tenant": "${space('slug')}",
        "X-User": "${user('username')}",
    }
    assert answer["webhook"]["authSetAt"] == hook["authSetAt"]
    status, answer = await stack.api("GET", f"/app/api/v1/spaces/{space}/webhookJobs/{job['id']}")
    assert status == 200 and shows_no_secret(answer)


async def test_bearer_credentials_are_looked_up_when_sent_so_a_new_token_takes_over(
    stack: Stack,
) -> None:
    recorder = Recorder()
    space = stack.space()
    async with receiver(recorder.handle) as url:
        hook = await create(
            stack, space, url + "/hook", authStrategy="Bearer", auth={"token": "tok.en-123"}
        )
        await stack.publisher.publish(user_created(space))
        await stack.settled(space, 1)

        status, answer = await stack.api(
            "PUT", f"{hooks(space)}/hook", json={"auth": {"token": "tok.en-456"}}
        )
        assert status == 200 and "tok.en-456" not in orjson.dumps(answer).decode()
        assert answer["webhook"]["authSetAt"] > hook["authSetAt"]

        async def worker_has_new_token() -> bool:
            held = stack.worker.cache.by_id.get(hook["id"])
            return held is not None and held.auth == {"token": "tok.en-456"}

        assert await eventually(worker_has_new_token, timeout=10)
        await stack.publisher.publish(user_created(space, "joe"))
        await stack.settled(space, 2)
    assert [h["Authorization"] for h, _ in recorder.requests] == [
        "Bearer tok.en-123",
        "Bearer tok.en-456",
    ]


async def test_the_engine_gets_the_headers_but_never_the_credentials(stack: Stack) -> None:
    space = stack.space()
    await create(
        stack,
        space,
        "/app/api/v1/run-tree/Kinetic%20Request%20CE/Users/Created",
        headers={"X-Tenant": "${space('slug')}"},
        authStrategy="Bearer",
        auth={"token": "tok.en-123"},
    )
    await stack.publisher.publish(user_created(space))
    [job] = await stack.settled(space, 1)
    assert job["status"] == "Complete", job["summary"]
    [post] = stack.received_for(space)
    assert post.headers["X-Tenant"] == space
    assert "Authorization" not in post.headers


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"headers": {"Content-Type": "text/plain"}}, "headers", "set by the router"),
        ({"headers": {"webhook-id": "x"}}, "headers", "set by the router"),
        ({"headers": {"Host": "x"}}, "headers", "set by the router"),
        (
            {"headers": {"Authorization": "x"}, "authStrategy": "Bearer", "auth": {"token": "t"}},
            "headers",
            "set by the Bearer auth strategy",
        ),
        ({"headers": {"X-A": "a\r\nb"}}, "headers", "control character"),
        ({"headers": {"bad name": "x"}}, "headers", "a name is"),
        ({"headers": ["X-A: b"]}, "headers", "object of names"),
        ({"authStrategy": "Basic"}, "auth", "is required for Basic"),
        ({"authStrategy": "Bearer", "auth": {"password": "p"}}, "auth", "not a Bearer"),
        ({"auth": {"token": "t"}}, "auth", "takes none"),
        (
            {"authStrategy": "mTLS", "auth": {"certificate": "nope", "key": "nope"}},
            "auth",
            "certificate: is not a PEM certificate",
        ),
        ({"authStrategy": "Digest"}, "authStrategy", "one of"),
    ],
)
async def test_bad_headers_and_credentials_get_422_naming_the_field(
    stack: Stack, fields: dict[str, Any], field: str, words: str
) -> None:
    space = stack.space()
    body = {"name": "h", "type": "User", "event": "Created", "url": "https://x.test/", **fields}
    status, answer = await stack.api("POST", hooks(space), json=body)
    assert status == 422, answer
    assert {e["field"] for e in answer["errors"]} == {field}, answer
    assert any(words in e["message"] for e in answer["errors"]), answer
    assert await stack.store.scope_webhooks(space, None) == [], "nothing saved"


# mTLS


class Tls:
    """A CA, a receiver's certificate for 127.0.0.1 and a client certificate, made here."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1")
        self.client = self.ca.issue_cert("router.client.test")
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        """Serving 127.0.0.1, requiring a client certificate of this CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def material(self, cert: trustme.LeafCert | None = None) -> dict[str, str]:
        cert = cert or self.client
        return {
            "certificate": cert.cert_chain_pems[0].bytes().decode(),
            "key": cert.private_key_pem.bytes().decode(),
        }


@asynccontextmanager
async def tls_receiver(handler: Handler, context: ssl.SSLContext) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_mtls_presents_the_client_certificate_a_receiver_requires(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = Tls(tmp_path)
    # the worker verifies the receiver as any server: with the default trust store, here
    # pointed at this test's CA through OpenSSL's own variable
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    recorder = Recorder()
    space = stack.space()
    async with tls_receiver(recorder.handle, tls.server_context()) as url:
        hook = await create(stack, space, url + "/hook", authStrategy="mTLS", auth=tls.material())
        assert hook["authSetAt"] is not None
        await stack.publisher.publish(user_created(space))
        [job] = await stack.settled(space, 1)
        assert job["status"] == "Complete", job["summary"]
        [(headers, peer)] = recorder.requests
        assert peer["subjectAltName"] == (("DNS", "router.client.test"),), peer
        assert "Authorization" not in headers

        # the same receiver refuses a client without a certificate
        trusting = ssl.create_default_context(cafile=str(tls.ca_file))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url + "/hook", json={}, ssl=trusting) as answer:
                    await answer.read()
        assert len(recorder.requests) == 1

        # and a webhook whose certificate another CA issued gets no request in
        other = trustme.CA().issue_cert("stranger.test")
        await create(
            stack,
            space,
            url + "/stranger",
            name="stranger",
            authStrategy="mTLS",
            auth=tls.material(other),
        )
        await stack.publisher.publish(user_created(space, "joe"))
        rows = await stack.settled(space, 3, timeout=30)
    [failed] = [r for r in rows if r["webhook_name"] == "stranger"]
    assert failed["status"] == "Failed", failed["summary"]
    assert failed["response_status"] is None, "refused at the TLS layer, never answered"
    assert len(recorder.requests) == 2, "only the webhook with the right certificate got in"
    assert all(h.get("webhook-id") != str(failed["id"]) for h, _ in recorder.requests)

    status, answer = await stack.api("GET", f"{hooks(space)}/hook")
    assert status == 200 and shows_no_secret(answer)
    status, answer = await stack.api("GET", f"{hooks(space)}/{quote('stranger')}")
    assert status == 200 and shows_no_secret(answer)


# the command line


async def test_the_cli_sets_headers_and_credentials_and_never_prints_them(
    stack: Stack, tmp_path: Path
) -> None:
    from .test_cli import cli

    space = stack.space()
    tls = Tls(tmp_path)
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    material = tls.material()
    cert_file.write_text(material["certificate"])
    key_file.write_text(material["key"])
    scope = ("--space", space)
    code, out, err = await cli(
        stack.settings,
        *("webhooks", "create", *scope, "--name", "h", "--type", "User", "--event", "Created"),
        *("--url", "https://x.test/", "--header", "X-Tenant: ${space('slug')}"),
        *("--header", "X-Empty:", "--auth-strategy", "mTLS"),
        *("--auth-certificate", str(cert_file), "--auth-key", str(key_file)),
    )
    assert code == 0, err
    created = json.loads(out)["webhook"]
    assert created["headers"] == {"X-Tenant": "${space('slug')}", "X-Empty": ""}
    assert created["authSetAt"] is not None and shows_no_secret(created)
    stored = await stack.store.get_webhook(space, None, "h")
    assert stored is not None and stored.auth == material

    for args in (("webhooks", "show", *scope, "h"), ("webhooks", "list", *scope, "--json")):
        code, out, err = await cli(stack.settings, *args)
        assert code == 0 and shows_no_secret(json.loads(out)), out

    code, out, err = await cli(
        stack.settings,
        *("webhooks", "update", *scope, "h", "--auth-key", str(cert_file)),
        *("--auth-certificate", str(cert_file)),
    )
    assert code == 2 and "auth: key: is not an unencrypted PEM private key" in err, err
    code, out, err = await cli(
        stack.settings, "webhooks", "update", *scope, "h", "--auth-key", str(key_file)
    )
    assert code == 2 and "auth: certificate: is required" in err, "auth is replaced whole"
    code, out, err = await cli(
        stack.settings, "webhooks", "update", *scope, "h", "--header", "no colon here"
    )
    assert code == 2 and "expected 'Name: value'" in err, err
    code, out, err = await cli(
        stack.settings,
        *("webhooks", "update", *scope, "h", "--header", "Content-Type: text/plain"),
    )
    assert code == 2 and "headers: Content-Type: set by the router" in err, err
    assert await stack.store.get_webhook(space, None, "h") == stored, "nothing saved"

    code, out, err = await cli(
        stack.settings,
        *("webhooks", "update", *scope, "h", "--no-headers", "--auth-strategy", "Basic"),
        *("--auth-username", "router", "--auth-password", "s3cret-pässword"),
    )
    assert code == 0, err
    assert json.loads(out)["webhook"]["headers"] == {} and shows_no_secret(json.loads(out))
    basic = await stack.store.get_webhook(space, None, "h")
    assert basic is not None and basic.auth == {"username": "router", "password": "s3cret-pässword"}

    # back to no strategy and no credentials: the nullable fields have --no-... options
    code, out, err = await cli(
        stack.settings,
        *("webhooks", "update", *scope, "h", "--no-auth-strategy", "--no-auth"),
    )
    assert code == 0, err
    assert json.loads(out)["webhook"]["authStrategy"] is None
    plain = await stack.store.get_webhook(space, None, "h")
    assert plain is not None and plain.auth_strategy is None and plain.auth is None
