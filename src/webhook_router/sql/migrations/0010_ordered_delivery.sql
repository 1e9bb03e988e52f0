-- Ordered delivery per key (docs/ordering.md): the webhook's `ordered` flag, and the ledger
-- the holders of the ordered shards keep: who holds each shard (its epoch fences a holder
-- that lost it), each key's head (the delivery in hand or waiting for its retry), the
-- deliveries parked behind it, and the jobs made final (so a redelivered copy is skipped).

ALTER TABLE webhooks ADD COLUMN ordered boolean NOT NULL DEFAULT false;

-- A shard is named by its queue, so namespaces sharing a database never meet.
CREATE TABLE ordered_shards (
    shard text PRIMARY KEY,
    epoch bigint NOT NULL DEFAULT 0,
    owner text,
    taken_at timestamptz
);

CREATE TABLE ordered_keys (
    key text PRIMARY KEY,
    shard text NOT NULL,
    head jsonb NOT NULL,
    due_at timestamptz NOT NULL
);
CREATE INDEX ordered_keys_shard ON ordered_keys (shard);

CREATE TABLE ordered_parked (
    position bigserial PRIMARY KEY,
    key text NOT NULL,
    shard text NOT NULL,
    job_id uuid NOT NULL UNIQUE,
    delivery jsonb NOT NULL
);
CREATE INDEX ordered_parked_key ON ordered_parked (key, position);
CREATE INDEX ordered_parked_shard ON ordered_parked (shard);

CREATE TABLE ordered_finals (
    job_id uuid NOT NULL,
    replay integer NOT NULL,
    final_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, replay)
);
CREATE INDEX ordered_finals_at ON ordered_finals (final_at);

-- When the `ordered` queue was first bound to an event routing key, by namespace: events
-- of that key stamped from then on are the sequencer's, those stamped before the main
-- routers' (both sides decide by the event's timestamp, so neither or both never happens
-- when the publishers' clocks agree with the database's).
CREATE TABLE ordered_bindings (
    namespace text NOT NULL,
    routing_key text NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, routing_key)
);
