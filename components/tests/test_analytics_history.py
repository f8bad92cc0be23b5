"""History: events archived as Parquet by app and day, retention, funnels and counts read back with DuckDB."""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import pytest_asyncio

from conftest import need_env
from mpaas.analytics import history
from mpaas.analytics.history import Archiver, FileCache, History, QueryError, archive_forever
from mpaas.analytics.query import create_query_app
from mpaas.analytics.realtime import MemoryAggregates
from mpaas.apps import AppDirectory
from mpaas.stores import EventLog, KafkaEventLog, LocalObjectStore, MemoryEventLog, ObjectStore, S3ObjectStore

DAY_MS = 86_400_000
T0 = int(datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp() * 1000)  # day 0 of the stories below
D0 = date(2026, 11, 2)


def event(n: int, device: str, name: str, day: int = 0, second: int = 0, user: str = "") -> dict[str, Any]:
    return {
        "id": f"{device}-{n}",
        "app": "SHOP",
        "workspace": "prod",
        "source": "native",
        "event": name,
        "device": device,
        "user": user,
        "ts": T0 + day * DAY_MS + second * 1000,
        "received": T0,
        "props": {"n": n, "note": "ü"},
        "platform": "android",
        "version": "2.1.0",
        "channel": "store",
    }


def stories() -> list[dict[str, Any]]:
    """Retention: d1 to d3 start on day 0 (d1 back on day 1, d2 on day 2, d3 never), d4 starts on day 1 and
    is back on day 2. Funnel view -> cart -> pay in 60 s: d1 completes it, d2 skips the cart, d3 views after
    its first cart, carts again and pays too late."""
    out = []
    for device, days in (("d1", [0, 1]), ("d2", [0, 2]), ("d3", [0]), ("d4", [1, 2])):
        out += [event(10 + d, device, "launch", d, user=f"u-{device}") for d in days]
    for device, steps in (
        ("d1", [("view", 1), ("cart", 11), ("pay", 21)]),
        ("d2", [("view", 1), ("pay", 6)]),
        ("d3", [("cart", 1), ("view", 6), ("cart", 7), ("pay", 5000)]),
    ):
        out += [event(100 + i, device, name, 0, second) for i, (name, second) in enumerate(steps)]
    return out


async def publish(events: EventLog, topic: str, lines: list[dict[str, Any]]) -> None:
    # As ingestion writes them: one record per upload and device, its events as JSON lines.
    by_device: dict[str, list[dict[str, Any]]] = {}
    for e in lines:
        by_device.setdefault(e["device"], []).append(e)
    for device, evs in by_device.items():
        value = "\n".join(json.dumps(e, ensure_ascii=False) for e in evs).encode()
        await events.publish(topic, value, key=f"SHOP\nprod\n{device}".encode())


class Live:
    current = AppDirectory({"SHOP": ("SHOP", "prod"), "SHOP/prod": ("SHOP", "prod")})


async def archived(objects: ObjectStore) -> list[str]:
    return sorted(await objects.list(history.PREFIX + "/"))


@pytest.mark.unit
async def test_retention_funnel_and_counts_from_the_archive(tmp_path: Path) -> None:
    objects, events = LocalObjectStore(tmp_path / "objects"), MemoryEventLog()
    await publish(events, "t", stories())
    await events.publish("t", json.dumps(stories()[0]).encode() + b"\nnot json\n{}")  # a repeat and bad lines
    task = asyncio.create_task(archive_forever(events, "t", "history", Archiver(objects), flush_seconds=0.2))
    await asyncio.sleep(1.0)
    task.cancel()
    keys = await archived(objects)
    assert {k.split("/day=")[1][:10] for k in keys} == {"2026-11-02", "2026-11-03", "2026-11-04"}
    assert all(k.startswith("analytics/history/app=SHOP/ws=prod/day=") and k.endswith(".parquet") for k in keys)
    # Plain Parquet with typed columns: any tool reads it.
    first = tmp_path / "first.parquet"
    first.write_bytes(await objects.get(keys[0]))
    con = duckdb.connect()
    schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{first}')").fetchall()}
    assert schema["ts"] == "TIMESTAMP" and schema["event"] == "VARCHAR" and schema["props"] == "VARCHAR"
    notes = con.execute(f"SELECT DISTINCT props->>'note' FROM read_parquet('{first}')").fetchall()
    assert notes == [("ü",)]

    h = History(objects, cache_dir=tmp_path / "cache")
    r = await h.retention("SHOP", "prod", D0, date(2026, 11, 3), days=2)
    assert [(c["day"], c["size"], c["returned"]) for c in r["cohorts"]] == [
        ("2026-11-02", 3, [1, 1]),
        ("2026-11-03", 2, [1, 0]),  # d1 and d4; d4 back on the 4th
    ]
    new = await h.retention("SHOP", "prod", D0, date(2026, 11, 3), days=2, new_only=True)
    assert [(c["size"], c["returned"]) for c in new["cohorts"]] == [(3, [1, 1]), (1, [1, 0])]  # d1 is not new
    by_user = await h.retention("SHOP", "prod", D0, D0, days=1, by="user", start_event="launch")
    assert by_user["cohorts"][0]["size"] == 3
    f = await h.funnel("SHOP", "prod", D0, D0, ["view", "cart", "pay"], window_seconds=60)
    assert [(s["event"], s["count"]) for s in f["steps"]] == [("view", 3), ("cart", 2), ("pay", 1)]
    assert f["steps"][2]["fromPrevious"] == 0.5
    wide = await h.funnel("SHOP", "prod", D0, D0, ["view", "cart", "pay"], window_seconds=7200)
    assert [s["count"] for s in wide["steps"]] == [3, 2, 2]  # d3's late payment is inside two hours
    c = await h.counts("SHOP", "prod", D0, D0, event="launch")
    assert c["days"]["2026-11-02"] == [{"event": "launch", "events": 3, "devices": 3, "users": 3}]  # repeat: once
    h.close()


@pytest.mark.unit
async def test_queries_refuse_what_they_cannot_answer(tmp_path: Path) -> None:
    h = History(LocalObjectStore(tmp_path / "objects"), cache_dir=tmp_path / "cache")
    with pytest.raises(QueryError, match="before"):
        await h.retention("SHOP", "prod", date(2026, 11, 3), D0)
    with pytest.raises(QueryError, match="366"):
        await h.counts("SHOP", "prod", date(2024, 1, 1), date(2026, 1, 1))
    with pytest.raises(QueryError, match="steps"):
        await h.funnel("SHOP", "prod", D0, D0, ["view"])
    with pytest.raises(QueryError, match="by"):
        await h.retention("SHOP", "prod", D0, D0, by="ip")
    for bad in ("2026-1-02", "\uff12\uff10\uff12\uff16-11-02", "2026-02-30", "2026-11-02'; DROP"):
        with pytest.raises(QueryError):
            history.day(bad, "from")
    empty = await h.retention("SHOP", "prod", D0, D0)  # nothing archived: zeros, not an error
    assert empty["cohorts"] == [{"day": "2026-11-02", "size": 0, "returned": [0] * 7, "rates": [0.0] * 7}]
    h.close()


@pytest.mark.unit
async def test_event_names_are_data_never_sql(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    hostile = "x' OR 1=1 --"
    await Archiver(objects).write(
        [json.dumps(event(1, "d1", hostile)).encode(), json.dumps(event(2, "d2", "a")).encode()]
    )
    h = History(objects, cache_dir=tmp_path / "cache")
    c = await h.counts("SHOP", "prod", D0, D0, event=hostile)
    assert c["days"]["2026-11-02"] == [{"event": hostile, "events": 1, "devices": 1, "users": 0}]
    f = await h.funnel("SHOP", "prod", D0, D0, [hostile, "a"])
    assert [s["count"] for s in f["steps"]] == [1, 0]
    h.close()


@pytest.mark.unit
async def test_a_query_too_big_for_the_cache_is_refused_and_the_cache_stays_bounded(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    archiver = Archiver(objects)
    for d in range(3):
        lines = [event(i, f"dev{i}", "launch", d) | {"props": {"pad": os.urandom(64).hex()}} for i in range(2000)]
        await archiver.write([json.dumps(e).encode() for e in lines])
    sizes = [(await objects.stat(k)).size for k in await archived(objects)]  # type: ignore[union-attr]
    h = History(objects, cache_dir=tmp_path / "cache", cache_bytes=max(sizes) + 1, max_query_bytes=max(sizes) + 1)
    for d in range(3):
        day = date.fromordinal(D0.toordinal() + d)
        assert (await h.counts("SHOP", "prod", day, day))["days"][day.isoformat()][0]["events"] == 2000
        assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.parquet")) <= max(sizes)
    with pytest.raises(QueryError, match="fewer days"):
        await h.counts("SHOP", "prod", D0, date(2026, 11, 4))
    h.close()


@pytest.mark.unit
async def test_concurrent_queries_fetch_a_file_once(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    await Archiver(objects).write([json.dumps(event(1, "d1", "launch")).encode()])
    fetched: list[str] = []
    real_get = objects.get

    async def counting_get(key: str, **kw: Any) -> bytes:
        fetched.append(key)
        await asyncio.sleep(0.05)
        return await real_get(key, **kw)

    objects.get = counting_get  # type: ignore[method-assign]
    cache = FileCache(objects, tmp_path / "cache", 1 << 20)
    keys = await archived(objects)

    async def read() -> list[Path]:
        async with cache.use(keys) as paths:
            return paths

    paths = await asyncio.gather(*(read() for _ in range(5)))
    assert len(fetched) == 1 and all(p == paths[0] for p in paths)


@pytest.mark.unit
async def test_history_api_answers_with_codes(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    await Archiver(objects).write([json.dumps(e).encode() for e in stories()])
    live = Live()
    h = History(objects, cache_dir=tmp_path / "cache")
    app = create_query_app(live, MemoryAggregates(), None, None)  # type: ignore[arg-type]
    history.add_routes(app, live, h)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        base = "/v1/apps/SHOP/prod/history"
        ok = await client.get(f"{base}/retention", params={"from": "2026-11-02", "to": "2026-11-02", "days": 2})
        assert ok.status_code == 200 and ok.json()["cohorts"][0]["returned"] == [1, 1]
        body = {"steps": ["view", "cart", "pay"], "from": "2026-11-02", "to": "2026-11-02", "windowSeconds": 60}
        f = await client.post(f"{base}/funnel", json=body)
        assert [s["count"] for s in f.json()["steps"]] == [3, 2, 1]
        events = await client.get(f"{base}/events", params={"from": "2026-11-02", "to": "2026-11-03"})
        assert events.status_code == 200 and set(events.json()["days"]) == {"2026-11-02", "2026-11-03"}
        bad_day = await client.get(f"{base}/retention", params={"from": "2026-13-01", "to": "2026-11-02"})
        assert bad_day.status_code == 400 and "from" in bad_day.json()["detail"]
        assert (await client.post(f"{base}/funnel", json={**body, "steps": ["one"]})).status_code == 422
        assert (await client.post(f"{base}/funnel", json={**body, "extra": 1})).status_code == 422
        unknown = await client.get(
            "/v1/apps/NOPE/prod/history/events", params={"from": "2026-11-02", "to": "2026-11-02"}
        )
        assert unknown.status_code == 404
    off = create_query_app(live, MemoryAggregates(), None, None)  # type: ignore[arg-type]
    history.add_routes(off, live, None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://admin") as client:
        r = await client.get("/v1/apps/SHOP/prod/history/events", params={"from": "2026-11-02", "to": "2026-11-02"})
        assert r.status_code == 503 and "MPAAS_OBJECTS_URL" in r.json()["detail"]
    h.close()


# --- against the real Kafka and SeaweedFS ---------------------------------------------------


@pytest_asyncio.fixture
async def s3() -> AsyncIterator[ObjectStore]:
    store = S3ObjectStore(
        need_env("MPAAS_TEST_S3_ENDPOINT"),
        "mpaas-history",
        access_key=os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
        secret_key=os.environ["MPAAS_TEST_S3_SECRET_KEY"],
    )
    await store.ensure_bucket()
    yield store


@pytest.mark.component
async def test_an_archiver_killed_mid_way_loses_nothing_and_counts_stay_exact(s3: ObjectStore, tmp_path: Path) -> None:
    """Kafka in, SeaweedFS out: an archiver stopped between storing a batch and committing it writes that batch
    again after its restart; every event is in the archive and each is counted once."""
    topic = f"history-{uuid.uuid4().hex[:8]}"
    app = f"APP{uuid.uuid4().hex[:6].upper()}"  # the bucket is shared by runs: a fresh app each time
    events = KafkaEventLog(need_env("MPAAS_TEST_KAFKA"))
    await events.start()
    try:
        lines = [
            event(i, f"dev{i % 50}", "launch" if i % 4 else "pay") | {"app": app, "id": f"e{i}"} for i in range(2000)
        ]
        for i in range(0, len(lines), 20):
            chunk = lines[i : i + 20]
            await events.publish(topic, "\n".join(json.dumps(e) for e in chunk).encode(), key=f"{app}\n{i}".encode())

        class CrashAfterStoring(Archiver):
            async def write(self, values: Any) -> list[str]:
                await super().write(values)
                raise ConnectionError("killed after storing, before the commit")

        crashing = asyncio.create_task(
            archive_forever(events, topic, "history", CrashAfterStoring(s3), flush_seconds=0.5)
        )
        await asyncio.sleep(6)
        crashing.cancel()
        await asyncio.gather(crashing, return_exceptions=True)
        stored_before = await s3.list(f"{history.PREFIX}/app={app}/")
        assert stored_before, "the crashing archiver stored at least one batch"

        done = asyncio.create_task(archive_forever(events, topic, "history", Archiver(s3), flush_seconds=0.5))
        h = History(s3, cache_dir=tmp_path / "cache")
        try:
            for _ in range(120):
                await asyncio.sleep(0.5)
                c = await h.counts(app, "prod", D0, D0)
                if sum(d["events"] for d in c["days"]["2026-11-02"]) == 2000:
                    break
            got = {d["event"]: d for d in c["days"]["2026-11-02"]}
            assert got["launch"]["events"] == 1500 and got["pay"]["events"] == 500  # each event once
            assert got["launch"]["devices"] == 50
            async with h.cache.use(await h.keys(app, "prod", [D0])) as paths:
                raw = await asyncio.to_thread(_raw_rows, paths)
            assert raw > 2000  # the repeated batch is in the archive twice, and the figures still exact
        finally:
            done.cancel()
            await asyncio.gather(done, return_exceptions=True)
            h.close()
    finally:
        await events.close()


def _raw_rows(paths: list[Path]) -> int:
    return duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [[str(p) for p in paths]]).fetchone()[0]


@pytest.mark.unit
async def test_a_device_that_floods_a_step_costs_linear_time_and_a_repeated_step_needs_a_second_event(
    tmp_path: Path,
) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    flood = [event(i, "bot", "view" if i % 2 else "cart", 0, i // 4) for i in range(40_000)]
    flood += [event(1, "once", "view"), event(1, "twice", "view"), event(2, "twice", "view", 0, 5)]
    # A time no event can have is left out, not a batch that can never be archived.
    flood += [event(3, "late", "view") | {"ts": 10**17}, event(4, "early", "view") | {"ts": -5}]
    await Archiver(objects).write([json.dumps(e).encode() for e in flood])
    h = History(objects, cache_dir=tmp_path / "cache")
    started = asyncio.get_running_loop().time()
    f = await h.funnel("SHOP", "prod", D0, D0, ["view", "cart", "view", "cart"], window_seconds=60)
    assert asyncio.get_running_loop().time() - started < 10  # 20 000 starts x 20 000 carts, were it quadratic
    assert [s["count"] for s in f["steps"]] == [3, 1, 1, 1]
    twice = await h.funnel("SHOP", "prod", D0, D0, ["view", "view"], window_seconds=60)
    assert [s["count"] for s in twice["steps"]] == [3, 2]  # bot and twice: "once" has one view, not two
    h.close()


@pytest.mark.unit
async def test_files_a_running_query_reads_are_not_dropped_by_another(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    archiver = Archiver(objects)
    for d in range(2):
        await archiver.write([json.dumps(event(i, f"d{i}", "launch", d)).encode() for i in range(500)])
    day0, day1 = (await h_keys(objects, 0)), (await h_keys(objects, 1))
    cache = FileCache(objects, tmp_path / "cache", max_bytes=1)  # any second file is past the bound
    async with cache.use(day0) as first:
        async with cache.use(day1) as second:
            assert second[0].exists()
        assert first[0].exists()  # the other query's trim left it: this one still reads it
        assert not second[0].exists()
    assert not first[0].exists()


async def h_keys(objects: ObjectStore, day: int) -> list[str]:
    d = date.fromordinal(D0.toordinal() + day).isoformat()
    return [k for k in await archived(objects) if f"/day={d}/" in k]


@pytest.mark.unit
async def test_a_query_cancelled_mid_fetch_fails_no_other_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    await Archiver(objects).write([json.dumps(event(1, "d1", "launch")).encode()])
    keys = await archived(objects)
    real_get = objects.get

    async def slow_get(key: str, **kw: Any) -> bytes:
        await asyncio.sleep(0.2)
        return await real_get(key, **kw)

    objects.get = slow_get  # type: ignore[method-assign]
    cache = FileCache(objects, tmp_path / "cache", 1 << 20)

    async def read() -> list[Path]:
        async with cache.use(keys) as paths:
            return paths

    first = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(read())  # waits for the file the first one fetches
    await asyncio.sleep(0.05)
    first.cancel()
    (path,) = await second
    assert path.exists()

    # A write that fails (the disk full) leaves no partial file behind.
    objects.get = real_get  # type: ignore[method-assign]
    full = FileCache(objects, tmp_path / "full", 1 << 20)

    def no_room(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history.os, "replace", no_room)
    with pytest.raises(OSError):
        async with full.use(keys):
            pass
    assert list((tmp_path / "full").iterdir()) == []


@pytest.mark.unit
async def test_closing_keeps_what_a_configured_cache_folder_held_before(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    await Archiver(objects).write([json.dumps(event(1, "d1", "launch")).encode()])
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "keep.txt").write_text("not the cache's")
    (folder / ".0123456789abcdef.part").write_bytes(b"left by a process that died mid-fetch")
    h = History(objects, cache_dir=folder)
    assert not (folder / ".0123456789abcdef.part").exists()
    assert (await h.counts("SHOP", "prod", D0, D0))["days"]["2026-11-02"][0]["events"] == 1
    assert list(folder.glob("*.parquet"))
    h.close()
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    own = History(objects)  # a folder of its own goes whole
    await own.counts("SHOP", "prod", D0, D0)
    own.close()
    assert not own.cache.folder.exists()


@pytest.mark.unit
async def test_an_object_store_that_fails_is_a_503(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    await Archiver(objects).write([json.dumps(event(1, "d1", "launch")).encode()])

    class Unreachable(Exception):  # as S3's client raises them: no OSError
        pass

    async def away(prefix: str = "") -> list[str]:
        raise Unreachable("connection refused")

    async def gone(key: str, **kw: Any) -> bytes:
        raise KeyError(key)  # listed, then removed before it was read

    live = Live()
    for name, broken in (("list", away), ("get", gone)):
        store = LocalObjectStore(tmp_path / "objects")
        setattr(store, name, broken)
        app = create_query_app(live, MemoryAggregates(), None, None)  # type: ignore[arg-type]
        h = History(store, cache_dir=tmp_path / f"cache-{name}")
        history.add_routes(app, live, h)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
            r = await client.get("/v1/apps/SHOP/prod/history/events", params={"from": "2026-11-02", "to": "2026-11-02"})
        assert r.status_code == 503 and "try again" in r.json()["detail"], name
        h.close()


@pytest.mark.unit
async def test_a_cancelled_query_keeps_its_slot_and_files_until_duckdb_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    archiver = Archiver(objects)
    for d in range(2):
        await archiver.write([json.dumps(event(i, f"d{i}", "launch", d)).encode() for i in range(50)])
    h = History(objects, cache_dir=tmp_path / "cache", cache_bytes=1, concurrency=1)  # any second file: trimmed
    h.max_query_bytes = 1 << 20
    runs: list[tuple[float, float, bool]] = []
    real = h._execute

    def slow(sql: str, params: list[Any], *rest: Any) -> list[tuple[Any, ...]]:
        started = time.monotonic()
        time.sleep(0.3)  # DuckDB at work, in its thread: a cancelled task does not stop it
        files_there = all(Path(p).exists() for p in params[0])
        out = real(sql, params, *rest) if files_there else []
        runs.append((started, time.monotonic(), files_there))
        return out

    monkeypatch.setattr(h, "_execute", slow)
    first = asyncio.create_task(h.counts("SHOP", "prod", D0, D0))
    await asyncio.sleep(0.1)
    first.cancel()
    day1 = date.fromordinal(D0.toordinal() + 1)
    await h.counts("SHOP", "prod", day1, day1)  # would take the slot, fetch its file and trim the first's
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0.4)
    (_, a_end, a_files), (b_start, _, _) = sorted(runs)
    assert a_files, "the cancelled query's files were trimmed while DuckDB still read them"
    assert b_start >= a_end, "two queries ran at once with one slot"
    h.close()


@pytest.mark.unit
async def test_a_funnel_window_that_crosses_midnight_reads_the_next_day(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    late = 14 * 3600 + 50 * 60  # T0 is 09:00: 23:50 that day
    lines = [event(1, "d1", "view", 0, late), event(2, "d1", "cart", 0, late + 15 * 60)]  # 00:05 the next day
    # A window of a day and an hour from 23:50: its last step two days on.
    lines += [event(3, "d2", "view", 0, late), event(4, "d2", "cart", 0, late + 86400 + 30 * 60)]
    await Archiver(objects).write([json.dumps(e).encode() for e in lines])
    assert len(await archived(objects)) == 3
    h = History(objects, cache_dir=tmp_path / "cache")
    hour = await h.funnel("SHOP", "prod", D0, D0, ["view", "cart"], window_seconds=3600)
    assert [s["count"] for s in hour["steps"]] == [2, 1]
    longer = await h.funnel("SHOP", "prod", D0, D0, ["view", "cart"], window_seconds=86400 + 3600)
    assert [s["count"] for s in longer["steps"]] == [2, 2]
    h.close()
