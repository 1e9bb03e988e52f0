"""What a Python team would write instead of webhook-router, for `bench/e2e.py --vs-peers`.

Two peers, each the plain way its framework's documentation shows, tuned fairly: one
POST per event to one webhook URL, one row per job, acknowledged after both; no matching,
no retries, no batching, no signing. Both read their configuration from PEER_* variables
(broker, database, namespace, webhook URL), keep their queue under the namespace
(`{namespace}.faststream`, `{namespace}.celery`, quorum like ours) and insert into
`peer_jobs` (schema.sql), which the benchmark makes in its own database and drops with it.

- faststream_app: a FastStream subscriber on a queue bound to `{namespace}.events`;
  `faststream run faststream_app:app --workers 2 --log-level warning`.
- celery_app: a Celery task per delivery (requests POST, psycopg insert);
  `celery -A celery_app worker --pool threads --concurrency 16 --loglevel WARNING`. With
  quorum queues Celery also declares its delayed-delivery topology under fixed names
  (`celery_delayed_*`), so the benchmark runs it in a vhost of its own.

Their packages are in the `bench` extra: `pip install -e '.[bench]'`.
"""
