"""Runtime protection that outlives config swaps: concurrency limits and circuit breakers.

State is keyed by names (API, app, upstream, endpoint URL), so an edited
resource keeps its counters and an ejected endpoint stays ejected.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from ..api.gateway import CircuitBreaker

log = logging.getLogger(__name__)

# With several workers each keeps its own breakers: the pod reports an endpoint ejected when any worker has.
BREAKER_OPEN = Gauge(
    "mpaas_gateway_endpoint_ejected",
    "1 while an endpoint is ejected",
    ["upstream", "endpoint"],
    multiprocess_mode="livemax",
)
EJECTIONS = Counter("mpaas_gateway_endpoint_ejections_total", "Endpoint ejections", ["upstream"])


_NONE: frozenset[str] = frozenset()


class Concurrency:
    """In-flight requests per upstream, against its `maxConcurrency`."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}

    def enter(self, upstream: str, limit: int | None) -> bool:
        n = self.in_flight.get(upstream, 0)
        if limit is not None and n >= limit:
            return False
        self.in_flight[upstream] = n + 1
        return True

    def leave(self, upstream: str) -> None:
        self.in_flight[upstream] = self.in_flight.get(upstream, 1) - 1


@dataclass
class _Window:
    """Per-second buckets of (requests, failures) over the breaker's window."""

    seconds: int
    buckets: deque[list[int]] = field(default_factory=deque)  # [second, total, failed]

    def add(self, failed: bool, now: float) -> tuple[int, int]:
        sec = int(now)
        while self.buckets and self.buckets[0][0] <= sec - self.seconds:
            self.buckets.popleft()
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0])
        self.buckets[-1][1] += 1
        self.buckets[-1][2] += int(failed)
        return sum(b[1] for b in self.buckets), sum(b[2] for b in self.buckets)


class Breakers:
    """Xiaomi-style outlier ejection: an endpoint whose failure share in the window passes the
    threshold (with at least `minimumRequests`) is ejected for `ejectionSeconds`."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], _Window] = {}
        self._ejected: dict[tuple[str, str], float] = {}  # -> until (monotonic)

    def ejected(self, upstream: str, urls: tuple[str, ...]) -> set[str] | frozenset[str]:
        if not self._ejected:
            return _NONE
        now = time.monotonic()
        out = set()
        for url in urls:
            until = self._ejected.get((upstream, url))
            if until is None:
                continue
            if until > now:
                out.add(url)
            else:  # cool-down over: back in rotation with a fresh window
                del self._ejected[(upstream, url)]
                self._windows.pop((upstream, url), None)
                BREAKER_OPEN.labels(upstream, url).set(0)
        return out

    def record(self, upstream: str, url: str, cfg: CircuitBreaker | None, failed: bool) -> None:
        if cfg is None:
            return
        key = (upstream, url)
        window = self._windows.get(key)
        if window is None or window.seconds != cfg.window_seconds:
            window = self._windows[key] = _Window(cfg.window_seconds)
        total, failures = window.add(failed, time.time())
        if failed and total >= cfg.minimum_requests and failures * 100 >= cfg.error_threshold_percent * total:
            self._ejected[key] = time.monotonic() + cfg.ejection_seconds
            self._windows.pop(key, None)
            BREAKER_OPEN.labels(upstream, url).set(1)
            EJECTIONS.labels(upstream).inc()
            log.warning(
                "ejected %s of upstream %s for %ss: %d of %d requests failed",
                url,
                upstream,
                cfg.ejection_seconds,
                failures,
                total,
            )
