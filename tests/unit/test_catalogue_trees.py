"""The catalogue, tree paths and run-tree URLs, table-driven over every entry."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from webhook_router.catalogue import (
    CATALOGUE,
    PLATFORM,
    TYPES,
    Level,
    entries,
    events_at,
    routing_key,
    types_at,
)
from webhook_router.trees import Tree, run_tree_path, tree_of

pytestmark = pytest.mark.timeout(30)

SOURCE = "Kinetic Request CE"
BODY = {
    "space": {"slug": "acme"},
    "kapp": {"slug": "services"},
    "form": {"slug": "ipad-request"},
}
GROUPS = {
    "Space": "Space",
    "User": "Users",
    "Team": "Teams",
    "Datastore Form": "Datastore Forms > ipad-request",
    "Datastore Submission": "Datastore Submissions > ipad-request",
    "Form": "services > ipad-request",
    "Submission": "Submissions > services > ipad-request",
    "Webhook": "Webhooks",
}
ENCODED_GROUPS = {
    "Space": "Space",
    "User": "Users",
    "Team": "Teams",
    "Datastore Form": "Datastore%20Forms%20%3E%20ipad-request",
    "Datastore Submission": "Datastore%20Submissions%20%3E%20ipad-request",
    "Form": "services%20%3E%20ipad-request",
    "Submission": "Submissions%20%3E%20services%20%3E%20ipad-request",
    "Webhook": "Webhooks",
}


def test_catalogue_is_the_documented_one() -> None:
    assert {e.name: (e.level, e.actions) for e in PLATFORM} == {
        "Space": (Level.SPACE, ("Login Failure",)),
        "User": (
            Level.SPACE,
            ("Created", "Updated", "Deleted", "Login", "Logout", "Membership Change"),
        ),
        "Team": (Level.SPACE, ("Created", "Updated", "Deleted", "Restored", "Membership Change")),
        "Datastore Form": (Level.SPACE, ("Created", "Updated", "Deleted", "Restored")),
        "Datastore Submission": (
            Level.SPACE,
            ("Created", "Updated", "Deleted", "Saved", "Submitted"),
        ),
        "Form": (Level.KAPP, ("Created", "Updated", "Deleted", "Restored")),
        "Submission": (
            Level.KAPP,
            ("Created", "Updated", "Deleted", "Saved", "Submitted", "Closed"),
        ),
    }
    assert [(e.name, e.level, e.actions) for e in CATALOGUE if e.extension] == [
        ("Webhook", Level.SPACE, ("Disabled", "Enabled", "Dead Lettered"))
    ]
    assert len(entries()) == 34


def test_routing_keys_follow_the_contract() -> None:
    assert routing_key("Submission", "Submitted") == "submission.submitted"
    assert routing_key("Datastore Submission", "Created") == "datastore_submission.created"
    assert routing_key("User", "Membership Change") == "user.membership_change"
    assert routing_key("Webhook", "Dead Lettered") == "webhook.dead_lettered"
    keys = {routing_key(entry.name, action) for entry, action in entries()}
    assert len(keys) == 34  # no two entries share a key


def test_meta_views_split_by_level() -> None:
    assert types_at(Level.KAPP) == ["Form", "Submission"]
    assert "Submission" not in events_at(Level.SPACE)
    assert events_at(Level.KAPP)["Form"] == ["Created", "Updated", "Deleted", "Restored"]


def test_meta_views_show_the_extensions_only_when_asked() -> None:
    assert "Webhook" not in types_at(Level.SPACE)
    assert "Webhook" not in events_at(Level.SPACE)
    assert types_at(Level.SPACE, extensions=True)[-1] == "Webhook"
    assert events_at(Level.SPACE, extensions=True)["Webhook"] == [
        "Disabled",
        "Enabled",
        "Dead Lettered",
    ]
    assert types_at(Level.KAPP, extensions=True) == types_at(Level.KAPP)


@pytest.mark.parametrize(("entry", "action"), entries(), ids=lambda v: getattr(v, "name", v))
def test_every_entry_has_its_tree_and_run_tree_url(entry: object, action: str) -> None:
    name = entry.name  # type: ignore[attr-defined]
    tree = tree_of(name, action, BODY)
    assert tree == Tree(GROUPS[name], action)
    path = run_tree_path(SOURCE, tree)
    encoded_action = action.replace(" ", "%20")
    assert path == (
        f"/app/api/v1/run-tree/Kinetic%20Request%20CE/{ENCODED_GROUPS[name]}/{encoded_action}"
    )


def test_the_documented_example_path() -> None:
    tree = tree_of("Submission", "Submitted", BODY)
    assert str(tree) == "Submissions > services > ipad-request :: Submitted"
    assert run_tree_path(SOURCE, tree) == (
        "/app/api/v1/run-tree/Kinetic%20Request%20CE/"
        "Submissions%20%3E%20services%20%3E%20ipad-request/Submitted"
    )


@pytest.mark.parametrize(
    "slug",
    [
        "with space",
        "a>b",
        "a/b",
        "100%",
        "#hash",
        "what?",
        "café-émile",
        "日本語",
        "a%2Fb",
        "+plus",
    ],
)
def test_awkward_slugs_round_trip(slug: str) -> None:
    body = {"kapp": {"slug": slug}, "form": {"slug": slug}}
    tree = tree_of("Submission", "Submitted", body)
    path = run_tree_path(slug, tree)
    parts = path.removeprefix("/app/api/v1/run-tree/").split("/")
    assert len(parts) == 3
    assert [unquote(p) for p in parts] == [slug, tree.group, "Submitted"]
    assert all(c.isascii() and c not in " >#?" for c in path)


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        tree_of("Robot", "Created", BODY)
    assert "Robot" not in TYPES
