"""Who may use the console: logging in and out, and the guard in front of every page.

Invariants: no page or action runs without a session opened with a live API token (a page
without one goes to the login form, anything else gets 401; a session whose token was
revoked is closed on its next request); no POST runs without its session's CSRF token
(403); a login form is accepted only with the nonce of its own SameSite=Strict cookie, so
no other site can log a browser in; a browser that sent too many wrong tokens is refused
(429) before its token is even compared: counted by its device cookie if it logged in here
before, else by its address, so others' wrong guesses never lock out a known browser. Every
answer carries the security headers (a strict Content-Security-Policy, no framing, no
caching).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson
import structlog
from aiohttp import web

from webhook_router.console.render import PREFIX
from webhook_router.console.sessions import (
    COOKIE,
    COOKIE_PATH,
    DEVICE_COOKIE,
    LOGIN_COOKIE,
    Devices,
    LoginThrottle,
    Session,
    Sessions,
    same_secret,
)
from webhook_router.rights import Principal
from webhook_router.tokens import PRINCIPAL, Principals, token_hash

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

    def __init__(self, principals: Principals, render: Render) -> None:
        self.principals = principals
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.devices = Devices()
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

    @staticmethod
    def principal(request: web.Request) -> Principal | None:
        """Who the session acts as (set by the guard); None on the public pages."""
        return request.get(PRINCIPAL)

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if route in PUBLIC_ROUTES:
            return await handler(request)
        session = self.session(request)
        wants_json = route in JSON_ROUTES or request.headers.get("Accept", "").startswith(
            "application/json"
        )
        if session is not None:
            principal = await self.principals.of_hash(session.token_hash)
            if principal is None:
                log.info("console session closed: its token was revoked")
                self.sessions.drop(session.id)
                session = None
            else:
                request[PRINCIPAL] = principal
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
        device = request.cookies.get(DEVICE_COOKIE)
        key = f"device:{device}" if self.devices.known(device) else f"address:{address}"
        if not same_secret(form_text(form, "nonce"), request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_form(
                request, target, 403, "The login form expired: log in again from this page."
            )
        if self.throttle.blocked(key):
            log.warning("console login refused: too many wrong tokens", address=address)
            return self._login_form(
                request, target, 429, "Too many wrong tokens: wait a few minutes, then try again."
            )
        digest = token_hash(form_text(form, "token") or "")
        principal = await self.principals.of_hash(digest) if form_text(form, "token") else None
        if principal is None:
            self.throttle.failed(key)
            log.info("console login refused: wrong token", address=address)
            return self._login_form(request, target, 401, "That token is not one the API accepts.")
        self.throttle.succeeded(key)
        if (previous := self.session(request)) is not None:
            self.sessions.drop(previous.id)
        session = self.sessions.create(digest)
        log.info("console login", address=address, token=principal.name)
        response = web.HTTPSeeOther(target)
        self._cookie(request, response, COOKIE, session.id, int(self.sessions.lifetime))
        known = self.devices.remember(device)
        self._cookie(request, response, DEVICE_COOKIE, known, int(self.devices.lifetime))
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(self.current(request).id)
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        raise response
