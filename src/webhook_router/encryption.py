"""Encryption at rest: the keys of `WEBHOOK_ROUTER_ENCRYPTION_KEYS` and the sealed text the
database holds in place of signing secrets, credentials and (optionally) job bodies.

AES-256-GCM, a fresh 96-bit nonce per value. A sealed value reads
`enc:v1:<key id>:<base64url(nonce + ciphertext)>`: the version lets the format change
later, and the key id (8 hex digits of the key's SHA-256) picks the key to open it with
and tells `secrets rotate-key` which values are not yet under the first key. A value
without the prefix is plaintext from before encryption was set up, read as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12


class KeyInvalid(ValueError):
    """A configured key is not 32 bytes in base64."""


class KeyMissing(LookupError):
    """A sealed value whose key is not configured, or that does not open under it."""


def new_key() -> str:
    """A fresh key in the form the setting takes: 32 random bytes, base64url."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """The 32 bytes of a key given in base64 (standard or url-safe alphabet)."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise KeyInvalid("an encryption key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyInvalid(f"an encryption key decodes to {len(raw)} bytes; it must be 32")
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


def is_sealed(text: str) -> bool:
    return text.startswith(PREFIX)


class Keyring:
    """The configured keys: the first seals, every one opens. No keys: values are written
    as plaintext and only plaintext can be read."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._first: str | None = None
        for text in keys:
            raw = parse_key(text)
            kid = key_id(raw)
            self._keys.setdefault(kid, AESGCM(raw))
            self._first = self._first or kid

    @property
    def active(self) -> bool:
        return self._first is not None

    def seal(self, text: str) -> str:
        """`text` sealed under the first key; unchanged when no key is set."""
        if self._first is None:
            return text
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._first].encrypt(nonce, text.encode(), None)
        return f"{PREFIX}{self._first}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, text: str) -> str:
        """The plaintext of a sealed value; a plaintext value as it is."""
        if not is_sealed(text):
            return text
        kid, _, body = text.removeprefix(PREFIX).partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise KeyMissing(f"a value is sealed under key {kid}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(body)
            return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise KeyMissing(f"a value sealed under key {kid} does not open") from None

    def open_or_keep(self, text: str) -> str:
        """For bodies, which may be any text a receiver answered: the plaintext when it
        opens, else the text as stored (which reveals nothing it sealed)."""
        try:
            return self.open(text)
        except KeyMissing:
            return text

    @property
    def current_prefix(self) -> str | None:
        """How every value sealed under the first key starts; None without keys."""
        return None if self._first is None else f"{PREFIX}{self._first}:"

    def current(self, text: str) -> bool:
        """Whether the value is sealed under the first key (nothing to rotate)."""
        return self._first is not None and text.startswith(f"{PREFIX}{self._first}:")
