"""Processes the fault tests start and stop: roles as real processes, a private PostgreSQL,
a private RabbitMQ virtual host. Each cleans up what it started."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from webhook_router.settings import Settings


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that gives a role process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_ROUTER_")}
    for name, value in settings.model_dump().items():
        text = ",".join(value) if isinstance(value, list) else str(value)
        env[f"WEBHOOK_ROUTER_{name.upper()}"] = text
    env["WEBHOOK_ROUTER_LOG_FORMAT"] = "json"
    return env


@asynccontextmanager
async def role_process(settings: Settings, role: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`webhook-router ROLE` as its own process; killed at the end if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        role,
        env=env_of(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@contextmanager
def private_vhost(amqp_url: str) -> Iterator[str]:
    """A virtual host of the test's own on the shared broker, so closing its connections
    touches nobody else; yields the AMQP URL for it, deletes it at the end."""
    name = f"wrtest-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield amqp_url.rstrip("/") + "/" + quote(name, safe="")
    finally:
        if name in rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split():
            rabbitmqctl("delete_vhost", name)


def _vhost_of(vhost_url: str) -> str:
    return unquote(vhost_url.rsplit("/", 1)[1])


def delete_vhost(vhost_url: str) -> None:
    """The broker goes away for everyone on this virtual host: connections closed,
    reconnections refused."""
    rabbitmqctl("delete_vhost", _vhost_of(vhost_url))


def close_vhost_connections(vhost_url: str) -> None:
    rabbitmqctl("close_all_connections", "--vhost", _vhost_of(vhost_url), "closed by a fault test")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own (own port, own data folder), as the
    `postgres` user when run as root; stopped and removed at the end."""

    def __init__(self, port: int) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="wrtest-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-A", "trust", "-U", "postgres", "-D", str(self.data))

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def terminate(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
