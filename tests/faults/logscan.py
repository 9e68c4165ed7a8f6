"""A check for the fault, fuzz and hostile tests: no full API key in any log file a test produced."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from proxy.auth.apikey import KEY_PREFIX, PUBLIC_ID_LENGTH, SECRET_LENGTH

FULL_KEY = re.compile(rf"{KEY_PREFIX}_[A-Za-z0-9]{{{PUBLIC_ID_LENGTH}}}_[A-Za-z0-9]{{{SECRET_LENGTH}}}".encode())


@pytest.fixture(autouse=True)
def no_secret_in_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    started = time.time()
    yield
    for log in tmp_path_factory.getbasetemp().rglob("*.log"):
        if log.stat().st_mtime >= started - 1:
            found = FULL_KEY.search(log.read_bytes())
            assert found is None, f"a full API key in {log}"
