"""Endpoint isolation: a concurrency limit and a circuit breaker per endpoint.

A worker holds a bounded number of deliveries at once. Without a limit per endpoint, one
endpoint that hangs until its timeout would soon hold all of them and starve the others.
A delivery that finds its endpoint full waits briefly for a slot (a healthy endpoint frees
one within milliseconds); one that still finds it full, or finds its circuit open, is
deferred: it waits in a retry queue without spending an attempt. Pure: the worker passes
the clock in and does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

AT_LIMIT = "endpoint at its concurrency limit"


def endpoint_of(url: str) -> str:
    """`scheme://host:port`: what shares connections, and fails together."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass
class _State:
    in_flight: int = 0
    failures: int = 0
    open_until: float = 0.0
    trial: bool = False


class EndpointGuard:
    def __init__(self, limit: int, threshold: int, cooldown: float) -> None:
        self.limit = limit
        self.threshold = threshold
        self.cooldown = cooldown
        self._states: dict[str, _State] = {}

    def acquire(self, endpoint: str, now: float) -> str | None:
        """Take a slot for a POST to `endpoint`; None if taken, else why it must wait."""
        state = self._states.setdefault(endpoint, _State())
        if state.open_until > now:
            return "circuit open"
        if state.failures >= self.threshold:
            if state.trial:
                return "circuit half-open, a trial is in progress"
            state.trial = True
        elif state.in_flight >= self.limit:
            return AT_LIMIT
        state.in_flight += 1
        return None

    def release(self, endpoint: str, *, healthy: bool, now: float) -> None:
        """Give the slot back, counting whether the endpoint answered well."""
        state = self._states[endpoint]
        state.in_flight -= 1
        state.trial = False
        if healthy:
            state.failures = 0
            state.open_until = 0.0
        else:
            state.failures += 1
            if state.failures >= self.threshold:
                state.open_until = now + self.cooldown
        if state.in_flight == 0 and state.failures == 0:
            del self._states[endpoint]

    def is_open(self, endpoint: str, now: float) -> bool:
        state = self._states.get(endpoint)
        return state is not None and state.open_until > now
