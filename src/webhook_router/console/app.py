"""The jobs console: pages where admins see what was sent where, fix a webhook and retry.

Server-rendered HTML (Jinja2, autoescaped) with a little vanilla JavaScript for live refresh
and checking filters and URLs as they are typed. Mounted by the API under `/console/`;
every page and action needs a session opened with one of the API's tokens (sessions.py).
Built from the admin actions, the store (for what pages only read) and the settings: every
change goes through admin.py, as the API's and the CLI's do.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from webhook_router.admin import Admin, BrokerUnavailable, Conflict, NotFound
from webhook_router.catalogue import CATALOGUE, TYPES, Level
from webhook_router.console.chart import minute_chart
from webhook_router.console.render import PREFIX, Assets, environment, pointer, space_url
from webhook_router.console.sessions import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    LoginThrottle,
    Session,
    Sessions,
    same_secret,
    token_accepted,
)
from webhook_router.credentials import AUTH_FIELDS, FILE_FIELDS
from webhook_router.expressions import ExpressionError, compile_filter, compile_url
from webhook_router.jobs import Status
from webhook_router.models import (
    InputInvalid,
    Job,
    WebhookChange,
    decode_token,
    parse_status,
    parse_time,
    text_problem,
)
from webhook_router.models import Webhook as WebhookView
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.webhooks import AUTH_STRATEGIES, Webhook, url_shape_problem

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_ROUTES = frozenset({"login", "login_submit", "static"})
JSON_ROUTES = frozenset({"check"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FINAL = frozenset({Status.COMPLETE, Status.FAILED, Status.CANCELLED})
RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})
LIST_REFRESH = 5
OVERVIEW_REFRESH = 30
CHECK_LIMIT = 10_000
BROKER_WAIT = 15.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def console_app(admin: Admin, store: Store, settings: Settings) -> web.Application:
    """The console as an application to mount with `app.add_subapp("/console/", ...)`."""
    return Console(admin, store, settings).app()


class FormError(ValueError):
    """A filter or form value that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_when(field: str, text: str | None) -> datetime | None:
    """A `datetime-local` form value (or one with seconds and a zone), read as UTC when it
    has no offset; empty means none."""
    if text is None or not text.strip():
        return None
    try:
        return parse_time(text, form=True)
    except ValueError as exc:
        raise FormError(field, str(exc)) from None


def form_when(value: datetime | None) -> str:
    """A date-time as a `datetime-local` input shows it (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path of the console itself."""
    if target and target.startswith(PREFIX + "/") and "\\" not in target and "//" not in target:
        return target
    return PREFIX + "/"


def clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def clean_text(field: str, value: str | None, errors: list[FormError]) -> str | None:
    """A text filter, or None with the error noted when it holds what no job can."""
    value = clean(value)
    if value is not None and (problem := text_problem(value)):
        errors.append(FormError(field, problem))
        return None
    return value


def run_link(template: str | None, run_id: str | None) -> str | None:
    """The run page of a run number, from a template with `{run}`; only http(s) or a path."""
    if not template or not run_id:
        return None
    if not template.startswith(("http://", "https://", "/")):
        return None
    return template.replace("{run}", quote(run_id, safe=""))


class Console:
    """The console's state (sessions, templates) and its handlers."""

    def __init__(self, admin: Admin, store: Store, settings: Settings) -> None:
        self.admin = admin
        self.settings = settings
        self.store = store
        self.tokens = [t.encode() for t in settings.api_token]
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.assets = Assets()
        self.env = environment(self.assets)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(self._security_headers)
        r = app.router
        r.add_get("/", self.home, name="home")
        r.add_get("/login", self.login_page, name="login")
        r.add_post("/login", self.login, name="login_submit")
        r.add_post("/logout", self.logout, name="logout")
        r.add_get("/static/{name}", self.static, name="static")
        r.add_get("/go", self.go, name="go")
        r.add_post("/check", self.check, name="check")
        s = "/spaces/{space}"
        r.add_get(f"{s}/jobs", self.jobs, name="jobs")
        r.add_get(f"{s}/jobs/{{id}}", self.job, name="job")
        r.add_post(f"{s}/jobs/{{id}}/retry", self.retry, name="retry")
        r.add_get(f"{s}/webhooks", self.webhooks, name="webhooks")
        r.add_get(f"{s}/webhooks/new", self.new_webhook, name="new_webhook")
        r.add_post(f"{s}/webhooks", self.create_webhook, name="create_webhook")
        r.add_get(f"{s}/webhooks/{{id}}", self.edit_webhook, name="webhook")
        r.add_post(f"{s}/webhooks/{{id}}", self.save_webhook, name="save_webhook")
        r.add_post(f"{s}/webhooks/{{id}}/enabled", self.set_enabled, name="enable")
        r.add_post(f"{s}/webhooks/{{id}}/rotate", self.rotate, name="rotate")
        r.add_get(f"{s}/overview", self.overview, name="overview")
        r.add_get(f"{s}/retry", self.bulk_form, name="bulk")
        r.add_get(f"{s}/retry/confirm", self.bulk_confirm, name="bulk_confirm")
        r.add_post(f"{s}/retry", self.bulk_retry, name="bulk_retry")
        return app

    # access

    def session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _session(self, request: web.Request) -> Session:
        session = self.session(request)
        assert session is not None, "the guard lets no request through without a session"
        return session

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """No session: pages go to the login form, anything else is refused (401).
        A POST without the session's CSRF token is refused (403)."""
        route = request.match_info.route.name
        if route in PUBLIC_ROUTES:
            return await handler(request)
        session = self.session(request)
        wants_json = route in JSON_ROUTES or request.headers.get("Accept", "").startswith(
            "application/json"
        )
        if session is None:
            if request.method in SAFE_METHODS and not wants_json:
                raise web.HTTPSeeOther(f"{PREFIX}/login?" + urlencode({"next": request.path_qs}))
            return self.refuse(request, 401, "log in to the console first", wants_json)
        if request.method not in SAFE_METHODS:
            given = request.headers.get("X-CSRF-Token")
            if given is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                field = (await request.post()).get("csrf")
                given = field if isinstance(field, str) else None
            if not same_secret(given, session.csrf):
                return self.refuse(
                    request,
                    403,
                    "the form's CSRF token is missing or wrong: reload the page and try again",
                    wants_json,
                )
        try:
            return await handler(request)
        except NotFound as exc:
            return self.render(
                request,
                "error.html",
                status=404,
                space=request.match_info.get("space"),
                title="Not found",
                message=str(exc),
            )

    async def _security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")

    def refuse(
        self, request: web.Request, status: int, message: str, wants_json: bool
    ) -> web.Response:
        if wants_json:
            return web.Response(
                body=orjson.dumps({"error": message}),
                status=status,
                content_type="application/json",
            )
        return self.render(request, "error.html", status=status, title="Refused", message=message)

    def _secure(self, request: web.Request) -> bool:
        return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"

    # rendering

    def render(
        self,
        request: web.Request,
        template: str,
        *,
        status: int = 200,
        space: str | None = None,
        **context: Any,
    ) -> web.Response:
        session = self.session(request)
        html = self.env.get_template(template).render(
            space=space,
            csrf=session.csrf if session else "",
            logged_in=session is not None,
            flashes=session.take_flashes() if session else [],
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    async def _spaces(self, space: str) -> list[str]:
        known = await self.store.known_spaces()
        return known if space in known else sorted([*known, space])

    # login

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(space_url(self.settings.default_space, "jobs"))

    async def go(self, request: web.Request) -> web.StreamResponse:
        space = clean(request.query.get("space")) or self.settings.default_space
        raise web.HTTPSeeOther(space_url(space, "jobs"))

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        target = safe_next(request.query.get("next"))
        if self.session(request) is not None:
            raise web.HTTPSeeOther(target)
        return self._login_form(request, target)

    def _login_form(
        self, request: web.Request, target: str, status: int = 200, error: str | None = None
    ) -> web.Response:
        nonce = secrets.token_urlsafe(24)
        response = self.render(
            request, "login.html", status=status, next=target, nonce=nonce, error=error
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            max_age=3600,
        )
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Open a session for one of the API's tokens. The form's nonce must match its
        SameSite=Strict cookie, so no other site can log a browser in."""
        form = await request.post()
        target = safe_next(_text(form, "next"))
        address = request.remote or "unknown"
        if not same_secret(_text(form, "nonce"), request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_form(
                request, target, 403, "The login form expired: log in again from this page."
            )
        if self.throttle.blocked(address):
            log.warning("console login refused: too many wrong tokens", address=address)
            return self._login_form(
                request, target, 429, "Too many wrong tokens: wait a few minutes, then try again."
            )
        if not token_accepted(_text(form, "token") or "", self.tokens):
            self.throttle.failed(address)
            log.info("console login refused: wrong token", address=address)
            return self._login_form(request, target, 401, "That token is not one the API accepts.")
        self.throttle.succeeded(address)
        if (previous := self.session(request)) is not None:
            self.sessions.drop(previous.id)
        session = self.sessions.create()
        log.info("console login", address=address)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            COOKIE,
            session.id,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            max_age=int(self.sessions.lifetime),
        )
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(self._session(request).id)
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        raise response

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
        if not isinstance(data, dict) or data.get("kind") not in ("filter", "url"):
            return _json({"error": 'send {"kind": "filter" or "url", "text": "..."}'}, 400)
        text = data.get("text")
        if not isinstance(text, str):
            return _json({"error": "text must be a string"}, 400)
        if len(text) > CHECK_LIMIT:
            return _json({"ok": False, "message": f"longer than {CHECK_LIMIT} characters"})
        try:
            if data["kind"] == "filter":
                compile_filter(text)
            else:
                compile_url(text)
        except ExpressionError as exc:
            return _json(pointer(text, exc).as_json())
        if data["kind"] == "url" and (problem := url_shape_problem(text)):
            return _json({"ok": False, "message": f"The URL {problem}."})
        return _json({"ok": True})

    # jobs

    def _job_query(self, space: str, q: Mapping[str, str]) -> tuple[JobFilter, list[FormError]]:
        errors: list[FormError] = []
        status = kind = None
        try:
            status = parse_status(q["status"]) if clean(q.get("status")) else None
        except ValueError as exc:
            errors.append(FormError("status", str(exc)))
        if (kind := clean(q.get("type"))) is not None and kind not in TYPES:
            errors.append(FormError("type", f"unknown type {kind!r}"))
            kind = None
        limit = 50
        if clean(q.get("limit")):
            try:
                limit = int(q["limit"])
                if not 1 <= limit <= 500:
                    raise ValueError
            except ValueError:
                errors.append(FormError("limit", "must be an integer from 1 to 500"))
                limit = 50
        after = None
        if clean(q.get("pageToken")):
            try:
                after = decode_token(q["pageToken"])
            except ValueError as exc:
                errors.append(FormError("pageToken", str(exc)))
        when: dict[str, datetime | None] = {"start": None, "end": None}
        for key in when:
            try:
                when[key] = parse_when(key, q.get(key))
            except FormError as exc:
                errors.append(exc)
        query = JobFilter(
            space=space,
            status=status,
            webhook=clean_text("webhook", q.get("webhook"), errors),
            type=kind,
            event=clean_text("event", q.get("event"), errors),
            kapp=clean_text("kapp", q.get("kapp"), errors),
            form=clean_text("form", q.get("form"), errors),
            url_text=clean_text("url", q.get("url"), errors),
            start=when["start"],
            end=when["end"],
            limit=limit,
            after=after,
        )
        return query, errors

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
        return self.render(
            request,
            "jobs.html",
            space=space,
            spaces=await self._spaces(space),
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
        """The job of the path, if it is of the space (NotFound: the guard's 404 page)."""
        try:
            return await self.admin.find_job(request.match_info["id"], request.match_info["space"])
        except NotFound:
            raise NotFound("There is no such job in this space.") from None

    async def job(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        row = await self._job(request)
        attempts = (await self.admin.job_detail(row)).attempt_history
        follow = request.query.get("follow", "")
        following = follow.isdigit() and len(follow) < 10 and row.replay <= int(follow)
        # Just retried: the broker holds the new run, the recorder has not written it yet.
        queued_again = following and row.status in FINAL
        webhook = await self.store.get_webhook_by_id(str(row.webhook_id))
        headers: Mapping[str, str] = attempts[-1].request_headers if attempts else {}
        template = self.settings.run_url_template
        return self.render(
            request,
            "job.html",
            space=space,
            spaces=await self._spaces(space),
            job=row,
            attempts=attempts,
            headers=headers,
            webhook=webhook if webhook is not None and webhook.space == space else None,
            run_url=run_link(template, row.run_id),
            shown_status=Status.QUEUED.value if queued_again else row.status,
            queued_again=queued_again,
            can_retry=row.status in RETRYABLE and not queued_again,
            refresh=LIST_REFRESH if following or row.status not in FINAL else 0,
        )

    async def retry(self, request: web.Request) -> web.StreamResponse:
        space = request.match_info["space"]
        session = self._session(request)
        row = await self._job(request)
        here = space_url(space, "jobs", str(row.id))
        try:
            async with asyncio.timeout(BROKER_WAIT):
                result = await self.admin.retry_job(row, by="console")
        except (BrokerUnavailable, TimeoutError):
            session.flash("error", "The broker is unavailable: the job was not retried.")
            raise web.HTTPSeeOther(here) from None
        except Conflict as exc:
            session.flash("error", f"The job cannot be retried: {exc.reason}.")
            raise web.HTTPSeeOther(here) from None
        if result.status == Status.FAILED:
            session.flash("error", "The webhook's URL could not be rendered for this event.")
            raise web.HTTPSeeOther(here)
        session.flash("ok", f"Queued again, to {result.url}.")
        following = space_url(space, "jobs", str(row.id), follow=str(row.replay))
        raise web.HTTPSeeOther(following)

    # webhooks

    async def _webhook(self, request: web.Request) -> Webhook:
        """The webhook of the path, if it is of the space (NotFound: the guard's 404 page)."""
        return await self.admin.webhook_in_space(
            request.match_info["space"], request.match_info["id"]
        )

    async def webhooks(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        return self.render(
            request,
            "webhooks.html",
            space=space,
            spaces=await self._spaces(space),
            webhooks=await self.store.space_webhooks(space),
        )

    def _edit_page(
        self,
        request: web.Request,
        space: str,
        spaces: list[str],
        values: dict[str, Any],
        *,
        webhook: Webhook | None,
        errors: list[dict[str, str]] | None = None,
        status: int = 200,
    ) -> web.Response:
        pointers = {}
        for field in ("filter", "url"):
            text = values.get(field) or ""
            try:
                if field == "filter":
                    compile_filter(text)
                else:
                    compile_url(text)
            except ExpressionError as exc:
                pointers[field] = pointer(text, exc)
        return self.render(
            request,
            "webhook.html",
            status=status,
            space=space,
            spaces=spaces,
            webhook=webhook,
            values=values,
            errors={e["field"]: e["message"] for e in errors or []},
            pointers=pointers if errors else {},
            catalogue=CATALOGUE,
            levels=[(Level.SPACE, "Space level"), (Level.KAPP, "Kapp level")],
            auth_strategies=[a or "" for a in AUTH_STRATEGIES],
            secret_until=webhook.previous_secret_until if webhook else None,
            auth_fields=AUTH_FIELDS,
            file_fields=FILE_FIELDS,
            now=datetime.now(UTC),
        )

    @staticmethod
    def _values_of(webhook: Webhook | None, kapp: str = "") -> dict[str, Any]:
        """The edit form's values: the model's fields (as on the wire; maps as `Name:
        value` lines, write-only ones never), the kapp, enabled."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        if webhook is None:
            return dict.fromkeys(shown, "") | {"kapp": kapp, "enabled": True}
        wire = WebhookView.of(webhook).wire()
        fields = {
            k: entry_lines(wire[k]) if k in WebhookChange.ENTRIES else wire[k] or "" for k in shown
        }
        return fields | {"kapp": webhook.kapp or "", "enabled": webhook.enabled}

    @staticmethod
    def _values_from(form: MultiDictProxy[Any]) -> dict[str, Any]:
        """As typed; every field but the filter and maps trimmed (those may span lines).
        Write-only parts are kept apart (`secrets`): the page never shows them again."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        values = {k: _text(form, k) or "" for k in [*shown, "kapp"]}
        keep = {"filter", *WebhookChange.ENTRIES}
        values = {k: v if k in keep else v.strip() for k, v in values.items()}
        secrets = {
            key: {p: v for p in parts if (v := _text(form, f"{key}.{p}") or "").strip()}
            for key, parts in WebhookChange.WRITE_ONLY.items()
        }
        return values | {"enabled": _text(form, "enabled") == "on", "secrets": secrets}

    @staticmethod
    def _change(values: dict[str, Any]) -> WebhookChange:
        """An empty filter or authentication is none; a write-only field left blank keeps
        what is stored."""
        shown = [k for k in WebhookChange.options() if k not in WebhookChange.WRITE_ONLY]
        data = {k: values[k] for k in shown} | {"enabled": values["enabled"]}
        blank = {k: None for k in ("filter", "authStrategy") if not values[k].strip()}
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
        space = request.match_info["space"]
        values = self._values_of(None, request.query.get("kapp", ""))
        return self._edit_page(request, space, await self._spaces(space), values, webhook=None)

    async def create_webhook(self, request: web.Request) -> web.StreamResponse:
        space = request.match_info["space"]
        values = self._values_from(await request.post())
        kapp = values["kapp"] or None
        try:
            created = await self.admin.create_webhook(
                space, kapp, self._change(values), by="console"
            )
        except (InputInvalid, Conflict) as exc:
            spaces = await self._spaces(space)
            return self._refused(request, space, spaces, values, None, exc)
        self._flash_saved(request, created, "created")
        raise web.HTTPSeeOther(space_url(space, "webhooks", created.id))

    def _flash_saved(self, request: web.Request, webhook: Webhook, done: str) -> None:
        session = self._session(request)
        session.flash("ok", f"Webhook {webhook.name} {done}.")
        for warning in self.admin.warnings(webhook):
            session.flash("warning", f"Warning: {warning[:1].upper()}{warning[1:]}.")

    def _refused(
        self,
        request: web.Request,
        space: str,
        spaces: list[str],
        values: dict[str, Any],
        webhook: Webhook | None,
        exc: InputInvalid | Conflict,
    ) -> web.Response:
        if isinstance(exc, InputInvalid):
            errors, status = exc.errors, 422
        else:
            errors, status = [{"field": exc.field or "name", "message": str(exc)}], 409
        return self._edit_page(
            request, space, spaces, values, webhook=webhook, errors=errors, status=status
        )

    async def edit_webhook(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        webhook = await self._webhook(request)
        return self._edit_page(
            request, space, await self._spaces(space), self._values_of(webhook), webhook=webhook
        )

    async def save_webhook(self, request: web.Request) -> web.StreamResponse:
        space = request.match_info["space"]
        current = await self._webhook(request)
        values = self._values_from(await request.post())
        values["kapp"] = current.kapp or ""
        try:
            saved = await self.admin.update_webhook(current, self._change(values), by="console")
        except (InputInvalid, Conflict) as exc:
            spaces = await self._spaces(space)
            return self._refused(request, space, spaces, values, current, exc)
        self._flash_saved(request, saved, "saved")
        raise web.HTTPSeeOther(space_url(space, "webhooks", saved.id))

    async def set_enabled(self, request: web.Request) -> web.StreamResponse:
        space = request.match_info["space"]
        current = await self._webhook(request)
        form = await request.post()
        enabled = _text(form, "enabled") == "true"
        saved = await self.admin.set_enabled(current, enabled, by="console")
        self._session(request).flash(
            "ok", f"Webhook {saved.name} {'enabled' if enabled else 'disabled'}."
        )
        if _text(form, "back") == "list":
            raise web.HTTPSeeOther(space_url(space, "webhooks"))
        raise web.HTTPSeeOther(space_url(space, "webhooks", saved.id))

    async def rotate(self, request: web.Request) -> web.StreamResponse:
        space = request.match_info["space"]
        current = await self._webhook(request)
        saved = await self.admin.rotate_secret(current, None, by="console")
        until = saved.previous_secret_until
        self._session(request).flash(
            "ok",
            "New signing secret. The previous one keeps signing beside it until "
            f"{until.astimezone(UTC):%Y-%m-%d %H:%M UTC}."
            if until
            else "New signing secret.",
        )
        raise web.HTTPSeeOther(space_url(space, "webhooks", saved.id))

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
        return self.render(
            request,
            "overview.html",
            space=space,
            spaces=await self._spaces(space),
            charts=[hour, day],
            failing=failing,
            backlog=backlog,
            next_due=next_due,
            now=now,
            refresh=OVERVIEW_REFRESH,
        )

    # bulk retry

    async def bulk_form(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        return self.render(
            request,
            "bulk.html",
            space=space,
            spaces=await self._spaces(space),
            webhooks=await self.store.space_webhooks(space),
            values={
                "webhook": request.query.get("webhook", ""),
                "start": request.query.get("start", ""),
                "end": request.query.get("end", ""),
            },
            errors={},
        )

    async def _bulk_params(
        self, space: str, values: Mapping[str, str]
    ) -> tuple[Webhook | None, datetime | None, datetime | None, dict[str, str]]:
        errors: dict[str, str] = {}
        webhook = None
        try:
            webhook = await self.admin.webhook_in_space(space, values.get("webhook", ""))
        except NotFound:
            errors["webhook"] = "choose one of this space's webhooks"
        start = end = None
        try:
            start = parse_when("start", values.get("start"))
        except FormError as exc:
            errors["start"] = exc.message
        try:
            end = parse_when("end", values.get("end"))
        except FormError as exc:
            errors["end"] = exc.message
        if start and end and start >= end:
            errors["end"] = "must be after the start"
        return webhook, start, end, errors

    async def _replay_failed(
        self, webhook: Webhook, start: datetime | None, end: datetime | None, dry: bool
    ) -> int:
        async with asyncio.timeout(BROKER_WAIT):
            return await self.admin.replay(webhook, start=start, end=end, dry_run=dry, by="console")

    async def bulk_confirm(self, request: web.Request) -> web.Response:
        space = request.match_info["space"]
        values = {k: request.query.get(k, "") for k in ("webhook", "start", "end")}
        webhook, start, end, errors = await self._bulk_params(space, values)
        spaces = await self._spaces(space)
        if webhook is None or errors:
            return self.render(
                request,
                "bulk.html",
                status=422,
                space=space,
                spaces=spaces,
                webhooks=await self.store.space_webhooks(space),
                values=values,
                errors=errors,
            )
        try:
            count = await self._replay_failed(webhook, start, end, dry=True)
        except Exception as exc:  # any broker failure: nothing can be queued
            log.warning("console bulk retry: broker unavailable", error=repr(exc))
            return self.refuse(
                request, 503, "The broker is unavailable: nothing can be queued now.", False
            )
        return self.render(
            request,
            "bulk_confirm.html",
            space=space,
            spaces=spaces,
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
        space = request.match_info["space"]
        session = self._session(request)
        form = await request.post()
        values = {k: _text(form, k) or "" for k in ("webhook", "start", "end")}
        webhook, start, end, errors = await self._bulk_params(space, values)
        if webhook is None or errors:
            session.flash("error", "; ".join(f"{k}: {v}" for k, v in errors.items()))
            raise web.HTTPSeeOther(space_url(space, "retry", **values))
        try:
            count = await self._replay_failed(webhook, start, end, dry=False)
        except Exception as exc:  # any broker failure: what was published stays queued
            log.warning("console bulk retry failed", error=repr(exc))
            session.flash("error", "The broker is unavailable: some jobs may not be queued.")
            raise web.HTTPSeeOther(space_url(space, "retry", **values)) from None
        session.flash("ok", f"Queued {count} failed job{'s' if count != 1 else ''} again.")
        raise web.HTTPSeeOther(space_url(space, "jobs", webhook=webhook.name, kapp=webhook.kapp))


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


def _text(form: Mapping[str, Any], key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
