-- The process that holds a quota reservation (proxy.storage.owner): a restart releases the
-- reservations of the process that died at once, not after the age bound. NULL for rows made before.
-- depends: 20250108000000_totp_last_step

ALTER TABLE quota_reservations ADD COLUMN owner TEXT;
CREATE INDEX quota_reservations_owner ON quota_reservations(owner) WHERE owner IS NOT NULL;
