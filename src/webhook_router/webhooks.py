"""Webhooks as admins define them, and the matching of events to them.

Matching is pure: the router hands it an event and the webhooks it holds in memory and gets
back, per webhook that fires, the URL to POST to, or the reason it could not be rendered.

The index compiles the filter and URL template of each webhook it holds once, and carries
them over to the next index while their text is unchanged; it keeps nothing else, so the
compiled definitions in memory are always those of the stored webhooks. Validation compiles
and keeps nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from webhook_router.catalogue import TYPES, Level
from webhook_router.events import Event
from webhook_router.expressions import (
    ExpressionError,
    ExpressionRuntimeError,
    Filter,
    UrlTemplate,
    compile_filter,
    compile_url,
)

SCOPE_SPACE = "Space"
SCOPE_KAPP = "Kapp"
AUTH_STRATEGIES = (None, "Signature")


class WebhookInvalid(ValueError):
    """A definition that cannot be saved; `errors` name each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    space: str
    kapp: str | None
    name: str
    type: str
    event: str
    filter: str | None
    url: str
    auth_strategy: str | None = None
    enabled: bool = True
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    disabled_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scope_type(self) -> str:
        return SCOPE_KAPP if self.kapp is not None else SCOPE_SPACE

    @property
    def scope_id(self) -> str:
        return self.kapp if self.kapp is not None else self.space


def check_definition(
    *,
    kapp: str | None,
    name: str,
    type: str,
    event: str,
    filter: str | None,
    url: str,
    auth_strategy: str | None,
) -> None:
    """Refuse a definition the router could never use, naming field and position."""
    errors: list[dict[str, str]] = []
    if not name or not name.strip():
        errors.append({"field": "name", "message": "must not be empty"})
    entry = TYPES.get(type)
    if entry is None:
        errors.append(
            {
                "field": "type",
                "message": f"unknown type {type!r}; expected one of {', '.join(TYPES)}",
            }
        )
    else:
        level = Level.KAPP if kapp is not None else Level.SPACE
        if entry.level is not level:
            errors.append(
                {
                    "field": "type",
                    "message": f"{type} webhooks are defined on the {entry.level.value}, "
                    f"not on the {level.value}",
                }
            )
        if event not in entry.actions:
            errors.append(
                {
                    "field": "event",
                    "message": f"unknown event {event!r} for type {type}; "
                    f"expected one of {', '.join(entry.actions)}",
                }
            )
    try:
        compile_filter(filter)
    except ExpressionError as exc:
        errors.append({"field": "filter", "message": str(exc)})
    try:
        compile_url(url)
    except ExpressionError as exc:
        errors.append({"field": "url", "message": str(exc)})
    else:
        if problem := url_shape_problem(url):
            errors.append({"field": "url", "message": problem})
    if auth_strategy not in AUTH_STRATEGIES:
        errors.append({"field": "authStrategy", "message": "must be null or 'Signature'"})
    if errors:
        raise WebhookInvalid(errors)


URL_SHAPE = "must start with '/' (a path on the workflow engine) or be an http:// or https:// URL"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


def _literal_authority(url: str) -> tuple[str, bool] | None:
    """The text of an absolute template's authority before any `${`, and whether it is all
    of it (literal); None when the template is not `scheme://...` as far as it is literal."""
    literal = url.split("${", 1)[0]
    scheme = _SCHEME.match(literal)
    if scheme is None or not literal[scheme.end() :].startswith("//"):
        return None
    rest = literal[scheme.end() + 2 :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=-1)
    if end >= 0:
        return rest[:end], True
    return rest, literal == url


def url_shape_problem(url: str) -> str | None:
    """Why a URL template that compiles could never render a URL that can be sent, or None.

    A value is percent-encoded into the template (no `:` or `/` of its own), so the literal
    text before the first `${` decides: a relative path must start with `/`, an absolute URL
    must be `http://` or `https://` and, when its host is written out, name one."""
    literal = url.split("${", 1)[0]
    if not literal or literal.startswith("/"):
        return None
    authority = _literal_authority(url)
    if authority is None:
        return f"{URL_SHAPE}, not {url if len(url) <= 80 else url[:77] + '...'!r}"
    text, whole = authority
    if not whole:
        return None
    try:
        parts = urlsplit(f"http://{text}")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return f"is not a valid URL: its host or port {text!r} cannot be read"
    if not parts.hostname:
        return "has no host: an http:// or https:// URL must name the host it goes to"
    return None


def literal_host(url: str) -> str | None:
    """The host of an absolute URL template when it is written out (no `${` in it)."""
    authority = _literal_authority(url)
    if authority is None or not authority[1]:
        return None
    try:
        return urlsplit(f"http://{authority[0]}").hostname
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Definition:
    """A webhook's filter and URL template compiled, or why each does not compile."""

    filter: Filter | ExpressionError
    url: UrlTemplate | ExpressionError

    @classmethod
    def of(cls, filter: str | None, url: str) -> Definition:
        compiled_filter: Filter | ExpressionError
        compiled_url: UrlTemplate | ExpressionError
        try:
            compiled_filter = compile_filter(filter)
        except ExpressionError as exc:
            compiled_filter = exc
        try:
            compiled_url = compile_url(url)
        except ExpressionError as exc:
            compiled_url = exc
        return cls(compiled_filter, compiled_url)


@dataclass(frozen=True, slots=True)
class Match:
    """A webhook that fires for an event: the URL to POST to, or why there is none."""

    webhook: Webhook
    url: str | None
    error: str | None = None
    to_engine: bool = False


class WebhookIndex:
    """Enabled webhooks by (space, kapp, type, event), for matching without a query, with
    their definitions compiled; those of `previous` are reused where the text is the same."""

    def __init__(
        self, webhooks: Iterable[Webhook] = (), previous: WebhookIndex | None = None
    ) -> None:
        self._by_key: dict[tuple[str, str | None, str, str], list[Webhook]] = {}
        self.definitions: dict[tuple[str | None, str], Definition] = {}
        known = previous.definitions if previous is not None else {}
        self.count = 0
        for webhook in webhooks:
            if webhook.enabled:
                key = (webhook.space, webhook.kapp, webhook.type, webhook.event)
                self._by_key.setdefault(key, []).append(webhook)
                self.count += 1
                text = (webhook.filter, webhook.url)
                if text not in self.definitions:
                    self.definitions[text] = known.get(text) or Definition.of(*text)

    def candidates(self, event: Event) -> list[Webhook]:
        return self._by_key.get((event.space, event.kapp, event.type, event.action), [])

    def match(self, event: Event, engine_url: str) -> list[Match]:
        return [
            m
            for w in self.candidates(event)
            if (m := match_one(w, event.body, engine_url, self.definitions[(w.filter, w.url)]))
        ]


def match_one(
    webhook: Webhook,
    body: Mapping[str, Any],
    engine_url: str,
    definition: Definition | None = None,
    *,
    check_filter: bool = True,
) -> Match | None:
    """None when the filter is false; a Match with an error when filter or URL fail.
    Without `definition`, the webhook's is compiled for this call."""
    if definition is None:
        definition = Definition.of(webhook.filter, webhook.url)
    if check_filter:
        if isinstance(definition.filter, ExpressionError):
            return Match(webhook, None, f"filter invalid: {definition.filter}")
        try:
            if not definition.filter.matches(body):
                return None
        except ExpressionRuntimeError as exc:
            return Match(webhook, None, f"filter failed: {exc}")
    if isinstance(definition.url, ExpressionError):
        return Match(webhook, None, f"url failed: {definition.url}")
    try:
        url = definition.url.render(body)
    except ExpressionError as exc:
        return Match(webhook, None, f"url failed: {exc}")
    if url.startswith("/"):
        return Match(webhook, engine_url + url, to_engine=True)
    return Match(webhook, url)
