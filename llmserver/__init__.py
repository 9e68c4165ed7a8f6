"""The ``llmserver`` command: one CLI over the runtime, the proxy and the admin tools."""
