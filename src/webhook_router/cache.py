"""The webhooks a process holds in memory, kept current without a restart.

PostgreSQL notifies every change at once (a trigger bumps a revision and NOTIFYs it); a
periodic look at the revision covers notifications lost while the listening connection
was down.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from webhook_router.store import Store
from webhook_router.webhooks import Webhook, WebhookIndex

log = structlog.get_logger(__name__)

CHANNEL = "webhook_router_webhooks"


class WebhookCache:
    def __init__(self, store: Store, database_url: str, refresh: float) -> None:
        self._store = store
        self._database_url = database_url
        self._refresh = refresh
        self.index = WebhookIndex()
        self.by_id: dict[str, Webhook] = {}
        self.revision = -1
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> asyncio.Task[None]:
        """Load the webhooks, then keep them current; returns the watcher's task, which
        the role supervises."""
        await self.reload()
        self._task = asyncio.create_task(self._watch(), name="webhook-cache")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()

    async def reload(self) -> None:
        revision = await self._store.webhook_revision()
        if revision == self.revision:
            return
        webhooks = await self._store.all_webhooks()
        self.index = WebhookIndex(webhooks, previous=self.index)
        self.by_id = {w.id: w for w in webhooks}
        self.revision = revision
        log.debug("webhooks loaded", revision=revision, enabled=self.index.count)

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self._database_url)
        await self._listener.add_listener(CHANNEL, self._notified)

    def _notified(self, *_: object) -> None:
        self._changed.set()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def _watch(self) -> None:
        while True:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook notifications unavailable", error=repr(exc))
                await self._close_listener()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._refresh)
            self._changed.clear()
            try:
                await self.reload()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhooks not reloaded, keeping the last ones", error=repr(exc))
