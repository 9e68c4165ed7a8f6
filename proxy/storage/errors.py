"""Exceptions of the storage layer (which imports nothing else of the proxy).

StorageError                   base of everything proxy.storage raises
├── ValidationError            a value given to a repository is not acceptable (bad name, negative limit)
├── DatabaseError              the database could not be opened, migrated or written
│   ├── DatabaseClosedError    work submitted to a database that is closed
│   └── DatabaseBusyError      disk full, or locked by another process for too long (``temporary``)
├── VaultError                 the vault cannot encrypt or decrypt (no key, wrong key, tampered data)
├── KeyNotFoundError           an API key id or public id that matches no row
├── TokenNotFoundError         a Hugging Face token id that matches no row
├── ModelNotFoundError         a model name that matches no row
└── ConfigFileError            a model's JSON config file could not be written
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage exception. ``temporary``: the same call may succeed later (the
    proxy answers 503 with ``retry-after`` instead of 500)."""

    temporary = False


class ValidationError(StorageError, ValueError):
    """A value given to a repository (key name, limit, allow-list...) is not acceptable. ``field``
    names the field at fault when there is one (the console shows the message beside it)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DatabaseError(StorageError):
    """The database could not be opened, migrated or written."""


class DatabaseClosedError(DatabaseError):
    """Work was submitted to a database that is closed or closing."""


class DatabaseBusyError(DatabaseError):
    """The disk is full or another process held the database locked past the retries: try later."""

    temporary = True


class VaultError(StorageError):
    """The vault has no key, or a ciphertext does not decrypt under it."""


class KeyNotFoundError(StorageError, LookupError):
    """No API key row has this id or public id."""


class TokenNotFoundError(StorageError, LookupError):
    """No Hugging Face token row has this id."""


class ModelNotFoundError(StorageError, LookupError):
    """No model row has this name."""


class ConfigFileError(StorageError):
    """A model's JSON config file could not be written (the row was)."""
