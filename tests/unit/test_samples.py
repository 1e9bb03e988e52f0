"""The sample events in tests/samples: one per entry of the platform's catalogue (the
router's own operator events are not the platform's), each a valid envelope.

They are the examples docs/bodies.md shows, so these checks keep the documented body shape
(entity keys per type, `previous` on Updated and Membership Change) true.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from webhook_router.catalogue import PLATFORM, entries, routing_key
from webhook_router.events import parse_event

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples"
BODIES_DOC = ROOT / "docs" / "bodies.md"
FILES = sorted(SAMPLES.glob("*.json"))
ENTITY_KEYS = frozenset({"space", "kapp", "form", "submission", "user", "team", "identity"})
EXTRA_KEYS = frozenset({"previous", "membership", "login"})
CHANGED = {
    "User": "user",
    "Team": "team",
    "Datastore Form": "form",
    "Datastore Submission": "submission",
    "Form": "form",
    "Submission": "submission",
}


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _entity_keys(body: dict[str, Any]) -> frozenset[str]:
    return frozenset(body) & ENTITY_KEYS


def test_exactly_one_sample_per_catalogue_entry() -> None:
    expected = {
        routing_key(entry.name, action) for entry, action in entries() if not entry.extension
    }
    found = [path.stem for path in FILES]
    assert len(found) == len(set(found))
    assert set(found) == expected, (
        f"missing: {sorted(expected - set(found))}, extra: {sorted(set(found) - expected)}"
    )
    assert len(found) == sum(len(entry.actions) for entry in PLATFORM)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_sample_parses_and_matches_its_name(path: Path) -> None:
    raw = path.read_bytes()
    event = parse_event(raw, fill=False)
    assert event.routing_key == path.stem
    assert routing_key(event.type, event.action) == path.stem
    assert event.space == "acme"
    assert event.timestamp.year == 2026
    assert event.timestamp.month == 11
    # The body is passed through untouched.
    assert event.body == json.loads(raw)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_sample_is_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    assert len(text.encode("utf-8")) < 4096


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_sample_carries_its_types_entities(path: Path) -> None:
    body = _load(path)
    header = body["event"]
    assert set(header) == {"id", "type", "action", "timestamp"}
    [entry] = [e for e in PLATFORM if e.name == header["type"]]
    expected = {"space", "identity", *entry.entities}
    assert _entity_keys(body) == expected
    assert set(body) - ENTITY_KEYS - {"event"} <= EXTRA_KEYS
    if "kapp" in body:
        assert body["kapp"]["slug"] == "services"
        assert body["form"]["slug"] == "ipad-request"
    elif "form" in body:
        assert body["form"]["slug"] == "robots"


def test_every_sample_of_a_type_has_the_same_entity_keys() -> None:
    by_type: dict[str, set[frozenset[str]]] = {}
    for path in FILES:
        body = _load(path)
        by_type.setdefault(body["event"]["type"], set()).add(_entity_keys(body))
    for type_name, key_sets in by_type.items():
        assert len(key_sets) == 1, f"{type_name}: {sorted(sorted(k) for k in key_sets)}"


def test_event_ids_are_distinct() -> None:
    ids = [_load(path)["event"]["id"] for path in FILES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_previous_state(path: Path) -> None:
    body = _load(path)
    type_name, action = body["event"]["type"], body["event"]["action"]
    if action not in ("Updated", "Membership Change"):
        assert "previous" not in body
        assert "membership" not in body
        return
    entity = CHANGED[type_name]
    previous = body["previous"]
    assert set(previous) == {entity}
    assert set(previous[entity]) == set(body[entity]), "previous has the entity's shape"
    assert previous[entity] != body[entity]
    if action == "Membership Change":
        assert previous[entity]["memberships"] != body[entity]["memberships"]
        membership = body["membership"]
        assert membership["action"] in ("Added", "Removed")
        assert membership["user"]["username"]
        assert membership["team"]["name"]
        assert membership["team"]["slug"]
    else:
        assert "membership" not in body


def test_login_failure_carries_the_login_attempt() -> None:
    body = _load(SAMPLES / "space.login_failure.json")
    assert body["login"] == {
        "username": "mallory",
        "reason": "Invalid password",
        "ipAddress": "127.0.0.1",
    }


def _attribute_lists(node: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("attributes", "profileAttributes"):
                found.append(value)
            else:
                found.extend(_attribute_lists(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_attribute_lists(item))
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_attributes_are_in_list_form(path: Path) -> None:
    body = _load(path)
    for attributes in _attribute_lists(body):
        assert isinstance(attributes, list)
        for item in attributes:
            assert set(item) == {"name", "values"}
            assert isinstance(item["name"], str)
            assert isinstance(item["values"], list)
    space_attributes = {a["name"]: a["values"] for a in body["space"]["attributes"]}
    assert space_attributes["Task Source Name"] == ["Kinetic Request CE"]


def test_documented_examples_are_the_samples() -> None:
    """docs/bodies.md shows one full body per type, each exactly a sample file."""
    blocks = re.findall(r"```json\n(.*?)\n```", BODIES_DOC.read_text(encoding="utf-8"), re.DOTALL)
    documented_types = []
    for block in blocks:
        body = json.loads(block)
        key = routing_key(body["event"]["type"], body["event"]["action"])
        assert body == _load(SAMPLES / f"{key}.json"), f"example {key} differs from its sample"
        documented_types.append(body["event"]["type"])
    assert sorted(documented_types) == sorted(e.name for e in PLATFORM)
