"""Standard Webhooks signing, so receivers can verify deliveries with any compliant library."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
GENERATED_KEY_BYTES = 32


def generate_secret() -> str:
    """Return a fresh secret in the `whsec_<base64>` form receivers expect."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(GENERATED_KEY_BYTES)).decode()


def parse_secret(secret: str) -> bytes:
    """Decode a secret to its HMAC key, rejecting keys too weak or malformed to sign with."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("webhook secret is empty")
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 after the 'whsec_' prefix") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; "
            f"expected {MIN_KEY_BYTES} to {MAX_KEY_BYTES}"
        )
    return key


def sign(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value: one `v1,` signature per secret.

    Several secrets are signed at once during a rotation, so receivers holding either the
    old or the new secret can verify.
    """
    if not secrets:
        raise ValueError("at least one webhook secret is required to sign")
    content = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(parse_secret(secret), content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def signature_headers(
    secrets: Sequence[str], message_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Return the three Standard Webhooks headers for one delivery of `body`."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, message_id, timestamp, body),
    }
