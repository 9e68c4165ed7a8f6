-- Issue 25: the vault knows which key its tokens use, and a rotation keeps the running service working.
-- vault_state: one row, the key id of the key every token is encrypted with now (set by the first token
-- stored, moved by `llmserver vault rotate-key`): a process holding another key cannot add a token
-- that nobody could decrypt. huggingface_tokens.previous_*: after a rotation, the same token under the
-- key used before it, so the service still running with that key keeps working; the first process
-- started with the new key drops them.
-- depends: 20250108000000_totp_last_step

CREATE TABLE vault_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key_id      TEXT    NOT NULL,
    rotated_at  REAL
);
INSERT INTO vault_state (id, key_id)
SELECT 1, key_id FROM huggingface_tokens WHERE key_id != '' GROUP BY key_id ORDER BY COUNT(*) DESC LIMIT 1;

ALTER TABLE huggingface_tokens ADD COLUMN previous_key_id TEXT;
ALTER TABLE huggingface_tokens ADD COLUMN previous_nonce BLOB;
ALTER TABLE huggingface_tokens ADD COLUMN previous_ciphertext BLOB;
