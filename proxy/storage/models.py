"""Registered models: the ``models`` row and its JSON twin ``<config dir>/<name>.json``.

The row is the truth; the file is written after every change from the row as committed (to a
temporary file, fsynced, renamed over the old one, the directory fsynced), so the file always
equals the row and a crash leaves either the old or the new file, never half of one. A name is
checked in one place, :func:`check_model_name`, before it reaches SQL or a path: letters, digits,
``.``, ``_`` and ``-``, at most 64 characters, no path separator, never ``..``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proxy.storage.audit import Actor, Audit, audited
from proxy.storage.bounds import MAX_SECONDS, check_int, check_list, check_number, check_params, check_text
from proxy.storage.database import Database
from proxy.storage.errors import ConfigFileError, ModelNotFoundError, ValidationError
from proxy.storage.stored import StoredRow

MAX_MODEL_NAME = 64
KINDS = ("llm", "tts", "stt")
DESIRED_STATES = ("running", "stopped")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_JSON_COLUMNS = ("files", "patterns", "params")
_BOOL_COLUMNS = ("from_runtime", "start_when_downloaded")
# Columns a caller may set; the rest (id, timestamps) belong to the store.
FIELDS = (
    "kind",
    "backend",
    "source_repo",
    "files",
    "patterns",
    "revision",
    "local_path",
    "params",
    "desired_state",
    "actual_state",
    "download_state",
    "download_progress",
    "downloaded_bytes",
    "total_bytes",
    "size_bytes",
    "sha256",
    "error",
    "hf_token_id",
    "keep_alive",
    "from_runtime",
    "failures",
    "retry_at",
    "download_pid",
    "download_heartbeat",
    "start_when_downloaded",
)


def check_model_name(name: object) -> str:
    """``name`` if it is a valid model name; :class:`ValidationError` saying why not."""
    if not isinstance(name, str) or not name:
        raise ValidationError("a model name is required", field="name")
    if len(name) > MAX_MODEL_NAME:
        raise ValidationError(f"a model name is at most {MAX_MODEL_NAME} characters", field="name")
    if "/" in name or "\\" in name or ".." in name or not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (no path separators, no '..')",
            field="name",
        )
    return name


@dataclass(frozen=True)
class ModelRecord:
    """One ``models`` row."""

    id: int
    name: str
    kind: str
    backend: str
    source_repo: str | None
    files: tuple[str, ...]
    patterns: tuple[str, ...]
    revision: str | None
    local_path: str | None
    params: Mapping[str, Any]
    desired_state: str
    actual_state: str
    download_state: str
    download_progress: float | None
    downloaded_bytes: int | None
    total_bytes: int | None
    size_bytes: int | None
    sha256: str | None
    error: str | None
    hf_token_id: int | None
    keep_alive: float | None
    from_runtime: bool
    failures: int
    retry_at: float | None
    created_at: float
    updated_at: float
    download_pid: int | None = None  # the process running a pull (issue 25)
    download_heartbeat: float | None = None  # when that pull last wrote progress
    start_when_downloaded: bool = False  # Run's "start once downloaded", kept across processes

    invalid: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ModelRecord:
        """The row as stored; a column no check lets in is logged and named in ``invalid`` (the
        reconciler leaves such a model alone, the console shows it as invalid)."""
        read = StoredRow(row, f"model {row['name']!r}")
        values: dict[str, Any] = {name: row[name] for name in cls.__dataclass_fields__ if name != "invalid"}
        values.update(
            files=read.texts("files"),
            patterns=read.texts("patterns"),
            params=read.json_object("params"),
            keep_alive=read.number("keep_alive", low=0.0, high=MAX_SECONDS),
            hf_token_id=read.optional_integer("hf_token_id"),
            download_progress=read.number("download_progress", low=0.0, high=1.0, shown=True),
            failures=read.integer("failures"),
            retry_at=read.optional_time("retry_at", shown=True),
            created_at=read.time("created_at", 0.0),
            updated_at=read.time("updated_at", 0.0),
            from_runtime=bool(values["from_runtime"]),
            start_when_downloaded=bool(values["start_when_downloaded"]),
        )
        for column in ("local_path", "source_repo", "revision"):
            if values[column] is not None and not isinstance(values[column], str):
                values[column] = None
                read.invalid = (*read.invalid, column)
        return cls(**values, invalid=read.invalid)

    def to_json(self) -> dict[str, Any]:
        """The row as JSON: what the config file and the admin API hold."""
        data = asdict(self)
        data["files"], data["patterns"], data["params"] = list(self.files), list(self.patterns), dict(self.params)
        data["invalid"] = list(self.invalid)
        return data


class ModelStore:
    """The ``models`` table and the config files that mirror it."""

    def __init__(self, db: Database, config_dir: Path) -> None:
        self._db = db
        self.config_dir = config_dir

    @property
    def db(self) -> Database:
        return self._db

    async def create(
        self,
        name: str,
        kind: str = "llm",
        backend: str = "llamacpp",
        *,
        by: Actor | None = None,
        action: str = "model.add",
        **fields: Any,
    ) -> ModelRecord:
        """A new row (and its file). ``by``: who asked, audited as ``action`` in the same transaction
        (``proxy.storage.audit``; :meth:`update` and :meth:`delete` alike)."""
        values = check_model_fields({"kind": kind, "backend": backend, **fields})
        values["name"] = check_model_name(name)
        values["created_at"] = values["updated_at"] = time.time()

        def insert(conn: sqlite3.Connection) -> ModelRecord:
            if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone():
                raise ValidationError(f"a model named {name!r} already exists")
            columns = ", ".join(values)
            marks = ", ".join(f":{c}" for c in values)
            row = conn.execute(f"INSERT INTO models ({columns}) VALUES ({marks}) RETURNING *", values).fetchone()
            return ModelRecord.from_row(row)

        def describe(record: ModelRecord) -> Audit:
            return Audit(action, f"model {record.name}", after=record.to_json())

        return self._written(await self._db.execute_write(audited(by, insert, describe)))

    async def get(self, name: str) -> ModelRecord:
        check_model_name(name)
        sql = "SELECT * FROM models WHERE name = ?"
        row = await self._db.execute_read(lambda c: c.execute(sql, (name,)).fetchone())
        if row is None:
            raise ModelNotFoundError(f"no model named {name!r}")
        return ModelRecord.from_row(row)

    async def find(self, name: str) -> ModelRecord | None:
        try:
            return await self.get(name)
        except (ModelNotFoundError, ValidationError):
            return None

    async def list(self) -> list[ModelRecord]:
        rows = await self._db.execute_read(lambda c: c.execute("SELECT * FROM models ORDER BY name").fetchall())
        return [ModelRecord.from_row(r) for r in rows]

    async def update(
        self, name: str, /, *, by: Actor | None = None, action: str = "model.change", **fields: Any
    ) -> ModelRecord:
        """Set ``fields`` on model ``name``; the row as committed (and its file rewritten)."""
        check_model_name(name)
        values = check_model_fields(fields)
        values["updated_at"] = time.time()
        sets = ", ".join(f"{c} = :{c}" for c in values)

        def write(conn: sqlite3.Connection) -> tuple[ModelRecord | None, ModelRecord]:
            before = _select(conn, name) if by is not None else None
            row = conn.execute(
                f"UPDATE models SET {sets} WHERE name = :_name RETURNING *", {**values, "_name": name}
            ).fetchone()
            if row is None:
                raise ModelNotFoundError(f"no model named {name!r}")
            return before, ModelRecord.from_row(row)

        def describe(change: tuple[ModelRecord | None, ModelRecord]) -> Audit:
            before, after = change
            return Audit(action, f"model {name}", None if before is None else before.to_json(), after.to_json())

        return self._written((await self._db.execute_write(audited(by, write, describe)))[1])

    async def delete(self, name: str, *, by: Actor | None = None, action: str = "model.remove") -> None:
        check_model_name(name)

        def delete(conn: sqlite3.Connection) -> ModelRecord:
            gone = _select(conn, name)
            conn.execute("DELETE FROM models WHERE name = ?", (name,))
            return gone

        def describe(gone: ModelRecord) -> Audit:
            return Audit(action, f"model {name}", before=gone.to_json())

        await self._db.execute_write(audited(by, delete, describe))
        self.config_path(name).unlink(missing_ok=True)

    async def sync_files(self) -> int:
        """Rewrite every config file from its row (after a change made by the database itself, such as
        a deleted token's ``ON DELETE SET NULL``); how many."""
        records = await self.list()
        for record in records:
            self._written(record)
        return len(records)

    def config_path(self, name: str) -> Path:
        return self.config_dir / f"{check_model_name(name)}.json"

    def _written(self, record: ModelRecord) -> ModelRecord:
        try:
            write_json_atomically(self.config_path(record.name), record.to_json())
        except OSError as exc:  # the row is committed; the next change (or sync_files) writes the file
            raise ConfigFileError(
                f"model {record.name!r} saved, but its config file could not be written in {self.config_dir} "
                f"({exc.strerror or exc}); set LLMSERVER_MODEL_CONFIG_DIR to a writable directory"
            ) from None
        return record


def _select(conn: sqlite3.Connection, name: str) -> ModelRecord:
    row = conn.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ModelNotFoundError(f"no model named {name!r}")
    return ModelRecord.from_row(row)


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` by ``data`` as JSON: temporary file, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_model_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for ``fields``; what a caller sets is bounded (:mod:`proxy.storage.bounds`)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValidationError(f"unknown model field(s): {', '.join(sorted(unknown))}")
    values = dict(fields)
    for name, value in fields.items():
        check = _CHECKS.get(name)
        if check is not None and value is not None:
            values[name] = check(value)
    for name in _JSON_COLUMNS:
        if name in values:
            values[name] = json.dumps(values[name] if values[name] is not None else _EMPTY[name])
    for name in _BOOL_COLUMNS:
        if name in values:
            values[name] = int(bool(values[name]))
    return values


def _choice(name: str, options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValidationError(f"{name.replace('_', ' ')} must be one of {', '.join(options)}", field=name)
        return str(value)

    return check


_EMPTY: dict[str, Any] = {"files": [], "patterns": [], "params": {}}
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "kind": _choice("kind", KINDS),
    "desired_state": _choice("desired_state", DESIRED_STATES),
    "backend": lambda v: check_text("backend", v, max_length=32),
    "source_repo": lambda v: check_text("source_repo", v, max_length=200),
    "revision": lambda v: check_text("revision", v, max_length=200),
    "local_path": lambda v: check_text("local_path", v, max_length=4096),
    "files": lambda v: _strings("files", v),
    "patterns": lambda v: _strings("patterns", v),
    "params": lambda v: check_params("params", v),
    "hf_token_id": lambda v: check_int("hf_token_id", v, low=1),
    "keep_alive": lambda v: check_number("keep_alive", v, low=0.0, high=MAX_SECONDS, low_open=True),
}


def _strings(name: str, value: Any) -> list[str]:
    items = check_list(name, value, max_items=256, max_length=1000)
    if ".." in "/".join(items).split("/"):
        raise ValidationError(f"{name} must be a list of file names or patterns (no '..')", field=name)
    return items
