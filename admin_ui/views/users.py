"""Users (admin only): create, disable or enable, reset a password, change a role.

A password made here is generated and shown once; the account must replace it at its first login
(``password_change_required``). Disabling an account also revokes its admin API tokens.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key, hasher_key
from admin_ui.audited import audit
from admin_ui.passwords import generate_password, hash_password
from admin_ui.security import require_admin
from proxy.storage.errors import ValidationError
from proxy.storage.users import User, UserNotFoundError, UserRepository, check_role

routes = web.RouteTableDef()


async def _page(request: web.Request, **extra: object) -> web.Response:
    require_admin(request)
    users = await UserRepository(request.app[db_key]).list_users()
    status = int(extra.pop("status", 200))  # type: ignore[call-overload]
    context = {"users": users, "error": None, "shown_password": None, "shown_for": None, **extra}
    return aiohttp_jinja2.render_template("users.html", request, context, status=status)


@routes.get("/users")
async def users_page(request: web.Request) -> web.Response:
    return await _page(request)


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
        )
    except ValidationError as exc:
        return await _page(request, error=str(exc), status=400)
    await audit(request, "user.create", f"user {user.username}", after=user.public())
    return await _page(request, shown_password=password, shown_for=user.username)


async def apply_user_action(
    request: web.Request, user_id: int, action: str, role: str | None
) -> tuple[User, str | None]:
    """Disable, enable, reset the password or set the role of an account; (user after, new password)."""
    principal = require_admin(request)
    repo = UserRepository(request.app[db_key])
    before = await repo.get_user(user_id)
    if before is None:
        raise UserNotFoundError(f"no user {user_id}")
    if before.id == principal.user_id and action in ("disable", "role"):
        raise ValidationError("you cannot disable yourself or change your own role")
    password = None
    if action == "disable":
        after = await repo.set_disabled(user_id, True)
    elif action == "enable":
        after = await repo.set_disabled(user_id, False)
    elif action == "reset-password":
        password = generate_password()
        hashed = await hash_password(password, request.app[hasher_key])
        after = await repo.set_password(user_id, hashed, change_required=True)
    elif action == "role":
        after = await repo.set_role(user_id, check_role(role or ""))
    else:
        raise ValidationError("action must be disable, enable, reset-password or role")
    await audit(request, f"user.{action}", f"user {after.username}", before.public(), after.public())
    return after, password


@routes.post(r"/users/{user_id:\d+}")
async def change_user(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        user, password = await apply_user_action(
            request, int(request.match_info["user_id"]), str(form.get("action", "")), str(form.get("role", ""))
        )
    except ValidationError as exc:
        return await _page(request, error=str(exc), status=400)
    if password is not None:
        return await _page(request, shown_password=password, shown_for=user.username)
    raise web.HTTPSeeOther("/admin/users")
