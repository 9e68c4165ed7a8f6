"""Re-authentication before changes that could lock the owner out (ASVS 3.7.1, issue 19).

Changing the password, turning the second factor on, replacing or off (which also wipes the
recovery codes) and making an admin API token ask for the account's current password, even inside a
valid session: a session left open on a shared screen, or stolen, is not enough to take the
account over. Wrong passwords count against the account's login throttle (``LoginThrottle``, the
``user:NAME`` subject), so these forms cannot be used to guess the password faster than the login
form can; every failure is in the audit log.
"""

from __future__ import annotations

import math

from aiohttp import web

from admin_ui.appkeys import db_key
from admin_ui.audited import audit_event
from admin_ui.passwords import password_matches
from proxy.storage.users import LoginThrottle, User

WRONG = "The current password is wrong."


async def confirm_password(request: web.Request, user: User, given: object, action: str) -> str | None:
    """None when ``given`` is the account's password; else why not (for the page or the API)."""
    throttle, subjects = LoginThrottle(request.app[db_key]), [f"user:{user.username.lower()}"]
    wait = await throttle.wait_time(subjects)
    if wait > 0:
        return f"Too many wrong passwords. Try again in {math.ceil(wait)} seconds."
    if isinstance(given, str) and given and await password_matches(user.password_hash, given):
        return None
    await throttle.failed(subjects)
    await audit_event(request, "reauth.failed", f"user {user.username}", after={"for": action})
    return WRONG
