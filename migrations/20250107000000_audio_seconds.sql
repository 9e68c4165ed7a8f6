-- The speech endpoints (issue 11): a transcription records the duration of the audio it transcribed,
-- in seconds, beside its token counts. NULL for every other request (and for audio whose duration
-- could not be read).
-- depends: 20250101000200_client_request_id

ALTER TABLE token_usage_events ADD COLUMN audio_seconds REAL;
