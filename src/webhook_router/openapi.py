"""The API's surface: every route, and the OpenAPI 3.1 document that describes it.

The route table here is what `api.Api.app()` registers, so the document served at
`/app/api/v1/openapi.json` cannot list a route the API lacks, or miss one it has.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from webhook_router import __version__
from webhook_router.catalogue import CATALOGUE, Level
from webhook_router.jobs import Status

V1 = "/app/api/v1"
OPENAPI_PATH = f"{V1}/openapi.json"

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

JSON = "application/json"
Schema = dict[str, Any]


def anycase(*words: str) -> str:
    """A pattern matching any of `words` in any mix of upper and lower case."""

    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(one(w) for w in words) + ")$"


STATUS_PATTERN = anycase(*(s.value for s in Status))
QUEUED_PATTERN = anycase(Status.QUEUED.value)
TYPES = [entry.name for entry in CATALOGUE]
ACTIONS = sorted({action for entry in CATALOGUE for action in entry.actions})


def text(*, min_length: int = 0, max_length: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "pattern": NO_NUL, **extra}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def nullable(schema: Schema) -> Schema:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


TIMESTAMP: Schema = {"type": "string", "format": "date-time"}

# request bodies

_IGNORED = {
    "description": "Read-only; accepted and ignored, so a fetched webhook can be sent back."
}


def _webhook_input(required: list[str]) -> Schema:
    return {
        "type": "object",
        "properties": {
            "name": text(
                min_length=1,
                max_length=NAME_MAX,
                description="Unique in its scope; not blank, not `.` or `..`.",
            ),
            "type": {"type": "string", "enum": TYPES, "description": "A catalogue type."},
            "event": {
                "type": "string",
                "enum": ACTIONS,
                "description": "An action of the type, e.g. `Submitted`.",
            },
            "filter": nullable(
                text(description="Expression; the webhook fires only where it is true.")
            ),
            "url": text(description="URL template; one starting with `/` goes to the engine."),
            "authStrategy": {"type": ["string", "null"], "enum": ["Signature", None]},
            "enabled": {"type": "boolean"},
            **{
                key: _IGNORED
                for key in (
                    "id",
                    "secret",
                    "previousSecretUntil",
                    "disabledReason",
                    "createdAt",
                    "updatedAt",
                )
            },
        },
        "required": required,
        "additionalProperties": False,
    }


def _wrapped(key: str, inner: Schema) -> Schema:
    """The platform's shape `{key: {...}}` or the bare object."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {key: inner},
                "required": [key],
                "additionalProperties": False,
            },
            inner,
        ]
    }


# answers

ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["error"],
    "additionalProperties": False,
}


def _webhook(with_secret: bool) -> Schema:
    properties: Schema = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "event": {"type": "string"},
        "filter": {"type": ["string", "null"]},
        "url": {"type": "string"},
        "authStrategy": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "disabledReason": {"type": ["string", "null"]},
        "createdAt": TIMESTAMP,
        "updatedAt": TIMESTAMP,
    }
    if with_secret:
        properties["secret"] = {"type": "string", "description": "`whsec_` + base64."}
        properties["previousSecretUntil"] = {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "Until when the rotated-out secret still signs beside this one.",
        }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _job(detailed: bool) -> Schema:
    maybe_text = {"type": ["string", "null"]}
    properties: Schema = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string", "description": "The webhook's name when the job was made."},
        "event": {"type": "string"},
        "type": {"type": "string"},
        "webhookId": {"type": "string", "format": "uuid"},
        "parentId": maybe_text,
        "parentType": {"type": "string"},
        "scopeId": {"type": "string"},
        "scopeType": {"type": "string", "enum": ["Space", "Kapp"]},
        "url": maybe_text,
        "requestContent": maybe_text,
        "responseContent": maybe_text,
        "summary": maybe_text,
        "retryCount": {"type": "integer"},
        "scheduledAt": TIMESTAMP,
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "createdAt": TIMESTAMP,
        "updatedAt": TIMESTAMP,
        "runId": maybe_text,
        "treeGroup": {"type": "string"},
        "treeName": {"type": "string"},
        "eventId": {"type": "string"},
        "eventAt": TIMESTAMP,
        "attempts": {"type": "integer"},
        "responseStatus": {"type": ["integer", "null"]},
        "durationMs": {"type": ["number", "null"]},
        "completedAt": {"type": ["string", "null"], "format": "date-time"},
    }
    if detailed:
        properties["attemptHistory"] = {"type": "array", "items": ref("Attempt")}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


ATTEMPT: Schema = {
    "type": "object",
    "properties": {
        "replay": {"type": "integer", "description": "0 for the first run, +1 per retry."},
        "attempt": {"type": "integer"},
        "url": {"type": "string"},
        "startedAt": TIMESTAMP,
        "durationMs": {"type": "number"},
        "responseStatus": {"type": ["integer", "null"]},
        "responseContent": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "requestHeaders": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": [
        "replay",
        "attempt",
        "url",
        "startedAt",
        "durationMs",
        "responseStatus",
        "responseContent",
        "error",
        "requestHeaders",
    ],
    "additionalProperties": False,
}

_SLUGGED: Schema = {
    "type": "object",
    "properties": {"slug": {"type": "string", "minLength": 1}},
    "required": ["slug"],
}

EVENT: Schema = {
    "type": "object",
    "description": "The event envelope: the body webhooks receive. Keys besides these are "
    "kept as they come.",
    "properties": {
        "event": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": TYPES},
                "action": {"type": "string", "enum": ACTIONS},
                "id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "Filled in when missing.",
                },
                "timestamp": {
                    "type": ["string", "number", "null"],
                    "description": "ISO 8601 date-time or Unix seconds; filled in when missing.",
                },
            },
            "required": ["type", "action"],
        },
        "space": _SLUGGED,
        "kapp": {**_SLUGGED, "type": ["object", "null"]},
        "form": {**_SLUGGED, "type": ["object", "null"]},
        "submission": {"type": ["object", "null"]},
        "user": {"type": ["object", "null"]},
        "team": {"type": ["object", "null"]},
    },
    "required": ["event", "space"],
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "Webhook": _webhook(with_secret=False),
    "WebhookWithSecret": _webhook(with_secret=True),
    "WebhookCreate": _webhook_input(["name", "type", "event", "url"]),
    "WebhookUpdate": _webhook_input([]),
    "SecretRotation": {
        "type": "object",
        "properties": {
            "graceSeconds": {
                "type": "number",
                "minimum": 0,
                "maximum": GRACE_MAX,
                "description": "How long the old secret keeps signing beside the new one "
                "(default WEBHOOK_ROUTER_SIGNATURE_GRACE); 0 retires it at once.",
            }
        },
        "additionalProperties": False,
    },
    "WebhookJob": _job(detailed=False),
    "WebhookJobDetail": _job(detailed=True),
    "Attempt": ATTEMPT,
    "JobRetry": {
        "type": "object",
        "properties": {
            "status": {
                "type": "string",
                "pattern": QUEUED_PATTERN,
                "description": "`Queued` (any case): send the job again.",
            }
        },
        "required": ["status"],
    },
    "Replay": {
        "type": "object",
        "properties": {
            "webhook": text(min_length=1, description="Name of the webhook in this scope."),
            "start": {**TIMESTAMP, "description": "scheduledAt at or after (inclusive)."},
            "end": {**TIMESTAMP, "description": "scheduledAt before (exclusive)."},
            "dryRun": {"type": "boolean", "description": "Only count; queue nothing."},
        },
        "required": ["webhook"],
        "additionalProperties": False,
    },
    "Event": EVENT,
}

# parameters

PARAMETERS: dict[str, Schema] = {
    "space": {
        "name": "space",
        "in": "path",
        "required": True,
        "description": "Space slug, percent-encoded.",
        "schema": {"type": "string", "minLength": 1, "maxLength": SLUG_MAX},
    },
    "kapp": {
        "name": "kapp",
        "in": "path",
        "required": True,
        "description": "Kapp slug, percent-encoded.",
        "schema": {"type": "string", "minLength": 1, "maxLength": SLUG_MAX},
    },
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "Webhook name, percent-encoded (`/` as `%2F`, space as `%20`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
    },
    "id": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "Webhook job id.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "level": {
        "name": "level",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [level.value for level in Level]},
    },
}

JOB_QUERY: list[Schema] = [
    {
        "name": "status",
        "in": "query",
        "description": "Queued, In Progress, Complete, Failed or Cancelled, in any case.",
        "schema": {"type": "string", "pattern": STATUS_PATTERN},
    },
    {"name": "webhook", "in": "query", "description": "Webhook name.", "schema": text()},
    {
        "name": "parentType",
        "in": "query",
        "description": "Type of the event's parent (its event type); with parentKey.",
        "schema": {"type": "string", "enum": TYPES},
    },
    {
        "name": "parentKey",
        "in": "query",
        "description": "Submission id, form slug, username, team slug...; with parentType.",
        "schema": text(),
    },
    {
        "name": "start",
        "in": "query",
        "description": "scheduledAt at or after (inclusive), RFC 3339 with a zone.",
        "schema": TIMESTAMP,
    },
    {
        "name": "end",
        "in": "query",
        "description": "scheduledAt before (exclusive), RFC 3339 with a zone.",
        "schema": TIMESTAMP,
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Jobs per page.",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": LIMIT_MAX,
            "default": LIMIT_DEFAULT,
        },
    },
    {
        "name": "pageToken",
        "in": "query",
        "description": "The nextPageToken of the previous page (same filters).",
        "schema": text(),
    },
]

# the route table


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: str
    """Name of the `api.Api` method that serves it."""
    operation_id: str
    summary: str
    tag: str
    responses: dict[str, Schema]
    parameters: list[Schema] = field(default_factory=list)
    body: Schema | None = None
    body_required: bool = True
    public: bool = False


def _answer(description: str, schema: Schema | None = None, media: str = JSON) -> Schema:
    answer: Schema = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def _error(description: str) -> Schema:
    return _answer(description, ref("Error"))


BAD_BODY = _error("The body is not a JSON object.")
UNAUTHORIZED = _error("No valid bearer token.")
INVALID = _error("A field or parameter is not valid; `errors` names each.")
NOT_FOUND = _error("Nothing of that name or id here.")
UNAVAILABLE = _error("The database or the broker is unavailable.")


def _object(key: str, schema: Schema, **more: Schema) -> Schema:
    properties = {key: schema, **more}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _path_parameters(path: str) -> list[Schema]:
    return [PARAMETERS[name] for name in PARAMETERS if "{" + name + "}" in path]


def _scopes() -> Iterator[tuple[str, str, str]]:
    """(path prefix, operation-id suffix, words) of each scope a resource lives in."""
    for space_path, space_id, space_words in (
        (V1, "", "the default space"),
        (f"{V1}/spaces/{{space}}", "InSpace", "a space"),
    ):
        yield space_path, space_id, space_words
        yield (
            f"{space_path}/kapps/{{kapp}}",
            f"OfKapp{space_id}",
            f"a kapp of {space_words}",
        )


def _operations() -> list[Operation]:
    webhook = _object("webhook", ref("Webhook"))
    webhook_secret = _object("webhook", ref("WebhookWithSecret"))
    ops = [
        Operation(
            "GET",
            "/healthz",
            "healthz",
            "healthz",
            "The process is alive.",
            "health",
            {"200": _answer("Alive.", {"type": "object"})},
            public=True,
        ),
        Operation(
            "GET",
            "/readyz",
            "readyz",
            "readyz",
            "The database and the broker answer.",
            "health",
            {
                "200": _answer("Ready.", {"type": "object"}),
                "503": _answer("Not ready; `problems` says why.", {"type": "object"}),
            },
            public=True,
        ),
        Operation(
            "GET",
            OPENAPI_PATH,
            "openapi",
            "openapi",
            "This document.",
            "meta",
            {"200": _answer("The OpenAPI document.", {"type": "object"})},
            public=True,
        ),
        Operation(
            "GET",
            "/metrics",
            "prometheus",
            "metrics",
            "Prometheus metrics of this process, and the depth of every queue.",
            "health",
            {
                "200": _answer("Prometheus text format.", {"type": "string"}, "text/plain"),
                "401": UNAUTHORIZED,
            },
        ),
        Operation(
            "POST",
            f"{V1}/events",
            "ingest",
            "publishEvent",
            "Publish an event, as platform services do.",
            "events",
            {
                "202": _answer("Stored by the broker.", _object("id", {"type": "string"})),
                "400": _error(
                    "The body is not UTF-8 JSON, not a JSON object, nested deeper than 254 "
                    "levels, or did not arrive whole within the body timeout."
                ),
                "401": UNAUTHORIZED,
                "413": _error("The body is over 1 MiB."),
                "422": INVALID,
                "503": _error("The broker is unavailable or did not confirm; not accepted."),
            },
            body=ref("Event"),
        ),
    ]
    for what, handler in (("types", "meta_types"), ("events", "meta_events")):
        schema = (
            _object("types", {"type": "array", "items": {"type": "string"}})
            if what == "types"
            else _object(
                "events",
                {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            )
        )
        path = f"{V1}/meta/webhooks/{what}/{{level}}"
        ops.append(
            Operation(
                "GET",
                path,
                handler,
                f"webhook{what.title()}",
                f"The catalogue's webhook {what} at a level.",
                "meta",
                {"200": _answer("The catalogue.", schema), "401": UNAUTHORIZED, "404": NOT_FOUND},
                _path_parameters(path),
            )
        )
    for base, suffix, words in _scopes():
        hooks = f"{base}/webhooks"
        one = f"{hooks}/{{name}}"
        secret = f"{one}/secret"
        jobs = f"{base}/webhookJobs"
        job = f"{jobs}/{{id}}"
        replay = f"{jobs}/replay"
        ops += [
            Operation(
                "GET",
                hooks,
                "list_webhooks",
                f"listWebhooks{suffix}",
                f"The webhooks of {words}, by name.",
                "webhooks",
                {
                    "200": _answer(
                        "The webhooks (without secrets).",
                        _object("webhooks", {"type": "array", "items": ref("Webhook")}),
                    ),
                    "401": UNAUTHORIZED,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(hooks),
            ),
            Operation(
                "POST",
                hooks,
                "create_webhook",
                f"createWebhook{suffix}",
                f"Create a webhook in {words}.",
                "webhooks",
                {
                    "201": _answer("Created, with its signing secret.", webhook_secret),
                    "400": BAD_BODY,
                    "401": UNAUTHORIZED,
                    "409": _error("A webhook of that name exists here."),
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(hooks),
                body=_wrapped("webhook", ref("WebhookCreate")),
            ),
            Operation(
                "GET",
                one,
                "get_webhook",
                f"getWebhook{suffix}",
                "One webhook, with its signing secret.",
                "webhooks",
                {
                    "200": _answer("The webhook.", webhook_secret),
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(one),
            ),
            Operation(
                "PUT",
                one,
                "update_webhook",
                f"updateWebhook{suffix}",
                "Change some fields of a webhook; absent fields keep their value.",
                "webhooks",
                {
                    "200": _answer("The webhook as saved.", webhook_secret),
                    "400": BAD_BODY,
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "409": _error("Renamed to a name taken here."),
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(one),
                body=_wrapped("webhook", ref("WebhookUpdate")),
            ),
            Operation(
                "DELETE",
                one,
                "delete_webhook",
                f"deleteWebhook{suffix}",
                "Delete a webhook; its jobs stay in the job log.",
                "webhooks",
                {
                    "200": _answer("The webhook as it was.", webhook),
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(one),
            ),
            Operation(
                "POST",
                secret,
                "rotate_secret",
                f"rotateWebhookSecret{suffix}",
                "Give a webhook a new signing secret; the old one keeps signing beside it "
                "for a grace period.",
                "webhooks",
                {
                    "200": _answer("The webhook with its new secret.", webhook_secret),
                    "400": BAD_BODY,
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(secret),
                body=ref("SecretRotation"),
                body_required=False,
            ),
            Operation(
                "GET",
                jobs,
                "list_jobs",
                f"listWebhookJobs{suffix}",
                f"Webhook jobs of {words}, newest scheduledAt first, a page at a time.",
                "webhookJobs",
                {
                    "200": _answer(
                        "A page of jobs; nextPageToken is null on the last page.",
                        _object(
                            "webhookJobs",
                            {"type": "array", "items": ref("WebhookJob")},
                            nextPageToken={"type": ["string", "null"]},
                        ),
                    ),
                    "401": UNAUTHORIZED,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(jobs) + JOB_QUERY,
            ),
            Operation(
                "POST",
                replay,
                "replay_jobs",
                f"replayWebhookJobs{suffix}",
                "Retry every Failed job of a webhook of this scope scheduled in a window.",
                "webhookJobs",
                {
                    "200": _answer(
                        "How many jobs were (or, in a dry run, would be) queued.",
                        _object("queued", {"type": "integer"}, dryRun={"type": "boolean"}),
                    ),
                    "400": BAD_BODY,
                    "401": UNAUTHORIZED,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(replay),
                body=ref("Replay"),
            ),
            Operation(
                "GET",
                job,
                "get_job",
                f"getWebhookJob{suffix}",
                "One job, with every attempt.",
                "webhookJobs",
                {
                    "200": _answer("The job.", _object("webhookJob", ref("WebhookJobDetail"))),
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(job),
            ),
            Operation(
                "PUT",
                job,
                "update_job",
                f"retryWebhookJob{suffix}",
                "Retry a Failed or Cancelled job through its webhook's current definition.",
                "webhookJobs",
                {
                    "200": _answer(
                        "The job, now Queued.", _object("webhookJob", ref("WebhookJob"))
                    ),
                    "400": BAD_BODY,
                    "401": UNAUTHORIZED,
                    "404": NOT_FOUND,
                    "409": _error("The job is not Failed or Cancelled, or its webhook is gone."),
                    "422": INVALID,
                    "503": UNAVAILABLE,
                },
                _path_parameters(job),
                body=_wrapped("webhookJob", ref("JobRetry")),
            ),
        ]
    return ops


OPERATIONS: tuple[Operation, ...] = tuple(_operations())
PUBLIC_PATHS = frozenset(op.path for op in OPERATIONS if op.public)


def _operation_object(op: Operation) -> Schema:
    data: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": op.responses,
    }
    if op.parameters:
        data["parameters"] = op.parameters
    if op.body is not None:
        data["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": op.body}}}
    if op.public:
        data["security"] = []
    return data


@functools.cache
def document() -> Schema:
    """The OpenAPI 3.1 document of the whole API."""
    paths: dict[str, dict[str, Schema]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-router API",
            "version": __version__,
            "description": "Webhooks and webhook jobs in the workflow platform's shapes, "
            "event ingest, health and metrics. Every path but /healthz, /readyz and this "
            "document needs `Authorization: Bearer <token>`. The short paths act on the "
            "default space; `/app/api/v1/spaces/{space}/...` on any.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
