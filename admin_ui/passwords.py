"""Password rules and hashing for admin accounts (argon2id, always off the event loop)."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher

from proxy.auth.apikey import hash_secret, verify_secret
from proxy.storage.errors import ValidationError

MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_password(password: str, again: str | None = None) -> str:
    """``password`` if acceptable (and equal to ``again`` when given); else ``ValidationError``."""
    if again is not None and password != again:
        raise ValidationError("the two passwords differ")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError(f"a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    return password


def generate_password() -> str:
    """A random password for a new or reset account (about 120 bits), shown once."""
    return secrets.token_urlsafe(15)


async def hash_password(password: str, hasher: PasswordHasher) -> str:
    return await asyncio.to_thread(hash_secret, password, hasher)


async def password_matches(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_secret, stored_hash, password)
