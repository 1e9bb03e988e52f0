"""Publishing events, for Python platform services and for the HTTP ingest.

    async with Publisher() as publisher:
        event_id = await publisher.publish({"event": {"type": "User", "action": "Created"},
                                            "space": {"slug": "acme"}, "user": {...}})

`publish` returns once the broker confirmed the event is stored; it raises EventInvalid
for an event the router would refuse, before anything is sent. The current OpenTelemetry
span's context (the caller's own tracing, or the ingest's) goes along in the message's
headers, so the router continues that trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from webhook_router import broker, tracing
from webhook_router.events import Event, parse_event
from webhook_router.settings import Settings
from webhook_router.topology import Names, declare_ingress


class Publisher:
    def __init__(
        self,
        amqp_url: str | Sequence[str] | None = None,
        namespace: str | None = None,
    ) -> None:
        defaults = Settings()
        urls = amqp_url if amqp_url is not None else defaults.amqp_url
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.names = Names(namespace or defaults.namespace)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def __aenter__(self) -> Publisher:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        self._connection = await broker.connect(self.urls, name="publisher")
        self._channel = await broker.channel(self._connection)
        self._exchange = await declare_ingress(self._channel, self.names)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._exchange = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publish(self, event: Event | Mapping[str, Any] | bytes | str) -> str:
        """Validate, fill in id and timestamp, publish; the event id once confirmed."""
        if self._exchange is None:
            raise RuntimeError("Publisher is not open: use `async with Publisher() as p`")
        if not isinstance(event, Event):
            event = parse_event(event)
        await broker.publish(
            self._exchange,
            event.encode(),
            event.routing_key,
            message_id=event.id,
            headers=tracing.carrier(ambient=True),
        )
        return event.id
