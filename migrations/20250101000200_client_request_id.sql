-- The ledger's identity is the server's own request id; a client's X-Request-ID is kept beside it
-- (echoed to the client, never trusted: reused ids once let requests go unbilled, issue 14).
-- depends: 20250101000100_key_changes_and_reservations

ALTER TABLE token_usage_events ADD COLUMN client_request_id TEXT;
