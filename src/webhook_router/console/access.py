"""Who may use the console: logging in and out, and the guard in front of every page.

Invariants: no page or action runs without a session opened with one of the API's tokens
(a page without one goes to the login form, anything else gets 401); no POST runs without
its session's CSRF token (403); a login form is accepted only with the nonce of its own
SameSite=Strict cookie, so no other site can log a browser in; an address that sent too
many wrong tokens is refused (429) before its token is even compared. Every answer carries
the security headers (a strict Content-Security-Policy, no framing, no caching).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson
import structlog
from aiohttp import web

from webhook_router.console.render import PREFIX
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

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_ROUTES = frozenset({"login", "login_submit", "static"})
JSON_ROUTES = frozenset({"check"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Render(Protocol):
    def __call__(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response: ...


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path of the console itself."""
    if target and target.startswith(PREFIX + "/") and "\\" not in target and "//" not in target:
        return target
    return PREFIX + "/"


def form_text(form: Any, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


class Access:
    """The console's sessions, its login throttle and the handlers that open and close them."""

    def __init__(self, tokens: Sequence[str], render: Render) -> None:
        self.tokens = [t.encode() for t in tokens]
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.render = render

    def add_routes(self, app: web.Application) -> None:
        """The login routes and the security headers; `guard` is the app's first middleware."""
        app.on_response_prepare.append(self.security_headers)
        app.router.add_get("/login", self.login_page, name="login")
        app.router.add_post("/login", self.login, name="login_submit")
        app.router.add_post("/logout", self.logout, name="logout")

    def session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def current(self, request: web.Request) -> Session:
        session = self.session(request)
        assert session is not None, "the guard lets no request through without a session"
        return session

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
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
            if given is None and request.content_type in FORMS:
                given = form_text(await request.post(), "csrf")
            if not same_secret(given, session.csrf):
                message = "the form's CSRF token is missing or wrong: reload the page and try again"
                return self.refuse(request, 403, message, wants_json)
        return await handler(request)

    async def security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

    def refuse(
        self, request: web.Request, status: int, message: str, wants_json: bool
    ) -> web.Response:
        if wants_json:
            body = orjson.dumps({"error": message})
            return web.Response(body=body, status=status, content_type="application/json")
        return self.render(request, "error.html", status=status, title="Refused", message=message)

    def _cookie(
        self,
        request: web.Request,
        response: web.StreamResponse,
        name: str,
        value: str,
        max_age: int,
    ) -> None:
        secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
        response.set_cookie(
            name,
            value,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=secure,
            max_age=max_age,
        )

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
        self._cookie(request, response, LOGIN_COOKIE, nonce, 3600)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Open a session for one of the API's tokens."""
        form = await request.post()
        target = safe_next(form_text(form, "next"))
        address = request.remote or "unknown"
        if not same_secret(form_text(form, "nonce"), request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_form(
                request, target, 403, "The login form expired: log in again from this page."
            )
        if self.throttle.blocked(address):
            log.warning("console login refused: too many wrong tokens", address=address)
            return self._login_form(
                request, target, 429, "Too many wrong tokens: wait a few minutes, then try again."
            )
        if not token_accepted(form_text(form, "token") or "", self.tokens):
            self.throttle.failed(address)
            log.info("console login refused: wrong token", address=address)
            return self._login_form(request, target, 401, "That token is not one the API accepts.")
        self.throttle.succeeded(address)
        if (previous := self.session(request)) is not None:
            self.sessions.drop(previous.id)
        session = self.sessions.create()
        log.info("console login", address=address)
        response = web.HTTPSeeOther(target)
        self._cookie(request, response, COOKIE, session.id, int(self.sessions.lifetime))
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(self.current(request).id)
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        raise response
