"""The OpenAI-compatible proxy: keys, metering, quotas, ledger."""
