"""The proxy's settings: one frozen object read once from ``LLMSERVER_*`` environment variables.

Every variable is described in ``docs/configuration.md`` (a test checks it). A malformed value
raises :class:`SettingsError` naming the variable; secret values never appear in messages or in
the object's ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from proxy.auth.apikey import ARGON2_PROFILES
from proxy.auth.clientaddr import Network, parse_networks
from proxy.errors import ProxyError, SettingsError
from proxy.storage.budget import zone
from proxy.storage.database import SYNCHRONOUS_MODES, resolve_path
from proxy.storage.errors import ValidationError, VaultError
from proxy.storage.vault import Vault, parse_hex_key
from runtime.api.transport import default_endpoint

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite://data/app.db"
DEFAULT_BIND_ADDRESS = "0.0.0.0:8443"
MODEL_CONFIG_NAME = "models"  # <data directory>/models/<name>.json unless LLMSERVER_MODEL_CONFIG_DIR says
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Everything the proxy is configured with. Build it with :func:`load_settings`."""

    database_url: str = DEFAULT_DATABASE_URL
    database_path: Path = field(default_factory=lambda: resolve_path(DEFAULT_DATABASE_URL))
    encryption_key: bytes | None = field(default=None, repr=False)
    session_key: bytes | None = field(default=None, repr=False)
    hf_cache: Path | None = None
    model_config_dir: Path = field(
        default_factory=lambda: resolve_path(DEFAULT_DATABASE_URL).parent / MODEL_CONFIG_NAME
    )
    bind_host: str = "0.0.0.0"
    bind_port: int = 8443
    runtime_endpoint: str = field(default_factory=default_endpoint)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure_http: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    max_body_bytes: int = 1024 * 1024
    max_tokens_limit: int = 8192
    default_max_tokens: int = 512
    argon2_concurrency: int = 2
    argon2_profile: str = "default"
    request_timeout: float = 300.0
    db_synchronous: str = "NORMAL"
    trusted_proxies: tuple[Network, ...] = ()
    budget_timezone: str = "UTC"
    usage_retention_days: float | None = None
    session_idle_timeout: float = 1800.0
    session_max_age: float = 43200.0
    secure_cookies: bool = False  # the console is reached over https (a TLS-terminating reverse proxy)
    admin_bind_host: str = "127.0.0.1"
    admin_bind_port: int = 8444
    monitor_root: Path = Path("/")  # where the dashboard reads /proc and /sys (a container's host mount)

    @property
    def budget_zone(self) -> ZoneInfo | timezone:
        return zone(self.budget_timezone)

    hf_inference_provider: str = "hf-inference"
    hf_inference_url: str = "https://router.huggingface.co/hf-inference"
    hf_inference_timeout: float = 120.0
    max_audio_bytes: int = 25 * 1024 * 1024
    header_timeout: float = 20.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 30.0
    write_timeout: float = 60.0
    max_connections: int = 0  # 0: derived from the open-file limit (see proxy.connection)
    cors_origins: frozenset[str] = frozenset()  # browser origins allowed to call the API; empty = no CORS
    metrics_token: str | None = field(default=None, repr=False)  # set: /metrics wants it as a bearer token

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def bind_is_loopback(self) -> bool:
        if self.bind_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.bind_host).is_loopback
        except ValueError:
            return False

    def check_bind_security(self) -> None:
        """Refuse plain HTTP on a non-loopback address unless explicitly allowed."""
        if self.tls_enabled or self.bind_is_loopback or self.allow_insecure_http:
            return
        raise SettingsError(
            f"LLMSERVER_BIND_ADDRESS={self.bind_host}:{self.bind_port} is not a loopback address and no TLS "
            "certificate is configured: API keys would cross the network in clear text. Set "
            "LLMSERVER_TLS_CERT and LLMSERVER_TLS_KEY, bind to 127.0.0.1, or set "
            "LLMSERVER_ALLOW_INSECURE_HTTP=1 when a TLS-terminating reverse proxy sits in front."
        )

    def vault(self) -> Vault:
        """The AES-GCM vault for Hugging Face tokens; needs ``LLMSERVER_ENCRYPTION_KEY``."""
        if self.encryption_key is None:
            raise VaultError(
                "LLMSERVER_ENCRYPTION_KEY is not set: it is needed to store or read Hugging Face tokens (the "
                "service's key: its credential, or the data directory's secrets.env)"
            )
        return Vault(self.encryption_key)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``LLMSERVER_*`` variable (``env`` defaults to ``os.environ``)."""
    env = with_credentials(os.environ if env is None else env)
    reader = _Reader(env)
    database_url = reader.text("LLMSERVER_DATABASE_URL", DEFAULT_DATABASE_URL)
    host, port = reader.parse("LLMSERVER_BIND_ADDRESS", parse_bind_address, DEFAULT_BIND_ADDRESS)
    tls_cert, tls_key = _tls_files(reader)
    runtime_endpoint = reader.text("LLMSERVER_RUNTIME_ENDPOINT", "") or default_endpoint(env)
    if not runtime_endpoint.startswith(("ipc://", "tcp://")):
        raise SettingsError(f"LLMSERVER_RUNTIME_ENDPOINT={runtime_endpoint!r}: must start with ipc:// or tcp://")
    speech = _speech_settings(reader)
    database_path = reader.parse("LLMSERVER_DATABASE_URL", resolve_path, database_url)
    return Settings(
        database_url=database_url,
        database_path=database_path,
        encryption_key=reader.secret_hex("LLMSERVER_ENCRYPTION_KEY", 32),
        session_key=reader.secret_hex("LLMSERVER_SESSION_KEY", 64),
        hf_cache=reader.optional_path("LLMSERVER_HF_CACHE"),
        # Beside the database, whatever the working directory (issue 25).
        model_config_dir=reader.optional_path("LLMSERVER_MODEL_CONFIG_DIR") or database_path.parent / MODEL_CONFIG_NAME,
        bind_host=host,
        bind_port=port,
        runtime_endpoint=runtime_endpoint,
        tls_cert=tls_cert,
        tls_key=tls_key,
        allow_insecure_http=reader.flag("LLMSERVER_ALLOW_INSECURE_HTTP"),
        log_level=reader.choice("LLMSERVER_LOG_LEVEL", LOG_LEVELS, "INFO"),
        log_format=reader.choice("LLMSERVER_LOG_FORMAT", LOG_FORMATS, "text"),
        max_body_bytes=reader.integer("LLMSERVER_MAX_BODY_BYTES", 1024 * 1024, 1024, 1 << 31),
        max_tokens_limit=reader.integer("LLMSERVER_MAX_TOKENS_LIMIT", 8192, 1, 10_000_000),
        default_max_tokens=reader.integer("LLMSERVER_DEFAULT_MAX_TOKENS", 512, 1, 10_000_000),
        argon2_concurrency=reader.integer("LLMSERVER_ARGON2_CONCURRENCY", 2, 1, 64),
        argon2_profile=reader.choice("LLMSERVER_ARGON2_PROFILE", tuple(ARGON2_PROFILES), "default"),
        request_timeout=reader.number("LLMSERVER_REQUEST_TIMEOUT", 300.0, 1.0, 86_400.0),
        db_synchronous=reader.choice("LLMSERVER_DB_SYNCHRONOUS", SYNCHRONOUS_MODES, "NORMAL"),
        **_admin_settings(reader),
        hf_inference_provider=speech.provider,
        hf_inference_url=speech.url,
        hf_inference_timeout=speech.timeout,
        max_audio_bytes=speech.max_audio_bytes,
        header_timeout=reader.number("LLMSERVER_HEADER_TIMEOUT", 20.0, 1.0, 3600.0),
        body_timeout=reader.number("LLMSERVER_BODY_TIMEOUT", 30.0, 1.0, 3600.0),
        keepalive_timeout=reader.number("LLMSERVER_KEEPALIVE_TIMEOUT", 30.0, 1.0, 3600.0),
        write_timeout=reader.number("LLMSERVER_WRITE_TIMEOUT", 60.0, 1.0, 3600.0),
        max_connections=reader.integer("LLMSERVER_MAX_CONNECTIONS", 0, 0, 1_000_000),
        cors_origins=reader.parse("LLMSERVER_CORS_ORIGINS", parse_origins, ""),
        metrics_token=_metrics_token(reader),
    )


def _metrics_token(reader: _Reader) -> str | None:
    """A bearer token for ``/metrics``: at least 16 visible ASCII characters (never quoted back)."""
    token = (reader.raw("LLMSERVER_METRICS_TOKEN") or "").strip()
    if token and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        raise SettingsError("LLMSERVER_METRICS_TOKEN: must be at least 16 printable ASCII characters without spaces")
    return token or None


HF_INFERENCE_PROVIDERS = ("hf-inference",)


class _SpeechSettings(NamedTuple):
    provider: str
    url: str
    timeout: float
    max_audio_bytes: int


def _speech_settings(reader: _Reader) -> _SpeechSettings:
    """The speech endpoints' upstream (Hugging Face's inference service) and upload limit."""
    provider = reader.choice("LLMSERVER_HF_INFERENCE_PROVIDER", HF_INFERENCE_PROVIDERS, "hf-inference")
    url = reader.text("LLMSERVER_HF_INFERENCE_URL", f"https://router.huggingface.co/{provider}").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"LLMSERVER_HF_INFERENCE_URL={url!r}: must start with http:// or https://")
    return _SpeechSettings(
        provider,
        url,
        reader.number("LLMSERVER_HF_INFERENCE_TIMEOUT", 120.0, 0.1, 3600.0),
        reader.integer("LLMSERVER_MAX_AUDIO_BYTES", 25 * 1024 * 1024, 1024, 1 << 31),
    )


def _admin_settings(reader: _Reader) -> dict[str, Any]:
    """The settings the admin console and its metering features add (issue 9)."""
    tz = reader.text("LLMSERVER_BUDGET_TIMEZONE", "UTC")
    try:
        zone(tz)
    except ValidationError as exc:
        raise SettingsError(f"LLMSERVER_BUDGET_TIMEZONE={tz!r}: {exc}") from None
    retention = reader.raw("LLMSERVER_USAGE_RETENTION_DAYS")
    admin_host, admin_port = reader.parse("LLMSERVER_ADMIN_BIND_ADDRESS", parse_bind_address, "127.0.0.1:8444")
    return {
        "trusted_proxies": reader.parse("LLMSERVER_TRUSTED_PROXIES", parse_networks, ""),
        "budget_timezone": tz,
        "usage_retention_days": None
        if retention is None
        else reader.number("LLMSERVER_USAGE_RETENTION_DAYS", 0.0, 1.0, 36_500.0),
        "session_idle_timeout": reader.number("LLMSERVER_SESSION_IDLE_TIMEOUT", 1800.0, 60.0, 86_400.0),
        "session_max_age": reader.number("LLMSERVER_SESSION_MAX_AGE", 43200.0, 300.0, 30 * 86_400.0),
        "secure_cookies": reader.flag("LLMSERVER_SECURE_COOKIES"),
        "admin_bind_host": admin_host,
        "admin_bind_port": admin_port,
        "monitor_root": reader.parse("LLMSERVER_MONITOR_ROOT", _directory, "/"),
    }


def _directory(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError("no such directory")
    return path


def checked_settings(prog: str, env: Mapping[str, str] | None = None) -> Settings | None:
    """The settings of a command that serves the API, bind address checked (:meth:`Settings.check_bind_security`).

    On a bad setting or an insecure bind, says why on stderr, prefixed with ``prog``, and returns
    None (the command exits with status 2): the operator gets one line, not a traceback.
    """
    try:
        settings = load_settings(env)
        settings.check_bind_security()
    except ProxyError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return None
    return settings


CREDENTIALS = {"LLMSERVER_ENCRYPTION_KEY": "encryption-key", "LLMSERVER_SESSION_KEY": "session-key"}


def with_credentials(env: Mapping[str, str]) -> Mapping[str, str]:
    """Fill unset secret variables from systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``)."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return env
    merged = dict(env)
    for var, name in CREDENTIALS.items():
        path = Path(directory) / name
        if not merged.get(var) and path.is_file():
            merged[var] = path.read_text().strip()
    return merged


def parse_bind_address(value: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port`` or ``[v6]:port``."""
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError("expected [ipv6]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port (or [ipv6]:port)")
        if ":" in host:
            raise ValueError("an IPv6 address must be written in brackets: [::1]:8443")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port_text)


def _tls_files(reader: _Reader) -> tuple[Path | None, Path | None]:
    cert = reader.optional_path("LLMSERVER_TLS_CERT")
    key = reader.optional_path("LLMSERVER_TLS_KEY")
    if (cert is None) != (key is None):
        raise SettingsError("LLMSERVER_TLS_CERT and LLMSERVER_TLS_KEY must be set together (or neither)")
    for name, path in (("LLMSERVER_TLS_CERT", cert), ("LLMSERVER_TLS_KEY", key)):
        if path is not None and not path.is_file():
            raise SettingsError(f"{name}={str(path)!r}: no such file")
    return cert, key


def parse_origins(value: str | None) -> frozenset[str]:
    """``https://a.example, http://localhost:3000`` -> the set; each must be scheme://host[:port]."""
    if not value:
        return frozenset()
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host:
            raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
    return frozenset(origins)


class _Reader:
    """Typed access to the environment; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None  # an empty assignment (``X=`` in an env file) means unset

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def parse(self, name: str, parse: Callable[[str], T], default: str) -> T:
        value = self.raw(name) or default
        try:
            return parse(value)
        except ValueError as exc:
            raise SettingsError(f"{name}={value!r}: {exc}") from None

    def optional_path(self, name: str) -> Path | None:
        value = self.raw(name)
        return None if value is None else Path(value).expanduser()

    def secret_hex(self, name: str, n_bytes: int) -> bytes | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return parse_hex_key(value, n_bytes)
        except ValueError as exc:
            raise SettingsError(f"{name} {exc}; the value is not shown") from None

    def flag(self, name: str) -> bool:
        value = (self.raw(name) or "0").lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(_TRUE + _FALSE)}")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw(name) or default
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r}: expected an integer") from None
        if not low <= number <= high:
            raise SettingsError(f"{name}={value!r}: must be between {low} and {high}")
        return number

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r}: expected a number of seconds") from None
        if not low <= number <= high:  # also refuses nan
            raise SettingsError(f"{name}={value!r}: must be between {low:g} and {high:g}")
        return number
