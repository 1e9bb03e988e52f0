"""`up --demo`: a local workflow engine, the standard webhooks and a few sample events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from webhook_router.defaults import install_defaults
from webhook_router.engine import Engine
from webhook_router.events import now_timestamp
from webhook_router.publisher import Publisher
from webhook_router.runtime import serve
from webhook_router.service import Role
from webhook_router.settings import Settings
from webhook_router.store import Store

DEMO_KAPP = "services"


def demo_events(space: str) -> list[dict[str, Any]]:
    """One Submission Submitted, one User Created, one Team Updated, one Datastore
    Submission Created and one Form Created, in the shape platform services publish."""
    attrs = [{"name": "Task Source Name", "values": ["Kinetic Request CE"]}]
    sp = {"slug": space, "name": space.title(), "attributes": attrs}
    kapp = {"slug": DEMO_KAPP, "name": "Services"}
    form = {"slug": "ipad-request", "name": "iPad Request"}
    who = {"username": "jane@example.com", "displayName": "Jane"}

    def header(type_: str, action: str) -> dict[str, str]:
        return {
            "id": str(uuid.uuid4()),
            "type": type_,
            "action": action,
            "timestamp": now_timestamp(),
        }

    return [
        {
            "event": header("Submission", "Submitted"),
            "space": sp,
            "kapp": kapp,
            "form": form,
            "identity": who,
            "submission": {
                "id": str(uuid.uuid4()),
                "coreState": "Submitted",
                "values": {"Requested For": "jane@example.com", "Model": "iPad Pro"},
            },
        },
        {
            "event": header("User", "Created"),
            "space": sp,
            "identity": who,
            "user": {"username": "sam@example.com", "displayName": "Sam", "invitedBy": None},
        },
        {
            "event": header("Team", "Updated"),
            "space": sp,
            "identity": who,
            "team": {"name": "Role::Employee", "slug": "role-employee"},
            "previous": {"team": {"name": "Employees", "slug": "role-employee"}},
        },
        {
            "event": header("Datastore Submission", "Created"),
            "space": sp,
            "identity": who,
            "form": {"slug": "robots", "name": "Robots"},
            "submission": {
                "id": str(uuid.uuid4()),
                "coreState": "Draft",
                "values": {"Name": "Nightly cleanup"},
            },
        },
        {
            "event": header("Form", "Created"),
            "space": sp,
            "identity": who,
            "kapp": kapp,
            "form": form,
        },
    ]


def api_base_url(settings: Settings) -> str:
    """The API's URL as a browser on this machine reaches it (a wildcard address is
    reached on loopback)."""
    host = settings.api_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def where_to_look(settings: Settings, space: str, cli: str) -> str:
    """The closing text of the demo: the token, the console, the CLI and the API."""
    token = settings.api_token[0] if settings.api_token else "<token>"
    api = api_base_url(settings)
    return (
        f"\nDemo: 5 events published to space {space!r}; the engine answers at "
        f"{settings.engine_url}.\n"
        f"  console:  {api}/console/   (log in with the API token {token})\n"
        f"  CLI:      {cli} jobs list\n"
        f"  API:      curl -H 'Authorization: Bearer {token}' {api}/app/api/v1/webhookJobs\n"
    )


async def seed_demo(settings: Settings, store: Store, cli: str = "webhook-router") -> None:
    """Install the standard webhooks in the default space and kapp `services`, publish
    the demo events and say where to look (`cli`: the command that runs the CLI where
    the reader is)."""
    space = settings.default_space
    await install_defaults(store, settings.tree_source, space, None)
    await install_defaults(store, settings.tree_source, space, DEMO_KAPP)
    await asyncio.sleep(0.5)  # routers pick up the new webhooks (notified at once)
    async with Publisher(settings.amqp_url, settings.namespace) as publisher:
        for event in demo_events(space):
            await publisher.publish(event)
    print(where_to_look(settings, space, cli), flush=True)


async def serve_engine(settings: Settings) -> web.AppRunner:
    url = urlsplit(settings.engine_url)
    return await serve(Engine().app(), url.hostname or "127.0.0.1", url.port or 80)


async def run_demo(
    settings: Settings, store: Store, roles: Sequence[Role], cli: str = "webhook-router"
) -> None:
    """Beside `up`: the engine, then, once every role is ready, the demo's events."""
    runner = await serve_engine(settings)
    try:
        while not all(role.ready() for role in roles):
            await asyncio.sleep(0.1)
        await seed_demo(settings, store, cli)
        print("Stop with Ctrl-C.", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
