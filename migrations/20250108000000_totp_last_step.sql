-- A TOTP code is good for one login (RFC 6238 section 5.2): the time step of the last code an account
-- used, so the same code (or an older one still inside the window) is refused when presented again.
-- NULL until the account's first code.
-- depends: 20250107000000_audio_seconds

ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
