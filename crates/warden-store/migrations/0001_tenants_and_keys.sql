-- Tenants and their API keys (hashes only), with each key's lifecycle.
CREATE TABLE warden_tenants (
    name          text PRIMARY KEY,
    owner         text,
    mcp_upstream  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

CREATE TABLE warden_api_keys (
    seq         bigserial UNIQUE,
    id          text PRIMARY KEY,
    sha256      text NOT NULL UNIQUE,
    prefix      text NOT NULL,
    tenant      text NOT NULL REFERENCES warden_tenants (name),
    policy      text,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

CREATE TABLE warden_key_events (
    seq     bigserial PRIMARY KEY,
    key_id  text NOT NULL,
    event   text NOT NULL CHECK (event IN ('created', 'revoked')),
    at      timestamptz NOT NULL DEFAULT now()
);
