"""Custom headers and auth strategies without services: what is refused (naming the field),
how header templates render, what Basic and Bearer send, and that an mTLS certificate and
key are checked and their SSL context kept until they change. The same paths run end to end
in tests/integration/test_endpoint_auth.py."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import orjson
import pytest
import trustme

from webhook_router.admin import Admin
from webhook_router.credentials import ClientCertificates, authorization, check_auth
from webhook_router.jobs import Delivery, Unreadable
from webhook_router.models import InputInvalid, Webhook, WebhookChange, WebhookWithSecret
from webhook_router.settings import Settings
from webhook_router.testing import MemoryStore, memory_topology
from webhook_router.webhooks import HEADERS_MAX, header_problems, match_one
from webhook_router.webhooks import Webhook as Definition

pytestmark = [pytest.mark.timeout(20)]

BODY = {"space": {"slug": "acme"}, "user": {"username": "jane doe/1"}}


def webhook(**fields: Any) -> Definition:
    base: dict[str, Any] = {
        "id": "1",
        "space": "acme",
        "kapp": None,
        "name": "h",
        "type": "User",
        "event": "Created",
        "filter": None,
        "url": "https://example.test/x",
    }
    return Definition(**(base | fields))


def mtls_material(ca: trustme.CA | None = None) -> dict[str, str]:
    cert = (ca or trustme.CA()).issue_cert("client.example")
    return {
        "certificate": cert.cert_chain_pems[0].bytes().decode(),
        "key": cert.private_key_pem.bytes().decode(),
    }


# headers


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "content-length",
        "HOST",
        "webhook-id",
        "Webhook-Timestamp",
        "webhook-signature",
        "Transfer-Encoding",
    ],
)
def test_a_header_the_router_sets_is_refused_by_name(name: str) -> None:
    [problem] = header_problems({name: "x"}, None)
    assert problem.startswith(f"{name}: set by the router")


def test_authorization_is_refused_only_where_a_strategy_sets_it() -> None:
    assert header_problems({"Authorization": "Token abc"}, None) == []
    assert header_problems({"Authorization": "Token abc"}, "Signature") == []
    for strategy in ("Basic", "Bearer"):
        [problem] = header_problems({"authorization": "x"}, strategy)
        assert f"set by the {strategy} auth strategy" in problem


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Bad Name": "x"}, "'Bad Name': a name is"),
        ({"": "x"}, "'': a name is"),
        ({"X-É": "x"}, "a name is"),
        ({"X-A": "a\r\nX-Injected: 1"}, "X-A: holds a control character"),
        ({"X-A": "a\nb"}, "control character"),
        ({"X-A": "a\x00b"}, "control character"),
        ({"X-A": "x" * 4097}, "at most 4096"),
        ({"X-A": "${user('username'"}, "X-A: at position"),
        ({"X-A": "1", "x-a": "2"}, "x-a: given twice"),
        ({f"X-{i}": "v" for i in range(HEADERS_MAX + 1)}, f"at most {HEADERS_MAX} headers"),
        ({f"X-{i}": "v" * 1000 for i in range(20)}, "names and values together"),
    ],
)
def test_bad_headers_are_refused_naming_the_header(headers: dict[str, str], words: str) -> None:
    problems = header_problems(headers, None)
    assert any(words in p for p in problems), problems


def test_good_headers_pass() -> None:
    headers = {"X-Tenant": "${space('slug')}", "Accept": "application/json", "X-Empty": ""}
    assert header_problems(headers, "Basic") == []


def test_header_templates_render_as_text_not_percent_encoded() -> None:
    hook = webhook(headers={"X-User": "${user('username')}", "X-Fixed": "a b"})
    match = match_one(hook, BODY, "http://engine")
    assert match is not None and match.error is None
    assert match.headers == {"X-User": "jane doe/1", "X-Fixed": "a b"}
    assert match.url == "https://example.test/x"


def test_the_engine_gets_the_headers_too() -> None:
    match = match_one(webhook(url="/run", headers={"X-A": "1"}), BODY, "http://engine")
    assert match is not None and match.to_engine and match.headers == {"X-A": "1"}


def test_a_rendered_line_break_fails_the_job_naming_the_header() -> None:
    body = {"user": {"username": "jane\r\nX-Injected: yes"}}
    match = match_one(webhook(headers={"X-User": "${user('username')}"}), body, "http://e")
    assert match is not None and match.url is None
    assert match.error is not None and match.error.startswith("header X-User failed")
    assert "control character" in match.error


def test_a_delivery_whose_headers_are_not_strings_is_unreadable_alone() -> None:
    good = {
        "job_id": "j",
        "event_id": "e",
        "event_at": "2024-01-01T00:00:00+00:00",
        "webhook_id": "w",
        "webhook_name": "n",
        "space": "s",
        "scope_type": "Space",
        "scope_id": "s",
        "type": "User",
        "action": "Created",
        "parent_type": "User",
        "parent_id": None,
        "tree_group": "g",
        "tree_name": "t",
        "url": "http://x",
        "body": "{}",
        "headers": {"X-A": "1"},
    }
    decoded = Delivery.decode_each(orjson.dumps([good, good | {"headers": {"X-A": 1}}]))
    assert isinstance(decoded[0], Delivery) and decoded[0].headers == {"X-A": "1"}
    assert isinstance(decoded[1], Unreadable) and "headers" in decoded[1].reason


# credentials


def test_basic_and_bearer_become_the_authorization_header() -> None:
    basic = authorization("Basic", {"username": "jane", "password": "pä:ss"})
    assert basic == "Basic " + base64.b64encode("jane:pä:ss".encode()).decode()
    assert authorization("Bearer", {"token": "abc.def"}) == "Bearer abc.def"


@pytest.mark.parametrize(
    ("strategy", "auth", "words"),
    [
        ("Basic", None, "is required for Basic: username, password"),
        ("Basic", {"username": "jane"}, "password: is required"),
        ("Basic", {"username": "a:b", "password": "p"}, "username: must not contain ':'"),
        ("Basic", {"username": "", "password": "p"}, "username: must not be empty"),
        ("Basic", {"username": "u", "password": "p\r\n"}, "password: must not contain control"),
        ("Bearer", {"token": "a b"}, "token: must be visible ASCII"),
        ("Bearer", {"token": "t" * 4097}, "token: must be at most 4096"),
        ("Bearer", {"token": "t", "username": "u"}, "username: not a Bearer credential"),
        (None, {"token": "t"}, "must be null: authStrategy null takes none"),
        ("Signature", {"token": "t"}, "authStrategy Signature takes none"),
        ("mTLS", {"certificate": "not a pem", "key": "x"}, "certificate: is not a PEM"),
    ],
)
def test_wrong_credentials_are_refused_naming_them(
    strategy: str | None, auth: dict[str, str] | None, words: str
) -> None:
    errors = check_auth(strategy, auth)
    assert errors and all(e["field"] == "auth" for e in errors)
    assert any(words in e["message"] for e in errors), errors


def test_an_mtls_key_must_parse_and_belong_to_the_certificate() -> None:
    ca = trustme.CA()
    good, other = mtls_material(ca), mtls_material(ca)
    assert check_auth("mTLS", good) == []
    [mismatch] = check_auth("mTLS", good | {"key": other["key"]})
    assert mismatch["message"] == "key: does not belong to the certificate"
    [junk] = check_auth("mTLS", good | {"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"})
    assert junk["message"].startswith("key: is not an unencrypted PEM private key")
    [swapped] = check_auth("mTLS", {"certificate": good["key"], "key": good["key"]})
    assert swapped["message"] == "certificate: is not a PEM certificate"


def test_client_contexts_are_kept_per_webhook_until_the_material_changes() -> None:
    certificates = ClientCertificates()
    first = mtls_material()
    context = certificates.context("w1", first)
    assert certificates.context("w1", dict(first)) is context
    renewed = certificates.context("w1", mtls_material())
    assert renewed is not context
    certificates.context("w2", first)
    certificates.forget_except({"w2"})
    assert len(certificates) == 1
    assert certificates.context("w2", first) is not renewed


# the admin actions on the in-memory store


@pytest.mark.asyncio(loop_scope="session")
async def test_auth_is_stored_never_shown_and_kept_until_the_strategy_changes() -> None:
    settings = Settings(engine_url="http://127.0.0.1:9")
    store = MemoryStore()
    admin = Admin(settings, store, topology=memory_topology(settings.names))
    users = {"name": "u", "type": "User", "event": "Created", "url": "https://x.test/u"}
    change = WebhookChange.parse(
        users | {"authStrategy": "Basic", "auth": {"username": "jane", "password": "s3cret"}}
    )
    created = await admin.create_webhook("acme", None, change, by="test")
    assert created.auth == {"username": "jane", "password": "s3cret"}
    for model in (Webhook, WebhookWithSecret):
        wire = model.of(created).wire()
        assert "auth" not in wire and wire["authSetAt"] is not None
        assert "s3cret" not in orjson.dumps(wire).decode()
    set_at = created.auth_set_at

    kept = await admin.update_webhook(
        created, WebhookChange.parse({"url": "https://y.test"}), by="t"
    )
    assert kept.auth == created.auth and kept.auth_set_at == set_at

    with pytest.raises(InputInvalid) as refused:
        await admin.update_webhook(kept, WebhookChange.parse({"authStrategy": "Bearer"}), by="t")
    assert refused.value.errors == [{"field": "auth", "message": "is required for Bearer: token"}]
    assert (await store.get_webhook_by_id(kept.id)) == kept, "nothing saved"

    signed = await admin.update_webhook(
        kept, WebhookChange.parse({"authStrategy": "Signature"}), by="t"
    )
    assert signed.auth is None and signed.auth_set_at is None

    with pytest.raises(InputInvalid) as bad_pem:
        await admin.update_webhook(
            signed,
            WebhookChange.parse({"authStrategy": "mTLS", "auth": {"certificate": "x", "key": "y"}}),
            by="t",
        )
    assert bad_pem.value.errors[0]["field"] == "auth"
    assert "certificate: is not a PEM certificate" in bad_pem.value.errors[0]["message"]

    with pytest.raises(InputInvalid) as reserved:
        await admin.update_webhook(
            signed, WebhookChange.parse({"headers": {"Content-Type": "text/plain"}}), by="t"
        )
    assert [e["field"] for e in reserved.value.errors] == ["headers"]


def test_headers_and_auth_must_be_objects_of_strings() -> None:
    for field in ("headers", "auth"):
        with pytest.raises(InputInvalid) as exc:
            WebhookChange.parse({field: {"X": 1}})
        assert exc.value.errors == [
            {"field": field, "message": "must be an object of names to text values"}
        ]


# the worker's side, on the in-memory store


@pytest.mark.asyncio(loop_scope="session")
async def test_the_worker_sends_the_credentials_the_webhook_holds_when_it_posts() -> None:
    from webhook_router.worker import Worker

    store = MemoryStore()
    worker = Worker(Settings(engine_url="http://127.0.0.1:9"), store)
    hook = await store.insert_webhook(
        space="acme",
        kapp=None,
        name="h",
        type="User",
        event="Created",
        filter=None,
        url="https://x.test/",
        auth_strategy="Bearer",
        auth={"token": "t1"},
    )
    assert hook is not None
    await worker.cache.reload()
    delivery = Delivery(
        *("j", "e", "2024-01-01T00:00:00+00:00", hook.id, "h", "acme", "Space", "acme"),
        *("User", "Created", "User", None, "g", "t", "https://x.test/", "{}"),
        auth_strategy="Bearer",
        headers={"X-A": "1"},
    )
    sent = await worker.headers_for(delivery, b"{}")
    assert sent == {
        "X-A": "1",
        "Content-Type": "application/json",
        "webhook-id": "j",
        "Authorization": "Bearer t1",
    }
    assert await worker.tls_for(delivery) is None, "no client certificate but for mTLS"

    engine = replace(delivery, to_engine=True)
    assert "Authorization" not in await worker.headers_for(engine, b"{}")

    basic = replace(hook, auth_strategy="Basic", auth={"username": "u", "password": "p"})
    await store.update_webhook(basic, auth_given=True)
    await worker.cache.reload()
    with pytest.raises(LookupError, match="no longer holds Bearer credentials"):
        await worker.headers_for(delivery, b"{}")

    await store.delete_webhook(hook.id)
    await worker.cache.reload()
    with pytest.raises(LookupError, match="its webhook was deleted"):
        await worker.headers_for(delivery, b"{}")


@pytest.mark.parametrize("strategy", [None, "Signature"])
@pytest.mark.parametrize("auth", [{}, {"token": "t"}])
def test_a_strategy_without_credentials_refuses_any_auth_even_an_empty_one(
    strategy: str | None, auth: dict[str, str]
) -> None:
    """Found by the schema fuzz: `{}` with Signature was saved although the document says
    `auth` must be null there."""
    [error] = check_auth(strategy, auth)
    assert error["field"] == "auth" and error["message"].startswith("must be null")
