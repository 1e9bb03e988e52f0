"""The FastStream peer: a RabbitMQ subscriber on a queue bound to the events exchange.

Per message: FastStream parses the JSON body, the handler POSTs it (orjson) to the webhook
URL through one shared aiohttp session, inserts the job row with asyncpg and
returns; FastStream then acknowledges (a failure rejects: no retries). aiormq runs a task
per delivery, so the channel's prefetch (PEER_PREFETCH, 64 like the router's) is how many
events one process handles at once.

    PEER_AMQP_URL=... PEER_DATABASE_URL=... PEER_NAMESPACE=... PEER_WEBHOOK_URL=... \\
        faststream run faststream_app:app --workers 2 --log-level warning
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)

AMQP_URL = os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get("PEER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/peers")
NAMESPACE = os.environ.get("PEER_NAMESPACE", "peers")
WEBHOOK_URL = os.environ.get("PEER_WEBHOOK_URL", "http://127.0.0.1:8081/hook")
PREFETCH = int(os.environ.get("PEER_PREFETCH", "64"))
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "16"))

INSERT = """
INSERT INTO peer_jobs (id, event_id, event_at, url, request_content, response_status,
                       response_content, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

# `log_level` is the level of the per-message logs ("Received", "Processed"), not a
# threshold: DEBUG keeps them out as our roles' warning level does (`--log-level warning`
# alone left them in, 8% of the process in a profile); warnings and errors still show
broker = RabbitBroker(
    AMQP_URL, default_channel=Channel(prefetch_count=PREFETCH), log_level=logging.DEBUG
)
app = FastStream(broker)
events = RabbitExchange(f"{NAMESPACE}.events", type=ExchangeType.TOPIC, durable=True)
queue = RabbitQueue(
    f"{NAMESPACE}.faststream", queue_type=QueueType.QUORUM, durable=True, routing_key="#"
)
shared: dict[str, Any] = {}


@app.on_startup
async def open_clients() -> None:
    shared["http"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    shared["db"] = await asyncpg.create_pool(DATABASE_URL, min_size=2, max_size=POOL_SIZE)


@app.after_shutdown
async def close_clients() -> None:
    await shared["http"].close()
    await shared["db"].close()


@broker.subscriber(queue, events, ack_policy=AckPolicy.REJECT_ON_ERROR)
async def deliver(event: dict[str, Any]) -> None:
    # the event alone: asking for the message too (`message: RabbitMessage`) resolves it in
    # a thread per delivery, 8% of the process in a profile
    job_id = uuid.uuid4()
    body = orjson.dumps(event)
    stamp = datetime.fromisoformat(event["event"]["timestamp"].replace("Z", "+00:00"))
    http: aiohttp.ClientSession = shared["http"]
    async with http.post(
        WEBHOOK_URL,
        data=body,
        headers={"Content-Type": "application/json", "webhook-id": str(job_id)},
    ) as response:
        answer = await response.text()
        status = response.status
    await shared["db"].execute(
        INSERT,
        job_id,
        event["event"]["id"],
        stamp,
        WEBHOOK_URL,
        body.decode(),
        status,
        answer,
        "Complete" if 200 <= status < 300 else "Failed",
    )
