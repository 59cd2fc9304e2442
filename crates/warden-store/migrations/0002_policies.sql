-- Policies pushed to the database (`warden policy push`): every version kept, one active per
-- policy name. A tenant's keys name the policy that decides its requests.
CREATE TABLE warden_policies (
    name       text NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    format     text NOT NULL CHECK (format IN ('warden', 'rego')),
    source     text NOT NULL,
    sha256     text NOT NULL,
    pushed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE warden_active_policies (
    name          text PRIMARY KEY,
    version       integer NOT NULL,
    activated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES warden_policies (name, version)
);
