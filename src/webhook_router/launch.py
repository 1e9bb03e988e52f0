"""Starting a process of roles from the command line, and stopping it.

Invariants: every port the process will listen on is checked before anything else happens
(nothing is migrated, declared or consumed when one is busy), and a refusal names the
setting or option that chose the port; a port given twice is refused the same way, and so
is one taken between the check and the listen (CannotListen). The
database is created and migrated only when asked (`up`). A role whose background task died
stops the whole process (CannotStart, exit 1) rather than leaving it half-alive.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from webhook_router import store, tracing
from webhook_router.encryption import Keyring
from webhook_router.service import Role
from webhook_router.settings import Settings
from webhook_router.store import Store

log = structlog.get_logger(__name__)

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

# (host, port, what sets it): a port the process is about to listen on
Listen = tuple[str | None, int, str]


class CannotStart(Exception):
    """Why the process stops before or while its roles run, with the exit code to report."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


async def ensure_database(settings: Settings) -> None:
    try:
        if await store.ensure_database(settings.database_url):
            log.info("database created", database=settings.database_url.rsplit("/", 1)[-1])
    except (OSError, asyncpg.PostgresError) as exc:
        raise CannotStart(f"database unavailable: {exc}", EXIT_UNAVAILABLE) from None


NO_KEY_WARNING = (
    "WEBHOOK_ROUTER_ENCRYPTION_KEYS is not set: signing secrets and credentials are stored "
    "in plaintext (make a key with `webhook-router secrets new-key`)"
)


def warn_without_keys(settings: Settings) -> None:
    """Say once, in the log (stderr), that secrets are stored unsealed."""
    if not settings.encryption_keys:
        log.warning(NO_KEY_WARNING)


def store_of(pool: asyncpg.Pool, settings: Settings) -> Store:
    """A store sealing what the settings say to seal, with their keys."""
    return Store(pool, Keyring(settings.encryption_keys), seal_payloads=settings.encrypt_payloads)


async def open_store(settings: Settings) -> Store:
    try:
        pool = await store.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CannotStart(f"database unavailable: {exc}", EXIT_UNAVAILABLE) from None
    return store_of(pool, settings)


def engine_listen(settings: Settings) -> Listen:
    url = urlsplit(settings.engine_url)
    return (
        url.hostname or "127.0.0.1",
        url.port or 80,
        f"the port of WEBHOOK_ROUTER_ENGINE_URL ({settings.engine_url})",
    )


def check_listens(listens: Sequence[Listen]) -> None:
    """Refuse to start, in one line naming the setting, when a port cannot be listened on."""
    from webhook_router.runtime import unbindable

    seen: dict[int, str] = {}
    for host, port, setting in listens:
        if port and port in seen:
            raise CannotStart(
                f"port {port} is given twice, by {seen[port]} and by {setting}", EXIT_USAGE
            )
        seen[port] = setting
        error = unbindable(host, port)
        if error is not None:
            reason = error.strerror or str(error)
            raise CannotStart(
                f"cannot listen on {host or '*'}:{port} ({reason}): change {setting}",
                EXIT_UNAVAILABLE,
            )


def cli_command() -> str:
    """How the reader runs this CLI again: `webhook-router` when that is the one on PATH,
    else the path this process was started by."""
    started = sys.argv[0]
    if os.path.basename(started) != "webhook-router":
        return "webhook-router"
    found = shutil.which("webhook-router")
    if found is not None and os.path.realpath(found) == os.path.realpath(started):
        return "webhook-router"
    relative = os.path.relpath(started)
    return started if relative.startswith("..") else relative


async def _announce(roles: Sequence[Role], settings: Settings, generated: str | None) -> None:
    """Once every role is ready: where the console is and the token to log in with (a
    token from the environment is named, not printed: it may be a real one)."""
    from webhook_router.demo import api_base_url

    while not all(role.ready() for role in roles):
        await asyncio.sleep(0.1)
    api = api_base_url(settings)
    token = f"the API token {generated}" if generated else "a token from WEBHOOK_ROUTER_API_TOKEN"
    print(
        f"\nwebhook-router is up.\n"
        f"  console:  {api}/console/   (log in with {token})\n"
        f"  API:      {api}/app/api/v1/\n"
        "Stop with Ctrl-C.",
        flush=True,
    )


def listens(settings: Settings, names: Sequence[str], health_port: int, demo: bool) -> list[Listen]:
    """The ports a process of these roles will listen on, each with what sets it."""
    found: list[Listen] = []
    if "api" in names:
        found.append((settings.api_host, settings.api_port, "WEBHOOK_ROUTER_API_PORT"))
    if health_port:
        found.append((settings.api_host, health_port, "--health-port"))
    if demo:
        found.append(engine_listen(settings))
    return found


def run(
    settings: Settings,
    names: Sequence[str],
    *,
    health_port: int = 0,
    up: bool = False,
    demo: bool = False,
    generated_token: str | None = None,
) -> None:
    """Run the named roles until a signal (check their ports first: `check_listens`). `up`
    migrates first and, unless `demo` runs the demo beside them, says where the console is
    once they are ready."""
    from webhook_router.handoff import NEEDS, ROLES
    from webhook_router.runtime import CannotListen

    if settings.direct_handoff and not ROLES.issubset(names):
        raise CannotStart(NEEDS, EXIT_USAGE)
    try:
        run_forever(_run(settings, names, health_port, up, demo, generated_token))
    except CannotListen as exc:
        chosen = listens(settings, names, health_port, demo)
        given = [setting for _, port, setting in chosen if port == exc.port]
        raise CannotStart(f"{exc.message}: change {given[0]}" if given else exc.message) from None


async def _run(
    settings: Settings,
    names: Sequence[str],
    health_port: int,
    up: bool,
    demo: bool,
    generated_token: str | None,
) -> None:
    from webhook_router.roles import build_roles
    from webhook_router.runtime import RoleDied, health_app, run_roles, serve

    tracing.setup("webhook-router" + (f"-{names[0]}" if len(names) == 1 else ""))
    if up:
        await ensure_database(settings)
    st = await open_store(settings)
    if up:
        applied = await store.migrate(st.pool)
        log.info("migrations applied", applied=applied)
    roles = build_roles(names, settings, st)
    settle_garbage_collector()
    health = None
    beside: asyncio.Task[Any] | None = None
    try:
        if health_port:
            from webhook_router.metrics import QueueDepths

            depths = QueueDepths(settings.names, settings.retry_delays)
            health = await serve(health_app(roles, depths), settings.api_host, health_port)
        if demo:
            from webhook_router.demo import run_demo

            beside = asyncio.create_task(run_demo(settings, st, roles, cli_command()))
        elif up:
            beside = asyncio.create_task(_announce(roles, settings, generated_token))
        await run_roles(roles, drain=settings.drain_timeout, stop=asyncio.Event())
    except RoleDied as exc:
        raise CannotStart(f"stopped: a background task died ({exc})") from None
    finally:
        if beside is not None:
            beside.cancel()
        if health is not None:
            await health.cleanup()
        await st.pool.close()
        await asyncio.to_thread(tracing.shutdown)


GC_THRESHOLD = 20_000
"""Allocations between the collector's youngest-generation passes (Python's default: 700)."""


def settle_garbage_collector() -> None:
    """Once everything a role needs is imported and built: move what exists now (modules,
    classes, compiled schemas) out of the collector's sight, and run its youngest pass less
    often. A delivery allocates hundreds of small objects; with the defaults the collector
    ran every few deliveries and, in its full passes, walked every object of every library
    loaded. Cycles are still collected, only in fewer, larger passes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def run_forever(main: Awaitable[None]) -> None:
    """Run a long-lived process on uvloop where it is installed (faster sockets and
    scheduling), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)  # type: ignore[arg-type]
