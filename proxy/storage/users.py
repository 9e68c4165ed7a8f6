"""Admin accounts: rows, roles, the session epoch, TOTP, recovery codes and the shared login throttle.

Passwords arrive here already hashed (argon2id, by ``proxy.auth.password`` off the event loop);
this module stores and compares nothing secret itself. Each account has a ``session_epoch``:
every session cookie carries the epoch it was issued under and a request is refused once the
stored epoch moved on. Logging out, changing a password or a role and disabling the account bump
it, so every session of that account ends at once, in every process that shares the database.
Disabling also revokes the account's admin API tokens, in the same transaction.

The login throttle lives in the database too (``login_failures``), keyed by an opaque subject
(``user:NAME`` or ``addr:IP``), so several processes throttle together.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.storage.admin_tokens import revoke_owned
from proxy.storage.audit import Actor, Audit, audited
from proxy.storage.bounds import check_text
from proxy.storage.database import Database
from proxy.storage.errors import StorageError, ValidationError

ROLES = ("admin", "viewer")
USER_COLUMNS = (
    "id, username, password_hash, role, disabled, session_epoch, totp_secret, created_at, updated_at, "
    "password_change_required"
)
MAX_USERNAME = 64


class UserNotFoundError(StorageError, LookupError):
    """No account has this id or name."""


class UserExistsError(StorageError):
    """An account with this name already exists."""


@dataclass(frozen=True)
class User:
    """One ``users`` row; the hash and the TOTP secret stay out of ``repr`` (and out of pages)."""

    id: int
    username: str
    role: str
    disabled: bool
    session_epoch: int
    created_at: float
    updated_at: float | None
    password_hash: str = field(repr=False, compare=False)
    totp_secret: str | None = field(default=None, repr=False, compare=False)
    password_change_required: bool = False  # set by someone else (or generated): the owner must change it

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> User:
        return cls(
            id=row["id"],
            username=row["username"],
            role=row["role"],
            disabled=bool(row["disabled"]),
            session_epoch=row["session_epoch"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            password_hash=row["password_hash"],
            totp_secret=row["totp_secret"],
            password_change_required=bool(row["password_change_required"]),
        )

    @property
    def totp_enabled(self) -> bool:
        return self.totp_secret is not None

    def public(self) -> dict[str, object]:
        """What pages, the API and the audit log may show."""
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "disabled": self.disabled,
            "totp_enabled": self.totp_enabled,
            "password_change_required": self.password_change_required,
            "created_at": self.created_at,
        }


def check_username(name: str) -> str:
    name = check_text("username", name, max_length=MAX_USERNAME)
    if not name.isprintable() or any(c.isspace() for c in name):
        raise ValidationError(
            f"a user name is 1 to {MAX_USERNAME} printable characters without spaces", field="username"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError(f"a role is one of {', '.join(ROLES)}", field="role")
    return role


class UserRepository:
    """Create, read and change admin accounts through a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self,
        username: str,
        password_hash: str,
        role: str = "admin",
        *,
        change_required: bool = False,
        by: Actor | None = None,
    ) -> User:
        """A new account; ``change_required`` when its password was generated or chosen by someone else.
        ``by``: who asked, audited in the same transaction (every change below alike)."""
        name, role, now = check_username(username), check_role(role), time.time()

        def insert(conn: sqlite3.Connection) -> User:
            try:
                row = conn.execute(
                    "INSERT INTO users (username, password_hash, role, created_at, updated_at, "
                    f"password_change_required) VALUES (?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}",
                    (name, password_hash, role, now, now, int(change_required)),
                ).fetchone()
            except sqlite3.IntegrityError:
                raise UserExistsError(f"a user named {name!r} already exists") from None
            return User.from_row(row)

        def describe(user: User) -> Audit:
            return Audit("user.create", f"user {user.username}", after=user.public())

        return await self._db.execute_write(audited(by, insert, describe))

    async def get_user(self, ref: int | str) -> User | None:
        column = "id" if isinstance(ref, int) else "username"

        def read(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE {column} = ?", (ref,)).fetchone()
            return None if row is None else User.from_row(row)

        return await self._db.execute_read(read)

    async def list_users(self) -> list[User]:
        def read(conn: sqlite3.Connection) -> list[User]:
            return [User.from_row(r) for r in conn.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")]

        return await self._db.execute_read(read)

    async def count_users(self) -> int:
        return int(await self._db.execute_read(lambda c: c.execute("SELECT COUNT(*) FROM users").fetchone()[0]))

    async def set_password(
        self, user_id: int, password_hash: str, *, change_required: bool = False, by: Actor | None = None
    ) -> User:
        """New password; every session of the account ends. ``change_required``: set by an admin or
        generated, so the account must choose its own at the next login (audited as a reset)."""
        assignments = "password_hash = ?, password_change_required = ?, session_epoch = session_epoch + 1"
        action = "user.reset-password" if change_required else "user.password"
        return await self._update(user_id, assignments, (password_hash, int(change_required)), by, action)

    async def set_disabled(self, user_id: int, disabled: bool, *, by: Actor | None = None) -> User:
        """Disable (every session ends, every admin API token of the account is revoked) or enable."""

        def write(conn: sqlite3.Connection) -> User:
            if disabled:
                revoke_owned(conn, user_id, time.time())
            return _update_on(conn, user_id, "disabled = ?, session_epoch = session_epoch + 1", (int(disabled),))

        return await self._change(user_id, write, by, "user.disable" if disabled else "user.enable")

    async def set_role(self, user_id: int, role: str, *, by: Actor | None = None) -> User:
        assignments = "role = ?, session_epoch = session_epoch + 1"
        return await self._update(user_id, assignments, (check_role(role),), by, "user.role")

    async def end_sessions(self, user_id: int, *, by: Actor | None = None) -> User:
        """Log out everywhere (the epoch moves on)."""
        return await self._update(user_id, "session_epoch = session_epoch + 1", (), by, "logout")

    async def set_totp(
        self,
        user_id: int,
        secret: str | None,
        recovery_hashes: list[str],
        used_step: int | None = None,
        *,
        by: Actor | None = None,
    ) -> User:
        """Turn TOTP on (``secret``) with fresh recovery codes, or off (``None``); sessions stay.
        ``used_step``: the time step of the code that confirmed the enrolment (it is spent)."""

        def write(conn: sqlite3.Connection) -> User:
            conn.execute("DELETE FROM user_recovery_codes WHERE user_id = ?", (user_id,))
            conn.executemany(
                "INSERT INTO user_recovery_codes (user_id, code_hash) VALUES (?, ?)",
                [(user_id, h) for h in recovery_hashes],
            )
            return _update_on(conn, user_id, "totp_secret = ?, totp_last_step = ?", (secret, used_step))

        return await self._change(user_id, write, by, "user.totp.enable" if secret else "user.totp.disable")

    async def use_totp_step(self, user_id: int, step: int) -> bool:
        """Spend the TOTP time step ``step``; False if the account already used it or a later one
        (a replayed code), atomically, so two logins with one code cannot both pass."""
        sql = (
            "UPDATE users SET totp_last_step = ? WHERE id = ? "
            "AND (totp_last_step IS NULL OR totp_last_step < ?) RETURNING id"
        )
        return await self._db.execute_write(lambda c: c.execute(sql, (step, user_id, step)).fetchone() is not None)

    async def recovery_hashes(self, user_id: int) -> list[tuple[int, str]]:
        """``(id, hash)`` of the account's unused recovery codes."""
        sql = "SELECT id, code_hash FROM user_recovery_codes WHERE user_id = ? AND used_at IS NULL"
        return await self._db.execute_read(lambda c: [(r[0], r[1]) for r in c.execute(sql, (user_id,))])

    async def use_recovery_code(self, code_id: int) -> bool:
        """Spend a recovery code; False if it was already spent (a race between two logins)."""
        sql = "UPDATE user_recovery_codes SET used_at = ? WHERE id = ? AND used_at IS NULL RETURNING id"
        now = time.time()
        return await self._db.execute_write(lambda c: c.execute(sql, (now, code_id)).fetchone() is not None)

    async def _update(
        self, user_id: int, assignments: str, params: tuple[object, ...], by: Actor | None, action: str
    ) -> User:
        return await self._change(user_id, lambda conn: _update_on(conn, user_id, assignments, params), by, action)

    async def _change(
        self, user_id: int, write: Callable[[sqlite3.Connection], User], by: Actor | None, action: str
    ) -> User:
        """``write`` on one account, audited with the account before and after (read in its transaction)."""

        def job(conn: sqlite3.Connection) -> tuple[User | None, User]:
            row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
            return None if row is None else User.from_row(row), write(conn)

        def describe(change: tuple[User | None, User]) -> Audit:
            before, after = change
            target = after.username if action == "logout" else f"user {after.username}"
            return Audit(action, target, None if before is None else before.public(), after.public())

        return (await self._db.execute_write(audited(by, job, describe)))[1]


def _update_on(conn: sqlite3.Connection, user_id: int, assignments: str, params: tuple[object, ...]) -> User:
    sql = f"UPDATE users SET {assignments}, updated_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
    row = conn.execute(sql, (*params, time.time(), user_id)).fetchone()
    if row is None:
        raise UserNotFoundError(f"no user {user_id}")
    return User.from_row(row)


class LoginThrottle:
    """Failed logins per subject, shared by every process through the database.

    After ``free`` failures of an account (``address_free`` of a client address, which may be one
    office behind a NAT trying several accounts) each further attempt must wait
    ``base * 2**(n - free)`` seconds (capped at ``cap``) since the last failure. A subject quiet for
    ``forget`` seconds starts again from one failure. The caller clears what a success proves (its
    own account, never the address: one good login must not reset the guesses counted against
    others). Callers check the account's subject whether or not the account exists, so the answer
    gives nothing away.
    """

    def __init__(
        self,
        db: Database,
        free: int = 3,
        address_free: int = 10,
        base: float = 1.0,
        cap: float = 300.0,
        forget: float = 3600.0,
    ) -> None:
        self._db, self.free, self.address_free, self.base, self.cap = db, free, address_free, base, cap
        self.forget = forget

    async def wait_time(self, subjects: list[str], now: float | None = None) -> float:
        """Seconds until the most throttled of ``subjects`` may try again (0: now)."""
        now = time.time() if now is None else now
        marks = ", ".join("?" * len(subjects))
        sql = f"SELECT subject, failures, last_failure_at FROM login_failures WHERE subject IN ({marks})"
        rows = await self._db.execute_read(lambda c: c.execute(sql, subjects).fetchall())
        waits = [self.delay(n, subject.startswith("addr:")) - (now - last) for subject, n, last in rows]
        return max([0.0, *waits])

    def delay(self, failures: int, address: bool = False) -> float:
        free = self.address_free if address else self.free
        if failures < free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** (failures - free)))

    async def failed(self, subjects: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        sql = (
            "INSERT INTO login_failures (subject, failures, last_failure_at) VALUES (?, 1, ?) "
            "ON CONFLICT DO UPDATE SET last_failure_at = excluded.last_failure_at, failures = "
            "CASE WHEN excluded.last_failure_at - last_failure_at > ? THEN 1 ELSE failures + 1 END"
        )
        await self._db.execute_write(lambda c: c.executemany(sql, [(s, now, self.forget) for s in subjects]))

    async def succeeded(self, subjects: list[str]) -> None:
        marks = ", ".join("?" * len(subjects))
        sql = f"DELETE FROM login_failures WHERE subject IN ({marks})"
        await self._db.execute_write(lambda c: c.execute(sql, subjects))
