"""API tokens: making one, and finding the principal a bearer token stands for.

Only the SHA-256 of a token is stored (a token is 32 random bytes: a fast hash is enough,
nothing short enough to guess is ever hashed). Lookups are cached for CACHE_SECONDS, under
a second, so a revoked token stops working within a second on every process without any
message between them; the cache also remembers tokens that match nothing, for as long. A
token's `last_used_at` is written at most once per TOUCH_SECONDS per process, not on every
request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from webhook_router.rights import SETTINGS_TOKEN, Principal, Role
from webhook_router.store import Store

PREFIX = "wrt_"
"""Every token made here starts with it, so a leaked one is recognisable in a scan."""
PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the API and the console keep who a request's token acts as."""
CACHE_SECONDS = 0.5
TOUCH_SECONDS = 60.0
CACHE_MAX = 10_000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def name_problem(name: str) -> str | None:
    """Why a token name cannot be used, or None."""
    if name == SETTINGS_TOKEN:
        return f"{SETTINGS_TOKEN!r} names the tokens of WEBHOOK_ROUTER_API_TOKEN"
    if not NAME.match(name):
        return "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


class Principals:
    """Finds who a bearer token acts as: a token of the settings (admin of every space), or
    a stored one that is not revoked."""

    def __init__(
        self,
        store: Store,
        settings_tokens: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self._settings = [token_hash(t) for t in settings_tokens]
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._touched: dict[str, float] = {}

    async def of_token(self, token: str) -> Principal | None:
        return await self.of_hash(token_hash(token)) if token else None

    async def of_hash(self, digest: bytes) -> Principal | None:
        """The principal of a token's hash, or None when no live token has it."""
        if any(hmac.compare_digest(digest, known) for known in self._settings):
            return Principal(SETTINGS_TOKEN, Role.ADMIN)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        principal = await self.store.api_token_by_hash(digest)
        if len(self._cache) >= CACHE_MAX:
            self._prune(now)
        self._cache[digest] = (now, principal)
        if principal is not None:
            last = self._touched.get(principal.name)
            if last is None or now - last >= TOUCH_SECONDS:
                self._touched[principal.name] = now
                await self.store.touch_api_token(principal.name, datetime.now(UTC))
        return principal

    def _prune(self, now: float) -> None:
        for key in [k for k, (at, _) in self._cache.items() if now - at >= CACHE_SECONDS]:
            del self._cache[key]
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
