"""The shared hot store through Redis outages: a hung Redis, a restarted one, nonces across an outage.

Redis is real; a loopback proxy in front of it (hack/tcpproxy.py) makes it hang or drops its connections.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
import pytest_asyncio

from conftest import eventually, need_env
from mpaas.stores import FallbackHotStore, RedisHotStore
from tcpproxy import TcpProxy

pytestmark = pytest.mark.contract


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    target = urlparse(need_env("MPAAS_TEST_REDIS_URL"))
    p = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await p.start()
    yield p
    p.resume()
    await p.cut()


def through(proxy: TcpProxy, **options: float) -> FallbackHotStore:
    return FallbackHotStore(RedisHotStore(f"redis://127.0.0.1:{proxy.port}/0"), **options)  # type: ignore[arg-type]


async def timed(coro: object) -> float:
    started = time.monotonic()
    await coro  # type: ignore[misc]
    return time.monotonic() - started


async def test_a_hung_redis_costs_the_requests_in_flight_one_budget(proxy: TcpProxy) -> None:
    store = through(proxy, call_budget_seconds=0.2, retry_seconds=5)
    key = f"t:{uuid.uuid4().hex}"
    assert await store.take_tokens(key, rate=100, burst=100)  # connections pooled
    proxy.hang()
    in_flight = await asyncio.gather(*(timed(store.take_tokens(key, rate=100, burst=100)) for _ in range(20)))
    assert max(in_flight) < 0.6, in_flight  # the budget, not the 2 s socket timeout
    assert store.degraded
    after = [await timed(store.take_tokens(key, rate=100, burst=100)) for _ in range(20)]
    assert max(after) < 0.15, after  # the breaker is open: local state at once, not the 0.2 s budget
    await store.close()


async def test_dropped_pooled_connections_are_replaced_without_an_outage(proxy: TcpProxy) -> None:
    changes: list[bool] = []
    store = FallbackHotStore(RedisHotStore(f"redis://127.0.0.1:{proxy.port}/0"), on_change=changes.append)
    key = f"t:{uuid.uuid4().hex}"
    await asyncio.gather(*(store.incr(key) for _ in range(5)))  # several pooled connections
    await proxy.cut()  # as a Redis restart does: every connection closed by the server
    await proxy.restore()
    for _ in range(10):
        await store.incr(key)
    assert not store.degraded and changes == [], changes
    assert int(await store.shared.get(key) or 0) == 15
    await store.close()


async def test_nonces_keep_their_meaning_across_an_outage(proxy: TcpProxy) -> None:
    store = through(proxy, call_budget_seconds=0.2, retry_seconds=0.5)
    other_replica = FallbackHotStore(RedisHotStore(need_env("MPAAS_TEST_REDIS_URL")))
    before, during = f"n:{uuid.uuid4().hex}", f"n:{uuid.uuid4().hex}"
    assert await store.set_if_absent(before, b"1", ttl_seconds=60)
    proxy.hang()
    # This process records what it sees during the outage, and still knows what it saw before it.
    assert await store.set_if_absent(during, b"1", ttl_seconds=60)
    assert store.degraded
    assert not await store.set_if_absent(during, b"1", ttl_seconds=60)
    assert not await store.set_if_absent(before, b"1", ttl_seconds=60)
    proxy.resume()
    await asyncio.sleep(0.6)
    await eventually(lambda: store.ping(), timeout=5)
    await store.incr(f"t:{uuid.uuid4().hex}")  # a call that finds Redis back
    assert not store.degraded
    # What was taken during the outage reaches Redis: no other replica accepts it afterwards.
    await eventually(lambda: store.shared.get(during), timeout=5, what="the outage's nonces written back")
    assert not await other_replica.set_if_absent(during, b"1", ttl_seconds=60)
    assert not await other_replica.set_if_absent(before, b"1", ttl_seconds=60)
    await store.close()
    await other_replica.close()
