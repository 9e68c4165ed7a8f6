"""Model lifecycle: the registry, Hugging Face downloads and the reconciler (issue 10).

Imports only ``proxy.storage`` and ``runtime.api`` (an import-linter contract says so), so the
proxy app, the admin console and the command line share it.
"""
