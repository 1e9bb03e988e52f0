-- Webhooks, the job log and the revision counter the router watches.

CREATE TABLE webhooks (
    id                     uuid PRIMARY KEY,
    space                  text NOT NULL,
    kapp                   text,
    name                   text NOT NULL,
    type                   text NOT NULL,
    event                  text NOT NULL,
    filter                 text,
    url                    text NOT NULL,
    auth_strategy          text,
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX webhooks_scope_name ON webhooks (space, coalesce(kapp, ''), name);

-- Bumped on every change of webhooks; the router reloads when it moves.
CREATE TABLE webhook_revision (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    revision  bigint NOT NULL
);
INSERT INTO webhook_revision VALUES (true, 1);

CREATE FUNCTION webhooks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    UPDATE webhook_revision SET revision = revision + 1 RETURNING revision INTO next;
    PERFORM pg_notify('webhook_router_webhooks', next::text);
    RETURN NULL;
END $$;
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks_changed();

-- One row per job (its latest state), partitioned by month of the event.
CREATE TABLE webhook_jobs (
    id                uuid NOT NULL,
    event_at          timestamptz NOT NULL,
    event_id          text NOT NULL,
    webhook_id        uuid NOT NULL,
    webhook_name      text NOT NULL,
    space             text NOT NULL,
    scope_type        text NOT NULL,
    scope_id          text NOT NULL,
    type              text NOT NULL,
    event             text NOT NULL,
    parent_type       text NOT NULL,
    parent_id         text,
    tree_group        text NOT NULL,
    tree_name         text NOT NULL,
    url               text,
    request_content   text,
    response_status   integer,
    response_content  text,
    summary           text,
    run_id            text,
    status            text NOT NULL,
    retry_count       integer NOT NULL DEFAULT 0,
    attempts          integer NOT NULL DEFAULT 0,
    replay            integer NOT NULL DEFAULT 0,
    version_attempt   integer NOT NULL DEFAULT 0,
    version_rank      integer NOT NULL DEFAULT 0,
    duration_ms       double precision,
    scheduled_at      timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    completed_at      timestamptz,
    PRIMARY KEY (id, event_at)
) PARTITION BY RANGE (event_at);

CREATE INDEX webhook_jobs_scheduled ON webhook_jobs (space, scheduled_at DESC, id DESC);
CREATE INDEX webhook_jobs_status ON webhook_jobs (space, status, scheduled_at DESC, id DESC);
CREATE INDEX webhook_jobs_webhook ON webhook_jobs (webhook_id, scheduled_at DESC, id DESC);
CREATE INDEX webhook_jobs_parent ON webhook_jobs (parent_type, parent_id);
CREATE INDEX webhook_jobs_event ON webhook_jobs (event_id);

-- One row per HTTP attempt.
CREATE TABLE webhook_job_attempts (
    job_id            uuid NOT NULL,
    event_at          timestamptz NOT NULL,
    replay            integer NOT NULL,
    attempt           integer NOT NULL,
    webhook_id        uuid NOT NULL,
    url               text NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       double precision NOT NULL,
    response_status   integer,
    response_content  text,
    error             text,
    request_headers   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, event_at, replay, attempt)
) PARTITION BY RANGE (event_at);

CREATE INDEX webhook_job_attempts_webhook ON webhook_job_attempts (webhook_id, started_at);

CREATE TABLE webhook_jobs_default PARTITION OF webhook_jobs DEFAULT;
CREATE TABLE webhook_job_attempts_default PARTITION OF webhook_job_attempts DEFAULT;

-- Monthly partitions of both tables from `first` for `months` months; idempotent.
CREATE FUNCTION webhook_router_make_partitions(first date, months integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    start date := date_trunc('month', first)::date;
    stop date;
    tbl text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        stop := (start + interval '1 month')::date;
        FOREACH tbl IN ARRAY ARRAY['webhook_jobs', 'webhook_job_attempts'] LOOP
            IF to_regclass(format('%s_%s', tbl, to_char(start, 'YYYY_MM'))) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    format('%s_%s', tbl, to_char(start, 'YYYY_MM')), tbl, start, stop);
            END IF;
        END LOOP;
        start := stop;
    END LOOP;
END $$;
