"""A TOTP code opens one session only (RFC 6238 section 5.2), and only within one step of now."""

from __future__ import annotations

import asyncio

import pyotp
import pytest

from admin_ui.totp import STEP_SECONDS, matching_step
from proxy.storage.database import Database
from proxy.storage.users import UserRepository

SECRET = pyotp.random_base32()
NOW = 1_764_450_000.0


def test_a_code_matches_its_own_step_and_one_either_side_only() -> None:
    totp = pyotp.TOTP(SECRET)
    step = int(NOW // STEP_SECONDS)
    for offset in (-1, 0, 1):
        assert matching_step(SECRET, totp.at(NOW + offset * STEP_SECONDS), NOW) == step + offset
    assert matching_step(SECRET, totp.at(NOW - 2 * STEP_SECONDS), NOW) is None
    assert matching_step(SECRET, totp.at(NOW + 2 * STEP_SECONDS), NOW) is None
    assert matching_step(SECRET, "12345", NOW) is None and matching_step(SECRET, "abcdef", NOW) is None


@pytest.mark.asyncio
async def test_a_step_is_spent_once_and_older_steps_with_it(db: Database) -> None:
    users = UserRepository(db)
    user = await users.create_user("alice", "x" * 20, "admin")
    await users.set_totp(user.id, SECRET, [], used_step=100)  # the enrolment's code is spent
    assert not await users.use_totp_step(user.id, 100)
    assert not await users.use_totp_step(user.id, 99)
    # Two logins racing with one code: exactly one wins.
    results = await asyncio.gather(*(users.use_totp_step(user.id, 101) for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert await users.use_totp_step(user.id, 102)
    await users.set_totp(user.id, None, [])  # off, then on again with a new secret: a fresh start
    await users.set_totp(user.id, SECRET, [])
    assert await users.use_totp_step(user.id, 50)
