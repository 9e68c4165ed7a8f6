"""Exceptions of the runtime package (the daemon's own live beside their code).

RuntimeServiceError            base of everything the runtime raises
├── BackendError               a backend could not load or run (``runtime.backends.base``)
├── BusyError                  a model's queue is full or it is not ready (``runtime.daemon.errors``)
├── ModelSpecError             a --model option or load request that does not parse
└── RuntimeClientError         raised by the asyncio client
    ├── RuntimeUnavailableError    daemon down, restarting or unreachable (retry later)
    ├── RuntimeTimeoutError        no answer before the deadline
    └── RuntimeRequestError        the daemon answered ``error`` (has ``code``)
"""

from __future__ import annotations


class RuntimeServiceError(Exception):
    """Base of every runtime exception."""


class ModelSpecError(RuntimeServiceError, ValueError):
    """A model specification that does not parse."""


class RuntimeClientError(RuntimeServiceError):
    """Base of the client's exceptions."""


class RuntimeUnavailableError(RuntimeClientError):
    """The daemon is not reachable, went away, or restarted mid-request."""


class RuntimeTimeoutError(RuntimeClientError):
    """The daemon did not answer in time."""


class RuntimeRequestError(RuntimeClientError):
    """The daemon answered with an ``error`` frame."""

    def __init__(self, code: str, message: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra or {}
