"""Retention of the job log: old months are dropped whole, never deleted row by row.

Both job tables are partitioned by month of the event, so forgetting a month is dropping
its two partitions: no dead rows, no vacuum, no long transaction. Dropping a partition
needs the parent table's exclusive lock for a moment; PostgreSQL does not detach
concurrently while a DEFAULT partition exists. That lock is asked for with a short
`lock_timeout` and asked again after a pause when something holds the table (a long
analyst query, for one), so the recorder's writes, which queue behind a waiting lock, are
held back for at most that timeout. Rows of old events that landed in the DEFAULT
partition (their month had no partition) are deleted in small batches.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from webhook_router.store import Store

log = structlog.get_logger(__name__)

LOCK_TIMEOUT = 0.2
"""Seconds one try waits for a table's lock; writers wait at most this long behind it."""
LOCK_PATIENCE = 60.0
"""Seconds of tries for one partition before prune gives up on it."""
DEFAULT_BATCH = 5000


class PruneBlocked(RuntimeError):
    """A partition stayed locked by other sessions for the whole patience.

    `dropped` names the partitions dropped before it; running prune again later finishes.
    """

    def __init__(self, partition: str, patience: float, dropped: list[str]) -> None:
        super().__init__(
            f"{partition} was in use by other sessions for {patience:g}s (a long query or "
            f"an open transaction on the job log); dropped before it: "
            f"{', '.join(dropped) or 'nothing'}. Run prune again later."
        )
        self.partition = partition
        self.dropped = dropped


async def prune(
    store: Store,
    older_than_seconds: float,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    patience: float = LOCK_PATIENCE,
    batch: int = DEFAULT_BATCH,
) -> list[str]:
    """Forget jobs and attempts of events older than `older_than_seconds`; returns the
    partitions dropped, oldest first, e.g. `["webhook_job_attempts_2024_01",
    "webhook_jobs_2024_01"]`.

    A monthly partition is dropped once its whole month ends before the cutoff (so up to a
    month more than asked for is kept); the current and future months and the DEFAULT
    partition are never dropped. Ends by refreshing the job tables' planner statistics,
    which autovacuum does not do for partitioned tables. Raises PruneBlocked when a
    partition stays locked.
    """
    if older_than_seconds < 0:
        raise ValueError("older_than_seconds must not be negative")
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    dropped: list[str] = []
    for partition in await store.partitions_ending_before(cutoff):
        parent, name = partition["parent"], partition["name"]
        if not await _drop(store, parent, name, lock_timeout, patience):
            raise PruneBlocked(name, patience, dropped)
        dropped.append(name)
        log.info("partition dropped", partition=name, ends=partition["ends"].isoformat())
    deleted = await store.delete_old_default_rows(cutoff, batch)
    if deleted:
        log.info("old rows deleted from the default partitions", rows=deleted)
    await store.analyze_job_log()
    log.info("job log pruned", cutoff=cutoff.isoformat(), dropped=len(dropped))
    return dropped


async def _drop(store: Store, parent: str, name: str, lock_timeout: float, patience: float) -> bool:
    """Try to drop until the lock is had or `patience` runs out; False when it ran out."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            await store.drop_partition(parent, name, lock_timeout)
            return True
        except asyncpg.LockNotAvailableError:
            if time.monotonic() + pause > deadline:
                return False
            log.debug("partition busy, trying again", partition=name, pause=pause)
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, 2.0)
