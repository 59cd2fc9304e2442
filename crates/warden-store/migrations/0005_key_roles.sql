-- What each API key may do: `agent` (ask for decisions; every key before roles) or `admin`
-- (also answer approvals). Part of each row's integrity MAC when not `agent`.
ALTER TABLE warden_api_keys
    ADD COLUMN role text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'admin'));
