-- Two things the key cache and the quota need beyond the seed tables.
--
-- api_key_changes: one row whose version goes up whenever a key is created, deleted, or changed in a
-- way that matters to authentication (not on usage counters). Every proxy process polls it (one
-- primary-key read per 0.5 s) to drop or refresh its cached verified keys, so a revocation made
-- anywhere takes effect everywhere within a second.
--
-- quota_reservations: one row per admitted request, holding the tokens it reserved. Settlement
-- deletes it; reservations older than the request timeout belong to a process that died and are
-- reclaimed, so a SIGKILL mid-request does not shrink a key's quota forever.
-- depends: 20250101000000_init

CREATE TABLE api_key_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);

INSERT INTO api_key_changes (id, version) VALUES (1, 0);

CREATE TRIGGER api_keys_changed_on_insert AFTER INSERT ON api_keys
BEGIN
    UPDATE api_key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_changed_on_delete AFTER DELETE ON api_keys
BEGIN
    UPDATE api_key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_changed_on_update
AFTER UPDATE OF public_id, name, secret_hash, user_id, revoked_at, expires_at, token_limit,
                allowed_models, rpm_limit, tpm_limit, updated_at ON api_keys
BEGIN
    UPDATE api_key_changes SET version = version + 1 WHERE id = 1;
END;

CREATE TABLE quota_reservations (
    id          INTEGER PRIMARY KEY,
    api_key_id  INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    tokens      INTEGER NOT NULL CHECK (tokens >= 0),
    created_at  REAL    NOT NULL
);

CREATE INDEX quota_reservations_created_at ON quota_reservations(created_at);
