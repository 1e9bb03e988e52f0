"""RabbitMQ connections, channels and persistent, confirmed publishing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

log = structlog.get_logger(__name__)

JSON = "application/json"


class BrokerUnavailable(ConnectionError):
    """No broker node of the configured list could be reached."""


async def connect(urls: Sequence[str], *, name: str) -> AbstractRobustConnection:
    """A robust connection to the first reachable node of `urls`."""
    errors: list[str] = []
    for url in urls:
        try:
            connection = await aio_pika.connect_robust(
                url, client_properties={"connection_name": name}, timeout=10
            )
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            errors.append(f"{_safe(url)}: {exc!r}")
            continue
        log.debug("broker connected", node=_safe(url), connection=name)
        return connection
    raise BrokerUnavailable("no broker reachable: " + "; ".join(errors))


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


async def channel(connection: AbstractRobustConnection, *, prefetch: int = 0) -> AbstractChannel:
    """A channel with publisher confirms on; unroutable publishes raise."""
    ch = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch:
        await ch.set_qos(prefetch_count=prefetch)
    return ch


def message(
    body: bytes,
    *,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
    expiration: float | None = None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=JSON,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        headers=headers or {},
        expiration=expiration,
    )


async def publish(
    exchange: AbstractExchange,
    body: bytes,
    routing_key: str,
    *,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish persistently and return once the broker confirmed it."""
    await exchange.publish(
        message(body, message_id=message_id, headers=headers),
        routing_key=routing_key,
        mandatory=True,
    )
