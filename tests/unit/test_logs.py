"""Log lines: what orjson refuses to encode still makes a line, never an error."""

from __future__ import annotations

import json

import pytest

from webhook_router.logs import json_line

pytestmark = pytest.mark.timeout(10)


def test_a_line_is_json_with_its_values_as_they_were() -> None:
    line = json_line({"event": "job queued", "url": "http://x/é\x00", "attempt": 2})
    assert json.loads(line) == {"event": "job queued", "url": "http://x/é\x00", "attempt": 2}


def test_a_line_orjson_refuses_falls_back_to_the_standard_encoder() -> None:
    # a lone surrogate (text decoded with surrogateescape) and an integer beyond 64 bits
    line = json_line({"event": "odd", "text": "a\udcff", "big": 2**70})
    assert json.loads(line) == {"event": "odd", "text": "a\udcff", "big": 2**70}


def test_an_object_neither_encoder_knows_is_written_by_the_fallback() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    assert json.loads(json_line({"event": "x", "thing": Thing()})) == {
        "event": "x",
        "thing": "<thing>",
    }
    assert json.loads(json_line({"event": "x", "thing": Thing()}, default=lambda _: "given")) == {
        "event": "x",
        "thing": "given",
    }
