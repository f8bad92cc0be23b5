"""Prometheus counts for hot paths: tallied in plain Python, added to prometheus_client's metrics in batches.

prometheus_client takes a lock per value and walks a histogram's buckets in
Python on every observe: ~8k instructions each, and a gateway request made
three of them (docs/benchmarks.md). A tally adds to a dict or a list
instead; `flush()` moves what was counted into the real metrics, so
rendering and the multiprocess files that workers share stay
prometheus_client's. Every component flushes before each scrape of its
`/metrics` and once a second (the scrape may land on another worker).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left

from prometheus_client import Counter, Histogram

FLUSH_SECONDS = 1.0
_tallies: list[CounterTally | HistogramTally] = []


class CounterTally:
    """`inc(labels)` for a labelled Counter; labels is the tuple of label values, in the metric's order."""

    __slots__ = ("counts", "metric")

    def __init__(self, metric: Counter):
        self.metric = metric
        self.counts: dict[tuple[str, ...], float] = {}
        _tallies.append(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + amount

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for labels, n in counts.items():
            self.metric.labels(*labels).inc(n)


class HistogramTally:
    """`observe(labels, value)` for a labelled Histogram: per label set, a count per bucket and the sum."""

    __slots__ = ("bounds", "cells", "metric")

    def __init__(self, metric: Histogram):
        self.metric = metric
        self.bounds = tuple(metric._upper_bounds)  # ends with +Inf
        self.cells: dict[tuple[str, ...], list[float]] = {}
        _tallies.append(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0] * (len(self.bounds) + 1)  # buckets, then the sum
        cell[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value ("le")
        cell[-1] += value

    def flush(self) -> None:
        cells, self.cells = self.cells, {}
        for labels, cell in cells.items():
            child = self.metric.labels(*labels)
            # prometheus_client keeps a value per bucket (not cumulative) and the sum; it has no public
            # call that adds n observations at once. tests/test_tally.py checks the output matches observe().
            for bucket, n in zip(child._buckets, cell, strict=False):
                if n:
                    bucket.inc(n)
            child._sum.inc(cell[-1])


def flush() -> None:
    """Move every tally into its metric (before a scrape)."""
    for t in _tallies:
        t.flush()


async def flush_forever() -> None:
    """Flush once a second: with workers, another process's scrape reads these counts from the shared files."""
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        flush()
