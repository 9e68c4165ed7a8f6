-- issue 19: a key can be disabled (refused like a revoked one) and enabled again. Changing it sets
-- updated_at, so api_keys_changed_on_update bumps api_key_changes and every verifier reloads it.
-- depends: 20250109100000_api_key_list_indexes
ALTER TABLE api_keys ADD COLUMN disabled_at REAL;
