"""IOMMU domain ids for RKLLM handles: one per loaded model, process-wide.

The NPU maps each model's memory in an IOMMU domain of about 4 GB, chosen by
``RKLLMExtendParam.base_domain_id``. Two handles in one domain overwrite each
other's mappings, so every loaded model gets its own id from here and gives it
back when it is unloaded.
"""

from __future__ import annotations

import threading

from runtime.backends.base import BackendError

# The rknpu driver (0.9.x) has 16 IOMMU domains.
DOMAIN_COUNT = 16


class DomainAllocator:
    """Hands out the lowest free id, or a requested one if it is free."""

    def __init__(self, count: int = DOMAIN_COUNT) -> None:
        self._count = count
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self, wanted: int | None = None) -> int:
        with self._lock:
            if wanted is not None:
                if not 0 <= wanted < self._count:
                    raise BackendError(f"base_domain_id must be in [0, {self._count - 1}], got {wanted}")
                if wanted in self._used:
                    raise BackendError(f"base_domain_id {wanted} is already used by another loaded model")
                self._used.add(wanted)
                return wanted
            for candidate in range(self._count):
                if candidate not in self._used:
                    self._used.add(candidate)
                    return candidate
        raise BackendError(f"all {self._count} NPU memory domains are in use; unload a model first")

    def release(self, domain_id: int) -> None:
        with self._lock:
            self._used.discard(domain_id)

    def in_use(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._used)


DOMAINS = DomainAllocator()
