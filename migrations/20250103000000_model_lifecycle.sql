-- Model lifecycle (issue 10): what a model row needs beyond the seed columns, and the vault's key id.
--
-- models: download patterns, what was downloaded (size, sha256), the token to download with, the
-- keep-alive after which an idle model is unloaded, whether the runtime's --model brought it, and the
-- reconciler's back-off (failures in a row, when to try again). download_progress (seed) is a
-- fraction 0..1 while a download runs; downloaded_bytes/total_bytes say the same in bytes.
-- No CHECK constraints on the added columns: SQLite checks existing rows with a query whose result
-- yoyo prints on stdout; proxy.storage.models validates every value instead.
-- huggingface_tokens: key_id names the encryption key a ciphertext was made with (so a wrong key is a
-- clear error, not a garbled one); is_default marks the token used when a model names none.
-- depends: 20250101000200_client_request_id

ALTER TABLE models ADD COLUMN patterns TEXT NOT NULL DEFAULT '[]';
ALTER TABLE models ADD COLUMN size_bytes INTEGER;
ALTER TABLE models ADD COLUMN sha256 TEXT;
ALTER TABLE models ADD COLUMN hf_token_id INTEGER REFERENCES huggingface_tokens(id) ON DELETE SET NULL;
ALTER TABLE models ADD COLUMN keep_alive REAL;
ALTER TABLE models ADD COLUMN from_runtime INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN download_state TEXT NOT NULL DEFAULT 'none';
ALTER TABLE models ADD COLUMN downloaded_bytes INTEGER;
ALTER TABLE models ADD COLUMN total_bytes INTEGER;
ALTER TABLE models ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN retry_at REAL;

ALTER TABLE huggingface_tokens ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE huggingface_tokens ADD COLUMN is_default INTEGER NOT NULL DEFAULT 0;

CREATE UNIQUE INDEX huggingface_tokens_one_default ON huggingface_tokens(is_default) WHERE is_default = 1;
