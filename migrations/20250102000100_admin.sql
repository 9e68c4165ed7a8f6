-- The admin console (issue 9): accounts with roles, TOTP and a session epoch; recovery codes; the audit
-- log; admin API tokens; a shared login throttle; budget periods and client address allow-lists on
-- keys; daily usage rollups (with the existing history rolled up) so usage pages never scan the ledger.
-- depends: 20250101000200_client_request_id

-- session_epoch goes up on logout, password change, disabling and role change: every session cookie
-- carries the epoch it was issued under and is refused once they differ, in every process at once.
-- (ALTER TABLE ... ADD COLUMN with a CHECK makes SQLite print a check query through yoyo: values are
-- validated in proxy.storage instead.)
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN updated_at REAL;

CREATE TABLE user_recovery_codes (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT    NOT NULL,
    used_at     REAL
);
CREATE INDEX user_recovery_codes_user ON user_recovery_codes(user_id);

CREATE TABLE admin_audit (
    id          INTEGER PRIMARY KEY,
    created_at  REAL    NOT NULL,
    actor       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT,
    before      TEXT    CHECK (before IS NULL OR json_valid(before)),
    after       TEXT    CHECK (after IS NULL OR json_valid(after))
);
CREATE INDEX admin_audit_created_at ON admin_audit(created_at);

CREATE TABLE admin_tokens (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    secret_hash     TEXT    NOT NULL,
    scope           TEXT    NOT NULL CHECK (scope IN ('admin', 'viewer')),
    created_by      TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    revoked_at      REAL,
    last_used_at    REAL
);

CREATE TABLE login_failures (
    subject         TEXT    PRIMARY KEY,
    failures        INTEGER NOT NULL,
    last_failure_at REAL    NOT NULL
);

ALTER TABLE api_keys ADD COLUMN budget_period TEXT;
ALTER TABLE api_keys ADD COLUMN period_start REAL;
ALTER TABLE api_keys ADD COLUMN period_tokens_used INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT;
ALTER TABLE quota_reservations ADD COLUMN period_start REAL;
CREATE INDEX quota_reservations_key_period ON quota_reservations(api_key_id, period_start);

-- One row per (UTC day, key, model, endpoint, status class); api_key_id 0 stands for "no key".
CREATE TABLE usage_daily (
    day                 TEXT    NOT NULL,
    api_key_id          INTEGER NOT NULL,
    model               TEXT    NOT NULL,
    endpoint            TEXT    NOT NULL,
    status_class        TEXT    NOT NULL,
    requests            INTEGER NOT NULL,
    prompt_tokens       INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    last_request_at     REAL    NOT NULL,
    PRIMARY KEY (day, api_key_id, model, endpoint, status_class)
) WITHOUT ROWID;
CREATE INDEX usage_daily_key_day ON usage_daily(api_key_id, day);

INSERT INTO usage_daily
SELECT date(created_at, 'unixepoch'), COALESCE(api_key_id, 0), model, endpoint, (status / 100) || 'xx',
       COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), MAX(created_at)
FROM token_usage_events
GROUP BY 1, 2, 3, 4, 5;

-- For the dashboard's last hour and the retention sweep.
CREATE INDEX token_usage_events_created_at ON token_usage_events(created_at);
