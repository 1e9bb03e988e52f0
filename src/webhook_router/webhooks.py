"""Webhooks as admins define them, and the matching of events to them.

Matching is pure: the router hands it an event and the webhooks it holds in memory and gets
back, per webhook that fires, the URL to POST to and its custom headers rendered, or the
reason they could not be rendered. A rendered header value holds no control character (no
CR, LF or NUL can split a request) and is at most HEADER_VALUE_MAX characters.

The index compiles the filter, URL template and header templates of each webhook it holds
once, and carries them over to the next index while their text is unchanged; it keeps
nothing else, so the compiled definitions in memory are always those of the stored
webhooks. Validation compiles and keeps nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from webhook_router.catalogue import TYPES, Level
from webhook_router.credentials import SETS_AUTHORIZATION, STRATEGIES
from webhook_router.events import Event
from webhook_router.expressions import (
    ExpressionError,
    ExpressionRuntimeError,
    Filter,
    UrlTemplate,
    compile_filter,
    compile_text,
    compile_url,
)

SCOPE_SPACE = "Space"
SCOPE_KAPP = "Kapp"
AUTH_STRATEGIES = STRATEGIES
HEADERS_MAX = 32
"""Most custom headers of a webhook."""
HEADER_NAME_MAX = 256
HEADER_VALUE_MAX = 4096
"""Longest header value, as written (a template) and as rendered."""
HEADERS_SIZE_MAX = 16384
"""Most characters of all custom header names and values together, as written."""
ROUTER_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp"}
    | {"webhook-signature", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
    | {"trailer", "expect"}
)
"""Header names the router (or its HTTP client) sets itself, in lower case."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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
    ordered: bool = False
    """Deliveries of one key (its event's parent) go one at a time, in publish order."""
    headers: dict[str, str] = field(default_factory=dict)
    trace_context: bool = True
    """Whether its POSTs carry the attempt's `traceparent`/`tracestate` when tracing is on."""
    auth: dict[str, str] | None = field(default=None, repr=False)
    """Write-only credentials of `auth_strategy` (credentials.AUTH_FIELDS)."""
    auth_set_at: datetime | None = None
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    disabled_reason: str | None = None
    unreadable: str | None = None
    """Why a sealed secret or credential of it could not be opened (its key is not
    configured); it is None then, and a delivery that needs it fails saying this."""
    rate_limit: float | None = None
    """Deliveries per second across every worker; None: no limit."""
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
    headers: Mapping[str, str] | None = None,
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
        choices = ", ".join(repr(s) for s in AUTH_STRATEGIES if s)
        errors.append({"field": "authStrategy", "message": f"must be null or one of {choices}"})
    errors += [
        {"field": "headers", "message": m} for m in header_problems(headers or {}, auth_strategy)
    ]
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


def value_problem(value: str) -> str | None:
    """What keeps a (rendered) header value out of a request, if anything."""
    if _CONTROL.search(value):
        return "holds a control character (CR, LF, NUL...), which could split the request"
    if len(value) > HEADER_VALUE_MAX:
        return f"is longer than {HEADER_VALUE_MAX} characters"
    return None


def header_problems(headers: Mapping[str, str], auth_strategy: str | None) -> list[str]:
    """Each reason the custom headers cannot be sent, naming the header."""
    problems: list[str] = []
    if len(headers) > HEADERS_MAX:
        problems.append(f"at most {HEADERS_MAX} headers")
    if sum(len(k) + len(v) for k, v in headers.items()) > HEADERS_SIZE_MAX:
        problems.append(f"names and values together must be at most {HEADERS_SIZE_MAX} characters")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _TOKEN.fullmatch(name) or len(name) > HEADER_NAME_MAX:
            problems.append(
                f"{name!r}: a name is 1 to {HEADER_NAME_MAX} letters, digits or !#$%&'*+-.^_`|~"
            )
        elif lower in ROUTER_HEADERS:
            problems.append(f"{name}: set by the router itself, it cannot be set here")
        elif lower == "authorization" and auth_strategy in SETS_AUTHORIZATION:
            problems.append(f"{name}: set by the {auth_strategy} auth strategy")
        elif lower in seen:
            problems.append(f"{name}: given twice (header names are case-insensitive)")
        seen.add(lower)
        try:
            compile_text(value)
        except ExpressionError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if problem := value_problem(value):
            problems.append(f"{name}: {problem}")
    return problems


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


HeaderTemplates = dict[str, UrlTemplate | ExpressionError]


def compile_headers(headers: Mapping[str, str]) -> HeaderTemplates:
    compiled: HeaderTemplates = {}
    for name, value in headers.items():
        try:
            compiled[name] = compile_text(value)
        except ExpressionError as exc:
            compiled[name] = exc
    return compiled


def render_headers(
    templates: HeaderTemplates, body: Mapping[str, Any]
) -> tuple[dict[str, str], str | None]:
    """The headers rendered for the event, or why one cannot be sent."""
    rendered: dict[str, str] = {}
    for name, template in templates.items():
        if isinstance(template, ExpressionError):
            return {}, f"header {name} failed: {template}"
        try:
            value = template.text(body)
        except ExpressionError as exc:
            return {}, f"header {name} failed: {exc}"
        if problem := value_problem(value):
            return {}, f"header {name} failed: the rendered value {problem}"
        rendered[name] = value
    return rendered, None


@dataclass(frozen=True, slots=True)
class Match:
    """A webhook that fires for an event: the URL to POST to and the custom headers to
    send, or why there are none."""

    webhook: Webhook
    url: str | None
    error: str | None = None
    to_engine: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class WebhookIndex:
    """Enabled webhooks by (space, kapp, type, event), for matching without a query, with
    their definitions compiled; those of `previous` are reused where the text is the same."""

    def __init__(
        self, webhooks: Iterable[Webhook] = (), previous: WebhookIndex | None = None
    ) -> None:
        self._by_key: dict[tuple[str, str | None, str, str], list[Webhook]] = {}
        self.definitions: dict[tuple[str | None, str], Definition] = {}
        self.header_templates: dict[tuple[tuple[str, str], ...], HeaderTemplates] = {}
        known = previous.definitions if previous is not None else {}
        known_headers = previous.header_templates if previous is not None else {}
        self.count = 0
        for webhook in webhooks:
            if webhook.enabled:
                key = (webhook.space, webhook.kapp, webhook.type, webhook.event)
                self._by_key.setdefault(key, []).append(webhook)
                self.count += 1
                text = (webhook.filter, webhook.url)
                if text not in self.definitions:
                    self.definitions[text] = known.get(text) or Definition.of(*text)
                headers = tuple(webhook.headers.items())
                if headers and headers not in self.header_templates:
                    self.header_templates[headers] = known_headers.get(headers) or compile_headers(
                        webhook.headers
                    )

    def candidates(self, event: Event) -> list[Webhook]:
        return self._by_key.get((event.space, event.kapp, event.type, event.action), [])

    def match(self, event: Event, engine_url: str) -> list[Match]:
        return [
            m
            for w in self.candidates(event)
            if (
                m := match_one(
                    w,
                    event.body,
                    engine_url,
                    self.definitions[(w.filter, w.url)],
                    headers=self.header_templates.get(tuple(w.headers.items()))
                    if w.headers
                    else {},
                )
            )
        ]


def match_one(
    webhook: Webhook,
    body: Mapping[str, Any],
    engine_url: str,
    definition: Definition | None = None,
    *,
    check_filter: bool = True,
    headers: HeaderTemplates | None = None,
) -> Match | None:
    """None when the filter is false; a Match with an error when filter, URL or a header
    fail. Without `definition` (`headers`), the webhook's is compiled for this call."""
    if definition is None:
        definition = Definition.of(webhook.filter, webhook.url)
    if headers is None:
        headers = compile_headers(webhook.headers)
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
    rendered, problem = render_headers(headers, body)
    if problem is not None:
        return Match(webhook, None, problem)
    if url.startswith("/"):
        return Match(webhook, engine_url + url, to_engine=True, headers=rendered)
    return Match(webhook, url, headers=rendered)
