"""``/admin/api/users`` (admins only, for reading too): list, create (a generated password is in the
answer once; the account chooses its own at its first login), and change an account (``disable``,
``enable``, ``reset-password``, ``role``: ``admin_ui.actions``, as the Users page does)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin_ui.actions import apply_user_action
from admin_ui.api.common import NULL, TEXT, Auth, guard, install_auth, read_body
from admin_ui.appkeys import db_key, hasher_key
from admin_ui.passwords import checked_password, generate_password, hash_password
from proxy.storage.users import UserRepository, check_role

CREATE = {"username": TEXT, "password": TEXT, "role": TEXT}
CHANGE = {"action": TEXT, "role": (str, NULL)}


def setup_user_routes(app: web.Application, *, auth: Auth, prefix: str = "/admin/api") -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``)."""
    install_auth(app, auth)
    app.router.add_get(f"{prefix}/users", list_users)
    app.router.add_post(f"{prefix}/users", create_user)
    app.router.add_patch(prefix + r"/users/{user_id:\d{1,15}}", change_user)


async def list_users(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    users = await UserRepository(request.app[db_key]).list_users()
    return web.json_response({"users": [u.public() for u in users]})


async def create_user(request: web.Request) -> web.Response:
    by = await guard(request, admin_only=True)
    body = await read_body(request, CREATE, required=("username",))
    given = body.get("password")
    password = await checked_password(given) if given is not None else generate_password()
    user = await UserRepository(request.app[db_key]).create_user(
        body["username"],
        await hash_password(password, request.app[hasher_key]),
        check_role(body.get("role", "viewer")),
        change_required=True,  # generated or chosen by an admin: the account chooses its own at first login
        by=by,
    )
    answer: dict[str, Any] = {"user": user.public()}
    if given is None:
        answer["password"] = password  # generated: shown this once
    return web.json_response(answer, status=201)


async def change_user(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    body = await read_body(request, CHANGE, required=("action",))
    user_id = int(request.match_info["user_id"])
    user, password = await apply_user_action(request, user_id, body["action"], body.get("role"))
    answer: dict[str, Any] = {"user": user.public()}
    if password is not None:
        answer["password"] = password
    return web.json_response(answer)
