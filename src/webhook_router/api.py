"""The HTTP API: event ingest, webhooks and webhook jobs in the platform's shapes, health,
metrics and the OpenAPI document.

Paths and JSON follow the platform's Core API (`/app/api/v1/webhooks`,
`/app/api/v1/kapps/{kapp}/webhookJobs`, ...); every path also exists under
`/app/api/v1/spaces/{space}/`, the short form acting on the default space. The routes are
the table in `openapi`; this module is the thin layer between HTTP and the store.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from webhook_router import broker, metrics
from webhook_router.catalogue import TYPES, Level, events_at, types_at
from webhook_router.console import console_app
from webhook_router.ingest import BodyRefused, read_event, read_object
from webhook_router.jobs import Status
from webhook_router.openapi import (
    GRACE_MAX,
    LIMIT_DEFAULT,
    LIMIT_MAX,
    NAME_MAX,
    OPERATIONS,
    PUBLIC_PATHS,
    SLUG_MAX,
    document,
)
from webhook_router.publisher import Publisher
from webhook_router.replay import ReplayRefused, replay_failed, replay_job
from webhook_router.settings import Settings, parse_schedule
from webhook_router.store import JobFilter, Store
from webhook_router.topology import Names, Topology, declare
from webhook_router.webhooks import Webhook, WebhookInvalid, check_definition

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FieldErrors = list[dict[str, str]]

DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
WEBHOOK_FIELDS = {
    "name": "name",
    "type": "type",
    "event": "event",
    "filter": "filter",
    "url": "url",
    "authStrategy": "auth_strategy",
    "enabled": "enabled",
}
WEBHOOK_READ_ONLY = frozenset(
    {"id", "secret", "previousSecretUntil", "disabledReason", "createdAt", "updatedAt"}
)
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DIGITS = re.compile(r"[0-9]+")
STATUSES = {s.value.lower(): s.value for s in Status}
CONSOLE = "/console"
"""Where the jobs console is mounted; it signs its users in itself and answers in HTML."""


def is_console(path: str) -> bool:
    return path == CONSOLE or path.startswith(CONSOLE + "/")


class ApiError(Exception):
    """An answer other than success: status, message and the fields at fault."""

    def __init__(self, status: int, message: str, errors: FieldErrors | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def invalid(field: str, message: str, what: str = "a parameter is not valid") -> ApiError:
    return ApiError(422, what, [{"field": field, "message": message}])


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str, errors: FieldErrors | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if errors:
        body["errors"] = errors
    return json_response(body, status)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def webhook_json(w: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": w.id,
        "name": w.name,
        "type": w.type,
        "event": w.event,
        "filter": w.filter,
        "url": w.url,
        "authStrategy": w.auth_strategy,
        "enabled": w.enabled,
        "disabledReason": w.disabled_reason,
        "createdAt": _iso(w.created_at),
        "updatedAt": _iso(w.updated_at),
    }
    if with_secret:
        data["secret"] = w.secret
        data["previousSecretUntil"] = _iso(w.previous_secret_until)
    return data


def job_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["webhook_name"],
        "event": row["event"],
        "type": row["type"],
        "webhookId": str(row["webhook_id"]),
        "parentId": row["parent_id"],
        "parentType": row["parent_type"],
        "scopeId": row["scope_id"],
        "scopeType": row["scope_type"],
        "url": row["url"],
        "requestContent": row["request_content"],
        "responseContent": row["response_content"],
        "summary": row["summary"],
        "retryCount": row["retry_count"],
        "scheduledAt": _iso(row["scheduled_at"]),
        "status": row["status"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "runId": row["run_id"],
        "treeGroup": row["tree_group"],
        "treeName": row["tree_name"],
        "eventId": row["event_id"],
        "eventAt": _iso(row["event_at"]),
        "attempts": row["attempts"],
        "responseStatus": row["response_status"],
        "durationMs": row["duration_ms"],
        "completedAt": _iso(row["completed_at"]),
    }


def attempt_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "replay": row["replay"],
        "attempt": row["attempt"],
        "url": row["url"],
        "startedAt": _iso(row["started_at"]),
        "durationMs": row["duration_ms"],
        "responseStatus": row["response_status"],
        "responseContent": row["response_content"],
        "error": row["error"],
        "requestHeaders": row["request_headers"],
    }


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


def parse_time(value: str) -> datetime:
    """An RFC 3339 date-time with its zone; ValueError saying what is wrong."""
    if not _DATE_TIME.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time with a zone, e.g. 2024-05-01T00:00:00Z "
            "(in a query string write + as %2B)"
        )
    try:
        at = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a date-time that exists") from None
    return at


def text_problem(value: str, max_length: int | None = None) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters"
    return None


def _webhook_changes(data: dict[str, Any]) -> dict[str, Any]:
    """The fields a body sets, as `Webhook` attributes; ApiError(422) naming each bad one."""
    errors: FieldErrors = [
        {"field": key, "message": "unknown field"}
        for key in data
        if key not in WEBHOOK_FIELDS and key not in WEBHOOK_READ_ONLY
    ]
    changes: dict[str, Any] = {}
    for key, attr in WEBHOOK_FIELDS.items():
        if key not in data:
            continue
        value = data[key]
        problem = None
        if key == "enabled":
            if not isinstance(value, bool):
                problem = "must be true or false"
        elif value is None and key in ("filter", "authStrategy"):
            pass
        elif not isinstance(value, str):
            nullable = key in ("filter", "authStrategy")
            problem = "must be a string or null" if nullable else "must be a string"
        else:
            problem = text_problem(value, NAME_MAX if key == "name" else None)
            if problem is None and key == "name" and value in (".", ".."):
                problem = "cannot be `.` or `..`: no URL path could name it"
        if problem:
            errors.append({"field": key, "message": problem})
        changes[attr] = value
    if errors:
        raise ApiError(422, "the webhook is not valid", errors)
    return changes


def _check(kapp: str | None, fields: dict[str, Any]) -> None:
    try:
        check_definition(
            kapp=kapp,
            name=fields["name"],
            type=fields["type"],
            event=fields["event"],
            filter=fields["filter"],
            url=fields["url"],
            auth_strategy=fields["auth_strategy"],
        )
    except WebhookInvalid as exc:
        raise ApiError(422, "the webhook is not valid", exc.errors) from None


@functools.cache
def _openapi_body() -> bytes:
    return orjson.dumps(document())


class Api:
    """Owns the API's connections; `app()` builds the aiohttp application."""

    name = "api"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.names = Names(settings.namespace, settings.delivery_shards)
        self.publisher = Publisher(settings.amqp_url, settings.namespace)
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self._connecting = asyncio.Lock()
        self.tokens = [t.encode() for t in settings.api_token]
        self.depths = metrics.QueueDepths(self.names, parse_schedule(settings.retry_schedule))
        self._prometheus = metrics.handler(self._refresh_depths)

    async def ensure_broker(self) -> Topology:
        """Connect on first use, so the API serves reads while the broker is away; one
        request connects while the others wait for it."""
        async with self._connecting:
            if self.topology is None or self.connection is None or self.connection.is_closed:
                self.connection = await broker.connect(self.settings.amqp_url, name="api")
                channel = await broker.channel(self.connection)
                self.topology = await declare(
                    channel, self.names, parse_schedule(self.settings.retry_schedule)
                )
            if not self.publisher.connected:
                await self.publisher.open()
            return self.topology

    async def close(self) -> None:
        await self.publisher.close()
        if self.connection is not None:
            await self.connection.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure, self._errors, self._auth])
        for op in OPERATIONS:
            app.router.add_route(op.method, op.path, getattr(self, op.handler))
        app.add_subapp("/console/", console_app(self))
        return app

    # middlewares

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            method = request.method if request.method in METHODS else "other"
            metrics.api_request(method, route, status)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or is_console(request.path):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(given, t) for t in self.tokens
        ):
            response = error(401, "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.message, exc.errors)
        except web.HTTPException as exc:
            if exc.status < 400 or is_console(request.path):
                raise
            response = error(exc.status, exc.reason)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except DATABASE_UNAVAILABLE as exc:
            log.warning("database unavailable", path=request.path, error=repr(exc))
            return error(503, "the database is unavailable")
        except Exception:
            log.exception("request failed", method=request.method, path=request.path)
            return error(500, "internal error")

    # health, metrics, the document

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = {}
        try:
            await self.store.pool.fetchval("SELECT 1")
        except Exception as exc:  # any failure means not ready
            problems["database"] = repr(exc)
        try:
            await self.ensure_broker()
        except Exception as exc:  # any failure means not ready
            problems["broker"] = repr(exc)
        if problems:
            return json_response({"status": "unavailable", "problems": problems}, 503)
        return json_response({"status": "ready"})

    async def _refresh_depths(self) -> None:
        try:
            await asyncio.wait_for(self.ensure_broker(), self.depths.timeout)
        except Exception as exc:  # no broker: the counters are still worth serving
            log.warning("queue depths not read: broker unavailable", error=repr(exc))
        await self.depths.refresh(self.connection)

    async def prometheus(self, request: web.Request) -> web.Response:
        return await self._prometheus(request)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=_openapi_body(), content_type="application/json")

    # request parts

    async def _json(self, request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
        try:
            return await read_object(request, self.settings.body_timeout, empty_ok=empty_ok)
        except BodyRefused as exc:
            raise ApiError(exc.status, exc.message, exc.errors) from None

    async def _body(self, request: web.Request, key: str) -> dict[str, Any]:
        """The object itself, or the platform's `{key: {...}}` around it."""
        data = await self._json(request)
        if list(data) == [key]:
            inner = data[key]
            if not isinstance(inner, dict):
                raise invalid(key, "must be an object", "the body is not valid")
            return inner
        return data

    def _path(self, request: web.Request, key: str, max_length: int) -> str:
        value = request.match_info[key]
        problem = text_problem(value, max_length)
        if problem:
            raise invalid(key, problem)
        return value

    def _scope(self, request: web.Request) -> tuple[str, str | None]:
        space = (
            self._path(request, "space", SLUG_MAX)
            if "space" in request.match_info
            else self.settings.default_space
        )
        kapp = self._path(request, "kapp", SLUG_MAX) if "kapp" in request.match_info else None
        return space, kapp

    # ingest

    async def ingest(self, request: web.Request) -> web.Response:
        try:
            event = await read_event(request, self.settings.body_timeout)
        except BodyRefused as exc:
            raise ApiError(exc.status, exc.message, exc.errors) from None
        try:
            await self.ensure_broker()
            await self.publisher.publish(event)
        except Exception as exc:  # the body was checked: only the broker is left to fail
            # the publisher is shared and reconnects by itself: closing it here would fail
            # every other request publishing at this moment
            log.warning("ingest failed: broker unavailable", error=repr(exc))
            return error(503, "the broker is unavailable; the event was not accepted")
        return json_response({"id": event.id}, 202)

    # meta

    def _level(self, request: web.Request) -> Level:
        try:
            return Level(request.match_info["level"])
        except ValueError:
            raise ApiError(404, "level must be space or kapp") from None

    async def meta_types(self, request: web.Request) -> web.Response:
        return json_response({"types": types_at(self._level(request))})

    async def meta_events(self, request: web.Request) -> web.Response:
        return json_response({"events": events_at(self._level(request))})

    # webhooks

    async def list_webhooks(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        webhooks = await self.store.scope_webhooks(space, kapp)
        return json_response({"webhooks": [webhook_json(w) for w in webhooks]})

    async def _find(self, request: web.Request) -> Webhook:
        space, kapp = self._scope(request)
        name = self._path(request, "name", NAME_MAX)
        webhook = await self.store.get_webhook(space, kapp, name)
        if webhook is None:
            raise ApiError(404, f"no webhook named {name!r} here")
        return webhook

    async def get_webhook(self, request: web.Request) -> web.Response:
        return json_response({"webhook": webhook_json(await self._find(request), with_secret=True)})

    async def create_webhook(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        changes = _webhook_changes(await self._body(request, "webhook"))
        missing = [
            {"field": key, "message": "is required"}
            for key in ("name", "type", "event", "url")
            if WEBHOOK_FIELDS[key] not in changes
        ]
        if missing:
            raise ApiError(422, "the webhook is not valid", missing)
        enabled = changes.pop("enabled", True)
        fields = {"filter": None, "auth_strategy": None, **changes}
        _check(kapp, fields)
        created = await self.store.insert_webhook(space=space, kapp=kapp, enabled=enabled, **fields)
        if created is None:
            raise ApiError(409, f"a webhook named {fields['name']!r} already exists here")
        log.info("webhook created", webhook=created.name, space=space, kapp=kapp)
        return json_response({"webhook": webhook_json(created, with_secret=True)}, 201)

    async def update_webhook(self, request: web.Request) -> web.Response:
        current = await self._find(request)
        changed = replace(current, **_webhook_changes(await self._body(request, "webhook")))
        _check(
            changed.kapp,
            {
                "name": changed.name,
                "type": changed.type,
                "event": changed.event,
                "filter": changed.filter,
                "url": changed.url,
                "auth_strategy": changed.auth_strategy,
            },
        )
        saved = await self.store.update_webhook(changed)
        if saved is None:
            raise ApiError(409, f"a webhook named {changed.name!r} already exists here")
        log.info("webhook updated", webhook=saved.name, space=saved.space, kapp=saved.kapp)
        return json_response({"webhook": webhook_json(saved, with_secret=True)})

    async def delete_webhook(self, request: web.Request) -> web.Response:
        webhook = await self._find(request)
        await self.store.delete_webhook(webhook.id)
        log.info("webhook deleted", webhook=webhook.name, space=webhook.space, kapp=webhook.kapp)
        return json_response({"webhook": webhook_json(webhook)})

    async def rotate_secret(self, request: web.Request) -> web.Response:
        webhook = await self._find(request)
        data = await self._json(request, empty_ok=True)
        unknown = [{"field": k, "message": "unknown field"} for k in data if k != "graceSeconds"]
        if unknown:
            raise ApiError(422, "the body is not valid", unknown)
        grace = data.get("graceSeconds", self.settings.signature_grace)
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not math.isfinite(grace)
            or not 0 <= grace <= GRACE_MAX
        ):
            raise invalid("graceSeconds", f"must be a number of seconds from 0 to {GRACE_MAX:.0f}")
        rotated = await self.store.rotate_secret(webhook.id, round(float(grace), 3))
        if rotated is None:
            raise ApiError(404, f"no webhook named {webhook.name!r} here")
        log.info(
            "webhook secret rotated",
            webhook=rotated.name,
            space=rotated.space,
            kapp=rotated.kapp,
            grace_seconds=grace,
        )
        return json_response({"webhook": webhook_json(rotated, with_secret=True)})

    # jobs

    async def list_jobs(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        q = request.query
        errors: FieldErrors = []

        def text(name: str) -> str | None:
            value = q.get(name)
            if value is not None and (problem := text_problem(value)):
                errors.append({"field": name, "message": problem})
                return None
            return value

        def when(name: str) -> datetime | None:
            if name not in q:
                return None
            try:
                return parse_time(q[name])
            except ValueError as exc:
                errors.append({"field": name, "message": str(exc)})
                return None

        status = q.get("status")
        if status is not None and status.lower() not in STATUSES:
            errors.append(
                {"field": "status", "message": f"must be one of {', '.join(STATUSES.values())}"}
            )
        limit = LIMIT_DEFAULT
        if "limit" in q:
            if _DIGITS.fullmatch(q["limit"]) and 1 <= int(q["limit"]) <= LIMIT_MAX:
                limit = int(q["limit"])
            else:
                errors.append(
                    {"field": "limit", "message": f"must be an integer from 1 to {LIMIT_MAX}"}
                )
        after = None
        if "pageToken" in q:
            try:
                after = decode_token(q["pageToken"])
            except ValueError as exc:
                errors.append({"field": "pageToken", "message": str(exc)})
        parent_type, parent_key = text("parentType"), text("parentKey")
        if parent_type is not None and parent_type not in TYPES:
            errors.append({"field": "parentType", "message": "must be a catalogue type"})
        if ("parentType" in q) != ("parentKey" in q):
            missing = "parentType" if "parentKey" in q else "parentKey"
            errors.append({"field": missing, "message": "parentType and parentKey go together"})
        webhook = text("webhook")
        start, end = when("start"), when("end")
        if errors:
            raise ApiError(422, "bad query parameters", errors)
        rows = await self.store.list_jobs(
            JobFilter(
                space=space,
                kapp=kapp,
                status=STATUSES[status.lower()] if status else None,
                webhook=webhook,
                parent_type=parent_type,
                parent_key=parent_key,
                start=start,
                end=end,
                limit=limit + 1,
                after=after,
            )
        )
        page = rows[:limit]
        token = None
        if len(rows) > limit:
            token = encode_token(page[-1]["scheduled_at"], str(page[-1]["id"]))
        return json_response({"webhookJobs": [job_json(r) for r in page], "nextPageToken": token})

    async def _job(self, request: web.Request) -> asyncpg.Record:
        space, kapp = self._scope(request)
        job_id = request.match_info["id"]
        row = await self.store.get_job(job_id)
        if (
            row is None
            or row["space"] != space
            or (kapp is not None and (row["scope_type"], row["scope_id"]) != ("Kapp", kapp))
        ):
            raise ApiError(404, f"no webhook job {job_id!r} here")
        return row

    async def get_job(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        body = job_json(row)
        body["attemptHistory"] = [
            attempt_json(a) for a in await self.store.job_attempts(body["id"])
        ]
        return json_response({"webhookJob": body})

    async def _topology(self, what: str) -> Topology:
        try:
            return await self.ensure_broker()
        except Exception as exc:  # any broker failure: nothing was queued
            log.warning(f"{what} failed: broker unavailable", error=repr(exc))
            raise ApiError(503, f"the broker is unavailable; {what} queued nothing") from None

    async def update_job(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        data = await self._body(request, "webhookJob")
        status = data.get("status")
        if not isinstance(status, str) or status.lower() != Status.QUEUED.lower():
            raise invalid("status", "must be 'Queued' (retry the job)", "only a retry can be asked")
        topology = await self._topology("the retry")
        try:
            result = await replay_job(self.store, topology, row, self.settings.engine_url)
        except ReplayRefused as exc:
            raise ApiError(409, f"the job cannot be retried: {exc}") from None
        body = job_json(row) | {"status": result.status, "url": result.url}
        return json_response({"webhookJob": body})

    async def replay_jobs(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        data = await self._json(request)
        errors: FieldErrors = [
            {"field": k, "message": "unknown field"}
            for k in data
            if k not in ("webhook", "start", "end", "dryRun")
        ]
        webhook = data.get("webhook")
        if not isinstance(webhook, str) or not webhook:
            errors.append({"field": "webhook", "message": "must be a webhook name"})
        elif problem := text_problem(webhook):
            errors.append({"field": "webhook", "message": problem})
        window: dict[str, datetime | None] = {"start": None, "end": None}
        for key in window:
            value = data.get(key)
            if value is None and key not in data:
                continue
            try:
                if not isinstance(value, str):
                    raise ValueError("must be an RFC 3339 date-time with a zone")
                window[key] = parse_time(value)
            except ValueError as exc:
                errors.append({"field": key, "message": str(exc)})
        dry_run = data.get("dryRun", False)
        if not isinstance(dry_run, bool):
            errors.append({"field": "dryRun", "message": "must be true or false"})
        if errors:
            raise ApiError(422, "the replay is not valid", errors)
        assert isinstance(webhook, str)
        topology = await self._topology("the replay")
        queued = await replay_failed(
            self.store,
            topology,
            self.settings.engine_url,
            space=space,
            kapp=kapp,
            webhook=webhook,
            start=window["start"],
            end=window["end"],
            dry_run=dry_run,
        )
        log.info(
            "failed jobs replayed" if not dry_run else "failed jobs counted for a replay",
            webhook=webhook,
            space=space,
            kapp=kapp,
            queued=queued,
        )
        return json_response({"queued": queued, "dryRun": dry_run})


class ApiRole:
    """The API as a role of `up` and of `webhook-router api`."""

    name = "api"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.api = Api(settings, store)
        self.settings = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from webhook_router.runtime import serve

        self._runner = await serve(self.api.app(), self.settings.api_host, self.settings.api_port)
        log.info("api listening", url=f"http://{self.settings.api_host}:{self.settings.api_port}")

    def ready(self) -> bool:
        return self._runner is not None

    async def stop(self, deadline: float) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.api.close()
