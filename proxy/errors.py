"""Exceptions of the proxy package.

    ProxyError                     base of everything the proxy raises
    ├── SettingsError              a malformed or missing setting (names the variable, never its secret value)
    ├── ValidationError            a value given to a repository is not acceptable (bad name, negative limit)
    ├── DatabaseError              the database could not be opened, migrated or written
    │   └── DatabaseClosedError    work submitted to a database that is closed
    ├── AuthenticationError        a malformed, unknown, wrong, revoked or expired API key (``reason``)
    ├── VerifierBusyError          too many first-time key verifications are already waiting (retry later)
    ├── VaultError                 the vault cannot encrypt or decrypt (no key, wrong key, tampered data)
    └── KeyNotFoundError           an API key id or public id that matches no row

Quota and rate-limit refusals are results, not exceptions (``quota.QuotaExceeded``,
``ratelimit.RateDecision``), because they are an ordinary outcome of admission.
HTTP-facing subclasses (OpenAI error envelopes) are added here by the routes.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every proxy exception."""


class SettingsError(ProxyError, ValueError):
    """A setting that is malformed, missing or inconsistent with another one."""


class ValidationError(ProxyError, ValueError):
    """A value given to a repository (key name, limit, allow-list...) is not acceptable."""


class DatabaseError(ProxyError):
    """The database could not be opened, migrated or written."""


class DatabaseClosedError(DatabaseError):
    """Work was submitted to a database that is closed or closing."""


class AuthenticationError(ProxyError):
    """An API key was refused; ``reason`` says why (for logs, not for clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid API key ({reason})")
        self.reason = reason


class VerifierBusyError(ProxyError):
    """Too many first-time key verifications are queued; the client should retry later."""


class VaultError(ProxyError):
    """The vault has no key, or a ciphertext does not decrypt under it."""


class KeyNotFoundError(ProxyError, LookupError):
    """No API key row has this id or public id."""
