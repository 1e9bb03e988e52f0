"""The sealed-value format and the key settings, without services."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from webhook_router.encryption import KeyInvalid, KeyMissing, Keyring, new_key, parse_key
from webhook_router.settings import Settings

pytestmark = pytest.mark.timeout(10)


def test_a_sealed_value_opens_under_any_listed_key_and_names_its_key() -> None:
    old, new = new_key(), new_key()
    sealed = Keyring([old]).seal("whsec_abc")
    assert sealed.startswith("enc:v1:") and "whsec_abc" not in sealed
    assert Keyring([new, old]).open(sealed) == "whsec_abc"
    assert not Keyring([new, old]).current(sealed)
    assert Keyring([old, new]).current(sealed)
    assert Keyring([old]).seal("whsec_abc") != sealed, "a fresh nonce each time"
    with pytest.raises(KeyMissing, match="not configured"):
        Keyring([new]).open(sealed)


def test_plaintext_from_before_a_key_reads_as_it_is() -> None:
    assert Keyring([new_key()]).open("whsec_plain") == "whsec_plain"
    assert Keyring().seal("whsec_plain") == "whsec_plain"
    assert not Keyring().active and not Keyring().current("whsec_plain")


def test_an_altered_value_does_not_open_and_a_body_shows_as_stored() -> None:
    key = new_key()
    sealed = Keyring([key]).seal("body")
    head, _, tail = sealed.rpartition(":")
    raw = bytearray(base64.urlsafe_b64decode(tail))
    raw[-1] ^= 1
    altered = f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(KeyMissing, match="does not open"):
        Keyring([key]).open(altered)
    assert Keyring([key]).open_or_keep(altered) == altered
    answer = "enc:v1:an answer a receiver made up"
    assert Keyring([key]).open_or_keep(answer) == answer


@pytest.mark.parametrize("text", ["", "short", base64.b64encode(b"x" * 16).decode(), "!!"])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text: str) -> None:
    with pytest.raises(KeyInvalid):
        parse_key(text)


def test_the_settings_check_the_keys_and_that_sealed_bodies_have_one() -> None:
    key = new_key()
    standard = base64.b64encode(base64.urlsafe_b64decode(key)).decode()
    assert Settings(encryption_keys=f"{key}, {standard}").encryption_keys == [key, standard]
    with pytest.raises(ValidationError, match="32"):
        Settings(encryption_keys="c2hvcnQ=")
    with pytest.raises(ValidationError, match="WEBHOOK_ROUTER_ENCRYPTION_KEYS"):
        Settings(encrypt_payloads=True)
