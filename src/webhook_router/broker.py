"""RabbitMQ connections, channels and persistent, confirmed publishing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic
from yarl import URL

from webhook_router import frames

log = structlog.get_logger(__name__)

JSON = "application/json"


class BrokerUnavailable(ConnectionError):
    """No broker node of the configured list could be reached."""


Handler = Callable[[AbstractIncomingMessage], Awaitable[Any]]


class LeanMessage(aio_pika.IncomingMessage):
    """An incoming message built without aio-pika's lock check on each attribute it sets
    (two dozen of them, a check each costing more than the rest of building it). The check
    only refuses changes to a message once it is settled; no role changes a message it
    received. A consumer's delivery sets the attributes aio-pika's constructor sets, to the
    same values, read straight off the frames instead of through a conversion function per
    property (tests/integration/test_lean_consumer.py compares the two)."""

    __slots__ = ()
    __setattr__ = object.__setattr__  # type: ignore[assignment]

    def __init__(self, message: DeliveredMessage, no_ack: bool = False) -> None:
        deliver = message.delivery
        if type(deliver) is not _DELIVER:
            super().__init__(message, no_ack=no_ack)
            return
        p = message.header.properties
        self._IncomingMessage__channel = message.channel
        self._IncomingMessage__no_ack = no_ack
        self._IncomingMessage__processed = False
        self._Message__lock = False
        self.body = body = message.body
        self.body_size = len(body) if body else 0
        self.headers = p.headers or {}
        self.content_type = p.content_type
        self.content_encoding = p.content_encoding
        self.delivery_mode = _MODES.get(p.delivery_mode) or aio_pika.DeliveryMode(
            p.delivery_mode or 1
        )
        self.priority = p.priority or 0
        self.correlation_id = p.correlation_id or None
        self.reply_to = p.reply_to or None
        self.expiration = float(p.expiration) / 1000 if p.expiration is not None else None
        self.message_id = p.message_id or None
        self.timestamp = p.timestamp
        self.type = p.message_type or None
        self.user_id = p.user_id or None
        self.app_id = p.app_id or None
        self.cluster_id = p.cluster_id
        self.consumer_tag = deliver.consumer_tag
        self.delivery_tag = deliver.delivery_tag
        self.exchange = deliver.exchange
        self.message_count = None
        self.redelivered = deliver.redelivered
        self.routing_key = deliver.routing_key
        if no_ack or not self.delivery_tag:
            self.lock()
            self._IncomingMessage__processed = True


_DELIVER = Basic.Deliver
_MODES = {
    None: aio_pika.DeliveryMode.NOT_PERSISTENT,
    0: aio_pika.DeliveryMode.NOT_PERSISTENT,
    1: aio_pika.DeliveryMode.NOT_PERSISTENT,
    2: aio_pika.DeliveryMode.PERSISTENT,
}
"""A message's delivery mode by the value its properties hold (absent: not persistent)."""


class LeanQueue(aio_pika.RobustQueue):
    """A robust queue whose consumer runs the handler, with a `LeanMessage`, in the task
    the channel starts for each message. aio-pika's own consumer starts a second task per
    message and waits for it; that task and the message's lock checks are most of what
    consuming a small message costs a role beyond reading its frames. The consumer is
    registered as aio-pika registers it, so the robust channel restores it after a
    reconnection (aio-pika's recovery of a consumer the broker cancelled restores it with
    its own consumer, which works the same, only slower)."""

    async def consume(
        self,
        callback: Handler,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,
        robust: bool = True,
    ) -> str:
        async def deliver(delivered: DeliveredMessage) -> None:
            await callback(LeanMessage(delivered, no_ack=no_ack))

        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name,
            consumer_callback=deliver,
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if result.consumer_tag is None:
            raise RuntimeError("the broker gave the consumer no tag")
        if robust:
            self._consumers[result.consumer_tag] = {
                "callback": callback,
                "no_ack": no_ack,
                "exclusive": exclusive,
                "arguments": arguments,
            }
        return result.consumer_tag


class LeanChannel(aio_pika.RobustChannel):
    """A robust channel whose queues are `LeanQueue`s."""

    QUEUE_CLASS = LeanQueue


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection over the nodes of a cluster: each (re)connection attempt tries
    the nodes in turn. The first connection starts at a random node (so a cluster's clients
    spread out), a reconnection at the node after the one it lost (a hung node accepts TCP
    and answers nothing until the connect timeout), so losing a node moves the connection
    to a live one and the robust channels restore their consumers there. Without a
    `heartbeat` in the URL, 5 s is asked for, so a hung node is noticed in seconds.

    aio-pika reconnects to one URL only; its per-attempt step is private, so it is
    overridden here by its mangled name (kept to this one method). Its channels are
    `LeanChannel`s."""

    CHANNEL_CLASS = LeanChannel

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        nodes = [URL(u) for u in urls]
        nodes = [u if "heartbeat" in u.query else u.update_query(heartbeat=5) for u in nodes]
        super().__init__(nodes[0], **kwargs)
        self.urls = nodes
        self._node = random.randrange(len(nodes))

    async def _RobustConnection__connect_transport(self) -> None:
        if self.connection_attempt:
            self._node = (self._node + 1) % len(self.urls)
        last: BaseException | None = None
        for _ in range(len(self.urls)):
            self.url = self.urls[self._node]
            try:
                await _connect_transport(self)
            except CONNECTION_EXCEPTIONS as exc:
                last = exc
                log.warning("broker node unavailable", node=_safe(str(self.url)), error=repr(exc))
                self._node = (self._node + 1) % len(self.urls)
                continue
            log.info("broker connected", node=_safe(str(self.url)))
            return
        assert last is not None
        raise last


_connect_transport = aio_pika.RobustConnection._RobustConnection__connect_transport  # type: ignore[attr-defined]


async def connect(urls: Sequence[str], *, name: str) -> AbstractRobustConnection:
    """A robust connection to the first reachable node of `urls`, failing over to the
    others whenever it is lost; its frames read by frames.LeanFrameReceiver."""
    frames.install()
    connection = FailoverConnection(
        urls, client_properties={"connection_name": name}, reconnect_interval=1.0
    )
    try:
        await connection.connect(timeout=10)
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        await connection.close()
        raise BrokerUnavailable(
            f"no broker reachable at {', '.join(_safe(u) for u in urls)}: {exc!r}"
        ) from None
    return connection


def connected(connection: AbstractRobustConnection | None) -> bool:
    """Whether the connection is up now; a robust connection that is reconnecting is
    not closed, but it is not ready either."""
    return connection is not None and connection.connected.is_set()


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


CANCEL_TIMEOUT = 2.0


async def cancel(consumers: Iterable[tuple[AbstractQueue, str]]) -> None:
    """Stop consuming, each consumer at once and none restored on a reconnection.

    A role stopping while its broker is away must not wait for the broker: the cancel of
    a robust queue waits for its connection, so each is given CANCEL_TIMEOUT, and one
    the broker already dropped with its channel is only logged. An outage never turns
    a clean stop into a hang or a crash; what the role holds is then acknowledged or,
    with the connection gone, redelivered to another consumer."""

    async def one(queue: AbstractQueue, consumer_tag: str) -> None:
        try:
            await within(queue.cancel(consumer_tag), CANCEL_TIMEOUT)
        except (*CONNECTION_EXCEPTIONS, ChannelInvalidStateError, TimeoutError) as exc:
            log.warning("consumer not cancelled on the broker", queue=queue.name, error=repr(exc))

    await asyncio.gather(*(one(queue, tag) for queue, tag in consumers))


async def close(connection: AbstractConnection, seconds: float) -> None:
    """Close a connection, waiting for the broker's answers at most `seconds`: a broker
    whose channels hang (a queue that lost its quorum holds them) answers the closing
    handshakes late or never, and a stopping role does not wait for that. The handshake
    goes on in the background; the socket closes with the process in any case."""
    try:
        await within(connection.close(), seconds)
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        log.warning("broker connection not closed cleanly", error=repr(exc))


async def within(work: Coroutine[Any, Any, Any], seconds: float) -> None:
    """Await `work` for at most `seconds`; TimeoutError past that. Unlike
    `asyncio.wait_for`, a late `work` is cancelled without waiting for it to unwind: the
    cancel or close of an aio-pika object waits on the broker while it unwinds."""
    task = asyncio.ensure_future(work)
    await asyncio.wait([task], timeout=seconds)
    if not task.done():
        task.cancel()
        task.add_done_callback(_retrieve)
        raise TimeoutError
    task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take a late task's outcome, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


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
    try:
        await exchange.publish(
            message(body, message_id=message_id, headers=headers),
            routing_key=routing_key,
            mandatory=True,
        )
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # aiormq fails pending confirms with its reader's CancelledError when it drops a
        # connection it found stuck (no frame for three heartbeats)
        raise ConnectionError(
            "broker connection dropped before the publish was confirmed"
        ) from None
