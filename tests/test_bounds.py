"""Issue 19: every stored value is bounded at the edge, in one place (``proxy.storage.bounds``) that
the console's forms, its JSON API and the CLI share; and a bad value already in a database is read
as invalid, not as a crash. Against a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from admin_ui.forms import key_fields_from_form, key_fields_from_json
from llmserver.commands.keys import main
from proxy.storage.api_keys import KeyRepository
from proxy.storage.bounds import check_text, parse_time
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError
from proxy.storage.models import ModelStore

pytestmark = pytest.mark.timeout(30)

BAD_KEY_FIELDS = [
    ({"expires_at": 1e300}, "expires_at"),
    ({"expires_at": float("inf")}, "expires_at"),
    ({"expires_at": 253402300800.0}, "expires_at"),  # 10000-01-01: no date shows it
    ({"token_limit": 2**64}, "token_limit"),
    ({"rpm_limit": 10**12}, "rpm_limit"),
    ({"tpm_limit": True}, "tpm_limit"),
    ({"allowed_models": ["ok", "bad\n"]}, "allowed_models"),
    ({"allowed_models": ["x"] * 1000}, "allowed_models"),
    ({"allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs"),
    ({"budget_period": ["daily"]}, "budget_period"),
]
BAD_NAMES = ["", " ", "line\nbreak", "trailing newline\n", "tab\there", "evil\u202etxt.exe", "iso\u2066late",
             "lone \ud800 surrogate", "nul\x00", "x" * 201]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize(("fields", "field"), BAD_KEY_FIELDS)
async def test_a_key_field_out_of_bounds_is_refused_naming_it(
    repo: KeyRepository, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create_key("k", **fields)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await repo.list_keys() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_name_with_control_or_bidi_characters_is_refused(repo: KeyRepository, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create_key(name)
    assert caught.value.field == "name"


def test_names_keep_what_people_write() -> None:
    assert check_text("name", "  Zoë's key 🔑 (ci)  ", max_length=50) == "Zoë's key 🔑 (ci)"
    assert check_text("name", "ключ-東京", max_length=50) == "ключ-東京"


@pytest.mark.parametrize(
    "text", ["9999-12-31", "1999-12-30", "2000-13-01", "+275760-09-13", "1e300", "9999-12-31T23:59:59+14:00"]
)
def test_a_typed_expiry_outside_the_years_2000_to_2999_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        key_fields_from_form({"name": "k", "expires": text})
    assert caught.value.field == "expires_at"
    with pytest.raises(ValidationError):
        key_fields_from_json({"name": "k", "expires_at": text}, partial=False)


def test_a_typed_expiry_is_the_end_of_that_day() -> None:
    assert parse_time("expires_at", "2999-12-31") == parse_time("expires_at", "3000-01-01T00:00:00Z")
    assert key_fields_from_form({"name": "k", "token_limit": "1,000", "expires": ""})["token_limit"] == 1000
    with pytest.raises(ValidationError):
        key_fields_from_form({"name": "k", "token_limit": "²"})  # a digit, but not one int() takes


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"keep_alive": "inf"}, "keep_alive"),
        ({"keep_alive": float("inf")}, "keep_alive"),
        ({"keep_alive": float("nan")}, "keep_alive"),
        ({"keep_alive": 0}, "keep_alive"),
        ({"keep_alive": 1e12}, "keep_alive"),
        ({"params": {"n_ctx": 2**70}}, "params.n_ctx"),
        ({"params": {"x": {"deep": 1}}}, "params.x"),
        ({"params": {"bad key": 1}}, "params"),
        ({"params": []}, "params"),
        ({"hf_token_id": 2**70}, "hf_token_id"),
        ({"hf_token_id": "1"}, "hf_token_id"),
        ({"files": ["a\nb"]}, "files"),
        ({"files": ["../etc/passwd"]}, "files"),
        ({"local_path": "/m.gguf\n"}, "local_path"),
        ({"kind": ["llm"]}, "kind"),
    ],
)
async def test_a_model_field_out_of_bounds_is_refused_naming_it(
    db: Database, tmp_path: Path, fields: dict[str, object], field: str
) -> None:
    store = ModelStore(db, tmp_path / "config")
    with pytest.raises(ValidationError) as caught:
        await store.create("m", **{"local_path": "/m.gguf", **fields})
    assert caught.value.field == field
    assert await store.list() == []


@pytest.mark.asyncio
async def test_bad_values_already_stored_are_read_as_invalid_not_as_a_crash(
    db: Database, repo: KeyRepository, tmp_path: Path
) -> None:
    """issue 19: a row written before the checks (or by hand) crashed every reader of its table."""
    await repo.create_key("far")
    await repo.create_key("fine")
    store = ModelStore(db, tmp_path / "config")
    await store.create("m", local_path="/m.gguf", keep_alive=60)
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE api_keys SET expires_at = 1e300, allowed_models = '[1]' WHERE name = 'far'")
    conn.execute("UPDATE models SET keep_alive = 'inf', params = '[1, 2]', failures = 'x' WHERE name = 'm'")
    conn.commit()
    conn.close()
    far, fine = await repo.list_keys()
    assert far.state(0) == "invalid" and not far.is_active(0) and set(far.invalid) == {"expires_at", "allowed_models"}
    assert far.expires_at is None and far.allowed_models == ()
    assert fine.state(0) == "active" and fine.invalid == ()
    (model,) = await store.list()
    assert model.keep_alive is None and dict(model.params) == {} and model.failures == 0
    assert set(model.invalid) == {"keep_alive", "params"}
    assert sorted(model.to_json()["invalid"]) == ["keep_alive", "params"]


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli" / "app.db"
    monkeypatch.setenv("LLMSERVER_DATABASE_URL", f"sqlite://{path}")
    monkeypatch.setenv("LLMSERVER_ARGON2_PROFILE", "test")
    return path


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("--name", "x", "--expires", "9999-12-31"), "between the years 2000 and 2999"),
        (("--name", "x", "--token-limit", str(2**64)), "token limit must be a whole number"),
        (("--name", "x\n"), "name must not contain control"),
        (("--name", "x", "--models", "a,b\u202e"), "allowed models must not contain"),
    ],
)
def test_the_cli_refuses_what_the_console_refuses(
    cli_database: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], said: str
) -> None:
    """issue 19: the CLI shares the bounds (a huge limit was an OverflowError traceback)."""
    try:
        code = main(["keys", "create", *argv])
    except SystemExit as exc:  # argparse's refusal of a bad --expires
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err, err
