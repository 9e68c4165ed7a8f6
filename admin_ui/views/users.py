"""Users (admin only): create, disable (after a confirmation) or enable, reset a password, change a
role. Every POST answers with a redirect; a generated password rides in the session to the next
page, shown once (``admin_ui.flash``), and the account must replace it at its first login
(``password_change_required``). Disabling an account also revokes its admin API tokens.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.actions import apply_user_action
from admin_ui.appkeys import db_key, hasher_key
from admin_ui.audited import actor_of
from admin_ui.confirm import confirm_page, confirmed
from admin_ui.flash import done, failed
from admin_ui.passwords import generate_password, hash_password
from admin_ui.security import require_admin
from proxy.storage.errors import ValidationError
from proxy.storage.impact import active_admins, admin_tokens_of_user, keys_of_user
from proxy.storage.users import User, UserExistsError, UserNotFoundError, UserRepository, check_role

routes = web.RouteTableDef()
HERE = "/admin/users"


@routes.get("/users")
async def users_page(request: web.Request) -> web.Response:
    require_admin(request)
    users = await UserRepository(request.app[db_key]).list_users()
    return aiohttp_jinja2.render_template("users.html", request, {"users": users})


@routes.post("/users")
async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    password = generate_password()
    try:
        role = check_role(str(form.get("role", "viewer")))
        user = await UserRepository(request.app[db_key]).create_user(
            str(form.get("username", "")),
            await hash_password(password, request.app[hasher_key]),
            role,
            change_required=True,
            by=actor_of(request),
        )
    except ValidationError as exc:
        raise await failed(request, HERE + "#create-user", str(exc), exc.field, form) from None
    except UserExistsError as exc:
        raise await failed(request, HERE + "#create-user", str(exc), "username", form) from None
    raise await done(request, HERE, f"user {user.username} created", shown_password=password, shown_for=user.username)


@routes.get(r"/users/{user_id:\d{1,15}}/disable")
async def confirm_disable(request: web.Request) -> web.Response:
    principal = require_admin(request)
    user = await UserRepository(request.app[db_key]).get_user(int(request.match_info["user_id"]))
    if user is None:
        raise UserNotFoundError("no such user")
    said = await _disable_impact(request, user)
    if user.id == principal.user_id:
        said.append("This is your own account: it is refused.")
    return confirm_page(
        request,
        title=f"Disable the user {user.username}",
        summary="A disabled account keeps its history and can be enabled again.",
        consequences=said,
        button="Disable the user",
        cancel=HERE,
        fields={"action": "disable"},
        action=f"{HERE}/{user.id}",
    )


async def _disable_impact(request: web.Request, user: User) -> list[str]:
    """What disabling ``user`` breaks, in words: sessions, admin API tokens, API keys, the last admin."""
    db = request.app[db_key]
    said = [f"{user.username} is logged out at once, in every browser, and cannot log in until enabled again."]
    tokens = await admin_tokens_of_user(db, user.id)
    if tokens:
        many = len(tokens) != 1
        names = ", ".join(f"“{name}”" for name in tokens[:10]) + ("…" if len(tokens) > 10 else "")
        said.append(
            f"Its {len(tokens)} admin API token{'s' if many else ''} ({names}) {'are' if many else 'is'} revoked for "
            f"good: scripts that send {'them' if many else 'it'} are refused at once, and enabling the account "
            f"does not bring {'them' if many else 'it'} back."
        )
    keys = await keys_of_user(db, user.id)
    if keys:
        which = "The API key" if keys == 1 else f"The {keys} API keys"
        said.append(
            f"{which} {user.username} created {'keeps' if keys == 1 else 'keep'} working: revoke "
            f"{'it' if keys == 1 else 'them'} on the API keys page if {'it' if keys == 1 else 'they'} should stop too."
        )
    admins = [name for name in await active_admins(db) if name != user.username]
    if user.role == "admin" and not admins:
        said.append("This is the last admin who can log in: nobody could change anything after.")
    return said


@routes.post(r"/users/{user_id:\d{1,15}}")
async def change_user(request: web.Request) -> web.Response:
    form = await request.post()
    user_id, action = int(request.match_info["user_id"]), str(form.get("action", ""))
    if action == "disable" and not confirmed(form):
        require_admin(request)
        raise web.HTTPSeeOther(f"{HERE}/{user_id}/disable")
    try:
        user, password = await apply_user_action(request, user_id, action, str(form.get("role", "")))
    except ValidationError as exc:  # said in the user's row, beside its buttons
        raise await failed(request, f"{HERE}#user-{user_id}", str(exc), "action", which=f"user-{user_id}") from None
    if password is not None:
        raise await done(
            request, HERE, f"new password for {user.username}", shown_password=password, shown_for=user.username
        )
    raise await done(request, HERE, f"user {user.username}: {action} done")
