-- issue 19: the console's key list sorts and pages by keyset on these (proxy.storage.key_list).
-- depends: 20250109090000_request_log_indexes
CREATE INDEX api_keys_created ON api_keys(created_at);
CREATE INDEX api_keys_name ON api_keys(name COLLATE NOCASE);
CREATE INDEX api_keys_last_used ON api_keys(COALESCE(last_request_at, 0));
CREATE INDEX api_keys_tokens ON api_keys(tokens_used);
