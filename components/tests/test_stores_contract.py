"""One contract, two implementations: every store test runs against the real server and the embedded one."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from conftest import need_env
from mpaas.stores import (
    EventLog,
    HotStore,
    KafkaEventLog,
    LocalObjectStore,
    MemoryEventLog,
    MemoryHotStore,
    ObjectStore,
    RedisHotStore,
    S3ObjectStore,
)

pytestmark = pytest.mark.contract


@pytest_asyncio.fixture(params=["redis", "memory"])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    store: HotStore = RedisHotStore(need_env("MPAAS_TEST_REDIS_URL")) if request.param == "redis" else MemoryHotStore()
    yield store
    await store.close()


@pytest_asyncio.fixture(params=["kafka", "memory"])
async def events(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    log: EventLog = KafkaEventLog(need_env("MPAAS_TEST_KAFKA")) if request.param == "kafka" else MemoryEventLog()
    await log.start()
    yield log
    await log.close()


@pytest_asyncio.fixture(params=["s3", "local"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store: ObjectStore
    if request.param == "s3":
        # One bucket (a SeaweedFS collection each) for the suite, as a deployment would have.
        store = S3ObjectStore(
            need_env("MPAAS_TEST_S3_ENDPOINT"),
            "mpaas-contract",
            access_key=os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["MPAAS_TEST_S3_SECRET_KEY"],
        )
    else:
        store = LocalObjectStore(tmp_path / "objects")
    await store.ensure_bucket()
    yield PrefixedStore(store, f"{uuid.uuid4().hex[:8]}/")


class PrefixedStore(ObjectStore):
    """Keeps each test's keys apart inside the shared bucket."""

    def __init__(self, inner: ObjectStore, prefix: str):
        self.inner, self.prefix = inner, prefix

    async def ensure_bucket(self) -> None:
        await self.inner.ensure_bucket()

    async def put(self, key, data, *, content_type="application/octet-stream"):  # type: ignore[no-untyped-def]
        return await self.inner.put(self._k(key), data, content_type=content_type)

    async def get(self, key, *, start=0, length=None):  # type: ignore[no-untyped-def]
        return await self.inner.get(self._k(key), start=start, length=length)

    async def stat(self, key):  # type: ignore[no-untyped-def]
        return await self.inner.stat(self._k(key))

    async def delete(self, key):  # type: ignore[no-untyped-def]
        await self.inner.delete(self._k(key))

    async def list(self, prefix=""):  # type: ignore[no-untyped-def]
        return [x.removeprefix(self.prefix) for x in await self.inner.list(self.prefix + prefix)]

    def _k(self, key: str) -> str:
        return self.prefix + key


def k(name: str) -> str:
    return f"contract:{uuid.uuid4().hex[:8]}:{name}"


# --- HotStore ----------------------------------------------------------------------


async def test_set_get_delete(hot: HotStore) -> None:
    key = k("a")
    assert await hot.get(key) is None
    await hot.set(key, b"v1")
    assert await hot.get(key) == b"v1"
    assert await hot.delete(key) is True
    assert await hot.delete(key) is False
    assert await hot.get(key) is None


async def test_ttl_expires(hot: HotStore) -> None:
    key = k("ttl")
    await hot.set(key, b"x", ttl_seconds=0.2)
    assert await hot.get(key) == b"x"
    await asyncio.sleep(0.35)
    assert await hot.get(key) is None


async def test_set_if_absent_is_a_nonce_check(hot: HotStore) -> None:
    key = k("nonce")
    results = await asyncio.gather(*(hot.set_if_absent(key, b"1", ttl_seconds=5) for _ in range(20)))
    assert results.count(True) == 1
    await hot.delete(key)
    assert await hot.set_if_absent(key, b"1", ttl_seconds=5)


async def test_counters(hot: HotStore) -> None:
    key = k("n")
    await asyncio.gather(*(hot.incr(key, 2, ttl_seconds=10) for _ in range(50)))
    assert await hot.incr(key, 0) == 100


async def test_token_bucket_allows_burst_then_refills(hot: HotStore) -> None:
    key = k("bucket")
    taken = [await hot.take_tokens(key, rate=10, burst=5) for _ in range(8)]
    assert taken == [True] * 5 + [False] * 3
    await asyncio.sleep(0.25)  # 10/s refills about two tokens
    assert await hot.take_tokens(key, rate=10, burst=5)
    assert await hot.take_tokens(key, rate=10, burst=5)


async def test_ordered_log_ids_are_monotonic_under_concurrency(hot: HotStore) -> None:
    stream = k("oplog")
    ids = await asyncio.gather(*(hot.append(stream, f"m{i}".encode()) for i in range(50)))
    assert sorted(ids) == list(range(1, 51))
    rows = await hot.read_after(stream, 0, count=100)
    assert [i for i, _ in rows] == list(range(1, 51))
    after = await hot.read_after(stream, 45)
    assert [i for i, _ in after] == [46, 47, 48, 49, 50]


async def test_ordered_log_keeps_the_latest_n(hot: HotStore) -> None:
    stream = k("capped")
    for i in range(10):
        await hot.append(stream, str(i).encode(), max_len=3)
    rows = await hot.read_after(stream, 0)
    assert [v for _, v in rows] == [b"7", b"8", b"9"]
    assert [i for i, _ in rows] == [8, 9, 10]


# --- EventLog ----------------------------------------------------------------------


async def test_publish_consume_in_order_per_key(events: EventLog) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    for i in range(30):
        await events.publish(topic, f"{i}".encode(), key=b"device-1")
    got = [r async for r in events.consume(topic, "g1", max_records=30, idle_timeout=10)]
    assert [int(r.value) for r in got] == list(range(30))


async def test_committed_position_survives_a_consumer_restart(events: EventLog) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    for i in range(10):
        await events.publish(topic, f"{i}".encode(), key=b"k")
    async for r in events.consume(topic, "workers", max_records=4, idle_timeout=10):
        await events.commit("workers", r)
    rest = [int(r.value) async for r in events.consume(topic, "workers", max_records=6, idle_timeout=10)]
    assert rest == [4, 5, 6, 7, 8, 9]  # nothing lost, nothing repeated after the commit
    other = [int(r.value) async for r in events.consume(topic, "other-group", max_records=10, idle_timeout=10)]
    assert other == list(range(10))  # groups are independent


async def test_batches_tell_idle_time_and_commit_where_they_ended(events: EventLog) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    for i in range(12):
        await events.publish(topic, f"{i}".encode(), key=f"k{i % 3}".encode())
    seen: list[int] = []
    empty = 0
    batches = events.batches(topic, "archive", wait=0.3, max_records=5)
    async for batch in batches:
        assert len(batch) <= 5
        if not batch:
            empty += 1  # the topic is quiet: an empty batch comes back within the wait
            if len(seen) == 12:
                break
            continue
        seen += [int(r.value) for r in batch]
        if len(seen) >= 7 and empty == 0:
            await events.commit_batch("archive", batch)  # the last record of every partition in it
    await batches.aclose()
    assert sorted(seen) == list(range(12)) and empty >= 1
    rest = [int(r.value) async for r in events.consume(topic, "archive", max_records=12, idle_timeout=2)]
    committed = sorted(set(range(12)) - set(rest))
    assert committed and len(committed) + len(rest) == 12  # each record either committed or read again, once


# --- ObjectStore -------------------------------------------------------------------


async def test_put_stat_get_ranges(objects: ObjectStore) -> None:
    data = os.urandom(300_000)
    info = await objects.put("apps/demo/pkg-1.bin", data, content_type="application/vnd.android.package-archive")
    st = await objects.stat("apps/demo/pkg-1.bin")
    assert st is not None and st.size == len(data) and st.sha256 == info.sha256
    assert st.content_type == "application/vnd.android.package-archive"
    assert await objects.get("apps/demo/pkg-1.bin") == data
    assert await objects.get("apps/demo/pkg-1.bin", start=1000, length=500) == data[1000:1500]


async def test_missing_objects(objects: ObjectStore) -> None:
    assert await objects.stat("nope/none.bin") is None
    with pytest.raises(KeyError):
        await objects.get("nope/none.bin")


async def test_list_and_delete(objects: ObjectStore) -> None:
    for name in ("a/1", "a/2", "b/1"):
        await objects.put(name, name.encode())
    assert await objects.list("a/") == ["a/1", "a/2"]
    await objects.delete("a/1")
    assert await objects.list("a/") == ["a/2"]


async def test_keys_cannot_escape(objects: ObjectStore) -> None:
    with pytest.raises(ValueError):
        await objects.put("../etc/passwd", b"x")
