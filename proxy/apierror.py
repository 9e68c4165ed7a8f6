"""``ApiError``: an error as the OpenAI API reports it, with its HTTP status and headers.

Handlers raise these (or domain errors that the error middleware maps to them);
only the middleware turns them into the envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from proxy.errors import ProxyError


class ApiError(ProxyError):
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
