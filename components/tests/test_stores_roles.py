"""The stores by role (inboxes and oplogs, routes, counters, whitelists, large objects): each assertion
runs against the real server and the embedded twin. Keys carry a fresh uuid: the Redis and the bucket
are shared with other tests."""

import asyncio
import hashlib
import os
import re
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from conftest import free_port, need_env
from mpaas.stores import (
    Counters,
    LocalObjectStore,
    LogFull,
    MemberSets,
    MemoryCounters,
    MemoryMemberSets,
    MemoryRouteTable,
    MemorySequencedLog,
    ObjectStore,
    RedisCounters,
    RedisMemberSets,
    RedisRouteTable,
    RedisSequencedLog,
    RouteTable,
    S3ObjectStore,
    SequencedLog,
    open_objectstore,
    redis_common,
)
from mpaas.stores import counters as counters_module
from mpaas.stores import hotstore as hotstore_module
from mpaas.stores import presence as presence_module
from mpaas.stores import seqlog as seqlog_module
from mpaas.stores import sets as sets_module
from mpaas.stores.expiring import ExpiringMap
from mpaas.stores.redis_common import slot

contract = pytest.mark.contract


def prefix() -> str:
    return f"roles:{uuid.uuid4().hex[:10]}:"


# --- fixtures ------------------------------------------------------------------------

MakeLog = Callable[..., SequencedLog]


@pytest_asyncio.fixture(params=["redis", "memory"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[MakeLog]:
    made: list[SequencedLog] = []

    def make(**options: Any) -> SequencedLog:
        log: SequencedLog = (
            RedisSequencedLog(need_env("MPAAS_TEST_REDIS_URL"), prefix=prefix(), **options)
            if request.param == "redis"
            else MemorySequencedLog(**options)
        )
        made.append(log)
        return log

    yield make
    for log in made:
        await log.close()


@pytest_asyncio.fixture(params=["redis", "memory"])
async def routes(request: pytest.FixtureRequest) -> AsyncIterator[RouteTable]:
    table: RouteTable = (
        RedisRouteTable(need_env("MPAAS_TEST_REDIS_URL"), prefix=prefix())
        if request.param == "redis"
        else MemoryRouteTable()
    )
    yield table
    await table.close()


@pytest_asyncio.fixture(params=["redis", "memory"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    store: Counters = (
        RedisCounters(need_env("MPAAS_TEST_REDIS_URL"), prefix=prefix())
        if request.param == "redis"
        else MemoryCounters(prefix=prefix())
    )
    yield store
    await store.close()


@pytest_asyncio.fixture(params=["redis", "memory"])
async def sets(request: pytest.FixtureRequest) -> AsyncIterator[MemberSets]:
    store: MemberSets = (
        RedisMemberSets(need_env("MPAAS_TEST_REDIS_URL"), prefix=prefix())
        if request.param == "redis"
        else MemoryMemberSets()
    )
    yield store
    await store.close()


def _serve_signed(store: LocalObjectStore) -> web.Application:
    """The route a component puts in front of a local folder: presigned URLs checked with `verify`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        key = unquote(request.match_info["key"])
        if not store.verify(request.method, key, request.query):
            raise web.HTTPForbidden()
        if request.method == "PUT":
            await store.put(key, await request.read())
            return web.Response(status=200)
        try:
            return web.Response(body=await store.get(key))
        except KeyError:
            raise web.HTTPNotFound() from None

    app = web.Application()
    app.router.add_route("GET", "/objects/{key:.+}", handle)
    app.router.add_route("PUT", "/objects/{key:.+}", handle)
    return app


@pytest_asyncio.fixture(params=["s3", "local"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "s3":
        store = S3ObjectStore(
            need_env("MPAAS_TEST_S3_ENDPOINT"),
            "mpaas-contract",
            access_key=os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["MPAAS_TEST_S3_SECRET_KEY"],
        )
        await store.ensure_bucket()
        yield store
        return
    port = free_port()
    local = LocalObjectStore(tmp_path / "objects", url_base=f"http://127.0.0.1:{port}/objects")
    await local.ensure_bucket()
    runner = web.AppRunner(_serve_signed(local))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield local
    finally:
        await runner.cleanup()


def okey(name: str) -> str:
    return f"roles/{uuid.uuid4().hex[:10]}/{name}"


# --- SequencedLog: the one mechanism ------------------------------------------------


@contract
async def test_sequence_numbers_are_assigned_atomically_and_read_in_order(make_log: MakeLog) -> None:
    log = make_log(max_len=100, overflow="reject")
    seqs = await asyncio.gather(*(log.append("dev-1", f"m{i}".encode()) for i in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    batch = await log.read("dev-1", after=0, count=100)
    assert [s for s, _ in batch.entries] == list(range(1, 51))
    assert {v for _, v in batch.entries} == {f"m{i}".encode() for i in range(50)}
    assert batch.last_seq == 50
    page = await log.read("dev-1", after=10, count=5)
    assert [s for s, _ in page.entries] == [11, 12, 13, 14, 15] and page.after == 10
    assert (await log.read("other", after=0)).entries == [] and (await log.read("other", after=0)).last_seq == 0


@contract
async def test_a_fan_out_appends_to_each_log_in_one_call(make_log: MakeLog) -> None:
    from mpaas.stores.seqlog import LogFull

    log = make_log(max_len=2, overflow="reject", idle_ttl_seconds=60)
    await log.append("full", b"1")
    await log.append("full", b"2")
    await log.append("b", b"earlier")
    out = await log.append_many([("a", b"x", 30), ("b", b"x", None), ("full", b"x", 30), ("a", b"y", 30)])
    assert out[:2] == [1, 2] and isinstance(out[2], LogFull) and out[3] == 2
    assert [v for _, v in (await log.read("a", after=0)).entries] == [b"x", b"y"]
    assert [v for _, v in (await log.read("b", after=0)).entries] == [b"earlier", b"x"]
    with pytest.raises(ValueError, match="idle log"):  # a TTL past the log's idle time, as for one append
        await log.append_many([("a", b"z", 3600)])
    assert await log.ack_many([("a", "device", 1), ("b", "device", 9), ("a", "device", 0)]) == [1, 2, 1]
    assert [s for s, _ in (await log.read("a", after=0)).entries] == [2]  # 1 acked by its only reader: dropped


@contract
async def test_a_dedupe_id_appends_once_until_its_entry_expires(make_log: MakeLog) -> None:
    log = make_log(max_len=10, overflow="drop_oldest", idle_ttl_seconds=60)
    first = await log.append("d", b"m1", ttl_seconds=30, dedupe="msg-1")
    assert await log.append("d", b"m1 again", ttl_seconds=30, dedupe="msg-1") == first  # a retried send
    other = await log.append("d", b"m2", ttl_seconds=30, dedupe="msg-2")
    assert other == first + 1
    out = await log.append_many([("d", b"m2", 30), ("e", b"m2", 30)], dedupe="msg-2")
    assert out[0] == other and out[1] == 1  # "e" had not seen msg-2
    assert [v for _, v in (await log.read("d", after=0)).entries] == [b"m1", b"m2"]
    await log.ack("d", "device", other)  # acked and dropped: the id is still remembered for its TTL
    assert await log.append("d", b"m2", ttl_seconds=30, dedupe="msg-2") == other
    assert (await log.read("d", after=0)).entries == []
    short = await log.append("s", b"x", ttl_seconds=0.2, dedupe="once")
    await asyncio.sleep(0.4)
    assert await log.append("s", b"x", ttl_seconds=0.2, dedupe="once") == short + 1  # past its TTL: a new one


@contract
async def test_time_numbers_never_repeat_across_a_log_removed_and_created_again(make_log: MakeLog) -> None:
    import time

    log = make_log(max_len=10, overflow="drop_oldest", idle_ttl_seconds=1, time_numbers=True)
    before = int(time.time() * 1000) * 1000
    first = await log.append("d", b"a")
    assert first > before and await log.append("d", b"b") == first + 1
    await log.ack("d", "device", first + 1)
    await asyncio.sleep(1.3)  # idle: removed whole
    again = await log.append("d", b"new")
    assert again > first + 1  # an old cursor is below every new number: nothing new is skipped
    assert [v for _, v in (await log.read("d", after=first + 1)).entries] == [b"new"]


@contract
async def test_values_are_bytes_kept_exactly(make_log: MakeLog) -> None:
    log = make_log(max_len=10, overflow="reject")
    values = [bytes(range(256)), b"", b"1:2:3", "héllo".encode()]
    for v in values:
        await log.append("bin", v)
    assert [v for _, v in (await log.read("bin", after=0)).entries] == values


@contract
async def test_inbox_pull_after_ack_and_acked_entries_are_dropped(make_log: MakeLog) -> None:
    inbox = make_log(max_len=100, overflow="drop_oldest", idle_ttl_seconds=60)
    for i in range(1, 6):
        await inbox.append("device-a", f"msg{i}".encode(), ttl_seconds=30)
    first = await inbox.read("device-a", reader="device")
    assert [s for s, _ in first.entries] == [1, 2, 3, 4, 5] and first.after == 0
    assert await inbox.ack("device-a", "device", 3) == 3
    assert await inbox.length("device-a") == 2  # 1..3 dropped once acked
    again = await inbox.read("device-a", reader="device")
    assert [(s, v) for s, v in again.entries] == [(4, b"msg4"), (5, b"msg5")] and again.after == 3
    assert await inbox.ack("device-a", "device", 2) == 3  # a late, smaller ack never moves back
    assert await inbox.ack("device-a", "device", 99) == 5  # nor past the last number
    assert await inbox.cursor("device-a", "device") == 5
    assert (await inbox.read("device-a", reader="device")).entries == []
    assert await inbox.append("device-a", b"msg6", ttl_seconds=30) == 6  # numbers go on after trimming


@contract
async def test_each_entry_expires_on_its_own_ttl(make_log: MakeLog) -> None:
    inbox = make_log(max_len=10, overflow="reject", idle_ttl_seconds=30)
    await inbox.append("d", b"short", ttl_seconds=1.0)
    await inbox.append("d", b"long", ttl_seconds=20)
    await inbox.append("d", b"short too", ttl_seconds=1.0)
    assert await inbox.length("d") == 3
    await asyncio.sleep(1.3)
    batch = await inbox.read("d", reader="device")
    assert batch.entries == [(2, b"long")] and batch.last_seq == 3  # a gap: 1 and 3 expired unread
    assert await inbox.length("d") == 1


@contract
async def test_full_inbox_drops_its_oldest_entries(make_log: MakeLog) -> None:
    inbox = make_log(max_len=3, overflow="drop_oldest")
    for i in range(1, 6):
        assert await inbox.append("busy", f"{i}".encode()) == i
    batch = await inbox.read("busy", reader="device")
    assert batch.entries == [(3, b"3"), (4, b"4"), (5, b"5")]  # the newest win; 1 and 2 evicted
    assert await inbox.length("busy") == 3


@contract
async def test_full_log_rejects_until_acks_or_expiry_make_room(make_log: MakeLog) -> None:
    oplog = make_log(max_len=3, overflow="reject")
    for i in range(3):
        await oplog.append("stream", f"{i}".encode())
    with pytest.raises(LogFull):
        await oplog.append("stream", b"one too many")
    assert (await oplog.read("stream", after=0)).last_seq == 3  # the rejected one took no number
    await oplog.ack("stream", "reader", 1)  # one acked: room for one
    assert await oplog.append("stream", b"fits") == 4
    with pytest.raises(LogFull):
        await oplog.append("stream", b"full again")

    for i in range(3):
        await oplog.append("expiring", f"{i}".encode(), ttl_seconds=1.0)
    with pytest.raises(LogFull):
        await oplog.append("expiring", b"x")
    await asyncio.sleep(1.3)
    assert await oplog.append("expiring", b"room after expiry") == 4


@contract
async def test_oplog_readers_have_their_own_cursors(make_log: MakeLog) -> None:
    oplog = make_log(max_len=1000, overflow="reject")
    assert await oplog.add_reader("user-7:notes", "phone", at=0) == 0
    assert await oplog.add_reader("user-7:notes", "tablet", at=0) == 0
    for i in range(1, 6):
        await oplog.append("user-7:notes", f"op{i}".encode())
    await oplog.ack("user-7:notes", "phone", 5)
    await oplog.ack("user-7:notes", "tablet", 2)
    assert await oplog.length("user-7:notes") == 3  # kept until the slowest reader acks
    assert [s for s, _ in (await oplog.read("user-7:notes", reader="tablet")).entries] == [3, 4, 5]
    assert (await oplog.read("user-7:notes", reader="phone")).entries == []

    assert await oplog.add_reader("user-7:notes", "laptop") == 5  # joins at the end: only what comes next
    assert await oplog.add_reader("user-7:notes", "laptop", at=0) == 5  # a known reader keeps its cursor
    await oplog.append("user-7:notes", b"op6")
    assert [s for s, _ in (await oplog.read("user-7:notes", reader="laptop")).entries] == [6]

    assert await oplog.remove_reader("user-7:notes", "tablet") is True
    assert await oplog.remove_reader("user-7:notes", "tablet") is False
    assert await oplog.length("user-7:notes") == 1  # 3..5 go with the slowest reader; 6 waits for two
    assert await oplog.cursor("user-7:notes", "tablet") is None


@contract
async def test_an_idle_log_goes_away_whole(make_log: MakeLog) -> None:
    inbox = make_log(max_len=10, overflow="drop_oldest", idle_ttl_seconds=0.3)
    await inbox.append("gone", b"a", ttl_seconds=0.3)
    await inbox.append("gone", b"b", ttl_seconds=0.3)
    await inbox.ack("gone", "device", 1)
    await asyncio.sleep(0.5)
    batch = await inbox.read("gone", after=2)
    assert batch.last_seq == 0 < batch.after  # a client holding cursor 2 sees the log started over
    assert await inbox.cursor("gone", "device") is None
    assert await inbox.append("gone", b"c", ttl_seconds=0.3) == 1


@contract
async def test_log_arguments_are_checked(make_log: MakeLog) -> None:
    with pytest.raises(ValueError):
        make_log(max_len=0, overflow="reject")
    with pytest.raises(ValueError):
        make_log(max_len=10, overflow="block")
    log = make_log(max_len=10, overflow="reject", idle_ttl_seconds=10)
    with pytest.raises(ValueError):
        await log.append("x", b"v", ttl_seconds=11)  # would outlive its idle log
    for bad in ("", "a{b", "a}b"):
        with pytest.raises(ValueError):
            await log.append(bad, b"v")
    with pytest.raises(ValueError):
        await log.read("x")  # neither reader nor after


# --- RouteTable ----------------------------------------------------------------------


@contract
async def test_route_claim_heartbeat_release(routes: RouteTable) -> None:
    before = time.time()
    lease = await routes.claim("dev-1", "link-0", ttl_seconds=30)
    assert lease.previous_pod is None
    assert await routes.route("dev-1") == "link-0"
    seen = await routes.last_seen("dev-1")
    assert seen is not None and before - 1 <= seen <= time.time() + 1
    assert await routes.heartbeat(lease, ttl_seconds=30) is True
    assert await routes.release(lease) is True
    assert await routes.route("dev-1") is None
    assert await routes.release(lease) is False
    assert await routes.last_seen("dev-1") is not None  # kept after going offline
    assert await routes.route("never") is None and await routes.last_seen("never") is None


@contract
async def test_a_stale_connection_cannot_touch_a_newer_route(routes: RouteTable) -> None:
    old = await routes.claim("dev-2", "link-0", ttl_seconds=30)
    new = await routes.claim("dev-2", "link-1", ttl_seconds=30)
    assert new.previous_pod == "link-0"
    assert await routes.heartbeat(old, ttl_seconds=30) is False
    assert await routes.release(old) is False
    assert await routes.route("dev-2") == "link-1"
    # the same pod reconnecting: the first connection's late release leaves the second's route
    again = await routes.claim("dev-2", "link-1", ttl_seconds=30)
    assert await routes.release(new) is False
    assert await routes.route("dev-2") == "link-1"
    assert await routes.release(again) is True


@contract
async def test_routes_expire_without_heartbeats(routes: RouteTable) -> None:
    lease = await routes.claim("dev-3", "link-0", ttl_seconds=1.0)
    await asyncio.sleep(0.5)
    assert await routes.heartbeat(lease, ttl_seconds=1.0)
    await asyncio.sleep(0.7)
    assert await routes.route("dev-3") == "link-0"  # the heartbeat extended it
    await asyncio.sleep(0.6)
    assert await routes.route("dev-3") is None  # the pod stopped beating: no route, nothing to clean
    assert await routes.heartbeat(lease, ttl_seconds=5)  # the connection is alive after all: route again
    assert await routes.route("dev-3") == "link-0"


@contract
async def test_routes_of_many_devices(routes: RouteTable) -> None:
    await routes.claim("m-1", "link-0", ttl_seconds=30)
    await routes.claim("m-3", "link-2", ttl_seconds=30)
    assert await routes.routes(["m-1", "m-2", "m-3"]) == {"m-1": "link-0", "m-3": "link-2"}
    assert await routes.routes([]) == {}
    with pytest.raises(ValueError):
        await routes.claim("m-4", "pod with spaces", ttl_seconds=30)


# --- Counters ------------------------------------------------------------------------


@contract
async def test_counters_add_up_and_expire(counters: Counters) -> None:
    assert await counters.get("hits") == 0
    await asyncio.gather(*(counters.incr("hits", 2, ttl_seconds=30) for _ in range(50)))
    assert await counters.get("hits") == 100
    await counters.incr("short", ttl_seconds=1.0)
    await asyncio.sleep(0.5)
    await counters.incr("short", ttl_seconds=1.0)  # the TTL set at creation is not extended
    await asyncio.sleep(0.7)
    assert await counters.get("short") == 0
    assert await counters.delete("hits", "absent") == 1


@contract
async def test_hyperloglog_counts_distinct_members(counters: Counters) -> None:
    assert await counters.pfcount("uv:{app}:empty") == 0
    assert await counters.pfadd("uv:{app}:d1", ["device-1"]) is True
    assert await counters.pfadd("uv:{app}:d1", ["device-1"]) is False  # already counted
    assert await counters.pfcount("uv:{app}:d1") == 1
    await counters.pfadd("uv:{app}:d1", (f"device-{i}" for i in range(10_000)))
    await counters.pfadd("uv:{app}:d1", (f"device-{i}" for i in range(5_000)))  # repeats add nothing
    assert abs(await counters.pfcount("uv:{app}:d1") - 10_000) <= 200  # 0.81 % standard error; 2 % allowed
    await counters.pfadd("uv:{app}:d2", (f"device-{i}" for i in range(5_000, 30_000)))
    union = await counters.pfcount("uv:{app}:d1", "uv:{app}:d2")
    assert abs(union - 30_000) <= 600
    await counters.pfmerge("uv:{app}:week", "uv:{app}:d1", "uv:{app}:d2", ttl_seconds=60)
    assert await counters.pfcount("uv:{app}:week") == union


@contract
async def test_hyperloglog_keys_of_two_slots_are_refused(counters: Counters) -> None:
    # A Cluster would answer CROSSSLOT: refused everywhere, so it shows in development.
    with pytest.raises(ValueError):
        await counters.pfcount("uv:app-1:d1", "uv:app-1:d2")
    with pytest.raises(ValueError):
        await counters.pfmerge("uv:app-1:week", "uv:app-1:d1")


@contract
async def test_hyperloglog_ttl(counters: Counters) -> None:
    await counters.pfadd("uv:{ttl}:d", ["a", "b"], ttl_seconds=1.0)
    assert await counters.pfcount("uv:{ttl}:d") == 2
    await asyncio.sleep(1.3)
    assert await counters.pfcount("uv:{ttl}:d") == 0


# --- MemberSets ----------------------------------------------------------------------


@contract
async def test_set_membership(sets: MemberSets) -> None:
    assert await sets.add("gray:beta", "u1", "u2", b"u3") == 3
    assert await sets.add("gray:beta", "u1") == 0
    assert await sets.contains("gray:beta", "u2") and await sets.contains("gray:beta", "u3")
    assert not await sets.contains("gray:beta", "u4")
    assert await sets.contains_many("gray:beta", ["u1", "u4", b"u3"]) == [True, False, True]
    assert await sets.size("gray:beta") == 3
    assert await sets.remove("gray:beta", "u1", "u9") == 1
    assert await sets.size("gray:beta") == 2
    assert await sets.size("none") == 0 and not await sets.contains("none", "u1")
    assert await sets.delete("gray:beta") is True


@contract
async def test_exactly_cap_members_admitted_by_concurrent_askers(sets: MemberSets) -> None:
    # Two replicas' worth of askers (a second Redis client on the same keys), 600 devices racing for 100 seats.
    other = (
        RedisMemberSets(need_env("MPAAS_TEST_REDIS_URL"), prefix=sets.prefix)
        if isinstance(sets, RedisMemberSets)
        else sets
    )
    askers = [sets, other]
    results = await asyncio.gather(*(askers[i % 2].add_capped("window:seats", f"dev-{i}", 100) for i in range(600)))
    assert sum(results) == 100 == await sets.size("window:seats")
    admitted = [i for i, ok in enumerate(results) if ok]
    assert await other.add_capped("window:seats", f"dev-{admitted[0]}", 100)  # a seat holder asks again: still in
    assert not await sets.add_capped("window:seats", "dev-late", 100)
    assert await sets.add_capped("window:seats", "dev-late", 101)  # a larger cap opens one more seat
    if other is not sets:
        await other.close()


@contract
async def test_replace_a_whole_set_of_100k_members(sets: MemberSets) -> None:
    await sets.add("push:whitelist", "old-1", "old-2")
    size = await sets.replace("push:whitelist", (f"user-{i}" for i in range(100_000)))
    assert size == 100_000 == await sets.size("push:whitelist")
    assert await sets.contains("push:whitelist", "user-0") and await sets.contains("push:whitelist", "user-99999")
    assert not await sets.contains("push:whitelist", "old-1")
    if isinstance(sets, RedisMemberSets):  # nothing left of the loading key, and the set has no TTL
        assert [k async for k in sets.redis.scan_iter(match=f"{sets.prefix}*")] == [sets.key("push:whitelist").encode()]
        assert await sets.redis.ttl(sets.key("push:whitelist")) == -1


@contract
async def test_readers_see_the_old_set_or_the_new_one_never_half(sets: MemberSets) -> None:
    await sets.replace("list", (f"old-{i}" for i in range(10)))
    seen: set[int] = set()
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.add(await sets.size("list"))
            await asyncio.sleep(0)

    async def members() -> AsyncIterator[str]:  # an async source, read as it loads
        for i in range(30_000):
            if i % 1000 == 0:
                await asyncio.sleep(0)
            yield f"new-{i}"

    watcher = asyncio.create_task(watch())
    assert await sets.replace("list", members()) == 30_000
    done.set()
    await watcher
    seen.add(await sets.size("list"))
    assert seen <= {10, 30_000} and 30_000 in seen


@contract
async def test_replace_with_nothing_empties_the_set(sets: MemberSets) -> None:
    await sets.add("emptied", "a")
    assert await sets.replace("emptied", []) == 0
    assert await sets.size("emptied") == 0


@contract
async def test_a_failed_load_leaves_the_set_as_it_was(sets: MemberSets) -> None:
    await sets.add("kept", "a", "b")

    def broken() -> Iterator[str]:
        for i in range(2500):
            yield f"m{i}"
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        await sets.replace("kept", broken())
    assert await sets.size("kept") == 2
    if isinstance(sets, RedisMemberSets):
        assert [k async for k in sets.redis.scan_iter(match=f"{sets.prefix}*")] == [sets.key("kept").encode()]


# --- ObjectStore: large objects and presigned URLs ----------------------------------

MiB = 1024 * 1024


async def pattern_chunks(total: int, chunk: int, digest: Any = None) -> AsyncIterator[bytes]:
    """Distinct bytes per chunk without keeping any: the whole object never exists in the test either."""
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        block = hashlib.sha256(str(sent).encode()).digest() * (n // 32 + 1)
        data = block[:n]
        if digest is not None:
            digest.update(data)
        sent += n
        yield data


@contract
async def test_streamed_upload_of_a_multipart_object(objects: ObjectStore) -> None:
    key, expected = okey("big.bin"), hashlib.sha256()
    total = 12 * MiB + 12345  # three parts of 5 MiB, the last one short
    info = await objects.put_stream(
        key, pattern_chunks(total, 256 * 1024, expected), content_type="application/zip", part_size=5 * MiB
    )
    assert info.size == total and info.sha256 == expected.hexdigest()
    st = await objects.stat(key)
    assert st is not None and st.size == total and st.sha256 == expected.hexdigest()
    assert st.content_type == "application/zip"
    whole = await objects.get(key)
    assert hashlib.sha256(whole).hexdigest() == expected.hexdigest()
    # Range reads: across the first part boundary, and the tail
    assert await objects.get(key, start=5 * MiB - 100, length=200) == whole[5 * MiB - 100 : 5 * MiB + 100]
    assert await objects.get(key, start=total - 10) == whole[-10:]
    await objects.delete(key)


@contract
async def test_streamed_upload_holds_one_part_not_the_object(objects: ObjectStore) -> None:
    key, total = okey("huge.bin"), 60 * MiB
    tracemalloc.start()
    try:
        info = await objects.put_stream(key, pattern_chunks(total, 512 * 1024), part_size=5 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == total
    # the part being gathered, its joined bytes, and the one the HTTP client may still hold from the last send
    assert peak < 4 * 5 * MiB, f"peak {peak / MiB:.1f} MiB for a {total / MiB:.0f} MiB object"
    await objects.delete(key)


@contract
async def test_streamed_upload_checks_the_expected_digest(objects: ObjectStore) -> None:
    good, digest = okey("ok.bin"), hashlib.sha256()
    async for chunk in pattern_chunks(6 * MiB, MiB):
        digest.update(chunk)
    info = await objects.put_stream(good, pattern_chunks(6 * MiB, MiB), sha256=digest.hexdigest(), part_size=5 * MiB)
    st = await objects.stat(good)
    assert st is not None and st.sha256 == info.sha256 == digest.hexdigest()

    bad = okey("bad.bin")
    with pytest.raises(ValueError):
        await objects.put_stream(bad, pattern_chunks(6 * MiB, MiB), sha256="0" * 64, part_size=5 * MiB)
    with pytest.raises(ValueError):  # a small object (one PUT) is checked too
        await objects.put_stream(bad, pattern_chunks(1000, 100), sha256="0" * 64, part_size=5 * MiB)
    assert await objects.stat(bad) is None
    folder = bad.rsplit("/", 1)[0] + "/"
    assert await objects.list(folder) == []
    await objects.delete(good)


@contract
async def test_a_failed_streamed_upload_leaves_nothing(objects: ObjectStore) -> None:
    key = okey("broken.bin")

    async def source_fails_midway() -> AsyncIterator[bytes]:
        async for chunk in pattern_chunks(7 * MiB, MiB):
            yield chunk
        raise ConnectionResetError("the uploading client went away")

    with pytest.raises(ConnectionResetError):
        await objects.put_stream(key, source_fails_midway(), part_size=5 * MiB)
    assert await objects.stat(key) is None
    if isinstance(objects, S3ObjectStore):  # the parts already sent are not left on the server
        pending = await asyncio.to_thread(objects.client._list_multipart_uploads, objects.bucket, prefix=key)
        assert pending.uploads == []
    else:
        assert isinstance(objects, LocalObjectStore)
        assert [p.name for p in objects.root.rglob("*") if "broken" in p.name] == []  # no temporary file


@contract
async def test_streamed_upload_of_small_and_empty_objects(objects: ObjectStore) -> None:
    small, empty = okey("small.bin"), okey("empty.bin")
    info = await objects.put_stream(small, pattern_chunks(1000, 300))
    assert (await objects.get(small)) == b"".join([c async for c in pattern_chunks(1000, 300)])
    assert (await objects.stat(small)) == info

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    info = await objects.put_stream(empty, nothing())
    assert info.size == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    assert await objects.get(empty) == b""
    await objects.delete(small)
    await objects.delete(empty)


@contract
async def test_presigned_get_and_put(objects: ObjectStore) -> None:
    key, data = okey("pkg.apk"), os.urandom(50_000)
    await objects.put(key, data)
    async with httpx.AsyncClient() as http:
        got = await http.get(await objects.presign_get(key, expires_seconds=60))
        assert got.status_code == 200 and got.content == data

        upload = okey("upload.bin")
        put_url = await objects.presign_put(upload, expires_seconds=60)
        put = await http.put(put_url, content=b"from a client")
        assert put.status_code == 200
        assert await objects.get(upload) == b"from a client"
        assert (await http.get(put_url)).status_code == 403  # the method is signed too
        get_url = await objects.presign_get(upload, expires_seconds=60)
        assert (await http.put(get_url, content=b"overwritten")).status_code == 403
        assert await objects.get(upload) == b"from a client"

        other = okey("other.bin")
        await objects.put(other, b"secret")
        forged = (await objects.presign_get(key, expires_seconds=60)).replace(key, other)
        assert (await http.get(forged)).status_code == 403  # a URL signed for one key opens no other

        expiring = await objects.presign_get(key, expires_seconds=1)
        await asyncio.sleep(2.1)
        assert (await http.get(expiring)).status_code == 403
    for k in (key, upload, other):
        await objects.delete(k)


@pytest.mark.unit
def test_local_signatures_bind_method_key_and_expiry(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, url_base="https://dl.example.com/objects/", signing_key=b"k" * 32)
    url = asyncio.run(store.presign_get("apps/demo/pkg 1.apk", expires_seconds=60))
    u = urlparse(url)
    assert u.path == "/objects/apps/demo/pkg%201.apk"
    query = dict(part.split("=", 1) for part in u.query.split("&"))
    key = unquote(u.path.removeprefix("/objects/"))
    assert store.verify("GET", key, query) and store.verify("HEAD", key, query)
    assert not store.verify("PUT", key, query)
    assert not store.verify("GET", "apps/demo/pkg 2.apk", query)
    assert not store.verify("GET", key, {**query, "expires": str(int(query["expires"]) + 1)})
    assert not store.verify("GET", key, {**query, "signature": "0" * 64})
    assert not store.verify("GET", key, {"expires": query["expires"]})
    assert not store.verify("GET", "../etc/passwd", query)
    past = int(time.time()) - 1
    stale = {"expires": str(past), "signature": store._signature("GET", key, past)}
    assert not store.verify("GET", key, stale)
    other = LocalObjectStore(tmp_path, signing_key=b"x" * 32)
    assert not other.verify("GET", key, query)  # another key signs differently
    opened = open_objectstore(f"file://{tmp_path}", url_base="https://dl.example.com/objects", signing_key=b"k" * 32)
    assert isinstance(opened, LocalObjectStore) and opened.verify("GET", key, query)


# --- the twins stay bounded ---------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
def test_expired_entries_are_removed_as_writes_happen() -> None:
    """The twins' memory is what was written within the TTLs, however long the process runs."""
    clock = FakeClock()
    entries: ExpiringMap[int] = ExpiringMap(clock)
    for i in range(10_000):
        entries.set(f"k{i}", i, ttl_seconds=10)
    entries.set("forever", 1)
    assert entries.get("k1") == 1 and len(entries) == 10_001
    clock.now += 11
    assert entries.get("k1") is None  # hidden at once
    for i in range(1000):  # each write removes a few of the expired ones
        entries.set(f"new{i}", i, ttl_seconds=10)
    assert len(entries) == 1000 + 1
    assert entries.get("forever") == 1


@pytest.mark.unit
async def test_memory_twins_forget_idle_devices() -> None:
    clock = FakeClock()
    inboxes = MemorySequencedLog(max_len=10, overflow="drop_oldest", idle_ttl_seconds=60, clock=clock)
    table = MemoryRouteTable(seen_ttl_seconds=60, clock=clock)
    for i in range(1000):
        await inboxes.append(f"dev-{i}", b"hello", ttl_seconds=30)
        await table.claim(f"dev-{i}", "link-0", ttl_seconds=30)
    clock.now += 61
    for i in range(200):
        await inboxes.append(f"other-{i}", b"hello", ttl_seconds=30)
        await table.claim(f"other-{i}", "link-0", ttl_seconds=30)
    assert len(inboxes._logs) == 200 and len(table._routes) == 200 and len(table._seen) == 200


# --- Redis Cluster safety -------------------------------------------------------------


def _highest_key(script: str) -> int:
    return max(int(n) for n in re.findall(r"KEYS\[(\d+)\]", script))


@pytest.mark.unit
@pytest.mark.parametrize("name", ["dev-1", "user:42:notes", "a", "x" * 300, "弹幕"])
def test_every_scripts_keys_share_one_hash_slot(name: str) -> None:
    """A Cluster runs a script only if all its KEYS are in one slot: check each script's keys."""
    url = "redis://127.0.0.1:1/0"  # never connected: key names only
    seqlog = RedisSequencedLog(url, prefix="p:", max_len=10, overflow="reject")
    log_keys = seqlog.keys(name)
    for script in seqlog_module.SCRIPTS.values():
        assert _highest_key(script) <= len(log_keys)
    assert len({slot(k) for k in log_keys}) == 1
    assert all(f"{{{name}}}" in k for k in log_keys)

    table = RedisRouteTable(url, prefix="p:")
    route_keys = table.keys(name)
    for script in presence_module.SCRIPTS.values():
        assert _highest_key(script) <= len(route_keys)
    assert len({slot(k) for k in route_keys}) == 1

    member_sets = RedisMemberSets(url, prefix="p:")
    assert slot(member_sets.key(name)) == slot(member_sets.loading_key(name))

    # and the slot is the one Redis computes for the tag alone (CRC16 of the text between the braces)
    assert slot(log_keys[0]) == slot(name)


@pytest.mark.unit
def test_the_hot_stores_scripts_touch_one_key() -> None:
    for script in (hotstore_module._TOKEN_BUCKET, hotstore_module._APPEND):
        assert _highest_key(script) == 1


@pytest.mark.unit
def test_names_that_would_move_the_hash_tag_are_refused() -> None:
    for bad in ("", "a}b", "{a}", "a{b"):
        with pytest.raises(ValueError):
            redis_common.tagged("p:", bad)
    with pytest.raises(ValueError):
        RedisSequencedLog("redis://127.0.0.1:1/0", prefix="p{x}:", max_len=1, overflow="reject")
    with pytest.raises(ValueError):
        redis_common.require_one_slot(["a", "b"])
    redis_common.require_one_slot(["x{t}a", "y{t}b"])
    assert counters_module.HyperLogLog().count() == 0
    assert sets_module.REPLACE_CHUNK <= 10_000  # no single SADD is huge


@pytest.mark.unit
def test_script_keys_are_checked_at_each_call() -> None:
    """Every script goes through run_script, which refuses keys of two slots before Redis sees them."""

    class NeverRun:
        async def __call__(self, keys: list[str], args: list[Any]) -> Any:
            raise AssertionError("a cross-slot script reached Redis")

    with pytest.raises(ValueError):
        asyncio.run(redis_common.run_script(NeverRun(), ["a{x}", "b{y}"], []))  # type: ignore[arg-type]
