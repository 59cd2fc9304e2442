-- Authentication attempts on the daemons: every failure, and a success at most once a minute per
-- key, address and user agent. Never the presented key.
CREATE TABLE warden_auth_events (
    seq          bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('success', 'failure', 'locked_out')),
    key_id       text,
    tenant       text,
    remote_addr  text,
    user_agent   text
);

CREATE INDEX warden_auth_events_by_address ON warden_auth_events (remote_addr, at);
