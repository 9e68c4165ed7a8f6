"""Exceptions of the model lifecycle.

LifecycleError                 base of everything proxy.lifecycle raises
├── DownloadError              a download failed; the message says why and what to do
│   └── DownloadCancelledError the download was cancelled (what was fetched whole is kept)
└── ModelStateError            the action does not fit the model's state (e.g. start before download)
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Base of every lifecycle exception."""


class DownloadError(LifecycleError):
    """A download failed; the message is meant for the operator."""


class DownloadCancelledError(DownloadError):
    """A download was cancelled on request."""


class ModelStateError(LifecycleError):
    """The model is not in a state that allows this action."""
