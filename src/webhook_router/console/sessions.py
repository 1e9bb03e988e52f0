"""Console sessions: a random id in a cookie, the session itself kept in this process.

An admin logs in with one of the API's bearer tokens; the token is checked once and never
stored in the browser. Each session carries its own CSRF token, checked on every POST.
Sessions live in memory: a restart logs everyone out, and several API processes behind one
address need sticky sessions (docs/console.md).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
COOKIE_PATH = "/console/"
LIFETIME = 8 * 3600.0
"""Seconds a session lasts from its login, whatever the activity."""


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, message: str) -> None:
        """A message shown once, on the next page rendered (after a redirect)."""
        self.flashes.append((kind, message))

    def take_flashes(self) -> list[tuple[str, str]]:
        shown, self.flashes = self.flashes, []
        return shown


class Sessions:
    """Sessions by id, each expiring `lifetime` seconds after it was made."""

    def __init__(
        self, lifetime: float = LIFETIME, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def create(self) -> Session:
        self.prune()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + self.lifetime,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._by_id[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def prune(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._by_id.items() if s.expires <= now]:
            del self._by_id[key]

    def __len__(self) -> int:
        return len(self._by_id)


def token_accepted(given: str, tokens: Sequence[bytes]) -> bool:
    """Whether `given` is one of the API's tokens, compared in constant time."""
    if not given:
        return False
    raw = given.encode()
    return any(hmac.compare_digest(raw, token) for token in tokens)


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class LoginThrottle:
    """Refuses logins from an address after `limit` wrong tokens within `window` seconds."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str) -> list[float]:
        since = self.clock() - self.window
        kept = [t for t in self._failures.get(address, []) if t > since]
        if kept:
            self._failures[address] = kept
        else:
            self._failures.pop(address, None)
        return kept

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self.limit

    def failed(self, address: str) -> None:
        self._recent(address)
        self._failures.setdefault(address, []).append(self.clock())

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
