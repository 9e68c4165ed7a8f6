-- issue 19: the console's key list sorts and pages by keyset on these (proxy.storage.key_list).
-- Not on last_request_at or tokens_used: every request updates those, and an index there would cost
-- every ledger write; the key table is small enough to sort by them.
-- depends: 20250109090000_request_log_indexes
CREATE INDEX api_keys_created ON api_keys(created_at);
CREATE INDEX api_keys_name ON api_keys(name COLLATE NOCASE);
