"""Typed keys for the admin app's resources and per-request values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from argon2 import PasswordHasher

from admin_ui.monitor import SystemMonitor
from proxy.auth.gate import Argon2Gate
from proxy.lifecycle.service import Lifecycle
from proxy.lifecycle.trial import ModelRuntime
from proxy.settings import Settings
from proxy.storage.database import Database
from proxy.storage.usage_report import UsageReports
from proxy.storage.usage_series import UsageSeries


class ModelLister(ModelRuntime, Protocol):
    """What the console needs of the runtime client: its list of models with their state (and
    memory), and one short generation for a model's test."""


@dataclass(frozen=True)
class Principal:
    """Who makes this request: a logged-in user (``via == "session"``) or an admin API token."""

    name: str
    role: str
    via: str
    user_id: int | None = None
    csrf: str = ""

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


settings_key = web.AppKey("admin_settings", Settings)
db_key = web.AppKey("admin_db", Database)
runtime_key = web.AppKey("admin_runtime", ModelLister)
hasher_key = web.AppKey("admin_hasher", PasswordHasher)
monitor_key = web.AppKey("admin_monitor", SystemMonitor)
reports_key = web.AppKey("admin_reports", UsageReports)
series_key = web.AppKey("admin_series", UsageSeries)
login_gate_key = web.AppKey("admin_login_gate", Argon2Gate)
lifecycle_key = web.AppKey("admin_lifecycle", Lifecycle)

principal_key = web.RequestKey("admin_principal", Principal)
client_addr_key = web.RequestKey("admin_client_addr", str)
