-- The seed tables: admin users, API keys, the usage ledger, models, Hugging Face tokens.
-- Timestamps are REAL unix seconds (UTC) everywhere; JSON columns hold TEXT.
-- depends:

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

CREATE TABLE api_keys (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    secret_hash     TEXT    NOT NULL,
    last_four       TEXT    NOT NULL,
    user_id         INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at      REAL    NOT NULL,
    revoked_at      REAL,
    expires_at      REAL,
    token_limit     INTEGER CHECK (token_limit IS NULL OR token_limit >= 0),
    tokens_reserved INTEGER NOT NULL DEFAULT 0,
    tokens_used     INTEGER NOT NULL DEFAULT 0,
    request_count   INTEGER NOT NULL DEFAULT 0,
    last_request_at REAL,
    endpoint_counts TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(endpoint_counts)),
    allowed_models  TEXT    CHECK (allowed_models IS NULL OR json_valid(allowed_models)),
    rpm_limit       INTEGER CHECK (rpm_limit IS NULL OR rpm_limit > 0),
    tpm_limit       INTEGER CHECK (tpm_limit IS NULL OR tpm_limit > 0),
    updated_at      REAL    NOT NULL
);

CREATE INDEX api_keys_user_id ON api_keys(user_id);

CREATE TABLE token_usage_events (
    id                          INTEGER PRIMARY KEY,
    request_id                  TEXT    NOT NULL UNIQUE,
    api_key_id                  INTEGER REFERENCES api_keys(id) ON DELETE SET NULL,
    model                       TEXT    NOT NULL,
    endpoint                    TEXT    NOT NULL,
    prompt_tokens               INTEGER NOT NULL DEFAULT 0,
    completion_tokens           INTEGER NOT NULL DEFAULT 0,
    runtime_prompt_tokens       INTEGER,
    runtime_completion_tokens   INTEGER,
    status                      INTEGER NOT NULL,
    latency_ms                  REAL,
    ttft_ms                     REAL,
    streamed                    INTEGER NOT NULL DEFAULT 0 CHECK (streamed IN (0, 1)),
    client_disconnected         INTEGER NOT NULL DEFAULT 0 CHECK (client_disconnected IN (0, 1)),
    created_at                  REAL    NOT NULL
);

CREATE INDEX token_usage_events_key_time ON token_usage_events(api_key_id, created_at);
CREATE INDEX token_usage_events_model_time ON token_usage_events(model, created_at);

CREATE TABLE models (
    id                  INTEGER PRIMARY KEY,
    name                TEXT    NOT NULL UNIQUE,
    kind                TEXT    NOT NULL CHECK (kind IN ('llm', 'tts', 'stt')),
    backend             TEXT    NOT NULL,
    source_repo         TEXT,
    files               TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(files)),
    revision            TEXT,
    local_path          TEXT,
    params              TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(params)),
    desired_state       TEXT    NOT NULL DEFAULT 'stopped',
    actual_state        TEXT    NOT NULL DEFAULT 'unknown',
    download_progress   REAL,
    error               TEXT,
    created_at          REAL    NOT NULL,
    updated_at          REAL    NOT NULL
);

CREATE TABLE huggingface_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    last_four   TEXT    NOT NULL,
    created_at  REAL    NOT NULL
);
