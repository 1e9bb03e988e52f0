-- The job log for analysts: indexes behind the API's job list and the views, and the views.
-- Days are UTC days. Every index is made on the partitioned tables, so each monthly
-- partition (and the DEFAULT one) gets its own.

-- The API's job list filters, each with the list's order (scheduled_at, id) newest first.
CREATE INDEX webhook_jobs_webhook_name
    ON webhook_jobs (space, webhook_name, scheduled_at DESC, id DESC);
CREATE INDEX webhook_jobs_scope
    ON webhook_jobs (space, scope_id, scheduled_at DESC, id DESC);
CREATE INDEX webhook_jobs_space_parent
    ON webhook_jobs (space, parent_type, parent_id, scheduled_at DESC, id DESC);
-- Superseded by webhook_jobs_space_parent, which also gives the list's order.
DROP INDEX webhook_jobs_parent;

-- The views' day filters. webhook_jobs_day holds every column webhook_job_success_daily
-- and webhook_runs_per_tree read, and webhook_jobs_failed_day every column
-- webhook_job_failures reads (it is small: only Failed jobs are in it), so that they are
-- answered from the index alone where the visibility map allows.
CREATE INDEX webhook_jobs_day ON webhook_jobs (((event_at AT TIME ZONE 'UTC')::date))
    INCLUDE (space, webhook_id, webhook_name, status, tree_group, tree_name, run_id, event_at);
CREATE INDEX webhook_jobs_failed_day ON webhook_jobs (((event_at AT TIME ZONE 'UTC')::date))
    INCLUDE (space, webhook_id, webhook_name, response_status, summary, completed_at,
             id, event_at, replay, attempts)
    WHERE status = 'Failed';
CREATE INDEX webhook_jobs_retry_due ON webhook_jobs (scheduled_at)
    WHERE status = 'Queued' AND retry_count > 0;
CREATE INDEX webhook_job_attempts_day
    ON webhook_job_attempts (((started_at AT TIME ZONE 'UTC')::date));

-- How many groups the views make: without these the planner multiplies the columns'
-- distinct counts, expects a group per row and sorts instead of hashing.
CREATE STATISTICS webhook_jobs_webhook_days (ndistinct)
    ON ((event_at AT TIME ZONE 'UTC')::date), space, webhook_id, webhook_name FROM webhook_jobs;
CREATE STATISTICS webhook_jobs_tree_days (ndistinct)
    ON ((event_at AT TIME ZONE 'UTC')::date), space, tree_group, tree_name FROM webhook_jobs;

-- `scheme://host:port` of a URL, as the worker groups endpoints: scheme and host in lower
-- case, no user info, default ports 80 and 443; null for a URL without `://`.
CREATE FUNCTION webhook_router_endpoint(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    scheme text := lower(split_part(url, '://', 1));
    authority text := split_part(split_part(split_part(split_part(
        split_part(url, '://', 2), '/', 1), '?', 1), '#', 1), '@', -1);
    host text;
    port text;
BEGIN
    IF position('://' IN url) = 0 THEN
        RETURN NULL;
    END IF;
    IF left(authority, 1) = '[' THEN
        host := split_part(substr(authority, 2), ']', 1);
        port := split_part(authority, ']:', 2);
    ELSE
        host := split_part(authority, ':', 1);
        port := split_part(authority, ':', 2);
    END IF;
    port := coalesce(nullif(ltrim(port, '0'), ''),
                     CASE scheme WHEN 'https' THEN '443' ELSE '80' END);
    RETURN scheme || '://' || lower(host) || ':' || port;
END $$;

-- Each attempt's endpoint, worked out once when it is written rather than on every read.
ALTER TABLE webhook_job_attempts
    ADD COLUMN endpoint text GENERATED ALWAYS AS (webhook_router_endpoint(url)) STORED;
CREATE STATISTICS webhook_job_attempts_endpoint_days (ndistinct)
    ON ((started_at AT TIME ZONE 'UTC')::date), endpoint FROM webhook_job_attempts;

-- Jobs per webhook and UTC day of the event, by status; success_rate is
-- complete / (complete + failed), null while none has finished.
CREATE VIEW webhook_job_success_daily AS
SELECT (event_at AT TIME ZONE 'UTC')::date AS day,
       space,
       webhook_id,
       webhook_name,
       count(*) AS jobs,
       count(*) FILTER (WHERE status = 'Complete') AS complete,
       count(*) FILTER (WHERE status = 'Failed') AS failed,
       count(*) FILTER (WHERE status IN ('Queued', 'In Progress')) AS pending,
       count(*) FILTER (WHERE status = 'Cancelled') AS cancelled,
       round(count(*) FILTER (WHERE status = 'Complete')::numeric
             / nullif(count(*) FILTER (WHERE status IN ('Complete', 'Failed')), 0), 4)
           AS success_rate
FROM webhook_jobs
GROUP BY 1, 2, 3, 4;

-- HTTP attempts per endpoint and UTC day of the attempt, with answer-time percentiles.
CREATE VIEW webhook_endpoint_latency AS
SELECT (started_at AT TIME ZONE 'UTC')::date AS day,
       endpoint,
       count(*) AS attempts,
       count(response_status) AS answered,
       count(*) FILTER (WHERE response_status BETWEEN 200 AND 299) AS succeeded,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
       max(duration_ms) AS max_ms
FROM webhook_job_attempts
GROUP BY 1, 2;

-- Failed jobs per webhook and UTC day of the event, by the answer of their last attempt;
-- without an answer, by its error (or, when nothing was sent, by the job's summary).
CREATE VIEW webhook_job_failures AS
SELECT (j.event_at AT TIME ZONE 'UTC')::date AS day,
       j.space,
       j.webhook_id,
       j.webhook_name,
       j.response_status,
       CASE WHEN j.response_status IS NULL THEN coalesce(a.error, j.summary) END AS error,
       count(*) AS jobs,
       max(j.completed_at) AS last_failed_at
FROM webhook_jobs j
LEFT JOIN LATERAL (
    -- LIMIT 1 keeps this a lookup by primary key per unanswered job, never a join of all
    -- attempts.
    SELECT a.error
    FROM webhook_job_attempts a
    WHERE j.response_status IS NULL
      AND a.job_id = j.id AND a.event_at = j.event_at
      AND a.replay = j.replay AND a.attempt = j.attempts
    LIMIT 1
) a ON true
WHERE j.status = 'Failed'
GROUP BY 1, 2, 3, 4, 5, 6;

-- Jobs and workflow runs started per tree and UTC day of the event.
CREATE VIEW webhook_runs_per_tree AS
SELECT (event_at AT TIME ZONE 'UTC')::date AS day,
       space,
       tree_group,
       tree_name,
       count(*) AS jobs,
       count(run_id) AS runs,
       count(*) FILTER (WHERE status = 'Failed') AS failed
FROM webhook_jobs
GROUP BY 1, 2, 3, 4;

-- Jobs whose last attempt failed and that wait for their next one, due at scheduled_at.
CREATE VIEW webhook_jobs_waiting_retry AS
SELECT id,
       space,
       scope_type,
       scope_id,
       webhook_id,
       webhook_name,
       event_id,
       event_at,
       type,
       event,
       url,
       attempts,
       retry_count,
       response_status,
       summary,
       scheduled_at,
       scheduled_at < now() AS overdue
FROM webhook_jobs
WHERE status = 'Queued' AND retry_count > 0;

-- Retention: detaches a monthly partition of a job table and drops it, in the caller's
-- transaction, waiting at most `lock_wait` for the parent's lock (then lock_not_available).
-- Not CONCURRENTLY: PostgreSQL refuses that while the table has a DEFAULT partition.
CREATE FUNCTION webhook_router_drop_partition(parent regclass, part regclass, lock_wait interval)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF parent NOT IN ('webhook_jobs'::regclass, 'webhook_job_attempts'::regclass) THEN
        RAISE EXCEPTION '% is not a job table', parent;
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND i.inhrelid = part
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ) THEN
        RAISE EXCEPTION '% is not a monthly partition of %', part, parent;
    END IF;
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint || 'ms', true);
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, part);
    EXECUTE format('DROP TABLE %s', part);
END $$;
