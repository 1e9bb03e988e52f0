"""The HTTP API: event ingest, webhooks and webhook jobs in the platform's shapes, health,
metrics and the OpenAPI document.

Paths and JSON follow the platform's Core API (`/app/api/v1/webhooks`,
`/app/api/v1/kapps/{kapp}/webhookJobs`, ...); every path also exists under
`/app/api/v1/spaces/{space}/`, the short form acting on the default space. The routes are
the table in `openapi`, each registered behind its right (rights.py: 403 without it, 404 for
a space the token does not reach); each handler parses its input with the resource models,
calls one admin action (admin.py) as the token's principal and answers the model's JSON.
A method a path does not declare gets 405 with the declared ones in `Allow`; a query
parameter an operation does not take, 422.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from webhook_router import metrics, tracing
from webhook_router.admin import Admin, BrokerUnavailable, Conflict, NotFound
from webhook_router.catalogue import EXTENSIONS, Level, events_at, types_at
from webhook_router.console import console_app
from webhook_router.deadletters import DeadLetter as DeadLetterRow
from webhook_router.deadletters import DeadLetterFilter
from webhook_router.ingest import BodyRefused, read_event, read_object
from webhook_router.models import (
    NAME_MAX,
    SLUG_MAX,
    AuditLogEntry,
    AuditQuery,
    DeadLetter,
    DeadLetterDetail,
    DeadLetterQuery,
    DeadLetterSelection,
    InputInvalid,
    JobQuery,
    JobRetry,
    Replay,
    SecretRotation,
    Webhook,
    WebhookChange,
    WebhookWithSecret,
    parse_input,
    text_problem,
)
from webhook_router.openapi import OPERATIONS, PUBLIC_PATHS, Operation, document
from webhook_router.publisher import Publisher
from webhook_router.rights import Principal, Right, missing_right, right_of
from webhook_router.service import SideTasks
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.tokens import PRINCIPAL, Principals
from webhook_router.topology import Topology
from webhook_router.webhooks import Webhook as WebhookDefinition

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
UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
"""A job id in a path; anything else there is another resource (`replay`) or none."""
NOTHING_HERE = "nothing here"
"""The 404 of a space the token does not reach: the same whatever the space holds."""
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


def webhook_json(w: WebhookDefinition, *, with_secret: bool = False) -> dict[str, Any]:
    if with_secret and w.secret is None:
        raise ApiError(503, f"the webhook's signing secret cannot be read: {w.unreadable}")
    return (WebhookWithSecret if with_secret else Webhook).of(w).wire()


@functools.cache
def _openapi_body() -> bytes:
    return orjson.dumps(document())


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]  # the auth middleware sets it on every non-public request


def _guarded(op: Operation, default_space: str, handler: Handler) -> Handler:
    """The handler behind the operation's right (rights.py), checked before anything else:
    an operation with no declared right is refused to everyone; a token without the right
    gets 403 naming it; a space the token does not reach, 404 as if it held nothing."""
    if op.public:
        return handler
    right = right_of(op.operation_id)

    async def checked(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        if right is None:
            log.error("operation without a declared right refused", operation=op.operation_id)
            raise ApiError(403, f"no right is declared for {op.operation_id}: refused to all")
        if not principal.may(right):
            raise ApiError(403, missing_right(right, principal))
        if op.scoped and not principal.reaches(request.match_info.get("space", default_space)):
            raise ApiError(404, NOTHING_HERE)
        return await handler(request)

    return checked


def _only_query(op: Operation, handler: Handler) -> Handler:
    """The handler, refusing query parameters the operation does not take."""

    async def checked(request: web.Request) -> web.StreamResponse:
        unknown = sorted(set(request.query) - op.query)
        if unknown:
            errors = [{"field": k, "message": "unknown parameter"} for k in unknown]
            raise ApiError(422, "bad query parameters", errors)
        return await handler(request)

    return checked


class Api:
    """Owns the API's connections; `app()` builds the aiohttp application."""

    name = "api"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.admin = Admin(settings, store)
        self.publisher = Publisher(settings.amqp_url, settings.namespace)
        self.principals = Principals(store, settings.api_token)
        self.depths = metrics.QueueDepths(settings.names, settings.retry_delays)
        self._prometheus = metrics.handler(self._refresh_depths)

    async def ensure_broker(self) -> Topology:
        """Connect on first use, so the API serves reads while the broker is away; one
        request connects while the others wait for it."""
        topology = await self.admin.topology()
        if not self.publisher.connected:
            await self.publisher.open()
        return topology

    async def close(self) -> None:
        await self.publisher.close()
        await self.admin.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure, self._errors, self._auth])
        for op in OPERATIONS:
            path = op.path.replace("{id}", "{id:" + UUID_PATTERN + "}")
            handler = _only_query(op, getattr(self, op.handler))
            app.router.add_route(
                op.method, path, _guarded(op, self.settings.default_space, handler)
            )
        console = console_app(self.admin, self.store, self.settings, self.principals)
        app.add_subapp("/console/", console)
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
        principal = None
        if scheme.lower() == "bearer":
            principal = await self.principals.of_token(token.strip())
        if principal is None:
            response = error(401, "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        request[PRINCIPAL] = principal
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.message, exc.errors)
        except InputInvalid as exc:
            return error(422, exc.message, exc.errors)
        except NotFound as exc:
            return error(404, str(exc))
        except Conflict as exc:
            return error(409, str(exc))
        except BrokerUnavailable as exc:
            return error(503, str(exc))
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

    async def _problems(self, timeout: float | None = None) -> dict[str, str]:
        """What keeps the API from being ready: the database, the broker, each with why."""
        problems = {}
        try:
            await asyncio.wait_for(self.store.pool.fetchval("SELECT 1"), timeout)
        except Exception as exc:  # any failure means not ready
            problems["database"] = repr(exc)
        try:
            await asyncio.wait_for(self.ensure_broker(), timeout)
        except Exception as exc:  # any failure means not ready
            problems["broker"] = repr(exc)
        return problems

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self._problems()
        metrics.role_ready("api", not problems)
        if problems:
            return json_response({"status": "unavailable", "problems": problems}, 503)
        return json_response({"status": "ready"})

    async def _refresh_depths(self) -> None:
        problems = await self._problems(self.depths.timeout)
        metrics.role_ready("api", not problems)
        if "broker" in problems:  # no broker: the counters are still worth serving
            log.warning("queue depths not read: broker unavailable", error=problems["broker"])
        await self.depths.refresh(self.admin.connection)

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
        """Accept an event, in a span continuing the request's `traceparent` if any."""
        with tracing.span("ingest event", parent=request.headers, kind=tracing.SERVER):
            return await self._ingest(request)

    async def _ingest(self, request: web.Request) -> web.Response:
        try:
            event = await read_event(
                request, self.settings.body_timeout, publisher=principal_of(request)
            )
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

    @staticmethod
    def _extensions(request: web.Request) -> bool:
        """`?extensions=true`: the router's own operator events too (catalogue.py)."""
        value = request.query.get(EXTENSIONS, "false")
        if value not in ("true", "false"):
            raise invalid(EXTENSIONS, "must be true or false")
        return value == "true"

    async def meta_types(self, request: web.Request) -> web.Response:
        level, extensions = self._level(request), self._extensions(request)
        return json_response({"types": types_at(level, extensions=extensions)})

    async def meta_events(self, request: web.Request) -> web.Response:
        level, extensions = self._level(request), self._extensions(request)
        return json_response({"events": events_at(level, extensions=extensions)})

    # webhooks

    async def list_webhooks(self, request: web.Request) -> web.Response:
        webhooks = await self.store.scope_webhooks(*self._scope(request))
        return json_response({"webhooks": [webhook_json(w) for w in webhooks]})

    async def _find(self, request: web.Request) -> WebhookDefinition:
        space, kapp = self._scope(request)
        return await self.admin.find_webhook(space, kapp, self._path(request, "name", NAME_MAX))

    async def get_webhook(self, request: web.Request) -> web.Response:
        """With its secret for a token that may read secrets, without for a reader."""
        secrets = principal_of(request).may(Right.SECRETS)
        webhook = webhook_json(await self._find(request), with_secret=secrets)
        return json_response({"webhook": webhook})

    async def create_webhook(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        change = WebhookChange.parse(await self._body(request, "webhook"))
        created = await self.admin.create_webhook(
            space, kapp, change, by=principal_of(request).actor
        )
        return json_response(self._saved(created), 201)

    def _saved(self, webhook: WebhookDefinition) -> dict[str, Any]:
        return {
            "webhook": webhook_json(webhook, with_secret=True),
            "warnings": self.admin.warnings(webhook),
        }

    async def update_webhook(self, request: web.Request) -> web.Response:
        current = await self._find(request)
        change = WebhookChange.parse(await self._body(request, "webhook"))
        saved = await self.admin.update_webhook(current, change, by=principal_of(request).actor)
        return json_response(self._saved(saved))

    async def delete_webhook(self, request: web.Request) -> web.Response:
        webhook = await self._find(request)
        await self.admin.delete_webhook(webhook, by=principal_of(request).actor)
        return json_response({"webhook": webhook_json(webhook)})

    async def rotate_secret(self, request: web.Request) -> web.Response:
        webhook = await self._find(request)
        body = parse_input(SecretRotation, await self._json(request, empty_ok=True))
        rotated = await self.admin.rotate_secret(
            webhook, body.grace_seconds, by=principal_of(request).actor
        )
        return json_response({"webhook": webhook_json(rotated, with_secret=True)})

    # jobs

    async def list_jobs(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        page = await self.admin.jobs(JobFilter.of(JobQuery.parse(request.query), space, kapp))
        jobs = [j.wire() for j in page.jobs]
        return json_response({"webhookJobs": jobs, "nextPageToken": page.next_token})

    async def get_job(self, request: web.Request) -> web.Response:
        job = await self.admin.find_job(request.match_info["id"], *self._scope(request))
        return json_response({"webhookJob": (await self.admin.job_detail(job)).wire()})

    async def update_job(self, request: web.Request) -> web.Response:
        job = await self.admin.find_job(request.match_info["id"], *self._scope(request))
        parse_input(JobRetry, await self._body(request, "webhookJob"), "only a retry can be asked")
        result = await self.admin.retry_job(job, by=principal_of(request).actor)
        body = job.wire() | {
            "status": result.status,
            "url": result.url,
            "outOfOrder": result.out_of_order,
        }
        return json_response({"webhookJob": body})

    async def replay_jobs(self, request: web.Request) -> web.Response:
        space, kapp = self._scope(request)
        replay = parse_input(Replay, await self._json(request), "the replay is not valid")
        webhook = await self.admin.find_webhook(space, kapp, replay.webhook)
        queued = await self.admin.replay(
            webhook,
            start=replay.start,
            end=replay.end,
            dry_run=replay.dry_run,
            by=principal_of(request).actor,
        )
        return json_response({"queued": queued, "dryRun": replay.dry_run})

    # dead letters

    # dead letters: those of the token's spaces (one of no known space: every-space tokens)

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        q = DeadLetterQuery.parse(request.query)
        fields = q.model_dump(exclude={"page_token"})
        spaces = principal_of(request).spaces
        page = await self.admin.dead_letters(
            DeadLetterFilter(after=q.page_token, spaces=spaces, **fields)
        )
        letters = [DeadLetter.of(d).wire() for d in page.dead_letters]
        return json_response({"deadLetters": letters, "nextPageToken": page.next_token})

    async def _dead_letter(self, request: web.Request) -> DeadLetterRow:
        return await self.admin.find_dead_letter(
            request.match_info["id"], principal_of(request).spaces
        )

    async def get_dead_letter(self, request: web.Request) -> web.Response:
        letter = await self._dead_letter(request)
        return json_response({"deadLetter": DeadLetterDetail.of(letter).wire()})

    async def requeue_dead_letter(self, request: web.Request) -> web.Response:
        letter = await self._dead_letter(request)
        requeued = await self.admin.requeue_dead_letter(letter, by=principal_of(request).actor)
        return json_response({"deadLetter": DeadLetterDetail.of(requeued).wire()})

    async def requeue_dead_letters(self, request: web.Request) -> web.Response:
        body = await self._json(request, empty_ok=True)
        selection = parse_input(DeadLetterSelection, body, "the filters are not valid")
        principal = principal_of(request)
        count = await self.admin.requeue_dead_letters(
            DeadLetterFilter(spaces=principal.spaces, **selection.model_dump()),
            by=principal.actor,
        )
        return json_response({"requeued": count})

    # the audit trail

    async def audit_log(self, request: web.Request) -> web.Response:
        q = AuditQuery.parse(request.query)
        page = await self.admin.audit_log(
            q.space,
            start=q.start,
            end=q.end,
            limit=q.limit,
            after=q.page_token,
            spaces=principal_of(request).spaces,
        )
        entries = [AuditLogEntry.of(e).wire() for e in page.entries]
        return json_response({"auditLog": entries, "nextPageToken": page.next_token})


class ApiRole:
    """The API as a role of `up` and of `webhook-router api`."""

    name = "api"

    def __init__(self, settings: Settings, store: Store) -> None:
        self.api = Api(settings, store)
        self.settings = settings
        self.side = SideTasks(self.name)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from webhook_router.runtime import serve

        self._runner = await serve(self.api.app(), self.settings.api_host, self.settings.api_port)
        log.info("api listening", url=f"http://{self.settings.api_host}:{self.settings.api_port}")

    def ready(self) -> bool:
        return self._runner is not None and self.side.alive

    async def stop(self, deadline: float) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.api.close()
