"""The Celery peer: a task per delivery, run by a threads pool.

The task POSTs the event to the webhook URL with requests (one session per thread, so
connections are kept alive) and inserts the job row with psycopg from a connection pool
the size of the pool of threads; the message is acknowledged after the task
(`task_acks_late`), no result is stored. Tuned the way Celery's optimisation guide says
for many short tasks: prefetch 4 per thread, no gossip, mingle, heartbeat or remote control.

    PEER_AMQP_URL=... PEER_DATABASE_URL=... PEER_NAMESPACE=... PEER_WEBHOOK_URL=... \\
        celery -A celery_app worker --pool threads --concurrency 16 --loglevel WARNING \\
        --without-gossip --without-mingle --without-heartbeat

`make_app` gives the same configuration to whoever sends the tasks (`send_task("deliver")`);
they are sent without publisher confirms, Celery's default (with `confirm_publish` its
synchronous client sent only about 230 tasks/s from 8 threads here, less than the worker runs).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import orjson
import requests
from celery import Celery, signals
from psycopg_pool import ConnectionPool

AMQP_URL = os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
DATABASE_URL = os.environ.get("PEER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/peers")
NAMESPACE = os.environ.get("PEER_NAMESPACE", "peers")
WEBHOOK_URL = os.environ.get("PEER_WEBHOOK_URL", "http://127.0.0.1:8081/hook")
THREADS = int(os.environ.get("PEER_THREADS", "16"))

INSERT = """
INSERT INTO peer_jobs (id, event_id, event_at, url, request_content, response_status,
                       response_content, status)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""


def make_app(namespace: str, amqp_url: str) -> Celery:
    celery = Celery("peers", broker=amqp_url)
    celery.conf.update(
        task_default_queue=f"{namespace}.celery",
        task_default_queue_type="quorum",
        worker_detect_quorum_queues=True,
        task_acks_late=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=4,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
    )
    return celery


app = make_app(NAMESPACE, AMQP_URL)
pool = ConnectionPool(DATABASE_URL, min_size=THREADS, max_size=THREADS, open=False)
local = threading.local()


@signals.worker_init.connect
def open_pool(**_: Any) -> None:
    pool.open(wait=True)


@signals.worker_shutdown.connect
def close_pool(**_: Any) -> None:
    pool.close()


def session() -> requests.Session:
    if not hasattr(local, "session"):
        local.session = requests.Session()
    http: requests.Session = local.session
    return http


@app.task(name="deliver")
def deliver(event: dict[str, Any]) -> None:
    job_id = str(uuid.uuid4())
    body = orjson.dumps(event)
    response = session().post(
        WEBHOOK_URL,
        data=body,
        headers={"Content-Type": "application/json", "webhook-id": job_id},
        timeout=30,
    )
    status = response.status_code
    with pool.connection() as conn:
        conn.execute(
            INSERT,
            (
                job_id,
                event["event"]["id"],
                event["event"]["timestamp"],
                WEBHOOK_URL,
                body.decode(),
                status,
                response.text,
                "Complete" if 200 <= status < 300 else "Failed",
            ),
        )
