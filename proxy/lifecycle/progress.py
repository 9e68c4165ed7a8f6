"""Download progress and cancellation through ``huggingface_hub``'s ``tqdm_class`` hook.

Every chunk the client writes calls ``update``: the bytes done are reported, and a cancel that was
asked for raises :class:`DownloadCancelledError` from inside the client's download loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from proxy.lifecycle.errors import DownloadCancelledError


def progress_bar_class(
    report: Callable[[int], Any], cancel: threading.Event, show: bool, on_cancel: Callable[[], None] | None = None
) -> type:
    """A tqdm-like class for ``huggingface_hub``'s ``tqdm_class``: reports bytes, honours ``cancel``
    (``on_cancel`` first, to keep the partial file)."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            self._shown: Any = None
            if show:
                from tqdm import tqdm

                desc = kwargs.get("desc")
                self._shown = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc)

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        def update(self, n: int | float | None = 1) -> None:
            self.n += int(n or 0)
            if self._shown is not None:
                self._shown.update(n)
            report(self.n)
            if cancel.is_set():
                if on_cancel is not None:
                    on_cancel()
                raise DownloadCancelledError("the download was cancelled")

        def close(self) -> None:
            if self._shown is not None:
                self._shown.close()
                self._shown = None

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

    return _Bar
