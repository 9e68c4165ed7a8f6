-- The request log (issue 19): every filter of the console's Requests page reads one index range in
-- (created_at, id) order. Key, model and time alone already have theirs (init, admin); these add the
-- status class (on the expression the log queries, status / 100), a key's failures and the endpoint.
-- depends: 20250109070000_admin_token_owner

CREATE INDEX token_usage_events_class_time ON token_usage_events(status / 100, created_at);
CREATE INDEX token_usage_events_endpoint_time ON token_usage_events(endpoint, created_at);
CREATE INDEX token_usage_events_key_class_time ON token_usage_events(api_key_id, status / 100, created_at);
