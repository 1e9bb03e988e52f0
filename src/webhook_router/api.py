"""The HTTP API: event ingest, webhooks and webhook jobs in the platform's shapes, health.

Paths and JSON follow the platform's Core API (`/app/api/v1/webhooks`,
`/app/api/v1/kapps/{kapp}/webhookJobs`, ...); every path also exists under
`/app/api/v1/spaces/{space}/`, the short form acting on the default space.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from webhook_router import broker
from webhook_router.catalogue import Level, events_at, types_at
from webhook_router.events import EventInvalid
from webhook_router.jobs import Status
from webhook_router.publisher import Publisher
from webhook_router.replay import ReplayRefused, replay_job
from webhook_router.settings import Settings, parse_schedule
from webhook_router.store import JobFilter, Store
from webhook_router.topology import Names, Topology, declare
from webhook_router.webhooks import Webhook, WebhookInvalid, check_definition

log = structlog.get_logger(__name__)

V1 = "/app/api/v1"
PUBLIC = frozenset({"/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str, errors: list[dict[str, str]] | None = None) -> web.Response:
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
    raw = orjson.dumps([scheduled_at.isoformat(), job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, job_id = orjson.loads(raw)
        return datetime.fromisoformat(when), str(job_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise ValueError("pageToken is not one this API gave") from None


class Api:
    """Owns the API's connections; `app()` builds the aiohttp application."""

    name = "api"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.names = Names(settings.namespace)
        self.publisher = Publisher(settings.amqp_url, settings.namespace)
        self.connection: AbstractRobustConnection | None = None
        self.topology: Topology | None = None
        self.tokens = [t.encode() for t in settings.api_token]

    async def ensure_broker(self) -> Topology:
        """Connect on first use, so the API serves reads while the broker is away."""
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
        app = web.Application(middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_post(f"{V1}/events", self.ingest)
        r.add_get(f"{V1}/meta/webhooks/types/{{level}}", self.meta_types)
        r.add_get(f"{V1}/meta/webhooks/events/{{level}}", self.meta_events)
        for prefix in (V1, f"{V1}/spaces/{{space}}"):
            for scope in ("", "/kapps/{kapp}"):
                base = prefix + scope
                r.add_get(f"{base}/webhooks", self.list_webhooks)
                r.add_post(f"{base}/webhooks", self.create_webhook)
                r.add_get(f"{base}/webhooks/{{name}}", self.get_webhook)
                r.add_put(f"{base}/webhooks/{{name}}", self.update_webhook)
                r.add_delete(f"{base}/webhooks/{{name}}", self.delete_webhook)
                r.add_get(f"{base}/webhookJobs", self.list_jobs)
            r.add_get(f"{prefix}/webhookJobs/{{id}}", self.get_job)
            r.add_put(f"{prefix}/webhookJobs/{{id}}", self.update_job)
        return app

    # middlewares

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.encode(), t) for t in self.tokens
        ):
            return error(401, "a valid bearer token is required")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return error(exc.status, exc.reason)
            raise

    # health

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

    # ingest

    async def ingest(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            from webhook_router.events import parse_event

            event = parse_event(raw)
        except EventInvalid as exc:
            return error(422, "the event is not valid", exc.errors)
        try:
            await self.ensure_broker()
            await self.publisher.publish(event)
        except Exception as exc:  # any broker failure: the event was not stored
            log.warning("ingest failed: broker unavailable", error=repr(exc))
            await self.publisher.close()
            return error(503, "the broker is unavailable; the event was not accepted")
        return json_response({"id": event.id}, 202)

    # meta

    def _level(self, request: web.Request) -> Level:
        try:
            return Level(request.match_info["level"])
        except ValueError:
            raise web.HTTPNotFound(reason="level must be space or kapp") from None

    async def meta_types(self, request: web.Request) -> web.Response:
        return json_response({"types": types_at(self._level(request))})

    async def meta_events(self, request: web.Request) -> web.Response:
        return json_response({"events": events_at(self._level(request))})

    # webhooks

    def _scope(self, request: web.Request) -> tuple[str, str | None]:
        space = request.match_info.get("space", self.settings.default_space)
        return space, request.match_info.get("kapp")

    async def _body(self, request: web.Request, key: str) -> dict[str, Any]:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(
                text=orjson.dumps({"error": f"body is not JSON: {exc}"}).decode(),
                content_type="application/json",
            ) from None
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(
                text=orjson.dumps({"error": "body must be a JSON object"}).decode(),
                content_type="application/json",
            )
        return data

    async def list_webhooks(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        webhooks = await self.store.scope_webhooks(space, kapp)
        return json_response({"webhooks": [webhook_json(w) for w in webhooks]})

    async def _find(self, request: web.Request) -> Webhook:
        space, kapp = self._scope(request)
        webhook = await self.store.get_webhook(space, kapp, request.match_info["name"])
        if webhook is None:
            raise web.HTTPNotFound(reason=f"no webhook named {request.match_info['name']!r}")
        return webhook

    async def get_webhook(self, request: web.Request) -> web.Response:
        return json_response({"webhook": webhook_json(await self._find(request), with_secret=True)})

    async def create_webhook(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        data = await self._body(request, "webhook")
        fields = _webhook_fields(data, None)
        try:
            check_definition(kapp=kapp, **fields)
        except WebhookInvalid as exc:
            return error(422, "the webhook is not valid", exc.errors)
        created = await self.store.insert_webhook(
            space=space, kapp=kapp, enabled=bool(data.get("enabled", True)), **fields
        )
        if created is None:
            return error(409, f"a webhook named {fields['name']!r} already exists here")
        log.info("webhook created", webhook=created.name, space=space, kapp=kapp)
        return json_response({"webhook": webhook_json(created, with_secret=True)}, 201)

    async def update_webhook(self, request: web.Request) -> web.Response:
        current = await self._find(request)
        data = await self._body(request, "webhook")
        fields = _webhook_fields(data, current)
        try:
            check_definition(kapp=current.kapp, **fields)
        except WebhookInvalid as exc:
            return error(422, "the webhook is not valid", exc.errors)
        enabled = data.get("enabled", current.enabled)
        if not isinstance(enabled, bool):
            return error(
                422,
                "the webhook is not valid",
                [{"field": "enabled", "message": "must be true or false"}],
            )
        changed = replace(current, enabled=enabled, **fields)
        saved = await self.store.update_webhook(changed)
        if saved is None:
            return error(409, f"a webhook named {fields['name']!r} already exists here")
        log.info("webhook updated", webhook=saved.name, space=saved.space, kapp=saved.kapp)
        return json_response({"webhook": webhook_json(saved, with_secret=True)})

    async def delete_webhook(self, request: web.Request) -> web.Response:
        webhook = await self._find(request)
        await self.store.delete_webhook(webhook.id)
        log.info("webhook deleted", webhook=webhook.name, space=webhook.space, kapp=webhook.kapp)
        return json_response({"webhook": webhook_json(webhook)})

    # jobs

    async def list_jobs(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        q = request.query
        errors: list[dict[str, str]] = []

        def when(name: str) -> datetime | None:
            if name not in q:
                return None
            try:
                value = datetime.fromisoformat(q[name].replace("Z", "+00:00"))
            except ValueError:
                errors.append({"field": name, "message": "must be an ISO 8601 date-time"})
                return None
            if value.tzinfo is None:
                errors.append({"field": name, "message": "must carry a time zone (e.g. Z)"})
            return value

        status = q.get("status")
        statuses = {s.value.lower(): s.value for s in Status}
        if status is not None and status.lower() not in statuses:
            errors.append({"field": "status", "message": f"must be one of {', '.join(statuses)}"})
        limit = 25
        if "limit" in q:
            try:
                limit = int(q["limit"])
                if not 1 <= limit <= 1000:
                    raise ValueError
            except ValueError:
                errors.append({"field": "limit", "message": "must be an integer from 1 to 1000"})
        after = None
        if "pageToken" in q:
            try:
                after = decode_token(q["pageToken"])
            except ValueError as exc:
                errors.append({"field": "pageToken", "message": str(exc)})
        if ("parentType" in q) != ("parentKey" in q):
            errors.append({"field": "parentKey", "message": "parentType and parentKey go together"})
        start, end = when("start"), when("end")
        if errors:
            return error(422, "bad query parameters", errors)
        rows = await self.store.list_jobs(
            JobFilter(
                space=space,
                kapp=kapp,
                kapp_only=False,
                status=statuses[status.lower()] if status else None,
                webhook=q.get("webhook"),
                parent_type=q.get("parentType"),
                parent_key=q.get("parentKey"),
                start=start,
                end=end,
                limit=limit,
                after=after,
            )
        )
        body: dict[str, Any] = {"webhookJobs": [job_json(r) for r in rows]}
        body["nextPageToken"] = (
            encode_token(rows[-1]["scheduled_at"], str(rows[-1]["id"]))
            if len(rows) == limit
            else None
        )
        return json_response(body)

    async def _job(self, request: web.Request) -> asyncpg.Record:
        space = request.match_info.get("space", self.settings.default_space)
        row = await self.store.get_job(request.match_info["id"])
        if row is None or row["space"] != space:
            raise web.HTTPNotFound(reason=f"no webhook job {request.match_info['id']!r}")
        return row

    async def get_job(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        body = job_json(row)
        body["attemptHistory"] = [
            attempt_json(a) for a in await self.store.job_attempts(body["id"])
        ]
        return json_response({"webhookJob": body})

    async def update_job(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        data = await self._body(request, "webhookJob")
        if data.get("status") != Status.QUEUED:
            return error(
                422,
                "only a retry can be asked",
                [{"field": "status", "message": "must be 'Queued' (retry the job)"}],
            )
        try:
            topology = await self.ensure_broker()
        except Exception as exc:  # any broker failure: nothing was queued
            log.warning("retry failed: broker unavailable", error=repr(exc))
            return error(503, "the broker is unavailable; the job was not retried")
        try:
            result = await replay_job(self.store, topology, row, self.settings.engine_url)
        except ReplayRefused as exc:
            return error(409, f"the job cannot be retried: {exc}")
        log.info(
            "job retried",
            job_id=result.job_id,
            webhook=row["webhook_name"],
            event_id=row["event_id"],
            url=result.url,
        )
        body = job_json(row) | {"status": result.status, "url": result.url}
        return json_response({"webhookJob": body})


def _webhook_fields(data: dict[str, Any], current: Webhook | None) -> dict[str, Any]:
    """The definition's fields from a body; absent fields keep `current`'s (PUT is partial)."""

    def pick(key: str, attr: str, default: Any) -> Any:
        if key in data:
            return data[key]
        return getattr(current, attr) if current is not None else default

    fields = {
        "name": pick("name", "name", ""),
        "type": pick("type", "type", ""),
        "event": pick("event", "event", ""),
        "filter": pick("filter", "filter", None),
        "url": pick("url", "url", ""),
        "auth_strategy": pick("authStrategy", "auth_strategy", None),
    }
    for key in ("name", "type", "event", "url"):
        if not isinstance(fields[key], str):
            fields[key] = ""
    if fields["filter"] is not None and not isinstance(fields["filter"], str):
        fields["filter"] = str(fields["filter"])
    return fields


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
