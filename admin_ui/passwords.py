"""Password rules and hashing for admin accounts (argon2id, always off the event loop).

The rules (ASVS 2.1): 12 to 1024 characters, not blank or only white space, not one of the common
passwords that attackers try first (ASVS 2.1.7), and not guessable in fewer than 10^8 tries by
the patterns attackers use (repeats, keyboard rows, sequences, dates, words with digits). Both come
from zxcvbn (Dropbox's password strength estimator, ``zxcvbn`` on PyPI): its ``passwords`` frequency
list (30,000 of the most common passwords of leaked sets, compared without regard to case or
surrounding spaces) and its estimate (score 2 or more, on the first 72 characters, as long as zxcvbn
takes). No composition rules (ASVS 2.1.9): any characters, spaces included.
"""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from zxcvbn import zxcvbn

from proxy.auth.apikey import hash_secret, verify_secret
from proxy.storage.errors import ValidationError

MIN_LENGTH = 12
MAX_LENGTH = 1024
MIN_SCORE = 2  # zxcvbn: "somewhat guessable", 10^8 guesses or more
ESTIMATED_CHARS = 72  # zxcvbn refuses longer input (its estimate is quadratic in the length)


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of common passwords (loaded on first use: it is a large module)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def check_password(password: str, again: str | None = None) -> str:
    """``password`` if acceptable (and equal to ``again`` when given); else ``ValidationError``."""
    if again is not None and password != again:
        raise ValidationError("the two passwords differ", field="again")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError(f"a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    if not password.strip():
        raise ValidationError("a password cannot be only spaces")
    if any("\ud800" <= char <= "\udfff" for char in password):
        raise ValidationError("a password must be text (it holds a lone UTF-16 surrogate)")
    if password.strip().lower() in common_passwords():
        raise ValidationError("this is one of the most common passwords, which attackers try first: choose another")
    estimate = zxcvbn(password[:ESTIMATED_CHARS])
    if estimate["score"] < MIN_SCORE:
        why = str(estimate["feedback"].get("warning") or "it follows a pattern attackers try early").rstrip(".")
        raise ValidationError(f"this password is too easy to guess ({why}); a few unrelated words make a strong one")
    return password


async def checked_password(password: str, again: str | None = None) -> str:
    """:func:`check_password` off the event loop (zxcvbn's estimate takes tens of milliseconds)."""
    return await asyncio.to_thread(check_password, password, again)


def generate_password() -> str:
    """A random password for a new or reset account (about 120 bits), shown once."""
    return secrets.token_urlsafe(15)


async def hash_password(password: str, hasher: PasswordHasher) -> str:
    return await asyncio.to_thread(hash_secret, password, hasher)


async def password_matches(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_secret, stored_hash, password)
