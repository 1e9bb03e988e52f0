"""Console sessions: a random id in a cookie, the session itself kept in this process.

A user logs in with an API token; the token is never stored in the browser, and the session
keeps only its hash, looked up again on every request, so revoking the token ends its
sessions within a second. Each session carries its own CSRF token, checked on every POST.
Sessions live in memory: a restart logs everyone out, and several API processes behind one
address need sticky sessions (docs/console.md).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
DEVICE_COOKIE = "console_device"
DEVICE_LIFETIME = 90 * 86400.0
"""Seconds a browser that logged in is known by its device cookie (docs/security.md)."""
COOKIE_PATH = "/console/"
LIFETIME = 8 * 3600.0
"""Seconds a session lasts from its login, whatever the activity."""


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    token_hash: bytes
    """The SHA-256 of the token it was opened with: who it acts as is looked up by it."""
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

    def create(self, token_hash: bytes) -> Session:
        self.prune()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + self.lifetime,
            token_hash=token_hash,
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


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class LoginThrottle:
    """Refuses logins under a key after `limit` wrong tokens within `window` seconds.

    The console keys a browser it knows (one that logged in before, by its device cookie)
    apart from its address: wrong tokens sent by others from the same address never lock
    it out. Entries older than the window are pruned as failures come in."""

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

    def _recent(self, key: str) -> list[float]:
        since = self.clock() - self.window
        kept = [t for t in self._failures.get(key, []) if t > since]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def failed(self, key: str) -> None:
        self.prune()
        self._failures.setdefault(key, []).append(self.clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def prune(self) -> None:
        """Forget every key whose last failure is older than the window."""
        since = self.clock() - self.window
        for key in [k for k, times in self._failures.items() if times[-1] <= since]:
            del self._failures[key]

    def __len__(self) -> int:
        return len(self._failures)


class Devices:
    """Browsers that logged in, by the random id of their device cookie, each forgotten
    `lifetime` seconds after its last login."""

    def __init__(
        self, lifetime: float = DEVICE_LIFETIME, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._expiry: dict[str, float] = {}

    def known(self, device: str | None) -> bool:
        return device is not None and self._expiry.get(device, 0.0) > self.clock()

    def remember(self, device: str | None) -> str:
        """The device's id (a new one for a browser not known), good for another lifetime."""
        self.prune()
        kept = device if device is not None and self.known(device) else secrets.token_urlsafe(24)
        self._expiry[kept] = self.clock() + self.lifetime
        return kept

    def prune(self) -> None:
        now = self.clock()
        for key in [k for k, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[key]

    def __len__(self) -> int:
        return len(self._expiry)
