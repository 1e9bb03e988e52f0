"""The admin resources as the API shows them: webhooks, jobs, attempts, dead letters and
the bodies that change them, each one pydantic model that is at once validator, serializer
and schema.

Names on the wire are the platform's camelCase (aliases); attributes stay snake_case. A
model's JSON schema is what the OpenAPI document publishes, so the document and the checks
cannot drift apart. Bad input becomes a list of `{"field", "message"}` in the house's words
(`field_errors`, worded by `wording.plain`); the domain's own checks (filters, URLs, the
catalogue) stay in `webhooks.check_definition` and keep their positions and "expected one
of ..." messages. Pure: no IO.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, get_args, get_origin

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from webhook_router.catalogue import CATALOGUE
from webhook_router.credentials import AUTH_FIELDS, FILE_FIELDS, LIMITS, STRATEGIES
from webhook_router.deadletters import DeadLetter as DeadLetterRow
from webhook_router.jobs import Status
from webhook_router.webhooks import Webhook as WebhookDefinition
from webhook_router.wording import plain

NAME_MAX = 255
"""Longest webhook name; with SLUG_MAX it keeps the unique index's keys small."""
SLUG_MAX = 128
"""Longest space or kapp slug in a path."""
LIMIT_DEFAULT = 25
LIMIT_MAX = 1000
GRACE_MAX = 365 * 86400.0
"""Longest time a rotated-out secret may keep signing, in seconds."""
NO_NUL = "^[^\\u0000]*$"
"""PostgreSQL text holds no NUL character: a value with one is refused, not stored."""
TYPES = [entry.name for entry in CATALOGUE]
ACTIONS = sorted({action for entry in CATALOGUE for action in entry.actions})
STATUSES = {s.value.lower(): s.value for s in Status}

FieldErrors = list[dict[str, str]]


# text and time: one reading for every front end


def text_problem(value: str, max_length: int | None = None) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters"
    return None


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_FORM_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
RFC3339_HINT = (
    "must be an RFC 3339 date-time with a zone, e.g. 2024-05-01T00:00:00Z "
    "(in a query string write + as %2B)"
)


def parse_time(value: str, *, form: bool = False) -> datetime:
    """A date-time as every front end reads it; ValueError saying what is wrong.

    Strict (the API, the CLI): RFC 3339 with its zone. `form` (the console's
    `datetime-local` inputs): seconds and zone may be left out, no zone meaning UTC. Either
    way a NUL or an offset that moves the time out of range is refused here, before any
    query."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    value = value.strip() if form else value
    if not (_FORM_TIME if form else _RFC3339).fullmatch(value):
        raise ValueError("must be a date and time, e.g. 2024-05-01T12:30" if form else RFC3339_HINT)
    try:
        at = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not a date-time that exists") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        at.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once moved to UTC") from None
    return at


def parse_status(value: str) -> str:
    """A job status in any case, as stored; ValueError naming the choices."""
    try:
        return STATUSES[value.lower()]
    except KeyError:
        raise ValueError(f"must be one of {', '.join(STATUSES.values())}") from None


def encode_token(scheduled_at: datetime, job_id: str) -> str:
    """A page's end as an opaque token: the keyset (scheduledAt, id) of its last job."""
    raw = orjson.dumps([scheduled_at.isoformat(), job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, job_id = orjson.loads(raw)
        at = datetime.fromisoformat(when)
        key = str(uuid.UUID(job_id))
        if at.tzinfo is None:
            raise ValueError
        at.astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        raise ValueError("is not a token this API gave") from None
    return at, key


# field types with the house's messages


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid", message)


def _no_nul(max_length: int | None = None, *, not_empty: bool = False) -> Any:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if problem := text_problem(value, max_length):
            raise _custom(problem)
        if not_empty and not value:
            raise _custom("must not be empty")
        return value

    return AfterValidator(check)


def _name(value: str) -> str:
    if value in (".", ".."):
        raise _custom("cannot be `.` or `..`: no URL path could name it")
    return value


def _time(value: Any) -> Any:
    if not isinstance(value, str):
        raise _custom("must be an RFC 3339 date-time with a zone")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _custom(str(exc)) from None


def _status_queued(value: Any) -> Any:
    if not isinstance(value, str) or value.lower() != Status.QUEUED.lower():
        raise _custom("must be 'Queued' (retry the job)")
    return Status.QUEUED.value


def anycase(*words: str) -> str:
    """A pattern matching any of `words` in any mix of upper and lower case."""

    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(one(w) for w in words) + ")$"


TEXT_SCHEMA = {"type": "string", "pattern": NO_NUL}
URL_PATTERN = "^(/|\\$\\{|[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\u0000])[^\\u0000]*$"
"""What a URL template starts with: `/`, an expression, or http(s):// and a host; the rest
of the rules (`webhooks.check_definition`) cannot be said in a pattern."""
Text = Annotated[str, _no_nul(), WithJsonSchema(TEXT_SCHEMA)]
Name = Annotated[
    str,
    _no_nul(NAME_MAX),
    AfterValidator(_name),
    WithJsonSchema({**TEXT_SCHEMA, "minLength": 1, "maxLength": NAME_MAX}),
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Queued = Annotated[
    str,
    BeforeValidator(_status_queued),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": anycase(Status.QUEUED.value),
            "description": "`Queued` (any case): send the job again.",
        }
    ),
]
Grace = Annotated[
    float,
    Field(ge=0, le=GRACE_MAX, allow_inf_nan=False),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": GRACE_MAX,
            "description": "How long the old secret keeps signing beside the new one "
            "(default WEBHOOK_ROUTER_SIGNATURE_GRACE); 0 retires it at once.",
        }
    ),
]


def field_errors(exc: ValidationError, *, nullable: frozenset[str] = frozenset()) -> FieldErrors:
    """A pydantic failure as `{"field", "message"}` in the house's words, one per field."""
    errors: FieldErrors = []
    seen: set[str] = set()
    for e in exc.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else "body"
        if field in seen:
            continue
        seen.add(field)
        kind = e["type"]
        if field == "rateLimit":
            message = RATE_LIMIT_PROBLEM
        elif kind == "string_type" and field in nullable:
            message = "must be a string or null"
        elif kind in ("greater_than_equal", "less_than_equal", "float_type", "finite_number"):
            message = f"must be a number of seconds from 0 to {GRACE_MAX:.0f}"
        else:
            message = plain(e)
        errors.append({"field": field, "message": message})
    return errors


# inputs


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)


def _string_map(value: Any) -> Any:
    if value is not None and (
        not isinstance(value, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise _custom("must be an object of names to text values")
    return value


HEADERS_SCHEMA = {
    "type": ["object", "null"],
    "additionalProperties": {"type": "string", "maxLength": 4096},
    "propertyNames": {"pattern": "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,256}$"},
    "maxProperties": 32,
}
AUTH_SCHEMA = {
    "type": ["object", "null"],
    "writeOnly": True,
    "oneOf": [
        {"type": "null"},
        *(
            {
                "title": strategy,
                "type": "object",
                "properties": {
                    k: {"type": "string", "maxLength": LIMITS[k]}
                    | ({"contentMediaType": "application/x-pem-file"} if k in FILE_FIELDS else {})
                    for k in keys
                },
                "required": list(keys),
                "additionalProperties": False,
            }
            for strategy, keys in AUTH_FIELDS.items()
        ),
    ],
}
AUTH_PARTS = tuple(k for keys in AUTH_FIELDS.values() for k in keys)
"""Every credential of every strategy, in order: what a front end offers inputs for."""

_IGNORED = WithJsonSchema(
    {"description": "Read-only; accepted and ignored, so a fetched webhook can be sent back."}
)
Ignored = Annotated[Any, _IGNORED]
RATE_LIMIT_MAX = 1e6
"""Most deliveries per second a rate limit may name (a higher one is no limit at all)."""
RATE_LIMIT_SCHEMA = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "maximum": RATE_LIMIT_MAX,
}
RATE_LIMIT_PROBLEM = (
    f"must be a number of deliveries per second above 0 (at most {RATE_LIMIT_MAX:.0f}) or null"
)


class WebhookChange(_Input):
    """The fields a body sets; absent ones keep their value (an update) or their default."""

    name: Annotated[
        Name | None,
        WithJsonSchema({**TEXT_SCHEMA, "minLength": 1, "maxLength": NAME_MAX}),
        Field(description="Unique in its scope; not `.` or `..`."),
    ] = None
    type: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "enum": TYPES}),
        Field(description="A catalogue type, e.g. `Submission`."),
    ] = None
    event: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "enum": ACTIONS}),
        Field(description="An action of the type, e.g. `Submitted`."),
    ] = None
    filter: Annotated[
        str | None,
        _no_nul(),
        WithJsonSchema({"type": ["string", "null"], "pattern": NO_NUL}),
        Field(description="Expression; the webhook fires only where it is true."),
    ] = None
    url: Annotated[
        str | None,
        _no_nul(not_empty=True),
        WithJsonSchema({"type": "string", "minLength": 1, "pattern": URL_PATTERN}),
        Field(
            description="URL template; one starting with `/` goes to the engine, any other "
            "is http:// or https:// and names its host."
        ),
    ] = None
    auth_strategy: Annotated[
        str | None,
        WithJsonSchema({"type": ["string", "null"], "enum": list(STRATEGIES)}),
        Field(
            description="`Signature` (Standard Webhooks), `Basic`, `Bearer` or `mTLS` "
            "(credentials in auth), or null; the engine gets none."
        ),
    ] = None
    headers: Annotated[
        dict[str, str] | None,
        BeforeValidator(_string_map),
        WithJsonSchema(HEADERS_SCHEMA),
        Field(
            description="Custom headers, name to value; `${...}` parts rendered like the "
            "URL's, not percent-encoded."
        ),
    ] = None
    auth: Annotated[
        dict[str, str] | None,
        BeforeValidator(_string_map),
        WithJsonSchema(AUTH_SCHEMA),
        Field(
            description="Write-only credentials: username and password (Basic), token "
            "(Bearer), PEM certificate and key (mTLS)."
        ),
    ] = None
    rate_limit: Annotated[
        float | None,
        Field(gt=0, le=RATE_LIMIT_MAX, allow_inf_nan=False),
        WithJsonSchema(RATE_LIMIT_SCHEMA),
        Field(
            description="Deliveries per second to this webhook, across every worker; over "
            "it a delivery waits (no attempt spent). null: no limit."
        ),
    ] = None
    trace_context: Annotated[
        bool | None,
        WithJsonSchema({"type": "boolean"}),
        Field(
            description="Whether its POSTs carry `traceparent` and `tracestate` (W3C trace "
            "context of the attempt) when tracing is on; default true."
        ),
    ] = None
    enabled: Annotated[bool | None, WithJsonSchema({"type": "boolean"})] = None
    ordered: Annotated[
        bool | None,
        WithJsonSchema({"type": "boolean"}),
        Field(
            description="Ordered per key: events of one parent (submission, form, user, "
            "team, space) are POSTed one at a time, in the order they were published."
        ),
    ] = None
    id: Ignored = None
    secret: Ignored = None
    previous_secret_until: Ignored = None
    disabled_reason: Ignored = None
    created_at: Ignored = None
    updated_at: Ignored = None
    auth_set_at: Ignored = None

    NULLABLE: ClassVar[frozenset[str]] = frozenset(
        {"filter", "authStrategy", "headers", "auth", "rateLimit"}
    )
    DEFINITION: ClassVar[tuple[str, ...]] = (
        "name",
        "type",
        "event",
        "filter",
        "url",
        "auth_strategy",
        "headers",
        "auth",
        "rate_limit",
        "trace_context",
        "enabled",
        "ordered",
    )
    FLAGS: ClassVar[dict[str, bool]] = {"trace_context": True, "ordered": False}
    """Yes/no fields, with their defaults, that a front end offers as a checkbox or an
    option pair (`enabled` has its own actions)."""
    ENTRIES: ClassVar[dict[str, str]] = {"headers": "header"}
    """Maps a front end takes entry by entry (`Name: value`), with one entry's name."""
    WRITE_ONLY: ClassVar[dict[str, tuple[str, ...]]] = {"auth": AUTH_PARTS}
    """Fields never shown, with their parts: a front end offers an input per part."""

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, required: tuple[str, ...] = ()) -> WebhookChange:
        """Raises ValueError with field errors; a null only where null means something."""
        errors: FieldErrors = [
            {"field": key, "message": "must be a string"}
            for key in ("name", "type", "event", "url")
            if key in data and data[key] is None
        ]
        errors += [
            {"field": key, "message": "must be true or false"}
            for key in ("enabled", *cls.flags())
            if key in data and data[key] is None
        ]
        try:
            change = cls.model_validate(data)
        except ValidationError as exc:
            errors += field_errors(exc, nullable=cls.NULLABLE)
        else:
            errors += [
                {"field": key, "message": "is required"} for key in required if key not in data
            ]
        if errors:
            raise InputInvalid("the webhook is not valid", errors)
        return change

    @classmethod
    def options(cls) -> dict[str, str]:
        """Each definition field's wire name and what it means, for a front end to offer."""
        return {
            info.alias or key: info.description or ""
            for key, info in cls.model_fields.items()
            if key in cls.DEFINITION and key != "enabled" and key not in cls.FLAGS
        }

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each yes/no field's wire name and what it means."""
        return {
            info.alias or key: info.description or ""
            for key, info in cls.model_fields.items()
            if key in cls.FLAGS
        }

    @classmethod
    def flag_defaults(cls) -> dict[str, bool]:
        """Each yes/no field's wire name and its value on a new webhook."""
        return {
            info.alias or key: cls.FLAGS[key]
            for key, info in cls.model_fields.items()
            if key in cls.FLAGS
        }

    @classmethod
    def takes_text(cls, alias: str) -> bool:
        """Whether the field is text; any other value (an object, a number) is JSON."""
        [info] = [i for k, i in cls.model_fields.items() if (i.alias or k) == alias]
        kinds = (info.annotation, *get_args(info.annotation))
        return str in {get_args(t)[0] if get_origin(t) is Annotated else t for t in kinds}

    def changes(self) -> dict[str, Any]:
        """The definition's fields this body sets, as `webhooks.Webhook` attributes (null
        headers being none)."""
        changed = {k: getattr(self, k) for k in self.DEFINITION if k in self.model_fields_set}
        if "headers" in changed and changed["headers"] is None:
            changed["headers"] = {}
        return changed


class SecretRotation(_Input):
    grace_seconds: Grace | None = None


class JobRetry(_Input):
    model_config = ConfigDict(extra="allow")

    status: Queued


class Replay(_Input):
    webhook: Annotated[
        str,
        _no_nul(not_empty=True),
        WithJsonSchema(
            {**TEXT_SCHEMA, "minLength": 1, "description": "Name of the webhook in this scope."}
        ),
    ]
    start: Annotated[Timestamp | None, Field(description="scheduledAt at or after.")] = None
    end: Annotated[Timestamp | None, Field(description="scheduledAt before (exclusive).")] = None
    dry_run: Annotated[bool, Field(description="Only count; queue nothing.")] = False


def _limit(value: Any) -> Any:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise _custom(f"must be an integer from 1 to {LIMIT_MAX}")
    return value


def _catalogue_type(value: str) -> str:
    if value not in TYPES:
        raise _custom("must be a catalogue type")
    return value


def _page_token(value: Any) -> Any:
    try:
        return decode_token(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise _custom(str(exc)) from None


def _status(value: Any) -> Any:
    try:
        return parse_status(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise _custom(str(exc)) from None


class _Paged(_Input):
    """A list's paging parameters, and the reading of its query string."""

    limit: Annotated[
        int,
        BeforeValidator(_limit),
        WithJsonSchema(
            {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT}
        ),
        Field(description="Entries per page."),
    ] = LIMIT_DEFAULT
    page_token: Annotated[
        tuple[datetime, str] | None,
        BeforeValidator(_page_token),
        WithJsonSchema(TEXT_SCHEMA),
        Field(description="The nextPageToken of the previous page (same filters)."),
    ] = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Self:
        errors = cls.pairing_errors(query)
        parsed = None
        try:
            parsed = cls.model_validate(dict(query))
        except ValidationError as exc:
            errors = [
                e if e["message"] != "unknown field" else e | {"message": "unknown parameter"}
                for e in field_errors(exc)
            ] + errors
        if errors or parsed is None:
            raise InputInvalid("bad query parameters", errors)
        return parsed

    @classmethod
    def pairing_errors(cls, query: Mapping[str, str]) -> FieldErrors:
        """Parameters that make sense only together, given alone."""
        return []


class JobSelection(_Input):
    """Which jobs: the job list's filters."""

    status: Annotated[
        str | None,
        BeforeValidator(_status),
        WithJsonSchema({"type": "string", "pattern": anycase(*STATUSES.values())}),
        Field(description="Queued, In Progress, Complete, Failed or Cancelled, in any case."),
    ] = None
    webhook: Annotated[Text | None, Field(description="Webhook name.")] = None
    parent_type: Annotated[
        str | None,
        AfterValidator(lambda v: v if v is None else _catalogue_type(v)),
        WithJsonSchema({"type": "string", "enum": TYPES}),
        Field(description="Type of the event's parent (its event type); with parentKey."),
    ] = None
    parent_key: Annotated[
        Text | None,
        Field(description="Submission id, form slug, username, team slug...; with parentType."),
    ] = None
    start: Annotated[
        Timestamp | None,
        Field(description="scheduledAt at or after (inclusive), RFC 3339 with a zone."),
    ] = None
    end: Annotated[
        Timestamp | None,
        Field(description="scheduledAt before (exclusive), RFC 3339 with a zone."),
    ] = None


class JobQuery(_Paged, JobSelection):
    """The job list's query parameters (its filters, then paging); the OpenAPI document
    lists them from this model."""

    @classmethod
    def pairing_errors(cls, query: Mapping[str, str]) -> FieldErrors:
        if ("parentType" in query) == ("parentKey" in query):
            return []
        missing = "parentType" if "parentKey" in query else "parentKey"
        return [{"field": missing, "message": "parentType and parentKey go together"}]


class DeadLetterSelection(_Input):
    """Which dead letters: the list's filters, and the body of a requeue by filters."""

    role: Annotated[
        Text | None,
        Field(description="The role that failed them: router, worker, recorder (or broker)."),
    ] = None
    reason: Annotated[Text | None, Field(description="Text the reason contains, in any case.")] = (
        None
    )
    start: Annotated[
        Timestamp | None,
        Field(description="deadAt at or after (inclusive), RFC 3339 with a zone."),
    ] = None
    end: Annotated[
        Timestamp | None,
        Field(description="deadAt before (exclusive), RFC 3339 with a zone."),
    ] = None


class DeadLetterQuery(_Paged, DeadLetterSelection):
    """The dead letter list's query parameters (its filters, then paging); the OpenAPI
    document lists them from this model."""


class AuditSelection(_Input):
    """Which entries of the audit trail."""

    space: Annotated[
        Text | None, Field(description="Only this space's entries; absent: every space's.")
    ] = None
    start: Annotated[
        Timestamp | None, Field(description="At or after (inclusive), RFC 3339 with a zone.")
    ] = None
    end: Annotated[
        Timestamp | None, Field(description="Before (exclusive), RFC 3339 with a zone.")
    ] = None


class AuditQuery(_Paged, AuditSelection):
    """The audit trail's query parameters (its filters, then paging); the OpenAPI document
    lists them from this model."""


class InputInvalid(ValueError):
    """Input that cannot be used: the message, and the fields at fault."""

    def __init__(self, message: str, errors: FieldErrors) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


M = TypeVar("M", bound=BaseModel)


def parse_input(
    model: type[M], data: Mapping[str, Any], message: str = "the body is not valid"
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputInvalid(message, field_errors(exc)) from None


# answers


class _Output(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        ser_json_inf_nan="constants",
    )

    def wire(self) -> dict[str, Any]:
        """The resource in the platform's JSON shape."""
        return self.model_dump(mode="json", by_alias=True)


class Webhook(_Output):
    id: uuid.UUID
    name: str
    type: str
    event: str
    filter: str | None
    url: str
    auth_strategy: str | None
    headers: dict[str, str]
    trace_context: bool
    auth_set_at: Annotated[
        datetime | None,
        Field(description="When the write-only credentials were last set; null: none held."),
    ]
    rate_limit: Annotated[
        float | None, Field(description="Deliveries per second at most; null: no limit.")
    ]
    enabled: bool
    ordered: bool
    disabled_reason: Annotated[
        str | None,
        Field(description="Why the router disabled it (410 Gone, failing too long), if so."),
    ]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, w: WebhookDefinition) -> Webhook:
        return cls.model_validate({k: getattr(w, k) for k in cls.model_fields})


class WebhookWithSecret(Webhook):
    secret: Annotated[str, Field(description="`whsec_` + base64.")]
    previous_secret_until: Annotated[
        datetime | None,
        Field(description="Until when the rotated-out secret still signs beside this one."),
    ]


class Attempt(_Output):
    replay: Annotated[int, Field(description="0 for the first run, +1 per retry.")]
    attempt: int
    url: str
    started_at: datetime
    duration_ms: float
    response_status: int | None
    response_content: str | None
    error: str | None
    request_headers: dict[str, str]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Attempt:
        return cls.model_validate({k: row[k] for k in cls.model_fields})


class Job(_Output):
    """A webhook job as the log holds it; built from a row in one place (`of`)."""

    id: uuid.UUID
    name: str = Field(
        validation_alias=AliasChoices("webhook_name", "name"),
        description="The webhook's name when the job was made.",
    )
    event: str
    type: str
    webhook_id: uuid.UUID
    parent_id: str | None
    parent_type: str
    scope_id: str
    scope_type: Literal["Space", "Kapp"]
    url: str | None
    request_content: str | None = None
    response_content: str | None = None
    summary: str | None
    retry_count: int
    scheduled_at: datetime
    status: Status
    created_at: datetime
    updated_at: datetime
    run_id: str | None
    tree_group: str
    tree_name: str
    event_id: str
    event_at: datetime
    attempts: int
    response_status: int | None
    duration_ms: float | None
    completed_at: datetime | None
    trace_id: str | None = Field(
        default=None,
        description="The job's trace (32 hex digits) when its event was traced and sampled.",
    )
    space: str = Field(exclude=True)
    replay: int = Field(exclude=True)

    @property
    def webhook_name(self) -> str:
        return self.name

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        return cls.model_validate(dict(row))


class JobDetail(Job):
    attempt_history: list[Attempt]
    after_failed_job: Annotated[
        uuid.UUID | None,
        Field(
            description="Ordered webhooks: the job of the same key just before this one, "
            "when it failed for good and the key moved on to this one."
        ),
    ] = None
    key_moved_on_to: Annotated[
        uuid.UUID | None,
        Field(
            description="Ordered webhooks: for a job failed for good, the job of the same "
            "key its key moved on to."
        ),
    ] = None


class JobRetried(Job):
    out_of_order: Annotated[
        bool,
        Field(
            description="True when the job's webhook is ordered per key: a retry by hand "
            "does not wait for its key, so it reaches the endpoint out of order."
        ),
    ]


JOB_COLUMNS = ", ".join(
    "webhook_name" if k == "name" else k for k in Job.model_fields if k != "attempt_history"
)
"""Every column a Job is built from."""
BRIEF_JOB_COLUMNS = ", ".join(
    c for c in JOB_COLUMNS.split(", ") if c not in ("request_content", "response_content")
)
"""What a page of many jobs needs: every column but the request and response contents."""


class AuditLogEntry(_Output):
    """A change made through the API, the console or the CLI; never holds a secret."""

    id: uuid.UUID
    at: datetime
    actor: Annotated[str, Field(description="The token's name, or the front end that acted.")]
    space: Annotated[
        str | None, Field(description="Null for a change of no one space (key rotation).")
    ]
    action: Annotated[str, Field(description="e.g. `webhook.updated`, `job.retried`.")]
    target: Annotated[str, Field(description="What changed, as the API's paths name it.")]
    before: Annotated[
        dict[str, Any] | None, Field(description="The resource before; null when created.")
    ]
    after: Annotated[
        dict[str, Any] | None, Field(description="The resource after; null when deleted.")
    ]

    @classmethod
    def of(cls, entry: Any) -> AuditLogEntry:
        return cls.model_validate({k: getattr(entry, k) for k in cls.model_fields})


class DeadLetterWebhook(_Output):
    id: str
    name: str | None


class DeadLetter(_Output):
    """A dead letter in a list."""

    id: uuid.UUID
    role: Annotated[str, Field(description="The role that could not handle the message.")]
    reason: str
    dead_at: datetime
    event_id: Annotated[str | None, Field(description="The event it is (or is about).")]
    webhook: Annotated[
        DeadLetterWebhook | None,
        Field(description="The webhook it was for, when it was a delivery or an outcome."),
    ]
    preview: Annotated[
        str, Field(description="The body's first characters as text (NUL as U+FFFD).")
    ]
    requeued_at: Annotated[
        datetime | None, Field(description="When it was last sent back; null: never.")
    ]
    requeue_count: int

    @classmethod
    def of(cls, letter: DeadLetterRow) -> DeadLetter:
        return cls.model_validate(cls._fields(letter))

    @classmethod
    def _fields(cls, letter: DeadLetterRow) -> dict[str, Any]:
        fields = {k: getattr(letter, k) for k in cls.model_fields if hasattr(letter, k)}
        hook = None
        if letter.webhook_id is not None:
            hook = {"id": letter.webhook_id, "name": letter.webhook_name}
        return fields | {"webhook": hook}


class DeadLetterDetail(DeadLetter):
    """A dead letter whole: the message as it died."""

    space: str | None
    routing_key: Annotated[str | None, Field(description="The routing key it was sent with.")]
    message_id: str | None
    headers: Annotated[dict[str, Any], Field(description="Its AMQP headers, as JSON.")]
    body: Annotated[str, Field(description="The body as UTF-8 text (bytes that are not: U+FFFD).")]
    body_base64: Annotated[str, Field(description="The body's exact bytes, base64.")]
    body_bytes: int

    @classmethod
    def of(cls, letter: DeadLetterRow) -> DeadLetterDetail:
        return cls.model_validate(
            cls._fields(letter)
            | {
                "body": letter.body.decode("utf-8", errors="replace"),
                "body_base64": base64.b64encode(letter.body).decode(),
                "body_bytes": len(letter.body),
            }
        )


class ErrorItem(_Output):
    field: str
    message: str


class Error(_Output):
    error: str
    errors: list[ErrorItem] | None = None

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)
