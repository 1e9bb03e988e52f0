"""The jobs console: pages where admins see what was sent where, fix a webhook and retry.

Server-rendered HTML (Jinja2, autoescaped) with a little vanilla JavaScript for live refresh
and checking filters and URLs as they are typed. Mounted by the API under `/console/`;
every page and action needs a session opened with an API token (access.py), and the right
ROUTE_RIGHTS declares for it, in a space the token reaches (rights.py): a reader's pages
show no edit, retry or secret controls, and the server refuses those actions too.
Built from the admin actions, the store (for what pages only read) and the settings: every
change goes through admin.py, as the API's and the CLI's do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from webhook_router.admin import Admin, BrokerUnavailable, Conflict, NotFound
from webhook_router.catalogue import CATALOGUE, TYPES, Level
from webhook_router.console.access import Access, Handler, form_text
from webhook_router.console.chart import minute_chart
from webhook_router.console.render import Assets, Pointer, environment, pointer, space_url
from webhook_router.console.sessions import Session
from webhook_router.credentials import AUTH_FIELDS, FILE_FIELDS
from webhook_router.deadletters import ROLES as REQUEUE_ROLES
from webhook_router.deadletters import DeadLetter, DeadLetterFilter
from webhook_router.expressions import ExpressionError, compile_filter, compile_url
from webhook_router.jobs import Status
from webhook_router.models import (
    AuditLogEntry,
    InputInvalid,
    Job,
    WebhookChange,
    decode_token,
    parse_status,
    parse_time,
    text_problem,
)
from webhook_router.models import Webhook as WebhookView
from webhook_router.rights import Principal, Right, missing_right
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.tokens import Principals
from webhook_router.webhooks import AUTH_STRATEGIES, Webhook, url_shape_problem

log = structlog.get_logger(__name__)

NOTHING_HERE = "There is nothing here."
"""The 404 of a space the token does not reach: the same whatever the space holds."""

T = TypeVar("T")

FINAL = frozenset({Status.COMPLETE, Status.FAILED, Status.CANCELLED})
RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})
LIST_REFRESH = 5
OVERVIEW_REFRESH = 30
CHECK_LIMIT = 10_000
BROKER_WAIT = 15.0
AUDIT_PAGE = 50
FLAG_LABELS = {"traceContext": "Trace context", "ordered": "Ordered per key"}
"""The edit form's label of each yes/no field of the webhook (WebhookChange.FLAGS)."""


ANY_TOKEN = None
"""A route every logged-in token may use (logging out)."""
ROUTE_RIGHTS: dict[str, Right | None] = {
    "logout": ANY_TOKEN,
    "home": Right.READ,
    "go": Right.READ,
    "check": Right.READ,
    "jobs": Right.READ,
    "job": Right.READ,
    "retry": Right.WRITE,
    "webhooks": Right.READ,
    "new_webhook": Right.WRITE,
    "create_webhook": Right.WRITE,
    "webhook": Right.READ,
    "save_webhook": Right.WRITE,
    "enable": Right.WRITE,
    "rotate": Right.WRITE,
    "overview": Right.READ,
    "bulk": Right.WRITE,
    "bulk_confirm": Right.WRITE,
    "bulk_retry": Right.WRITE,
    "dead_letters": Right.READ,
    "dead_letter": Right.READ,
    "requeue": Right.WRITE,
    "audit": Right.AUDIT,
}
"""The right each route of the console needs, by route name; a route missing here is
refused to every token (the login routes and static files are public: access.py)."""


def console_app(
    admin: Admin, store: Store, settings: Settings, principals: Principals
) -> web.Application:
    """The console as an application to mount with `app.add_subapp("/console/", ...)`."""
    return Console(admin, store, settings, principals).app()


class FormError(ValueError):
    """A filter or form value that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FormReader:
    """Reads form or query values, trimmed, each by its parser; a value that does not parse
    is noted in `errors` (and read as none) while the others are still read."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self.errors: list[FormError] = []

    def get(self, field: str, parse: Callable[[str], T]) -> T | None:
        text = clean(self.values.get(field))
        try:
            return None if text is None else parse(text)
        except ValueError as exc:
            self.errors.append(FormError(field, str(exc)))
            return None


def form_time(text: str) -> datetime:
    """A `datetime-local` form value (or one with seconds and a zone), read as UTC when it
    has no offset."""
    return parse_time(text, form=True)


def form_when(value: datetime | None) -> str:
    """A date-time as a `datetime-local` input shows it (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""


def clean(value: Any) -> str | None:
    value = (value if isinstance(value, str) else "").strip()
    return value or None


def job_text(value: str) -> str:
    """A text filter: ValueError when it holds what no job can."""
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


def catalogue_type(value: str) -> str:
    if value not in TYPES:
        raise ValueError(f"unknown type {value!r}")
    return value


def page_size(value: str) -> int:
    try:
        if 1 <= (limit := int(value)) <= 500:
            return limit
    except ValueError:
        pass
    raise ValueError("must be an integer from 1 to 500")


def run_link(template: str | None, run_id: str | None, *, key: str = "{run}") -> str | None:
    """The run page of a run number, from a template with `{run}` (or the page of another
    id, with its own `key`); only http(s) or a path."""
    if not template or not run_id:
        return None
    if not template.startswith(("http://", "https://", "/")):
        return None
    return template.replace(key, quote(run_id, safe=""))


class Console:
    """The console's state (sessions, templates) and its handlers."""

    def __init__(
        self, admin: Admin, store: Store, settings: Settings, principals: Principals
    ) -> None:
        self.admin = admin
        self.settings = settings
        self.store = store
        self.access = Access(principals, self.render)
        self.assets = Assets()
        self.env = environment(self.assets)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.access.guard, self._not_found, self._rights])
        self.access.add_routes(app)
        r = app.router
        r.add_get("/", self.home, name="home")
        r.add_get("/static/{name}", self.static, name="static")
        r.add_get("/go", self.go, name="go")
        r.add_post("/check", self.check, name="check")
        s = "/spaces/{space}"
        r.add_get(f"{s}/jobs", self.jobs, name="jobs")
        r.add_get(f"{s}/jobs/{{id}}", self.job, name="job")
        r.add_post(f"{s}/jobs/{{id}}/retry", self.retry, name="retry")
        r.add_get(f"{s}/webhooks", self.webhooks, name="webhooks")
        r.add_get(f"{s}/webhooks/new", self.new_webhook, name="new_webhook")
        r.add_post(f"{s}/webhooks", self.save_webhook, name="create_webhook")
        r.add_get(f"{s}/webhooks/{{id}}", self.edit_webhook, name="webhook")
        r.add_post(f"{s}/webhooks/{{id}}", self.save_webhook, name="save_webhook")
        r.add_post(f"{s}/webhooks/{{id}}/enabled", self.set_enabled, name="enable")
        r.add_post(f"{s}/webhooks/{{id}}/rotate", self.rotate, name="rotate")
        r.add_get(f"{s}/overview", self.overview, name="overview")
        r.add_get(f"{s}/audit", self.audit, name="audit")
        r.add_get(f"{s}/retry", self.bulk_form, name="bulk")
        r.add_get(f"{s}/retry/confirm", self.bulk_confirm, name="bulk_confirm")
        r.add_post(f"{s}/retry", self.bulk_retry, name="bulk_retry")
        r.add_get(f"{s}/dead-letters", self.dead_letters, name="dead_letters")
        r.add_get(f"{s}/dead-letters/{{id}}", self.dead_letter, name="dead_letter")
        r.add_post(f"{s}/dead-letters/{{id}}/requeue", self.requeue, name="requeue")
        return app

    @web.middleware
    async def _not_found(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except NotFound as exc:
            space = request.match_info.get("space")
            return self.render(
                request, "error.html", status=404, space=space, title="Not found", message=str(exc)
            )

    @web.middleware
    async def _rights(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The route's right (ROUTE_RIGHTS), then the space of its path: one the token
        does not reach is a 404, the same page as a space with nothing in it."""
        principal = self.access.principal(request)
        if principal is None:  # a public route: the guard let it through without a session
            return await handler(request)
        route = request.match_info.route.name or ""
        if route not in ROUTE_RIGHTS:
            return self._refused(request, "no right is declared for this page: refused to all")
        right = ROUTE_RIGHTS[route]
        if right is not None and not principal.may(right):
            return self._refused(request, f"Refused: {missing_right(right, principal)}.")
        space = request.match_info.get("space")
        if space is not None and not principal.reaches(space):
            raise NotFound(NOTHING_HERE)
        return await handler(request)

    def _refused(self, request: web.Request, message: str) -> web.Response:
        wants_json = request.headers.get("Accept", "").startswith("application/json")
        return self.access.refuse(request, 403, message, wants_json)

    def principal(self, request: web.Request) -> Principal:
        principal = self.access.principal(request)
        assert principal is not None, "the guard sets it on every page but the public ones"
        return principal

    # rendering and answering

    def render(
        self,
        request: web.Request,
        template: str,
        *,
        status: int = 200,
        space: str | None = None,
        **context: Any,
    ) -> web.Response:
        session = self.access.session(request)
        principal = self.access.principal(request)
        html = self.env.get_template(template).render(
            space=space,
            csrf=session.csrf if session else "",
            logged_in=session is not None,
            can_write=principal is not None and principal.may(Right.WRITE),
            can_see_secrets=principal is not None and principal.may(Right.SECRETS),
            can_audit=principal is not None and principal.may(Right.AUDIT),
            flashes=session.take_flashes() if session else [],
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    async def page(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        """A page of the space of the path, with the spaces to switch to."""
        space = request.match_info["space"]
        known = self.principal(request).visible(await self.store.known_spaces())
        spaces = known if space in known else sorted([*known, space])
        return self.render(request, template, status=status, space=space, spaces=spaces, **context)

    def session(self, request: web.Request) -> Session:
        return self.access.current(request)

    def back(
        self, request: web.Request, kind: str, message: str, *path: str, **query: Any
    ) -> web.HTTPSeeOther:
        """A redirect to a page of the space, with a message shown there once."""
        self.session(request).flash(kind, message)
        return web.HTTPSeeOther(space_url(request.match_info["space"], *path, **query))

    async def home(self, request: web.Request) -> web.StreamResponse:
        """The jobs of the default space, or of the first space the token reaches."""
        principal = self.principal(request)
        space = self.settings.default_space
        if not principal.reaches(space) and principal.spaces:
            space = sorted(principal.spaces)[0]
        raise web.HTTPSeeOther(space_url(space, "jobs"))

    async def go(self, request: web.Request) -> web.StreamResponse:
        space = clean(request.query.get("space")) or self.settings.default_space
        raise web.HTTPSeeOther(space_url(space, "jobs"))

    async def static(self, request: web.Request) -> web.StreamResponse:
        found = self.assets.files.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="no such file")
        data, content_type = found
        return web.Response(
            body=data,
            content_type=content_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # checking filters and URLs as they are typed

    async def check(self, request: web.Request) -> web.Response:
        """`{"kind": "filter"|"url", "text": ...}` parsed by the router's own parser."""
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or data.get("kind") not in COMPILERS:
            return _json({"error": 'send {"kind": "filter" or "url", "text": "..."}'}, 400)
        text = data.get("text")
        if not isinstance(text, str):
            return _json({"error": "text must be a string"}, 400)
        if len(text) > CHECK_LIMIT:
            return _json({"ok": False, "message": f"longer than {CHECK_LIMIT} characters"})
        if (where := parse_problem(data["kind"], text)) is not None:
            return _json(where.as_json())
        if data["kind"] == "url" and (problem := url_shape_problem(text)):
            return _json({"ok": False, "message": f"The URL {problem}."})
        return _json({"ok": True})

    # jobs

    def _job_query(self, space: str, q: Mapping[str, str]) -> tuple[JobFilter, list[FormError]]:
        reader = FormReader(q)
        read = reader.get
        query = JobFilter(
            space=space,
            status=read("status", parse_status),
            webhook=read("webhook", job_text),
            type=read("type", catalogue_type),
            event=read("event", job_text),
            kapp=read("kapp", job_text),
            form=read("form", job_text),
            url_text=read("url", job_text),
            start=read("start", form_time),
            end=read("end", form_time),
            limit=read("limit", page_size) or 50,
            after=read("pageToken", decode_token),
        )
        return query, reader.errors

    async def jobs(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        query, errors = self._job_query(space, request.query)
        rows: list[Job] = []
        counts = {s.value: 0 for s in Status}
        token = None
        if not errors:
            page, counts = await asyncio.gather(
                self.admin.jobs(query, brief=True), self.store.count_by_status(query)
            )
            rows, token = page.jobs, page.next_token
        filters = {
            "status": query.status,
            "webhook": query.webhook,
            "type": query.type,
            "event": query.event,
            "kapp": query.kapp,
            "form": query.form,
            "url": query.url_text,
            "start": form_when(query.start),
            "end": form_when(query.end),
        }
        kept = {k: v for k, v in filters.items() if v}
        if query.limit != 50:
            kept["limit"] = str(query.limit)
        next_page = space_url(space, "jobs", **kept, pageToken=token) if token else None
        status_links = {
            s.value: space_url(space, "jobs", **(kept | {"status": s.value})) for s in Status
        }
        webhooks = await self.store.space_webhooks(space)
        return await self.page(
            request,
            "jobs.html",
            rows=rows,
            counts=counts,
            total=sum(counts.values()),
            status_links=status_links,
            all_link=space_url(space, "jobs", **{k: v for k, v in kept.items() if k != "status"}),
            filters=filters,
            errors=errors,
            next_page=next_page,
            paged=query.after is not None,
            first_page=space_url(space, "jobs", **kept),
            refresh=0 if query.after is not None else LIST_REFRESH,
            statuses=[s.value for s in Status],
            types=[t.name for t in CATALOGUE],
            events=sorted({a for t in CATALOGUE for a in t.actions}),
            webhook_names=sorted({w.name for w in webhooks}),
        )

    async def _job(self, request: web.Request) -> Job:
        """The job of the path, if it is of the space (NotFound: the 404 page)."""
        try:
            return await self.admin.find_job(request.match_info["id"], request.match_info["space"])
        except NotFound:
            raise NotFound("There is no such job in this space.") from None

    async def job(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        detail = await self.admin.job_detail(row)
        attempts = detail.attempt_history
        follow = request.query.get("follow", "")
        following = follow.isdigit() and len(follow) < 10 and row.replay <= int(follow)
        # Just retried: the broker holds the new run, the recorder has not written it yet.
        queued_again = following and row.status in FINAL
        webhook = await self.store.get_webhook_by_id(str(row.webhook_id))
        return await self.page(
            request,
            "job.html",
            job=row,
            detail=detail,
            attempts=attempts,
            headers=attempts[-1].request_headers if attempts else {},
            webhook=webhook if webhook and webhook.space == request.match_info["space"] else None,
            run_url=run_link(self.settings.run_url_template, row.run_id),
            trace_url=run_link(self.settings.trace_url_template, row.trace_id, key="{trace}"),
            shown_status=Status.QUEUED.value if queued_again else row.status,
            queued_again=queued_again,
            can_retry=row.status in RETRYABLE and not queued_again,
            refresh=LIST_REFRESH if following or row.status not in FINAL else 0,
        )

    async def retry(self, request: web.Request) -> web.StreamResponse:
        row = await self._job(request)
        here = ("jobs", str(row.id))
        try:
            async with asyncio.timeout(BROKER_WAIT):
                result = await self.admin.retry_job(row, by=self.principal(request).actor)
        except (BrokerUnavailable, TimeoutError):
            message = "The broker is unavailable: the job was not retried."
            raise self.back(request, "error", message, *here) from None
        except Conflict as exc:
            message = f"The job cannot be retried: {exc.reason}."
            raise self.back(request, "error", message, *here) from None
        if result.status == Status.FAILED:
            message = "The webhook's URL could not be rendered for this event."
            raise self.back(request, "error", message, *here)
        message = f"Queued again, to {result.url}."
        if result.out_of_order:
            message += " It is delivered out of order: a retry by hand does not wait for its key."
        raise self.back(request, "ok", message, *here, follow=str(row.replay))

    # webhooks: the form's fields are the model's (WebhookChange), plus the kapp and enabled

    async def _webhook(self, request: web.Request) -> Webhook:
        """The webhook of the path, if it is of the space (NotFound: the 404 page)."""
        return await self.admin.webhook_in_space(
            request.match_info["space"], request.match_info["id"]
        )

    async def webhooks(self, request: web.Request) -> web.Response:
        webhooks = await self.store.space_webhooks(request.match_info["space"])
        return await self.page(request, "webhooks.html", webhooks=webhooks)

    async def _edit_page(
        self,
        request: web.Request,
        values: dict[str, Any],
        webhook: Webhook | None,
        refused: InputInvalid | Conflict | None = None,
    ) -> web.Response:
        errors, status = [], 200
        if isinstance(refused, InputInvalid):
            errors, status = refused.errors, 422
        elif refused is not None:
            errors, status = [{"field": refused.field or "name", "message": str(refused)}], 409
        pointers = {
            field: where
            for field in COMPILERS
            if (where := parse_problem(field, values.get(field) or "")) is not None
        }
        return await self.page(
            request,
            "webhook.html",
            status=status,
            webhook=webhook,
            values=values,
            errors={e["field"]: e["message"] for e in errors},
            pointers=pointers if errors else {},
            catalogue=CATALOGUE,
            levels=[(Level.SPACE, "Space level"), (Level.KAPP, "Kapp level")],
            auth_strategies=[a or "" for a in AUTH_STRATEGIES],
            secret_until=webhook.previous_secret_until if webhook else None,
            auth_fields=AUTH_FIELDS,
            file_fields=FILE_FIELDS,
            flags=WebhookChange.flags(),
            flag_labels=FLAG_LABELS,
            now=datetime.now(UTC),
        )

    @staticmethod
    def _values_of(webhook: Webhook | None, kapp: str = "") -> dict[str, Any]:
        """The edit form's values: the model's fields (as on the wire; maps as `Name:
        value` lines, write-only ones never), the kapp, enabled."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        if webhook is None:
            flags = WebhookChange.flag_defaults()
            return dict.fromkeys(shown, "") | flags | {"kapp": kapp, "enabled": True}
        wire = WebhookView.of(webhook).wire()
        fields = {
            k: entry_lines(wire[k]) if k in WebhookChange.ENTRIES else shown_value(wire[k])
            for k in shown
        }
        flags = {k: bool(wire[k]) for k in WebhookChange.flags()}
        return fields | flags | {"kapp": webhook.kapp or "", "enabled": webhook.enabled}

    @staticmethod
    def _values_from(form: MultiDictProxy[Any]) -> dict[str, Any]:
        """As typed; every field but the filter and maps trimmed (those may span lines).
        Write-only parts are kept apart (`secrets`): the page never shows them again."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        values: dict[str, Any] = {k: form_text(form, k) or "" for k in [*shown, "kapp"]}
        keep = {"filter", *WebhookChange.ENTRIES}
        values = {k: v if k in keep else v.strip() for k, v in values.items()}
        secrets = {
            key: {p: v for p in parts if (v := form_text(form, f"{key}.{p}") or "").strip()}
            for key, parts in WebhookChange.WRITE_ONLY.items()
        }
        flags = {k: form_text(form, k) == "on" for k in WebhookChange.flags()}
        return values | flags | {"enabled": form_text(form, "enabled") == "on", "secrets": secrets}

    @staticmethod
    def _change(values: dict[str, Any]) -> WebhookChange:
        """An empty filter or authentication is none; a write-only field left blank keeps
        what is stored."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        data = {k: values[k] for k in [*shown, *WebhookChange.flags()]}
        data["enabled"] = values["enabled"]
        blank = {k: None for k in ("filter", "authStrategy", "rateLimit") if not values[k].strip()}
        if values["rateLimit"].strip():
            data["rateLimit"] = number_or_text(values["rateLimit"])
        for key in WebhookChange.ENTRIES:
            try:
                data[key] = parse_entries(values[key])
            except ValueError as exc:
                raise InputInvalid(
                    "the webhook is not valid", [{"field": key, "message": str(exc)}]
                ) from None
        given = {k: v for k, v in values["secrets"].items() if v}
        return WebhookChange.parse(data | blank | given)

    async def new_webhook(self, request: web.Request) -> web.Response:
        return await self._edit_page(
            request, self._values_of(None, request.query.get("kapp", "")), None
        )

    async def edit_webhook(self, request: web.Request) -> web.Response:
        webhook = await self._webhook(request)
        return await self._edit_page(request, self._values_of(webhook), webhook)

    async def save_webhook(self, request: web.Request) -> web.StreamResponse:
        """Create (no id in the path) or update; a refusal shows the form again as typed."""
        current = await self._webhook(request) if "id" in request.match_info else None
        values = self._values_from(await request.post())
        try:
            if current is None:
                space, kapp = request.match_info["space"], values["kapp"] or None
                change = self._change(values)
                saved = await self.admin.create_webhook(
                    space, kapp, change, by=self.principal(request).actor
                )
            else:
                values["kapp"] = current.kapp or ""
                saved = await self.admin.update_webhook(
                    current, self._change(values), by=self.principal(request).actor
                )
        except (InputInvalid, Conflict) as exc:
            return await self._edit_page(request, values, current, exc)
        session = self.session(request)
        for warning in self.admin.warnings(saved):
            session.flash("warning", f"Warning: {warning[:1].upper()}{warning[1:]}.")
        done = "created" if current is None else "saved"
        raise self.back(request, "ok", f"Webhook {saved.name} {done}.", "webhooks", saved.id)

    async def set_enabled(self, request: web.Request) -> web.StreamResponse:
        current = await self._webhook(request)
        form = await request.post()
        enabled = form_text(form, "enabled") == "true"
        saved = await self.admin.set_enabled(current, enabled, by=self.principal(request).actor)
        message = f"Webhook {saved.name} {'enabled' if enabled else 'disabled'}."
        path = ["webhooks"] if form_text(form, "back") == "list" else ["webhooks", saved.id]
        raise self.back(request, "ok", message, *path)

    async def rotate(self, request: web.Request) -> web.StreamResponse:
        saved = await self.admin.rotate_secret(
            await self._webhook(request), None, by=self.principal(request).actor
        )
        message = "New signing secret."
        if until := saved.previous_secret_until:
            message += (
                " The previous one keeps signing beside it until "
                f"{until.astimezone(UTC):%Y-%m-%d %H:%M UTC}."
            )
        raise self.back(request, "ok", message, "webhooks", saved.id)

    # overview

    async def overview(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        now = datetime.now(UTC)
        day_start = now.replace(second=0, microsecond=0) - timedelta(minutes=1439)
        rows, failing, (backlog, next_due) = await asyncio.gather(
            self.store.attempts_per_minute(space, day_start),
            self.store.failing_webhooks(space, now - timedelta(days=1)),
            self.store.retry_backlog(space),
        )
        hour = minute_chart(
            rows, end=now, minutes=60, tick_minutes=10, title="Deliveries per minute, last hour"
        )
        day = minute_chart(
            rows, end=now, minutes=1440, tick_minutes=180, title="Deliveries per minute, last day"
        )
        return await self.page(
            request,
            "overview.html",
            charts=[hour, day],
            failing=failing,
            backlog=backlog,
            next_due=next_due,
            now=now,
            refresh=OVERVIEW_REFRESH,
        )

    async def audit(self, request: web.Request) -> web.Response:
        """The space's audit trail, newest first, a page at a time."""
        space = request.match_info["space"]
        errors: list[FormError] = []
        after = None
        token = request.query.get("pageToken")
        if token:
            try:
                after = decode_token(token)
            except ValueError as exc:
                errors.append(FormError("pageToken", str(exc)))
        page = await self.admin.audit_log(space, limit=AUDIT_PAGE, after=after)
        next_page = (
            space_url(space, "audit", pageToken=page.next_token) if page.next_token else None
        )
        return await self.page(
            request,
            "audit.html",
            entries=[AuditLogEntry.of(e) for e in page.entries],
            errors=errors,
            next_page=next_page,
            paged=after is not None,
            first_page=space_url(space, "audit"),
        )

    # bulk retry: a form, a confirmation page that counts, and the retry itself

    async def _bulk_page(
        self, request: web.Request, values: Mapping[str, str], errors: Mapping[str, str]
    ) -> web.Response:
        webhooks = await self.store.space_webhooks(request.match_info["space"])
        status = 422 if errors else 200
        return await self.page(
            request, "bulk.html", status=status, webhooks=webhooks, values=values, errors=errors
        )

    async def bulk_form(self, request: web.Request) -> web.Response:
        return await self._bulk_page(request, _fields(request.query, BULK_FIELDS), {})

    async def _bulk_params(
        self, space: str, values: Mapping[str, str]
    ) -> tuple[Webhook | None, datetime | None, datetime | None, dict[str, str]]:
        errors: dict[str, str] = {}
        webhook = None
        try:
            webhook = await self.admin.webhook_in_space(space, values.get("webhook", ""))
        except NotFound:
            errors["webhook"] = "choose one of this space's webhooks"
        reader = FormReader(values)
        start, end = reader.get("start", form_time), reader.get("end", form_time)
        errors |= {e.field: e.message for e in reader.errors}
        if start and end and start >= end:
            errors["end"] = "must be after the start"
        return webhook, start, end, errors

    async def _replay_failed(
        self,
        request: web.Request,
        webhook: Webhook,
        start: datetime | None,
        end: datetime | None,
        dry: bool,
    ) -> int:
        by = self.principal(request).actor
        async with asyncio.timeout(BROKER_WAIT):
            return await self.admin.replay(webhook, start=start, end=end, dry_run=dry, by=by)

    async def bulk_confirm(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        values = _fields(request.query, BULK_FIELDS)
        webhook, start, end, errors = await self._bulk_params(space, values)
        if webhook is None or errors:
            return await self._bulk_page(request, values, errors)
        try:
            count = await self._replay_failed(request, webhook, start, end, dry=True)
        except Exception as exc:  # any broker failure: nothing can be queued
            log.warning("console bulk retry: broker unavailable", error=repr(exc))
            message = "The broker is unavailable: nothing can be queued now."
            return self.access.refuse(request, 503, message, False)
        return await self.page(
            request,
            "bulk_confirm.html",
            webhook=webhook,
            start=start,
            end=end,
            values=values,
            count=count,
            failed_jobs=space_url(
                space,
                "jobs",
                webhook=webhook.name,
                kapp=webhook.kapp,
                status=Status.FAILED.value,
                start=form_when(start),
                end=form_when(end),
            ),
        )

    async def bulk_retry(self, request: web.Request) -> web.StreamResponse:
        values = _fields(await request.post(), BULK_FIELDS)
        webhook, start, end, errors = await self._bulk_params(request.match_info["space"], values)
        if webhook is None or errors:
            message = "; ".join(f"{k}: {v}" for k, v in errors.items())
            raise self.back(request, "error", message, "retry", **values)
        try:
            count = await self._replay_failed(request, webhook, start, end, dry=False)
        except Exception as exc:  # any broker failure: what was published stays queued
            log.warning("console bulk retry failed", error=repr(exc))
            message = "The broker is unavailable: some jobs may not be queued."
            raise self.back(request, "error", message, "retry", **values) from None
        message = f"Queued {count} failed job{'s' if count != 1 else ''} again."
        raise self.back(request, "ok", message, "jobs", webhook=webhook.name, kapp=webhook.kapp)

    # dead letters: those of the token's spaces, shown from any of them (one of no known
    # space only to a token of every space)

    async def dead_letters(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        reader = FormReader(request.query)
        read = reader.get
        query = DeadLetterFilter(
            role=read("role", job_text),
            reason=read("reason", job_text),
            start=read("start", form_time),
            end=read("end", form_time),
            limit=50,
            after=read("pageToken", decode_token),
            spaces=self.principal(request).spaces,
        )
        rows: list[DeadLetter] = []
        token = None
        if not reader.errors:
            page = await self.admin.dead_letters(query)
            rows, token = page.dead_letters, page.next_token
        filters = {
            "role": query.role,
            "reason": query.reason,
            "start": form_when(query.start),
            "end": form_when(query.end),
        }
        kept = {k: v for k, v in filters.items() if v}
        return await self.page(
            request,
            "dead_letters.html",
            rows=rows,
            filters=filters,
            filtered=bool(kept),
            errors=reader.errors,
            roles=DEAD_ROLES,
            next_page=space_url(space, "dead-letters", **kept, pageToken=token) if token else None,
        )

    async def _dead_letter(self, request: web.Request) -> DeadLetter:
        try:
            return await self.admin.find_dead_letter(
                str(uuid.UUID(request.match_info["id"])), self.principal(request).spaces
            )
        except (ValueError, NotFound):
            raise NotFound("There is no such dead letter.") from None

    async def dead_letter(self, request: web.Request) -> web.Response:
        letter = await self._dead_letter(request)
        body = letter.body[:BODY_SHOWN].decode("utf-8", errors="replace")
        if len(letter.body) > BODY_SHOWN:
            body += f"\n\u2026 (the first {BODY_SHOWN} of {len(letter.body)} bytes)"
        return await self.page(
            request,
            "dead_letter.html",
            letter=letter,
            body=body,
            can_requeue=letter.role in REQUEUE_ROLES,
        )

    async def requeue(self, request: web.Request) -> web.StreamResponse:
        letter = await self._dead_letter(request)
        here = ("dead-letters", letter.id)
        try:
            async with asyncio.timeout(BROKER_WAIT):
                await self.admin.requeue_dead_letter(letter, by=self.principal(request).actor)
        except (BrokerUnavailable, TimeoutError):
            message = "The broker is unavailable: the dead letter was not requeued."
            raise self.back(request, "error", message, *here) from None
        except Conflict as exc:
            raise self.back(request, "error", f"Not requeued: {exc.reason}.", *here) from None
        raise self.back(request, "ok", f"Sent back to the {letter.role}.", *here)


def number_or_text(text: str) -> float | str:
    """A typed number as a number; anything else as typed, for the model to refuse."""
    try:
        return float(text.strip())
    except ValueError:
        return text


def shown_value(value: Any) -> str:
    """A field's wire value in a text input: numbers without a needless `.0`."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value else ""


def entry_lines(entries: Mapping[str, str]) -> str:
    """A map as the console's textarea shows it: one `Name: value` line each."""
    return "".join(f"{name}: {value}\n" for name, value in entries.items())


def parse_entries(text: str) -> dict[str, str]:
    """`Name: value` lines (blank lines skipped) or a JSON object of strings; ValueError
    naming the line otherwise."""
    if text.strip().startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("is not a JSON object (or write one 'Name: value' a line)") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("must be a JSON object of names to text values")
        return data
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"line {number}: expected 'Name: value'")
        entries[name.strip()] = value.strip()
    return entries


BULK_FIELDS = ("webhook", "start", "end")
DEAD_ROLES = (*REQUEUE_ROLES, "broker", "unknown")
BODY_SHOWN = 100_000
"""Bytes of a dead letter's body a page shows; the API and the CLI give it whole."""
COMPILERS: dict[str, Callable[[str], object]] = {"filter": compile_filter, "url": compile_url}


def parse_problem(kind: str, text: str) -> Pointer | None:
    """Where a filter or URL template does not parse, by the router's own parser."""
    try:
        COMPILERS[kind](text)
    except ExpressionError as exc:
        return pointer(text, exc)
    return None


def _fields(form: Mapping[str, Any], keys: Sequence[str]) -> dict[str, str]:
    return {k: form_text(form, k) or "" for k in keys}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
