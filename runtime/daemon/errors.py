"""Errors of the daemon (under ``runtime.api.errors.RuntimeServiceError``, the runtime's one base)."""

from __future__ import annotations

from runtime.api.errors import RuntimeServiceError


class BusyError(RuntimeServiceError):
    """The model's queue is full, or the model is not ready."""
