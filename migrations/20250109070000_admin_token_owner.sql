-- Issue 19: an admin API token acts as the account that made it, with that account's current role
-- (the token's scope can only narrow it): tokens get an owner and an optional expiry. Disabling the
-- account revokes its tokens; deleting it deletes them. Tokens made before this migration are owned
-- by the account named in created_by; a token no account owns (made by the command line or by another
-- token) is refused from now on: make a new one with `llmserver admin create-token NAME --user ACCOUNT`.
-- An account whose password someone else chose or generated must change it at its next login.
-- depends: 20250108000000_totp_last_step

ALTER TABLE admin_tokens ADD COLUMN user_id INTEGER REFERENCES users(id) ON DELETE CASCADE;
ALTER TABLE admin_tokens ADD COLUMN expires_at REAL;
UPDATE admin_tokens SET user_id = (SELECT id FROM users WHERE users.username = admin_tokens.created_by);
CREATE INDEX admin_tokens_user ON admin_tokens(user_id);

ALTER TABLE users ADD COLUMN password_change_required INTEGER NOT NULL DEFAULT 0;
