"""Running roles: one or several in a process, until SIGTERM or SIGINT, then draining.

The ports a process will listen on are checked before anything starts (`unbindable`), so a
busy port stops it with nothing consumed, declared or migrated.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Sequence

import structlog
from aio_pika.abc import AbstractConnection
from aiohttp import web

from webhook_router import metrics
from webhook_router.service import Role

log = structlog.get_logger(__name__)


def health_app(
    roles: Sequence[Role], queue_depths: metrics.QueueDepths | None = None
) -> web.Application:
    """`/healthz` (alive), `/readyz` (every role connected) and `/metrics` for a role
    process; with `queue_depths`, `/metrics` also reads each queue's depth through a role's
    broker connection."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    def states() -> dict[str, bool]:
        state = {role.name: role.ready() for role in roles}
        for name, ready in state.items():
            metrics.role_ready(name, ready)
        return state

    async def readyz(request: web.Request) -> web.Response:
        state = states()
        ready = all(state.values())
        return web.json_response(
            {"status": "ready" if ready else "unavailable", "roles": state},
            status=200 if ready else 503,
        )

    async def refresh() -> None:
        states()
        if queue_depths is not None:
            await queue_depths.refresh(_connection_of(roles))

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.handler(refresh))
    return app


def _connection_of(roles: Sequence[Role]) -> AbstractConnection | None:
    """An open broker connection of one of the roles, if any has one."""
    for role in roles:
        connection = getattr(role, "connection", None)
        if isinstance(connection, AbstractConnection) and not connection.is_closed:
            return connection
    return None


def unbindable(host: str | None, port: int) -> OSError | None:
    """Why `serve(..., host, port)` would fail to listen, or None when it can: every
    address the host resolves to is bound for a moment, with the options aiohttp uses."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


class CannotListen(OSError):
    """A port that could not be listened on, though it was free when checked (taken in
    between): said in one line, not as a traceback."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host, self.port = host, port
        self.message = f"cannot listen on {host or '*'}:{port} ({error.strerror or error})"
        super().__init__(error.errno, self.message)


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(host, port, exc) from None
    return runner


def _on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_until_signal() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    _on_signals(asyncio.get_running_loop(), stop)
    await stop.wait()


class RoleDied(RuntimeError):
    """A role's background task died; the process stopped rather than run half-alive."""


async def run_roles(
    roles: Sequence[Role], *, drain: float, stop: asyncio.Event | None = None
) -> None:
    """Start every role, wait for a stop signal or the death of a role's background task,
    then stop them in reverse order; RoleDied after a death, so the process exits failed
    and its supervisor starts it again."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    _on_signals(loop, stop)
    started: list[Role] = []
    dead: list[str] = []
    try:
        for role in roles:
            await role.start()
            started.append(role)
        waits = [asyncio.ensure_future(stop.wait())]
        waits += [asyncio.ensure_future(r.side.died.wait()) for r in started]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        dead = [f"{r.name}: {r.side.reason}" for r in started if not r.side.alive]
        log.info("stopping", roles=[r.name for r in started], drain_seconds=drain, died=dead)
    finally:
        for role in reversed(started):
            try:
                await role.stop(drain)
            except Exception as exc:  # keep stopping the others
                log.warning("role did not stop cleanly", role=role.name, error=repr(exc))
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("stopped")
    if dead:
        raise RoleDied("; ".join(dead))
