"""The speech endpoints: /v1/audio/speech and /v1/audio/transcriptions, served through Hugging Face's
inference service with the board's stored token, metered like every other endpoint (issue 11)."""
