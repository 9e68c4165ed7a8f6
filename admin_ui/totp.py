"""TOTP codes (RFC 6238, 30 s steps, 6 digits, pyotp's defaults) that are good once.

A code is accepted one step either side of now (clock drift), and only for a step later than the
last one the account used (RFC 6238 section 5.2: "the verifier MUST NOT accept the second attempt of
the same OTP"): an observed code cannot be replayed within its window.
"""

from __future__ import annotations

import hmac
import time

import pyotp

STEP_SECONDS = 30


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code ``code`` is (now, or one step either side); None if none is."""
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
