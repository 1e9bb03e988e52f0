"""The API's surface: every route, and the OpenAPI 3.1 document that describes it.

The route table here is what `api.Api.app()` registers, so the document served at
`/app/api/v1/openapi.json` cannot list a route the API lacks, or miss one it has. Its
schemas are the resource models' own (models.py): what the document states is what the
API checks and what it answers.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from webhook_router import __version__, models
from webhook_router.catalogue import CATALOGUE, EXTENSIONS, Level
from webhook_router.models import ACTIONS, NAME_MAX, SLUG_MAX, TYPES
from webhook_router.rights import right_of

V1 = "/app/api/v1"
OPENAPI_PATH = f"{V1}/openapi.json"
DEAD_LETTERS = f"{V1}/deadLetters"
JSON = "application/json"
Schema = dict[str, Any]
REF = "#/components/schemas/{model}"


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _component_schemas() -> dict[str, Schema]:
    """Every model's JSON schema, inputs as validated and answers as serialized."""
    chosen: list[tuple[type[BaseModel], Any]] = [
        (m, "validation")
        for m in (
            models.WebhookChange,
            models.SecretRotation,
            models.JobRetry,
            models.Replay,
            models.DeadLetterSelection,
        )
    ] + [
        (m, "serialization")
        for m in (
            models.Webhook,
            models.WebhookWithSecret,
            models.Job,
            models.JobDetail,
            models.JobRetried,
            models.Attempt,
            models.DeadLetter,
            models.DeadLetterDetail,
            models.AuditLogEntry,
            models.Error,
        )
    ]
    _, top = models_json_schema(chosen, by_alias=True, ref_template=REF)
    schemas: dict[str, Schema] = top["$defs"]
    create = copy.deepcopy(schemas["WebhookChange"])
    create["required"] = ["name", "type", "event", "url"]
    for key in create["required"]:
        create["properties"][key].pop("default", None)
        create["properties"][key] = _not_null(create["properties"][key])
    for level in Level:
        choices = [
            {"properties": {"type": {"const": t.name}, "event": {"enum": list(t.actions)}}}
            for t in CATALOGUE
            if t.level is level
        ]
        schemas[f"WebhookCreate{level.value.title()}"] = create | {"oneOf": choices}
    schemas["Event"] = _event()
    return schemas


def _not_null(schema: Schema) -> Schema:
    if "anyOf" in schema:
        [kept] = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return {**kept, **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _event() -> Schema:
    """The event envelope: one choice per catalogue type, each naming its actions and the
    entities an event of that type must carry."""
    slugged: Schema = {
        "type": "object",
        "properties": {"slug": {"type": "string", "minLength": 1}},
        "required": ["slug"],
    }
    choices = []
    for entry in CATALOGUE:
        choices.append(
            {
                "type": "object",
                "title": entry.name,
                "properties": {
                    "event": {
                        "type": "object",
                        "properties": {
                            "type": {"const": entry.name},
                            "action": {"type": "string", "enum": list(entry.actions)},
                        },
                        "required": ["type", "action"],
                    },
                    **{name: {"type": "object"} for name in entry.entities},
                },
                "required": ["event", *entry.entities],
            }
        )
    return {
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
                        "anyOf": [
                            {"type": "string", "format": "date-time"},
                            {"type": "number", "minimum": 0, "maximum": 253402300799},
                            {"type": "null"},
                        ],
                        "description": "ISO 8601 date-time or Unix seconds; filled in when "
                        "missing.",
                    },
                },
                "required": ["type", "action"],
            },
            "space": slugged,
            "kapp": {**slugged, "type": ["object", "null"]},
            "form": {**slugged, "type": ["object", "null"]},
            "submission": {"type": ["object", "null"]},
            "user": {"type": ["object", "null"]},
            "team": {"type": ["object", "null"]},
        },
        "required": ["event", "space"],
        "oneOf": choices,
    }


def _wrapped(key: str, inner: Schema) -> Schema:
    """The platform's shape `{key: {...}}` or the bare object, never both: a body with `key`
    is the wrapped form and holds nothing else."""
    return {"oneOf": [_object(key, inner), {"allOf": [inner], "not": {"required": [key]}}]}


def _object(key: str, schema: Schema, **more: Schema) -> Schema:
    properties = {key: schema, **more}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _path_parameter(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


SLUG = {"type": "string", "minLength": 1, "maxLength": SLUG_MAX}
PARAMETERS: dict[str, Schema] = {
    "space": _path_parameter("space", "Space slug, percent-encoded.", SLUG),
    "kapp": _path_parameter("kapp", "Kapp slug, percent-encoded.", SLUG),
    "name": _path_parameter(
        "name",
        "Webhook name, percent-encoded (`/` as `%2F`, space as `%20`).",
        {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
    ),
    "id": _path_parameter("id", "Webhook job id.", {"type": "string", "format": "uuid"}),
    "letter": _path_parameter("id", "Dead letter id.", {"type": "string", "format": "uuid"}),
    "level": _path_parameter(
        "level", "Space or kapp.", {"type": "string", "enum": [level.value for level in Level]}
    ),
}


EXTENSIONS_PARAMETER: Schema = {
    "name": EXTENSIONS,
    "in": "query",
    "description": "`true`: the router's own operator events (type `Webhook`) too; "
    "without it, the platform's catalogue unchanged.",
    "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
}


def _query(model: type[BaseModel]) -> list[Schema]:
    """A model's fields as query parameters."""
    schema = model.model_json_schema(by_alias=True)
    parameters = []
    for name, prop in schema["properties"].items():
        description = prop.get("description", "")
        inner = _not_null({k: v for k, v in prop.items() if k not in ("title", "description")})
        inner.pop("default", None) if inner.get("type") != "integer" else None
        parameters.append(
            {"name": name, "in": "query", "description": description, "schema": inner}
        )
    return parameters


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
    scoped: bool = False
    """Acts on the space of its path (the default space for the short paths)."""

    @property
    def query(self) -> frozenset[str]:
        """The query parameters it takes; any other is refused."""
        return frozenset(p["name"] for p in self.parameters if p["in"] == "query")


def _answer(description: str, schema: Schema | None = None, media: str = JSON) -> Schema:
    answer: Schema = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


ERRORS = {
    "400": "The body is not a JSON object.",
    "401": "No valid bearer token.",
    "403": "The token's role lacks the right this operation needs; `error` names it.",
    "404": "Nothing of that name or id here, or a space the token does not reach.",
    "409": "It clashes with what is stored.",
    "413": "The body is too large.",
    "422": "A field or parameter is not valid; `errors` names each.",
    "503": "The database or the broker is unavailable.",
}


def _answers(ok: str, description: str, schema: Schema | None, errors: str, **why: str) -> Schema:
    """The success answer and the errors (codes separated by spaces; `why` words one)."""
    answers = {ok: _answer(description, schema)}
    for code in errors.split():
        answers[code] = _answer(why.get(f"e{code}", ERRORS[code]), ref("Error"))
    return answers


def _list(model: str) -> Schema:
    return {"type": "array", "items": ref(model)}


def _scopes() -> Iterator[tuple[str, str, str]]:
    """(path prefix, operation-id suffix, words) of each scope a resource lives in."""
    for space_path, space_id, space_words in (
        (V1, "", "the default space"),
        (f"{V1}/spaces/{{space}}", "InSpace", "a space"),
    ):
        yield space_path, space_id, space_words
        yield f"{space_path}/kapps/{{kapp}}", f"OfKapp{space_id}", f"a kapp of {space_words}"


HOOK = _object("webhook", ref("Webhook"))
SECRET = _object("webhook", ref("WebhookWithSecret"))
SAVED = _object(
    "webhook",
    ref("WebhookWithSecret"),
    warnings={
        "type": "array",
        "items": {"type": "string"},
        "description": "What the admin should know although the webhook was saved: e.g. "
        "that its URL's host is an address the delivery guard refuses. Empty if nothing.",
    },
)
MAYBE_SECRET = _object("webhook", {"anyOf": [ref("WebhookWithSecret"), ref("Webhook")]})
FOUND = "401 404 422 503"
SCOPED: tuple[tuple[str, str, str, str, str, str, Schema, Any], ...] = (
    # method, path in the scope, handler, operation id, summary (of {words}), tag, answers, body
    (
        "GET", "/webhooks", "list_webhooks", "listWebhooks", "The webhooks of {words}, by name.",
        "webhooks",
        _answers("200", "The webhooks.", _object("webhooks", _list("Webhook")), "401 422 503"),
        None,
    ),
    (
        "POST", "/webhooks", "create_webhook", "createWebhook", "Create a webhook in {words}.",
        "webhooks",
        _answers("201", "Created, with its signing secret.", SAVED, "400 401 409 422 503",
                 e409="A webhook of that name exists here."),
        None,  # per level: see _operations
    ),
    (
        "GET", "/webhooks/{name}", "get_webhook", "getWebhook",
        "One webhook, with its secret for a token that may read secrets.", "webhooks",
        _answers("200", "The webhook.", MAYBE_SECRET, FOUND), None,
    ),
    (
        "PUT", "/webhooks/{name}", "update_webhook", "updateWebhook",
        "Change some fields of a webhook; absent fields keep their value.", "webhooks",
        _answers("200", "The webhook as saved.", SAVED, "400 409 " + FOUND,
                 e409="Renamed to a name taken here."),
        _wrapped("webhook", ref("WebhookChange")),
    ),
    (
        "DELETE", "/webhooks/{name}", "delete_webhook", "deleteWebhook",
        "Delete a webhook; its jobs stay in the job log.", "webhooks",
        _answers("200", "The webhook as it was.", HOOK, FOUND), None,
    ),
    (
        "POST", "/webhooks/{name}/secret", "rotate_secret", "rotateWebhookSecret",
        "Give a webhook a new signing secret; the old one keeps signing beside it for a grace "
        "period.", "webhooks",
        _answers("200", "The webhook with its new secret.", SECRET, "400 " + FOUND),
        ref("SecretRotation"),
    ),
    (
        "GET", "/webhookJobs", "list_jobs", "listWebhookJobs",
        "Webhook jobs of {words}, newest scheduledAt first, a page at a time.", "webhookJobs",
        _answers("200", "A page of jobs; nextPageToken is null on the last page.",
                 _object("webhookJobs", _list("Job"), nextPageToken={"type": ["string", "null"]}),
                 "401 422 503"),
        None,
    ),
    (
        "POST", "/webhookJobs/replay", "replay_jobs", "replayWebhookJobs",
        "Retry every Failed job of a webhook of this scope scheduled in a window.", "webhookJobs",
        _answers("200", "How many jobs were (or, in a dry run, would be) queued.",
                 _object("queued", {"type": "integer"}, dryRun={"type": "boolean"}),
                 "400 " + FOUND),
        ref("Replay"),
    ),
    (
        "GET", "/webhookJobs/{id}", "get_job", "getWebhookJob", "One job, with every attempt.",
        "webhookJobs", _answers("200", "The job.", _object("webhookJob", ref("JobDetail")), FOUND),
        None,
    ),
    (
        "PUT", "/webhookJobs/{id}", "update_job", "retryWebhookJob",
        "Retry a Failed or Cancelled job through its webhook's current definition.", "webhookJobs",
        _answers("200", "The job, now Queued.", _object("webhookJob", ref("JobRetried")),
                 "400 409 " + FOUND, e409="Not Failed or Cancelled, or its webhook is gone."),
        _wrapped("webhookJob", ref("JobRetry")),
    ),
)  # fmt: skip
"""The operations every scope has, in each of the four scopes."""


def _operation(
    method: str,
    path: str,
    handler: str,
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    **more: Any,
) -> Operation:
    parameters = [PARAMETERS[n] for n in PARAMETERS if "{" + n + "}" in path]
    if path.startswith(DEAD_LETTERS):
        parameters = [PARAMETERS["letter"]] if "{id}" in path else []
    if path.endswith("/webhookJobs") and method == "GET":
        parameters += _query(models.JobQuery)
    if path == DEAD_LETTERS and method == "GET":
        parameters += _query(models.DeadLetterQuery)
    return Operation(
        method, path, handler, operation_id, summary, tag, responses, parameters, **more
    )


def _operations() -> list[Operation]:
    status = _answer("Ready, or (503) not: `problems` says why.", {"type": "object"})
    strings = {"type": "array", "items": {"type": "string"}}
    ops = [
        _operation("GET", "/healthz", "healthz", "healthz", "The process is alive.", "health",
                   {"200": _answer("Alive.", {"type": "object"})}, public=True),
        _operation("GET", "/readyz", "readyz", "readyz", "The database and the broker answer.",
                   "health", {"200": status, "503": status}, public=True),
        _operation("GET", OPENAPI_PATH, "openapi", "openapi", "This document.", "meta",
                   {"200": _answer("The OpenAPI document.", {"type": "object"})}, public=True),
        _operation("GET", "/metrics", "prometheus", "metrics",
                   "Prometheus metrics of this process, and the depth of every queue.", "health",
                   {"200": _answer("Prometheus text format.", {"type": "string"}, "text/plain"),
                    "401": _answer(ERRORS["401"], ref("Error"))}),
        _operation("POST", f"{V1}/events", "ingest", "publishEvent",
                   "Publish an event, as platform services do.", "events",
                   _answers("202", "Stored by the broker.", _object("id", {"type": "string"}),
                            "400 401 413 422 503",
                            e400="The body is not UTF-8 JSON, not a JSON object, nested deeper "
                            "than 254 levels, or did not arrive whole within the body timeout.",
                            e413="The body is over 1 MiB.",
                            e503="The broker is unavailable or did not confirm; not accepted."),
                   body=ref("Event")),
        Operation("GET", f"{V1}/auditLog", "audit_log", "listAuditLog",
                  "Changes made through the API, the console or the CLI, newest first, a page "
                  "at a time; secrets never appear.", "audit",
                  _answers("200", "A page of entries; nextPageToken is null on the last page.",
                           _object("auditLog", _list("AuditLogEntry"),
                                   nextPageToken={"type": ["string", "null"]}),
                           "401 422 503"),
                  _query(models.AuditQuery)),
    ]  # fmt: skip
    for what, handler, schema in (
        ("types", "meta_types", strings),
        ("events", "meta_events", {"type": "object", "additionalProperties": strings}),
    ):
        path = f"{V1}/meta/webhooks/{what}/{{level}}"
        summary = f"The catalogue's webhook {what} at a level."
        answers = _answers("200", "The catalogue.", _object(what, schema), "401 404 422")
        operation = _operation(
            "GET", path, handler, f"webhook{what.title()}", summary, "meta", answers
        )
        operation.parameters.append(EXTENSIONS_PARAMETER)
        ops.append(operation)
    letter = _object("deadLetter", ref("DeadLetterDetail"))
    ops += [
        _operation("GET", DEAD_LETTERS, "list_dead_letters", "listDeadLetters",
                   "Dead letters (messages a role could not handle), newest deadAt first, a "
                   "page at a time.", "deadLetters",
                   _answers("200", "A page of dead letters; nextPageToken is null on the last "
                            "page.", _object("deadLetters", _list("DeadLetter"),
                                             nextPageToken={"type": ["string", "null"]}),
                            "401 422 503")),
        _operation("GET", f"{DEAD_LETTERS}/{{id}}", "get_dead_letter", "getDeadLetter",
                   "One dead letter, with the whole message.", "deadLetters",
                   _answers("200", "The dead letter.", letter, FOUND)),
        _operation("POST", f"{DEAD_LETTERS}/{{id}}/requeue", "requeue_dead_letter",
                   "requeueDeadLetter",
                   "Send a dead letter back to where it died (the exchange of the role that "
                   "failed it, with its routing key).", "deadLetters",
                   _answers("200", "The dead letter, marked requeued.", letter,
                            "409 " + FOUND, e409="No role to send it back to.")),
        _operation("POST", f"{DEAD_LETTERS}/requeue", "requeue_dead_letters",
                   "requeueDeadLetters",
                   "Send back every dead letter the filters select that was never requeued.",
                   "deadLetters",
                   _answers("200", "How many were sent back.",
                            _object("requeued", {"type": "integer"}), "400 401 422 503"),
                   body=ref("DeadLetterSelection"), body_required=False),
    ]  # fmt: skip
    for base, suffix, words in _scopes():
        level = "Kapp" if "{kapp}" in base else "Space"
        for method, path, handler, op_id, summary, tag, answers, body in SCOPED:
            if handler == "create_webhook":
                body = _wrapped("webhook", ref(f"WebhookCreate{level}"))
            ops.append(
                _operation(
                    method, base + path, handler, op_id + suffix, summary.format(words=words),
                    tag, answers, body=body, body_required=handler != "rotate_secret",
                    scoped=True,
                )
            )  # fmt: skip
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
    else:
        right = right_of(op.operation_id)
        data["x-right"] = right.value if right else None
        data["responses"] = op.responses | {"403": _answer(ERRORS["403"], ref("Error"))}
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
            "document needs `Authorization: Bearer <token>`; `x-right` names the right each "
            "operation needs (docs/security.md). The short paths act on the default space; "
            "`/app/api/v1/spaces/{space}/...` on any.",
        },
        "paths": paths,
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
