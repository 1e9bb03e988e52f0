-- Tracing: each job's trace id (null when its event was not traced or not sampled), and
-- the per-webhook switch of the `traceparent`/`tracestate` headers on its POSTs.

ALTER TABLE webhook_jobs ADD COLUMN trace_id text;

ALTER TABLE webhooks ADD COLUMN trace_context boolean NOT NULL DEFAULT true;
