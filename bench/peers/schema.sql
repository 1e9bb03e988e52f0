-- The job rows the peers write: one per delivery, after the webhook answered.
CREATE TABLE peer_jobs (
    id               uuid PRIMARY KEY,
    event_id         text NOT NULL,
    event_at         timestamptz NOT NULL,
    url              text NOT NULL,
    request_content  text NOT NULL,
    response_status  integer NOT NULL,
    response_content text,
    status           text NOT NULL,
    completed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peer_jobs_event ON peer_jobs (event_id);
