"""Webhook definition checks, matching, the standard webhooks, and the README's settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from webhook_router.catalogue import Level, entries
from webhook_router.defaults import default_webhooks
from webhook_router.events import parse_event
from webhook_router.expressions import FILTER_MAX, URL_MAX, compile_url
from webhook_router.settings import Settings
from webhook_router.trees import run_tree_path, tree_of
from webhook_router.webhooks import (
    Definition,
    Webhook,
    WebhookIndex,
    WebhookInvalid,
    check_definition,
)

pytestmark = pytest.mark.timeout(30)
SAMPLES = Path(__file__).parent.parent / "samples"


def definition(**changes: object) -> dict[str, object]:
    d: dict[str, object] = {
        "kapp": "services",
        "name": "n",
        "type": "Submission",
        "event": "Submitted",
        "filter": None,
        "url": "/x",
        "auth_strategy": None,
    }
    d.update(changes)
    return d


def test_a_good_definition_passes() -> None:
    good = definition(filter="values('Status') == 'Open'")
    assert check_definition(**good) is None  # type: ignore[arg-type,func-returns-value]
    # the filter that passed is read: broken, the same definition is refused
    with pytest.raises(WebhookInvalid) as refused:
        check_definition(**(good | {"filter": "values('Status') =="}))  # type: ignore[arg-type]
    assert [e["field"] for e in refused.value.errors] == ["filter"]


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"type": "Robot"}, "type", "unknown type"),
        ({"kapp": None}, "type", "defined on the kapp"),
        ({"event": "Exploded"}, "event", "unknown event"),
        ({"filter": "values('Status' =="}, "filter", "position"),
        ({"url": "ftp://x/${form('slug')}"}, "url", "http"),
        ({"url": "/x/${form('slug')"}, "url", "position"),
        ({"auth_strategy": "Digest"}, "authStrategy", "one of 'Signature', 'Basic'"),
        ({"name": " "}, "name", "empty"),
        ({"filter": "true" + " " * FILTER_MAX}, "filter", f"at most {FILTER_MAX} characters"),
        ({"url": "/" + "x" * URL_MAX}, "url", f"at most {URL_MAX} characters"),
        ({"filter": "(" * 4000}, "filter", "nested too deeply"),
    ],
)
def test_bad_definitions_name_field_and_reason(
    changes: dict[str, object], field: str, text: str
) -> None:
    with pytest.raises(WebhookInvalid) as exc:
        check_definition(**definition(**changes))  # type: ignore[arg-type]
    assert any(e["field"] == field and text in e["message"] for e in exc.value.errors), (
        exc.value.errors
    )


@pytest.mark.parametrize("level", [Level.SPACE, Level.KAPP])
def test_standard_webhooks_render_to_each_entrys_run_tree_path(level: Level) -> None:
    defaults = default_webhooks("Kinetic Request CE", level)
    assert len({d.name for d in defaults}) == len(defaults)
    for d in defaults:
        sample = parse_event(
            (
                SAMPLES / f"{d.type.lower().replace(' ', '_')}."
                f"{d.event.lower().replace(' ', '_')}.json"
            ).read_bytes(),
            fill=False,
        )
        rendered = compile_url(d.url).render(sample.body)
        expected = run_tree_path("Kinetic Request CE", tree_of(d.type, d.event, sample.body))
        assert rendered == expected
        check_definition(
            kapp="k" if level is Level.KAPP else None,
            name=d.name,
            type=d.type,
            event=d.event,
            filter=None,
            url=d.url,
            auth_strategy=None,
        )
    total = len(default_webhooks("s", Level.SPACE)) + len(default_webhooks("s", Level.KAPP))
    assert total == len([entry for entry, _ in entries() if not entry.extension])


def test_index_matches_by_space_scope_type_and_event() -> None:
    def hook(name: str, kapp: str | None, enabled: bool = True) -> Webhook:
        return Webhook(
            id=name,
            space="acme",
            kapp=kapp,
            name=name,
            type="Submission",
            event="Submitted",
            filter=None,
            url="/t",
            enabled=enabled,
        )

    index = WebhookIndex([hook("a", "services"), hook("b", "hr"), hook("c", "services", False)])
    event = parse_event((SAMPLES / "submission.submitted.json").read_bytes(), fill=False)
    matches = index.match(event, "http://engine")
    assert [(m.webhook.name, m.url, m.to_engine) for m in matches] == [
        ("a", "http://engine/t", True)
    ]


def _stored(name: str, filter: str | None, url: str = "/t") -> Webhook:
    return Webhook(
        id=name,
        space="acme",
        kapp="services",
        name=name,
        type="Submission",
        event="Submitted",
        filter=filter,
        url=url,
    )


def test_the_index_holds_the_definitions_of_the_stored_webhooks_only() -> None:
    """Compiled definitions live as long as a stored webhook uses them: reused by the next
    index while the text is unchanged, dropped with the last webhook using them."""
    first = WebhookIndex([_stored("a", "values('x') == 1"), _stored("b", "values('y') == 2")])
    kept = first.definitions[("values('x') == 1", "/t")]
    second = WebhookIndex(
        [_stored("a", "values('x') == 1"), _stored("c", "values('z') == 3")], previous=first
    )
    assert second.definitions[("values('x') == 1", "/t")] is kept
    assert set(second.definitions) == {("values('x') == 1", "/t"), ("values('z') == 3", "/t")}


def test_a_stored_definition_that_no_longer_compiles_fails_its_jobs_with_the_reason() -> None:
    """A webhook stored before the length limit still matches, as a Failed job saying why."""
    index = WebhookIndex([_stored("long", "true" + " " * FILTER_MAX)])
    assert isinstance(index.definitions[("true" + " " * FILTER_MAX, "/t")], Definition)
    event = parse_event((SAMPLES / "submission.submitted.json").read_bytes(), fill=False)
    [match] = index.match(event, "http://engine")
    assert match.url is None
    assert match.error is not None and match.error.startswith("filter invalid: ")
    assert f"at most {FILTER_MAX} characters" in match.error


def test_readme_lists_every_setting_with_its_default() -> None:
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(WEBHOOK_ROUTER_\w+)` \| ([^|]+) \|", readme, re.MULTILINE))
    expected = {}
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            text = ""
        else:
            text = ",".join(default) if isinstance(default, list) else str(default)
        expected[f"WEBHOOK_ROUTER_{name.upper()}"] = f"`{text}`" if text else "(empty)"
    assert {k: v.strip() for k, v in rows.items()} == expected
