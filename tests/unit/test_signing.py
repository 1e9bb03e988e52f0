import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from webhook_router.signing import generate_secret, parse_secret, sign, signature_headers

BODY = b'{"event":"issue.created","data":{"id":7,"title":"caf\xc3\xa9"}}'


def test_generated_secret_has_prefix_and_32_byte_key() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(parse_secret(secret)) == 32
    assert generate_secret() != secret


def test_single_secret_verifies_with_standardwebhooks() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_1", BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {
        "event": "issue.created",
        "data": {"id": 7, "title": "café"},
    }


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signature_headers([old, new], "msg_2", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_tampered_body_is_rejected() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_3", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"7", b"8"), headers)


def test_tampered_timestamp_is_rejected() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_4", BODY)
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_tampered_id_is_rejected() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_5", BODY)
    headers["webhook-id"] = "msg_6"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_timestamp_comes_from_now() -> None:
    before = int(time.time())
    headers = signature_headers([generate_secret()], "msg_7", BODY)
    after = int(time.time())
    assert before <= int(headers["webhook-timestamp"]) <= after


def test_a_given_time_is_the_timestamp() -> None:
    headers = signature_headers([generate_secret()], "msg_7", BODY, now=1_700_000_000.9)
    assert headers["webhook-timestamp"] == "1700000000"


def test_stale_signature_is_rejected_by_receiver() -> None:
    secret = generate_secret()
    headers = signature_headers([secret], "msg_8", BODY, now=time.time() - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_sign_matches_the_reference_computation() -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    when = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    expected = Webhook(secret).sign("msg_9", when, BODY.decode())
    assert sign([secret], "msg_9", 1_700_000_000, BODY) == expected


def test_sign_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sign([], "msg", 0, BODY)


def test_parse_secret_accepts_unprefixed_and_unpadded() -> None:
    key = bytes(range(25))
    encoded = base64.b64encode(key).decode()
    assert parse_secret(encoded) == key
    assert parse_secret("whsec_" + encoded.rstrip("=")) == key


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "empty"),
        ("whsec_", "empty"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "23 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65 bytes"),
    ],
)
def test_parse_secret_rejects_bad_input(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_secret(secret)


@pytest.mark.parametrize("size", [24, 64])
def test_parse_secret_accepts_length_bounds(size: int) -> None:
    assert len(parse_secret("whsec_" + base64.b64encode(b"k" * size).decode())) == size
