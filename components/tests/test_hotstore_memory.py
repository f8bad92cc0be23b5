"""The in-memory hot store (the default, and the fallback while Redis is away) gives expired keys back."""

import pytest

from mpaas.stores import MemoryHotStore

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_expired_nonces_are_removed_by_later_writes() -> None:
    clock = Clock()
    store = MemoryHotStore(clock=clock)
    for i in range(1000):
        assert await store.set_if_absent(f"nonce:a:w:{i}", b"1", ttl_seconds=60)
    assert len(store) == 1000
    clock.now += 61  # all of them expired; nobody reads them again
    for i in range(1000):
        assert await store.set_if_absent(f"nonce:a:w:new-{i}", b"1", ttl_seconds=60)
    assert len(store) == 1000  # the old thousand are gone, not just hidden
    assert not await store.set_if_absent("nonce:a:w:new-5", b"1", ttl_seconds=60)  # still a replay check


async def test_sweep_keeps_keys_rewritten_with_a_later_expiry_and_those_without_one() -> None:
    clock = Clock()
    store = MemoryHotStore(clock=clock)
    await store.set("kept", b"1", ttl_seconds=5)
    await store.set("forever", b"2")
    await store.set("kept", b"3", ttl_seconds=500)  # moved to a later second
    await store.incr("counter", ttl_seconds=5)
    clock.now += 10
    for i in range(100):
        await store.set(f"filler-{i}", b"x", ttl_seconds=1)
    assert await store.get("kept") == b"3" and await store.get("forever") == b"2"
    assert await store.get("counter") is None
    clock.now += 10
    for _ in range(50):  # rate-limit buckets rewritten on every call are filed once per second, not per call
        await store.take_tokens("bucket", rate=100, burst=10)
    assert len(store) <= 3 + 1  # kept, forever, bucket (and at most one filler not yet swept)
