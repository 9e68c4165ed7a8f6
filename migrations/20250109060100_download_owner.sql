-- Issue 25: a pull whose process died must not say "downloading NN%" forever, and Run's "start when
-- downloaded" must outlive it. download_pid / download_heartbeat: the process running the pull and
-- when it last wrote progress (a pull whose process is gone, or silent too long, is marked
-- "interrupted"); start_when_downloaded: the model is started once a pull of it completes, whichever
-- process finishes it.
-- depends: 20250109060000_vault_key_state

ALTER TABLE models ADD COLUMN download_pid INTEGER;
ALTER TABLE models ADD COLUMN download_heartbeat REAL;
ALTER TABLE models ADD COLUMN start_when_downloaded INTEGER NOT NULL DEFAULT 0;
