-- API tokens made with `webhook-router tokens create`: a name, a role, the spaces it
-- reaches (empty: every space) and the SHA-256 of the token; the token itself is never
-- stored. A revoked token stays listed, with when it was revoked.

CREATE TABLE api_tokens (
    name text PRIMARY KEY,
    role text NOT NULL CHECK (role IN ('admin', 'reader', 'publisher')),
    spaces text[] NOT NULL DEFAULT '{}',
    token_sha256 bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
