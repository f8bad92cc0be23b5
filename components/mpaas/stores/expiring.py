"""A dict whose entries expire, for the embedded twins of the Redis roles."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")

# Due entries removed per write, at most: more than the one a write can add, so removal keeps up.
_SWEEP_PER_WRITE = 16


class ExpiringMap(Generic[V]):
    """Expired entries are hidden at once and removed as later writes happen, as Redis does.

    A heap holds (expiry, key) for every write with a TTL; a refreshed TTL leaves its old heap item
    behind, dropped when it comes due. Memory stays bounded by the writes made within the TTLs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._data: dict[str, tuple[V, float | None]] = {}
        self._due: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """Entries held, expired or not (what the memory is spent on)."""
        return len(self._data)

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= self.clock():
            del self._data[key]
            return None
        return item[0]

    def set(self, key: str, value: V, *, ttl_seconds: float | None = None, keep_ttl: bool = False) -> None:
        """Store `value` for `ttl_seconds`; with `keep_ttl` a live entry that has an expiry keeps it.

        `keep_ttl` gives Redis's write-then-`PEXPIRE NX`: the TTL set at creation is not extended.
        """
        old = self._data.get(key) if keep_ttl else None
        if old is not None and old[1] is not None and old[1] > self.clock():
            self._data[key] = (value, old[1])
        else:
            expires = self.clock() + ttl_seconds if ttl_seconds else None
            self._data[key] = (value, expires)
            if expires is not None:
                heapq.heappush(self._due, (expires, key))
        self._sweep()

    def pop(self, key: str) -> V | None:
        value = self.get(key)
        self._data.pop(key, None)
        return value

    def _sweep(self) -> None:
        now, due, data = self.clock(), self._due, self._data
        for _ in range(_SWEEP_PER_WRITE):
            if not due or due[0][0] > now:
                return
            expires, key = heapq.heappop(due)
            item = data.get(key)
            if item is not None and item[1] == expires:
                del data[key]
