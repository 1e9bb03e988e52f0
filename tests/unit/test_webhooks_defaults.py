"""Webhook definition checks, matching, the standard webhooks, and the README's settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from webhook_router.catalogue import Level, entries
from webhook_router.defaults import default_webhooks
from webhook_router.events import parse_event
from webhook_router.expressions import compile_url
from webhook_router.settings import Settings
from webhook_router.trees import run_tree_path, tree_of
from webhook_router.webhooks import Webhook, WebhookIndex, WebhookInvalid, check_definition

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
        ({"auth_strategy": "Basic"}, "authStrategy", "Signature"),
        ({"name": " "}, "name", "empty"),
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
    assert total == len(entries())


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
