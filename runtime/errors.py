"""Exceptions of the runtime package.

RuntimeServiceError            base of everything the runtime raises
├── BackendError               a backend could not load or run (bad file, bad parameter)
├── ModelSpecError             a --model option or load request that does not parse
└── ClientError                raised by the asyncio client
    ├── RuntimeUnavailableError    daemon down, restarting or unreachable (retry later)
    ├── RuntimeTimeoutError        no answer before the deadline
    └── RuntimeRequestError        the daemon answered ``error`` (has ``code``)
"""

from __future__ import annotations


class RuntimeServiceError(Exception):
    """Base of every runtime exception."""


class BackendError(RuntimeServiceError):
    """A backend failed to load a model or to run a request.

    ``code`` is the protocol error code the daemon answers with.
    """

    def __init__(self, message: str, code: str = "backend_error") -> None:
        super().__init__(message)
        self.code = code


class ModelSpecError(RuntimeServiceError, ValueError):
    """A model specification that does not parse."""


class ClientError(RuntimeServiceError):
    """Base of the client's exceptions."""


class RuntimeUnavailableError(ClientError):
    """The daemon is not reachable, went away, or restarted mid-request."""


class RuntimeTimeoutError(ClientError):
    """The daemon did not answer in time."""


class RuntimeRequestError(ClientError):
    """The daemon answered with an ``error`` frame."""

    def __init__(self, code: str, message: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra or {}
