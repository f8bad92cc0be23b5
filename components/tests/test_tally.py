"""Tallied metrics render exactly as the same observations made through prometheus_client would."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mpaas.tally import CounterTally, HistogramTally

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.01, 0.1, 1)
VALUES = [0.0005, 0.001, 0.0011, 0.05, 0.1, 0.5, 3.0, 7.25, 0.0, 0.01]


def _pair() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("t_requests_total", "requests", ["op", "code"], registry=registry)
    histogram = Histogram("t_seconds", "latency", ["op"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def _samples(registry: CollectorRegistry) -> list[str]:
    # created timestamps differ between the two registries
    return [ln for ln in generate_latest(registry).decode().splitlines() if "_created" not in ln]


def test_tallies_render_like_direct_observations() -> None:
    direct, d_counter, d_hist = _pair()
    tallied, t_counter, t_hist = _pair()
    counts, latencies = CounterTally(t_counter), HistogramTally(t_hist)
    for i, v in enumerate(VALUES):
        op, code = ("a", "1000") if i % 3 else ("b", "4001")
        d_counter.labels(op, code).inc()
        d_hist.labels(op).observe(v)
        counts.inc((op, code))
        latencies.observe((op,), v)
    assert 'op="a"' not in generate_latest(tallied).decode()  # nothing reaches the metric before a flush
    counts.flush()
    latencies.flush()
    assert _samples(tallied) == _samples(direct)
    # A second batch adds to the first.
    for v in VALUES[:4]:
        d_hist.labels("a").observe(v)
        latencies.observe(("a",), v)
    latencies.flush()
    latencies.flush()  # an empty flush changes nothing
    assert _samples(tallied) == _samples(direct)
