-- Dead letters: every message a role could not handle, moved here from the `dead` queue by
-- the recorder, kept whole (body as bytes) for admins to look at and requeue and for
-- analysts to query. `id` is the dead letter's own: a message that dies again after a
-- requeue is a new row.

CREATE TABLE dead_letters (
    id uuid PRIMARY KEY,
    role text NOT NULL,
    reason text NOT NULL,
    dead_at timestamptz NOT NULL,
    event_id text,
    webhook_id text,
    webhook_name text,
    space text,
    routing_key text,
    message_id text,
    headers jsonb NOT NULL DEFAULT '{}',
    body bytea NOT NULL,
    preview text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    requeued_at timestamptz,
    requeue_count integer NOT NULL DEFAULT 0
);

-- The list's order (newest first) and its time window.
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at DESC, id DESC);

-- Dead letters for analysts: every column but the body, with its size.
CREATE VIEW dead_letter_log AS
SELECT id,
       role,
       reason,
       dead_at,
       event_id,
       webhook_id,
       webhook_name,
       space,
       routing_key,
       message_id,
       octet_length(body) AS body_bytes,
       preview,
       headers,
       stored_at,
       requeued_at,
       requeue_count
FROM dead_letters;
