"""Exceptions of the proxy package.

    ProxyError                     base of everything the proxy raises
    ├── SettingsError              a malformed or missing setting (names the variable, never its secret value)
    ├── AuthenticationError        a malformed, unknown, wrong, revoked or expired API key (``reason``)
    ├── VerifierBusyError          too many first-time key verifications are already waiting (retry later)
    ├── ThrottledError             too many verifications from one client address, or too many failures (429)
    └── ApiError                   an error as OpenAI's API reports it: status, envelope, headers

The storage layer has its own base (``proxy.storage.errors.StorageError``), since it imports nothing
of the rest of the proxy; the error middleware maps what reaches it. Quota and rate-limit refusals
are results, not exceptions (``proxy.storage.usage.QuotaExceeded``,
``proxy.metering.ratelimit.RateDecision``), because they are an ordinary outcome of admission.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class ProxyError(Exception):
    """Base of every proxy exception."""


class SettingsError(ProxyError, ValueError):
    """A setting that is malformed, missing or inconsistent with another one."""


class AuthenticationError(ProxyError):
    """An API key was refused; ``reason`` says why (for logs, not for clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid API key ({reason})")
        self.reason = reason


class VerifierBusyError(ProxyError):
    """Too many first-time key verifications are queued; the client should retry later."""


class ThrottledError(ProxyError):
    """A verification refused or failed while its client address (or address and key) was throttled:
    the client should slow down and retry after ``retry_after`` seconds (a 429, never a 401)."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = max(1, retry_after)


class ApiError(ProxyError):
    """An error as the OpenAI API reports it. Handlers raise these; only the error middleware turns
    them into the envelope ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unavailable(message: str, retry_after: int = 1) -> ApiError:
    return ApiError(
        503,
        message,
        type="server_error",
        code="service_unavailable",
        headers={"retry-after": str(retry_after)},
    )
