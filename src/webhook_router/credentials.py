"""What a webhook's endpoint asks of the router to let a delivery in: an auth strategy and
its credentials, checked before they are saved and presented by the worker.

`Basic` and `Bearer` become the `Authorization` header; `mTLS` becomes the client
certificate of an SSL context, built once per webhook and kept while its material is the
same (`ClientCertificates`). `Signature` (signing.py) takes no credentials. The material is
write-only on every front end (the models show only when it was set) and never travels in a
delivery message: the worker looks it up by webhook id in its webhook cache.

Checking a key needs OpenSSL to load it, which reads files only: certificate and key are
written to a private temporary directory for the moment they are loaded, then removed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import tempfile
from collections.abc import Container, Mapping

STRATEGIES: tuple[str | None, ...] = (None, "Signature", "Basic", "Bearer", "mTLS")
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "Basic": ("username", "password"),
    "Bearer": ("token",),
    "mTLS": ("certificate", "key"),
}
"""The credentials each strategy takes, all required; the others take none."""
FILE_FIELDS = frozenset({"certificate", "key"})
"""Credentials given as PEM text (the CLI reads them from files)."""
SETS_AUTHORIZATION = frozenset({"Basic", "Bearer"})
LIMITS = {"username": 256, "password": 1024, "token": 4096, "certificate": 65536, "key": 16384}
"""Longest credential of each kind, in characters."""

Errors = list[dict[str, str]]


class CredentialsInvalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _controls(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def _check_value(name: str, value: str) -> str | None:
    if len(value) > LIMITS[name]:
        return f"must be at most {LIMITS[name]} characters"
    if name in FILE_FIELDS:
        if "\x00" in value:
            return "must not contain NUL characters"
        return None if value.strip() else "must not be empty"
    if _controls(value):
        return "must not contain control characters (CR, LF, NUL...)"
    if name == "username":
        if not value:
            return "must not be empty"
        if ":" in value:
            return "must not contain ':' (Basic authentication separates the password with it)"
    if name == "token" and (not value or not all(0x21 <= ord(c) <= 0x7E for c in value)):
        return "must be visible ASCII characters without spaces"
    return None


def check_auth(strategy: str | None, auth: Mapping[str, str] | None) -> Errors:
    """What is wrong with `auth` as the credentials of `strategy`, as field errors; a
    certificate and key are loaded by OpenSSL to see that they parse and belong together."""
    fields = AUTH_FIELDS.get(strategy or "")
    if fields is None:
        if auth is not None:
            shown = strategy or "null"
            return [{"field": "auth", "message": f"must be null: authStrategy {shown} takes none"}]
        return []
    if auth is None:
        return [{"field": "auth", "message": f"is required for {strategy}: {', '.join(fields)}"}]
    errors: Errors = [
        {"field": "auth", "message": f"{k}: not a {strategy} credential ({', '.join(fields)})"}
        for k in sorted(set(auth) - set(fields))
    ]
    errors += [{"field": "auth", "message": f"{k}: is required"} for k in fields if k not in auth]
    errors += [
        {"field": "auth", "message": f"{k}: {problem}"}
        for k in fields
        if k in auth and (problem := _check_value(k, auth[k]))
    ]
    if not errors and strategy == "mTLS":
        try:
            client_context(auth["certificate"], auth["key"])
        except CredentialsInvalid as exc:
            errors.append({"field": "auth", "message": f"{exc.field}: {exc.message}"})
    return errors


def authorization(strategy: str, auth: Mapping[str, str]) -> str:
    """The `Authorization` header of Basic or Bearer credentials."""
    if strategy == "Basic":
        pair = f"{auth['username']}:{auth['password']}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return "Bearer " + auth["token"]


def client_context(certificate: str, key: str) -> ssl.SSLContext:
    """An SSL context verifying servers as by default and presenting this client
    certificate; CredentialsInvalid naming `certificate` or `key` when one does not load."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        ssl.create_default_context().load_verify_locations(cadata=certificate)
    except (ssl.SSLError, ValueError, TypeError):
        raise CredentialsInvalid("certificate", "is not a PEM certificate") from None
    with tempfile.TemporaryDirectory(prefix="webhook-router-") as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for path, text in ((cert_path, certificate), (key_path, key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        try:
            # a password callback, so that an encrypted key fails instead of prompting
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or ""
            if "KEY_VALUES_MISMATCH" in reason or "mismatch" in str(exc).lower():
                raise CredentialsInvalid("key", "does not belong to the certificate") from None
            raise CredentialsInvalid(
                "key", "is not an unencrypted PEM private key for the certificate"
            ) from None
    return context


class ClientCertificates:
    """One SSL context per mTLS webhook, rebuilt when its certificate or key changes."""

    def __init__(self) -> None:
        self._contexts: dict[str, tuple[bytes, ssl.SSLContext]] = {}

    def context(self, webhook_id: str, auth: Mapping[str, str]) -> ssl.SSLContext:
        material = f"{auth['certificate']}\x00{auth['key']}".encode()
        fingerprint = hashlib.sha256(material).digest()
        held = self._contexts.get(webhook_id)
        if held is not None and held[0] == fingerprint:
            return held[1]
        context = client_context(auth["certificate"], auth["key"])
        self._contexts[webhook_id] = (fingerprint, context)
        return context

    def forget_except(self, webhook_ids: Container[str]) -> None:
        """Drop the contexts of webhooks that are gone."""
        for webhook_id in [k for k in self._contexts if k not in webhook_ids]:
            del self._contexts[webhook_id]

    def __len__(self) -> int:
        return len(self._contexts)
