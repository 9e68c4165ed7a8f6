"""Settings: defaults, validation that names the variable, secrets kept out of messages, docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.errors import SettingsError
from proxy.settings import Settings, checked_settings, load_settings, parse_bind_address
from proxy.storage.errors import VaultError

REPO = Path(__file__).resolve().parent.parent
ENCRYPTION_KEY = "a1" * 32
SESSION_KEY = "b2" * 64


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.database_path == Path.cwd() / "data" / "app.db"
    assert (settings.bind_host, settings.bind_port) == ("0.0.0.0", 8443)
    assert settings.encryption_key is None and settings.session_key is None
    assert settings.runtime_endpoint.startswith("ipc://") and settings.runtime_endpoint.endswith("/runtime.sock")
    assert settings.max_body_bytes == 1024 * 1024 and settings.max_tokens_limit == 8192
    assert settings.argon2_concurrency == 2 and settings.request_timeout == 300.0
    assert settings.log_level == "INFO" and settings.db_synchronous == "NORMAL" and not settings.tls_enabled


def test_values_are_read(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    settings = load_settings(
        {
            "LLMSERVER_DATABASE_URL": f"sqlite://{tmp_path}/x.db",
            "LLMSERVER_ENCRYPTION_KEY": ENCRYPTION_KEY,
            "LLMSERVER_SESSION_KEY": SESSION_KEY,
            "LLMSERVER_BIND_ADDRESS": "[::1]:9000",
            "LLMSERVER_RUNTIME_ENDPOINT": "tcp://10.0.0.2:5555",
            "LLMSERVER_TLS_CERT": str(cert),
            "LLMSERVER_TLS_KEY": str(key),
            "LLMSERVER_LOG_LEVEL": "debug",
            "LLMSERVER_MAX_TOKENS_LIMIT": "4096",
            "LLMSERVER_REQUEST_TIMEOUT": "12.5",
            "LLMSERVER_ALLOW_INSECURE_HTTP": "yes",
            "LLMSERVER_DB_SYNCHRONOUS": "full",
        }
    )
    assert settings.database_path == tmp_path / "x.db"
    assert settings.encryption_key == bytes.fromhex(ENCRYPTION_KEY) and settings.session_key is not None
    assert (settings.bind_host, settings.bind_port) == ("::1", 9000)
    assert settings.runtime_endpoint == "tcp://10.0.0.2:5555"
    assert settings.tls_cert == cert and settings.tls_enabled
    assert (settings.log_level, settings.max_tokens_limit, settings.request_timeout) == ("DEBUG", 4096, 12.5)
    assert settings.allow_insecure_http and settings.db_synchronous == "FULL"
    assert ENCRYPTION_KEY not in repr(settings) and SESSION_KEY not in repr(settings)
    assert settings.vault().decrypt(*settings.vault().encrypt("t")) == "t"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLMSERVER_DATABASE_URL", "postgres://db/app"),
        ("LLMSERVER_DATABASE_URL", "sqlite://"),
        ("LLMSERVER_BIND_ADDRESS", "8443"),
        ("LLMSERVER_BIND_ADDRESS", "0.0.0.0:http"),
        ("LLMSERVER_BIND_ADDRESS", "0.0.0.0:70000"),
        ("LLMSERVER_BIND_ADDRESS", "::1:8443"),
        ("LLMSERVER_BIND_ADDRESS", "[nonsense]:8443"),
        ("LLMSERVER_RUNTIME_ENDPOINT", "http://localhost:5555"),
        ("LLMSERVER_LOG_LEVEL", "LOUD"),
        ("LLMSERVER_MAX_BODY_BYTES", "lots"),
        ("LLMSERVER_MAX_TOKENS_LIMIT", "0"),
        ("LLMSERVER_ARGON2_CONCURRENCY", "1000"),
        ("LLMSERVER_ARGON2_PROFILE", "fastest"),
        ("LLMSERVER_REQUEST_TIMEOUT", "nan"),
        ("LLMSERVER_ALLOW_INSECURE_HTTP", "maybe"),
        ("LLMSERVER_DB_SYNCHRONOUS", "OFF"),
        ("LLMSERVER_TLS_CERT", "/nonexistent/cert.pem"),
    ],
)
def test_malformed_values_name_their_variable(name: str, value: str) -> None:
    env = {name: value}
    if name == "LLMSERVER_TLS_CERT":
        env["LLMSERVER_TLS_KEY"] = "/nonexistent/key.pem"
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("LLMSERVER_ENCRYPTION_KEY", "c3" * 31 + "zz"),  # right length, not hex
        ("LLMSERVER_ENCRYPTION_KEY", "d4" * 40),  # hex, wrong length
        ("LLMSERVER_SESSION_KEY", "e5" * 32),
        ("LLMSERVER_SESSION_KEY", "hunter2-hunter2-hunter2"),
    ],
)
def test_malformed_secrets_are_named_but_never_shown(name: str, secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: secret})
    message = str(caught.value)
    assert name in message
    assert secret not in message and secret[:8] not in message


def test_tls_needs_both_files() -> None:
    with pytest.raises(SettingsError, match="LLMSERVER_TLS_CERT and LLMSERVER_TLS_KEY"):
        load_settings({"LLMSERVER_TLS_KEY": "/etc/hostname"})


def test_an_empty_value_means_unset() -> None:
    assert load_settings({"LLMSERVER_BIND_ADDRESS": "", "LLMSERVER_ENCRYPTION_KEY": " "}).bind_port == 8443


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::]:65535", ("::", 65535)),
        ("board.local:8443", ("board.local", 8443)),
    ],
)
def test_bind_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_bind_address(value) == expected


def test_plain_http_on_the_network_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LLMSERVER_ALLOW_INSECURE_HTTP"):
        load_settings({}).check_bind_security()
    for address in ("127.0.0.1:8443", "[::1]:8443", "localhost:8443"):
        load_settings({"LLMSERVER_BIND_ADDRESS": address}).check_bind_security()
    load_settings({"LLMSERVER_ALLOW_INSECURE_HTTP": "1"}).check_bind_security()
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    load_settings({"LLMSERVER_TLS_CERT": str(cert), "LLMSERVER_TLS_KEY": str(cert)}).check_bind_security()


def test_checked_settings_explain_a_refusal_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert checked_settings("llmserver up", {"LLMSERVER_BIND_ADDRESS": "0.0.0.0:8443"}) is None
    err = capsys.readouterr().err
    assert err.startswith("llmserver up: LLMSERVER_BIND_ADDRESS=0.0.0.0:8443 is not a loopback address")
    assert err.count("\n") == 1
    assert checked_settings("llmserver proxy", {"LLMSERVER_BIND_ADDRESS": "nonsense"}) is None
    assert capsys.readouterr().err.startswith("llmserver proxy: LLMSERVER_BIND_ADDRESS='nonsense':")
    settings = checked_settings("llmserver proxy", {"LLMSERVER_BIND_ADDRESS": "127.0.0.1:9000"})
    assert settings is not None and (settings.bind_host, settings.bind_port) == ("127.0.0.1", 9000)
    assert capsys.readouterr().err == ""


def test_the_vault_needs_the_encryption_key() -> None:
    with pytest.raises(VaultError, match="LLMSERVER_ENCRYPTION_KEY is not set"):
        Settings().vault()


def test_every_variable_is_documented() -> None:
    source = (REPO / "proxy" / "settings.py").read_text()
    docs = (REPO / "docs" / "configuration.md").read_text()
    read = set(re.findall(r"LLMSERVER_[A-Z0-9_]+", source))
    documented = set(re.findall(r"^\| `(LLMSERVER_[A-Z0-9_]+)` \|", docs, flags=re.MULTILINE))
    assert len(read) >= 15
    assert read <= documented, f"undocumented in docs/configuration.md: {sorted(read - documented)}"
