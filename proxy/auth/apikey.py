"""API keys and passwords: the key format and argon2id hashing (the vault is ``proxy.storage.vault``).

An API key reads ``llms_<public id>_<secret>``: 12 base62 characters find the row, 32 base62
characters (about 190 bits) are the secret, stored only as an argon2id hash plus its last four.

Hashing uses argon2-cffi's RFC 9106 low-memory profile (t=3, 64 MiB, p=4; its defaults), which
costs roughly 0.1-0.25 s and 64 MiB per verification on the boards and CI machines measured. That
is why a key is verified once and then remembered (``proxy.auth.verifier``), and why verification runs
in threads, bounded. The ``test`` profile (t=1, 1 MiB, p=1) exists only to keep tests fast
(``LLMSERVER_ARGON2_PROFILE=test``); hashes of either profile verify under both, because the
parameters travel inside the hash.
"""

from __future__ import annotations

import logging
import secrets
import string

from argon2 import Parameters as Argon2Parameters
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY

from proxy.storage.api_keys import KeyMinter, MintedKey

log = logging.getLogger(__name__)

KEY_PREFIX = "llms"
PUBLIC_ID_LENGTH = 12
SECRET_LENGTH = 32
KEY_LENGTH = len(KEY_PREFIX) + 1 + PUBLIC_ID_LENGTH + 1 + SECRET_LENGTH
BASE62 = string.digits + string.ascii_letters

ARGON2_PROFILES: dict[str, Argon2Parameters] = {
    "default": RFC_9106_LOW_MEMORY,
    "test": Argon2Parameters(
        type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=1024, parallelism=1
    ),
}


_VERIFIER = PasswordHasher()  # verify() reads the parameters from the hash, whatever they are


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def generate_api_key() -> tuple[str, str, str]:
    """A new key: ``(full_key, public_id, secret)``. Show ``full_key`` once; store neither."""
    public_id = _random_base62(PUBLIC_ID_LENGTH)
    secret = _random_base62(SECRET_LENGTH)
    return f"{KEY_PREFIX}_{public_id}_{secret}", public_id, secret


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """``(public_id, secret)`` of a well-formed key, else ``None``. Constant work, no regex."""
    if len(raw) != KEY_LENGTH or not raw.isascii():
        return None
    prefix, public_id, secret = raw[:4], raw[5 : 5 + PUBLIC_ID_LENGTH], raw[6 + PUBLIC_ID_LENGTH :]
    if prefix != KEY_PREFIX or raw[4] != "_" or raw[5 + PUBLIC_ID_LENGTH] != "_":
        return None
    if not (public_id.isalnum() and secret.isalnum()):
        return None
    return public_id, secret


def last_four(secret: str) -> str:
    """The part of a secret that may be stored and shown."""
    return secret[-4:]


def create_password_hasher(profile: str = "default") -> PasswordHasher:
    """An argon2id hasher with the named profile (``default`` or ``test``)."""
    try:
        return PasswordHasher.from_parameters(ARGON2_PROFILES[profile])
    except KeyError:
        raise ValueError(f"unknown argon2 profile {profile!r}; expected one of {sorted(ARGON2_PROFILES)}") from None


def hash_secret(secret: str, hasher: PasswordHasher | None = None) -> str:
    """The argon2id hash of a key secret or password (slow: call it off the event loop)."""
    return (hasher or _VERIFIER).hash(secret)


def verify_secret(secret_hash: str, secret: str) -> bool:
    """Whether ``secret`` matches ``secret_hash`` (slow: call it off the event loop)."""
    try:
        return _VERIFIER.verify(secret_hash, secret)
    except (VerifyMismatchError, UnicodeEncodeError):  # a lone surrogate is no one's secret
        return False
    except (InvalidHashError, VerificationError) as exc:
        log.warning("a stored argon2 hash could not be checked: %s", type(exc).__name__)
        return False


def key_minter(hasher: PasswordHasher | None = None) -> KeyMinter:
    """A :data:`~proxy.storage.api_keys.KeyMinter` for ``KeyRepository``: format, secret, argon2id hash."""
    chosen = hasher or create_password_hasher()

    def mint() -> MintedKey:
        full_key, public_id, secret = generate_api_key()
        return MintedKey(full_key, public_id, hash_secret(secret, chosen), last_four(secret))

    return mint
