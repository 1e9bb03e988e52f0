-- Encryption at rest (WEBHOOK_ROUTER_ENCRYPTION_KEYS) and the audit trail.
--
-- The columns below hold either plaintext (written before a key was set, or with none set)
-- or a value sealed with AES-256-GCM, text starting `enc:v1:<key id>:`; the service opens
-- them, SQL cannot.

COMMENT ON COLUMN webhooks.secret IS
    'Signing secret; sealed (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPTION_KEYS is set.';
COMMENT ON COLUMN webhooks.previous_secret IS
    'Rotated-out signing secret; sealed (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPTION_KEYS is set.';
COMMENT ON COLUMN webhooks.auth IS
    'Credentials; a sealed JSON string (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPTION_KEYS is set.';
COMMENT ON COLUMN webhook_jobs.request_content IS
    'Request body; sealed (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPT_PAYLOADS was on: not searchable.';
COMMENT ON COLUMN webhook_jobs.response_content IS
    'Response body; sealed (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPT_PAYLOADS was on: not searchable.';
COMMENT ON COLUMN webhook_job_attempts.response_content IS
    'Response body; sealed (enc:v1:...) when WEBHOOK_ROUTER_ENCRYPT_PAYLOADS was on: not searchable.';
-- The analysts' views read no body column: they are the same with or without sealed bodies.
COMMENT ON VIEW webhook_job_success_daily IS
    'Jobs per webhook and day by status; reads no body column (never sealed).';
COMMENT ON VIEW webhook_endpoint_latency IS
    'Attempts per endpoint and day with answer times; reads no body column (never sealed).';
COMMENT ON VIEW webhook_job_failures IS
    'Failed jobs per webhook and day by answer or error; reads no body column (never sealed).';
COMMENT ON VIEW webhook_runs_per_tree IS
    'Jobs and runs per tree and day; reads no body column (never sealed).';
COMMENT ON VIEW webhook_jobs_waiting_retry IS
    'Jobs waiting for a retry; reads no body column (never sealed).';

-- One row per change made through the API, the console or the CLI; secrets never appear.
CREATE TABLE audit_log (
    id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor   text NOT NULL,
    space   text,  -- null: a change of no one space (a key rotation)
    action  text NOT NULL,
    target  text NOT NULL,
    before  jsonb,
    after   jsonb
);
CREATE INDEX audit_log_space_at ON audit_log (space, at DESC, id DESC);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
COMMENT ON TABLE audit_log IS
    'Who changed what: actor is the token name (or the CLI user), before/after the '
    'resource without its secrets.';
