-- Every query the project runs, by name. store.py is the only reader.

-- name: webhook_revision
SELECT revision FROM webhook_revision;

-- name: all_webhooks
SELECT * FROM webhooks ORDER BY space, kapp NULLS FIRST, name;

-- name: scope_webhooks
SELECT * FROM webhooks
WHERE space = $1 AND kapp IS NOT DISTINCT FROM $2
ORDER BY name;

-- name: space_webhooks
SELECT * FROM webhooks WHERE space = $1 ORDER BY kapp NULLS FIRST, name;

-- name: known_spaces
SELECT DISTINCT space FROM webhooks ORDER BY space LIMIT $1;

-- name: get_webhook
SELECT * FROM webhooks WHERE space = $1 AND kapp IS NOT DISTINCT FROM $2 AND name = $3;

-- name: get_webhook_by_id
SELECT * FROM webhooks WHERE id = $1;

-- name: insert_webhook
INSERT INTO webhooks (id, space, kapp, name, type, event, filter, url, auth_strategy,
                      enabled, secret, headers, auth, auth_set_at, rate_limit,
                      trace_context, ordered)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
        CASE WHEN $13::jsonb IS NULL THEN NULL ELSE now() END, $14, $15, $16)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: update_webhook
-- $10: the credentials were given ($9, possibly null); else the stored ones are kept.
UPDATE webhooks SET name = $2, type = $3, event = $4, filter = $5, url = $6,
                    auth_strategy = $7, enabled = $8,
                    auth = CASE WHEN $10 THEN $9::jsonb ELSE auth END,
                    auth_set_at = CASE WHEN NOT $10 THEN auth_set_at
                                       WHEN $9::jsonb IS NULL THEN NULL ELSE now() END,
                    headers = $11, rate_limit = $12, trace_context = $13, ordered = $14,
                    disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END,
                    updated_at = now()
WHERE id = $1
RETURNING *;

-- name: rotate_webhook_secret
UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + $3::interval,
                    secret = $2, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: disable_webhook
UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now()
WHERE id = $1 AND enabled
RETURNING *;

-- name: disable_failing_webhooks
-- Of the webhooks $1, the enabled ones failing for at least $2: no job ended Complete
-- since the later of their last change and $2 ago, and at least $3 jobs ended Failed
-- since their last success (or change), the first of them $2 ago or longer.
WITH failing AS (
    SELECT w.id
    FROM webhooks w
    CROSS JOIN LATERAL (
        SELECT greatest(
                   w.updated_at,
                   (SELECT max(completed_at) FROM webhook_jobs
                    WHERE webhook_id = w.id AND status = 'Complete')) AS since
    ) AS last
    CROSS JOIN LATERAL (
        SELECT count(*) AS failed, min(completed_at) AS first_failed
        FROM webhook_jobs
        WHERE webhook_id = w.id AND status = 'Failed' AND completed_at > last.since
    ) AS f
    WHERE w.id = ANY ($1::uuid[]) AND w.enabled
      AND f.failed >= $3 AND f.first_failed <= now() - $2::interval
)
UPDATE webhooks w
SET enabled = false, disabled_reason = $4, updated_at = now()
FROM failing
WHERE w.id = failing.id
RETURNING w.*;

-- name: take_rate_slot
-- The webhook's next delivery slot at $2 seconds apart, taken only when it starts within
-- $3 seconds: `wait` is the seconds until it starts, null when none was taken; `booked`
-- the seconds until the slots already taken run out. Times are the clock's as the row is
-- locked and read (clock_timestamp, not the statement's start): a slot is never given in
-- the past after a wait for the lock, and that wait is not waited again.
WITH taken AS (
    INSERT INTO webhook_rate_slots AS s (webhook_id, next_at)
    VALUES ($1, clock_timestamp() + $2 * interval '1 second')
    ON CONFLICT (webhook_id) DO UPDATE
        SET next_at = greatest(s.next_at, clock_timestamp()) + $2 * interval '1 second'
        WHERE s.next_at <= clock_timestamp() + $3 * interval '1 second'
    RETURNING next_at
)
SELECT extract(epoch FROM (SELECT next_at FROM taken) - clock_timestamp())::double precision
           - $2 AS wait,
       extract(epoch FROM (SELECT next_at FROM webhook_rate_slots WHERE webhook_id = $1)
               - clock_timestamp())::double precision AS booked;

-- name: delete_webhook
DELETE FROM webhooks WHERE id = $1;

-- name: insert_api_token
INSERT INTO api_tokens (name, role, spaces, token_sha256)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING name, role, spaces, created_at, last_used_at, revoked_at;

-- name: list_api_tokens
SELECT name, role, spaces, created_at, last_used_at, revoked_at
FROM api_tokens ORDER BY name;

-- name: revoke_api_token
UPDATE api_tokens SET revoked_at = now()
WHERE name = $1 AND revoked_at IS NULL
RETURNING name, role, spaces, created_at, last_used_at, revoked_at;

-- name: api_token_by_hash
-- A token that is not revoked, by the SHA-256 of the token (its unique index).
SELECT name, role, spaces FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL;

-- name: touch_api_token
UPDATE api_tokens SET last_used_at = $2 WHERE name = $1;

-- name: record
-- One statement per batch, so one transaction and one round trip: column arrays, one element
-- per job ($1-$30, each job once per batch) and per attempt ($31-$42), the attempts written
-- by the WITH (no row refers to another, so the order does not matter).
WITH attempts AS (
    INSERT INTO webhook_job_attempts (
        job_id, event_at, replay, attempt, webhook_id, url, started_at, duration_ms,
        response_status, response_content, error, request_headers)
    SELECT * FROM unnest(
        $31::uuid[], $32::timestamptz[], $33::integer[], $34::integer[], $35::uuid[], $36::text[],
        $37::timestamptz[], $38::double precision[], $39::integer[], $40::text[], $41::text[],
        $42::jsonb[])
    ON CONFLICT DO NOTHING
)
INSERT INTO webhook_jobs AS j (
    id, event_at, event_id, webhook_id, webhook_name, space, scope_type, scope_id, type, event,
    parent_type, parent_id, tree_group, tree_name, url, request_content, response_status,
    response_content, summary, run_id, status, retry_count, attempts, replay, duration_ms,
    scheduled_at, created_at, updated_at, completed_at, trace_id)
SELECT * FROM unnest(
    $1::uuid[], $2::timestamptz[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
    $15::text[], $16::text[], $17::integer[], $18::text[], $19::text[], $20::text[],
    $21::text[], $22::integer[], $23::integer[], $24::integer[], $25::double precision[],
    $26::timestamptz[], $27::timestamptz[], $28::timestamptz[], $29::timestamptz[],
    $30::text[])
ON CONFLICT (id, event_at) DO UPDATE SET
    webhook_name = EXCLUDED.webhook_name,
    url = EXCLUDED.url,
    request_content = coalesce(EXCLUDED.request_content, j.request_content),
    response_status = EXCLUDED.response_status,
    response_content = EXCLUDED.response_content,
    summary = EXCLUDED.summary,
    run_id = EXCLUDED.run_id,
    status = EXCLUDED.status,
    retry_count = EXCLUDED.retry_count,
    attempts = EXCLUDED.attempts,
    replay = EXCLUDED.replay,
    duration_ms = EXCLUDED.duration_ms,
    scheduled_at = EXCLUDED.scheduled_at,
    updated_at = EXCLUDED.updated_at,
    completed_at = EXCLUDED.completed_at,
    trace_id = coalesce(EXCLUDED.trace_id, j.trace_id)
WHERE (EXCLUDED.replay, EXCLUDED.attempts, webhook_router_status_rank(EXCLUDED.status))
    > (j.replay, j.attempts, webhook_router_status_rank(j.status));

-- name: event_time
-- When a recorded event happened, by its id (index webhook_jobs_event).
SELECT event_at FROM webhook_jobs WHERE event_id = $1 LIMIT 1;

-- name: get_job
-- The columns of models.Job.
SELECT id, webhook_name, event, type, webhook_id, parent_id, parent_type, scope_id,
       scope_type, url, request_content, response_content, summary, retry_count,
       scheduled_at, status, created_at, updated_at, run_id, tree_group, tree_name,
       event_id, event_at, attempts, response_status, duration_ms, completed_at, trace_id,
       space, replay
FROM webhook_jobs WHERE id = $1;

-- name: job_ids_between
-- Ids of jobs from $1 to $2 (the ids a prefix names), in order, at most $3; each
-- partition's primary key index answers it.
SELECT DISTINCT id FROM webhook_jobs WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3;

-- name: job_attempts
-- The columns of models.Attempt.
SELECT replay, attempt, url, started_at, duration_ms, response_status, response_content,
       error, request_headers
FROM webhook_job_attempts WHERE job_id = $1 ORDER BY replay, attempt;

-- name: attempts_per_minute
-- A failure is an attempt without an answer or with one not 2xx.
SELECT date_trunc('minute', started_at) AS minute,
       count(*) AS deliveries,
       count(*) FILTER (
           WHERE error IS NOT NULL
              OR coalesce(response_status NOT BETWEEN 200 AND 299, true)
       ) AS failures
FROM webhook_job_attempts
WHERE webhook_id IN (SELECT id FROM webhooks WHERE space = $1)
  AND started_at >= $2
GROUP BY 1
ORDER BY 1;

-- name: failing_webhooks
SELECT webhook_id, webhook_name, scope_type, scope_id,
       count(*) AS failed,
       max(updated_at) AS last_failed,
       (array_agg(summary ORDER BY updated_at DESC))[1] AS last_summary
FROM webhook_jobs
WHERE space = $1 AND status = 'Failed' AND updated_at >= $2
GROUP BY webhook_id, webhook_name, scope_type, scope_id
ORDER BY failed DESC, last_failed DESC
LIMIT $3;

-- name: make_partitions
SELECT webhook_router_make_partitions($1::date, $2::integer);

-- name: partitions_ending_before
-- Monthly partitions of the job tables whose whole range lies before $1 and before the
-- current month; the DEFAULT partition has no upper bound and is never listed.
SELECT parent, name, ends
FROM (
    SELECT p.relname AS parent,
           c.relname AS name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]
               ::timestamptz AS ends
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE i.inhparent IN ('webhook_jobs'::regclass, 'webhook_job_attempts'::regclass)
) AS partitions
WHERE ends <= $1 AND ends <= date_trunc('month', now())
ORDER BY ends, parent;

-- name: delete_old_default_jobs
DELETE FROM webhook_jobs_default
WHERE ctid = ANY (ARRAY(SELECT ctid FROM webhook_jobs_default WHERE event_at < $1 LIMIT $2));

-- name: delete_old_default_attempts
DELETE FROM webhook_job_attempts_default
WHERE ctid = ANY (
    ARRAY(SELECT ctid FROM webhook_job_attempts_default WHERE event_at < $1 LIMIT $2));

-- name: drop_partition
SELECT webhook_router_drop_partition($1::text::regclass, $2::text::regclass, $3::interval);

-- name: analyze_job_log
ANALYZE webhook_jobs, webhook_job_attempts;

-- name: keep_dead_letter
-- Idempotent: a dead letter the broker redelivers is stored once.
INSERT INTO dead_letters (
    id, role, reason, dead_at, event_id, webhook_id, webhook_name, space, routing_key,
    message_id, headers, body, preview)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO NOTHING;

-- name: list_dead_letters
-- Newest first, a page after the keyset ($5, $6); every filter is optional (null: any).
-- $7: only those never requeued; $9: only those of these spaces (null: every one).
SELECT id, role, reason, dead_at, event_id, webhook_id, webhook_name, space, routing_key,
       message_id, preview, requeued_at, requeue_count
FROM dead_letters
WHERE ($1::text IS NULL OR role = $1)
  AND ($2::text IS NULL OR reason ILIKE '%' || $2 || '%' ESCAPE '\')
  AND ($3::timestamptz IS NULL OR dead_at >= $3)
  AND ($4::timestamptz IS NULL OR dead_at < $4)
  AND ($5::timestamptz IS NULL OR (dead_at, id) < ($5, $6::uuid))
  AND (NOT $7::boolean OR requeued_at IS NULL)
  AND ($9::text[] IS NULL OR space = ANY($9))
ORDER BY dead_at DESC, id DESC
LIMIT $8;

-- name: get_dead_letter
SELECT id, role, reason, dead_at, event_id, webhook_id, webhook_name, space, routing_key,
       message_id, preview, requeued_at, requeue_count, headers, body
FROM dead_letters WHERE id = $1;

-- name: mark_dead_letter_requeued
UPDATE dead_letters SET requeued_at = now(), requeue_count = requeue_count + 1
WHERE id = $1
RETURNING requeued_at, requeue_count;

-- name: webhook_secrets_for_update
SELECT id, secret, previous_secret, auth FROM webhooks ORDER BY id FOR UPDATE;

-- name: reseal_webhook_secrets
-- The same secrets and credentials, sealed anew; updated_at is left: nothing changed.
UPDATE webhooks SET secret = $2, previous_secret = $3, auth = $4::jsonb WHERE id = $1;

-- name: insert_audit
INSERT INTO audit_log (actor, space, action, target, before, after)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: audit_log
-- A space's (null: every space's) audit rows newest first, within [$2, $3) when given,
-- after ($4, $5) for a page; of the spaces $7 only when given (a token's reach: a row of no
-- space, a key rotation, is then left out).
SELECT id, at, actor, space, action, target, before, after
FROM audit_log
WHERE ($1::text IS NULL OR space = $1)
  AND ($2::timestamptz IS NULL OR at >= $2)
  AND ($3::timestamptz IS NULL OR at < $3)
  AND ($4::timestamptz IS NULL OR (at, id) < ($4, $5::uuid))
  AND ($7::text[] IS NULL OR space = ANY($7))
ORDER BY at DESC, id DESC
LIMIT $6;

-- name: job_bodies_to_reseal
-- Jobs after the keyset ($1, $2) whose bodies are sealed under a key other than $3 (the
-- `enc:v1:<key id>:` prefix of the first key), or with $4 are still plaintext.
SELECT id, event_at, request_content, response_content
FROM webhook_jobs
WHERE (id, event_at) > ($1, $2)
  AND (   (request_content LIKE 'enc:v1:%' AND request_content NOT LIKE $3 || '%')
       OR (response_content LIKE 'enc:v1:%' AND response_content NOT LIKE $3 || '%')
       OR ($4 AND (request_content NOT LIKE 'enc:v1:%' OR response_content NOT LIKE 'enc:v1:%')))
ORDER BY id, event_at
LIMIT $5;

-- name: reseal_job_bodies
-- Only where the bodies are still those read ($5, $6): a row the recorder changed meanwhile
-- was written under the first key already.
UPDATE webhook_jobs SET request_content = $3, response_content = $4
WHERE id = $1 AND event_at = $2
  AND request_content IS NOT DISTINCT FROM $5 AND response_content IS NOT DISTINCT FROM $6;

-- name: attempt_bodies_to_reseal
-- As job_bodies_to_reseal, for attempts after the keyset ($1, $2, $3, $4).
SELECT job_id, event_at, replay, attempt, response_content
FROM webhook_job_attempts
WHERE (job_id, event_at, replay, attempt) > ($1, $2, $3, $4)
  AND (   (response_content LIKE 'enc:v1:%' AND response_content NOT LIKE $5 || '%')
       OR ($6 AND response_content NOT LIKE 'enc:v1:%'))
ORDER BY job_id, event_at, replay, attempt
LIMIT $7;

-- name: reseal_attempt_body
UPDATE webhook_job_attempts SET response_content = $5
WHERE job_id = $1 AND event_at = $2 AND replay = $3 AND attempt = $4
  AND response_content IS NOT DISTINCT FROM $6;

-- name: take_ordered_shard
-- A holder takes a shard: the epoch goes up, fencing off the writes of any earlier holder.
INSERT INTO ordered_shards AS s (shard, epoch, owner, taken_at) VALUES ($1, 1, $2, now())
ON CONFLICT (shard) DO UPDATE SET epoch = s.epoch + 1, owner = $2, taken_at = now()
RETURNING epoch;

-- name: hold_ordered_shard
-- Inside a ledger write: true while the shard is still at the writer's epoch; the row lock
-- makes a taker wait for the write to commit.
SELECT epoch = $2 FROM ordered_shards WHERE shard = $1 FOR SHARE;

-- name: ordered_heads
SELECT key, head, due_at FROM ordered_keys WHERE shard = $1;

-- name: ordered_parked_of_shard
SELECT key, job_id, delivery FROM ordered_parked WHERE shard = $1 ORDER BY position;

-- name: forget_old_ordered_finals
DELETE FROM ordered_finals WHERE final_at < now() - $1::interval;

-- name: park_ordered
INSERT INTO ordered_parked (key, shard, job_id, delivery) VALUES ($1, $2, $3, $4)
ON CONFLICT (job_id) DO NOTHING;

-- name: set_ordered_head
INSERT INTO ordered_keys (key, shard, head, due_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE SET shard = $2, head = $3, due_at = $4;

-- name: clear_ordered_head
DELETE FROM ordered_keys WHERE key = $1;

-- name: add_ordered_final
INSERT INTO ordered_finals (job_id, replay) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: take_first_parked
DELETE FROM ordered_parked
WHERE position = (SELECT min(position) FROM ordered_parked WHERE key = $1)
RETURNING delivery;

-- name: ordered_final_at
SELECT EXISTS (SELECT 1 FROM ordered_finals WHERE job_id = $1 AND replay >= $2);

-- name: add_ordered_binding
INSERT INTO ordered_bindings (namespace, routing_key) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: drop_ordered_binding
DELETE FROM ordered_bindings WHERE namespace = $1 AND routing_key = $2;

-- name: ordered_bindings
SELECT routing_key, bound_at FROM ordered_bindings WHERE namespace = $1;

-- name: key_neighbours
-- The jobs of one webhook and key routed just before and just after a job (an ordered
-- webhook's jobs of a key are routed, and so created, in their order).
(SELECT 'before' AS side, id, status FROM webhook_jobs
 WHERE space = $1 AND webhook_id = $2 AND parent_type = $3
   AND parent_id IS NOT DISTINCT FROM $4 AND created_at < $5
 ORDER BY created_at DESC LIMIT 1)
UNION ALL
(SELECT 'after' AS side, id, status FROM webhook_jobs
 WHERE space = $1 AND webhook_id = $2 AND parent_type = $3
   AND parent_id IS NOT DISTINCT FROM $4 AND created_at > $5
 ORDER BY created_at LIMIT 1);
