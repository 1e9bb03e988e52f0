-- A webhook's rate limit (deliveries per second, null: none), the slots every worker takes
-- from (one row per limited webhook: the earliest time the next delivery may start), and
-- the index the failing-endpoint rule reads (a webhook's last success, its failures since).

ALTER TABLE webhooks
    ADD COLUMN rate_limit double precision CHECK (rate_limit > 0 AND rate_limit < 'Infinity');

-- Unlogged: a crash forgets when the next slot is, which only lets one delivery through early.
CREATE UNLOGGED TABLE webhook_rate_slots (
    webhook_id uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    next_at    timestamptz NOT NULL
);

CREATE INDEX webhook_jobs_webhook_ended ON webhook_jobs (webhook_id, status, completed_at);
