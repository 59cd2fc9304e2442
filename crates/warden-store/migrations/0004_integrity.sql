-- An HMAC over each key and policy row, with a key only Warden holds
-- (`database_integrity_key`): a row written around Warden (by someone with write access to the
-- database but not that key) does not verify, and is refused.
ALTER TABLE warden_api_keys ADD COLUMN mac text;
ALTER TABLE warden_policies ADD COLUMN mac text;
