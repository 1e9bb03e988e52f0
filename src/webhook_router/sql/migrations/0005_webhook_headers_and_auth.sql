-- Custom headers of a webhook's POSTs, as [name, value] pairs in the admin's order, and
-- the write-only credentials of its auth strategy (Basic, Bearer, mTLS), kept beside the
-- signing secret, with when they were last set.

ALTER TABLE webhooks
    ADD COLUMN headers jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN auth jsonb,
    ADD COLUMN auth_set_at timestamptz;
