"""Issue 14: a failed accept() (EMFILE) is one warning a minute, never a traceback per connection."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from proxy.connection.limits import AcceptErrorFilter, connection_limit


def test_failed_accepts_are_one_warning_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        accept_filter = AcceptErrorFilter()
        caplog.set_level(logging.WARNING)
        for _ in range(100):
            error = OSError(errno.EMFILE, "Too many open files")
            accept_filter(loop, {"message": "socket.accept() out of system resource", "exception": error})
    finally:
        loop.close()
    records = [r for r in caplog.records if "accept" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None


def test_the_connection_bound_stays_below_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the reserve, and room for a burst of accepted connections before any can be closed (issue 18)
    assert connection_limit(0) == max(16, soft - 128 - 128)
    assert connection_limit(10) == 10
    assert connection_limit(10**9) == max(16, soft - 128 - 128)
