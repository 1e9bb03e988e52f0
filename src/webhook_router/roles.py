"""The roles a process runs, built one way for `webhook-router up`, the single-role
commands and the test stack: `build_roles(names, settings, store)`, wired for a direct
handoff (handoff.py) when the settings ask for one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from webhook_router.api import ApiRole
from webhook_router.recorder import Recorder
from webhook_router.router import Router
from webhook_router.service import Role
from webhook_router.settings import Settings
from webhook_router.store import Store
from webhook_router.worker import Worker

ROLES: dict[str, Callable[[Settings, Store], Role]] = {
    "recorder": Recorder,
    "router": Router,
    "worker": Worker,
    "api": ApiRole,
}
"""Each role by name, in the order `up` starts them (the recorder first, the API last)."""


def build_roles(names: Sequence[str], settings: Settings, store: Store) -> list[Role]:
    """The named roles, in ROLES order, sharing the settings and the store."""
    unknown = set(names) - set(ROLES)
    if unknown:
        raise ValueError(f"no role named {', '.join(sorted(unknown))}")
    roles = [make(settings, store) for name, make in ROLES.items() if name in names]
    if settings.direct_handoff:
        from webhook_router.handoff import connect

        return connect(roles)
    return roles
