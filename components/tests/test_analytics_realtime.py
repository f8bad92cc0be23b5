"""Real-time aggregates: what counts as what, and an event applied twice counted once (Redis and in-process)."""

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from conftest import need_env
from mpaas.analytics.realtime import (
    Aggregates,
    MemoryAggregates,
    RedisAggregates,
    apply_record,
    classify,
)

DAY_MS = 1_796_000_000_000  # 2026-11-30 00:53 UTC


def record(event: str, device: str = "d1", platform: str = "Android", **props: object) -> bytes:
    return json.dumps(
        {
            "id": uuid.uuid4().hex,
            "app": "SHOP",
            "workspace": "prod",
            "source": "native",
            "event": event,
            "device": device,
            "user": "",
            "ts": DAY_MS,
            "received": DAY_MS,
            "props": props,
            "platform": platform,
            "version": "1.0",
            "channel": "",
        }
    ).encode()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("event", "props", "platform", "kind", "counts"),
    [
        ("launch", {}, "android", "launch", {"launches": 1, "v.launches": 1}),
        ("$session_start", {}, "", "launch", {"launches": 1, "v.launches": 1}),
        ("$session_end", {"duration": 30}, "", "session", {"sessions": 1, "session_seconds": 30}),
        ("crash", {}, "ios", "crash", {"crashes": 1, "v.crashes": 1}),
        ("$exception", {}, "", "crash", {"crashes": 1, "v.crashes": 1}),
        ("stall", {"ms": 2300}, "android", "stall", {"stalls": 1}),
        ("stall", {"ms": 2100}, "android", "short_stall", {}),  # under Android's 2.25 s
        ("stall", {"ms": 2100}, "ios", "stall", {"stalls": 1}),  # over iOS's 2 s
        ("stall", {"ms": True}, "ios", "short_stall", {}),
        ("freeze", {}, "", "freeze", {"freezes": 1}),
        ("buy", {}, "", "custom", {"event:buy": 1}),
    ],
)
def test_what_counts_as_what(event: str, props: dict, platform: str, kind: str, counts: dict) -> None:
    got_kind, update = classify({"event": event, "props": props, "platform": platform})
    assert got_kind == kind and update.counts == {"events": 1, **counts}


@pytest_asyncio.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Aggregates]:
    s: Aggregates
    if request.param == "redis":
        s = RedisAggregates(need_env("MPAAS_TEST_REDIS_URL"), prefix=f"rt-{uuid.uuid4().hex[:8]}:")
    else:
        s = MemoryAggregates()
    yield s
    await s.close()


@pytest.mark.contract
async def test_a_replayed_event_is_counted_once(store: Aggregates) -> None:
    records = [record("launch", "d1"), record("launch", "d2"), record("crash", "d2", "iOS"), record("buy", "d1")]
    records += [record("$session_end", "d1", duration=40)]
    assert [await apply_record(store, r) for r in records] == [True] * 5
    assert [await apply_record(store, r) for r in records] == [False] * 5  # read again after a restart
    figures = await store.day("SHOP/prod", "2026-11-30", "2026-11")
    assert {k: figures[k] for k in ("events", "launches", "crashes", "sessions", "session_seconds")} == {
        "events": 5,
        "launches": 2,
        "crashes": 1,
        "sessions": 1,
        "session_seconds": 40,
    }
    assert figures["active_devices"] == 2 and figures["monthly_active_devices"] == 2
    assert figures["crashed_devices"] == 1
    assert figures["crash_free_devices_rate"] == 0.5 and figures["custom_events"] == {"buy": 1}
    other_day = await store.day("SHOP/prod", "2026-12-01", "2026-11")
    assert other_day["events"] == 0 and other_day["active_devices"] == 0 and other_day["monthly_active_devices"] == 2


@pytest.mark.contract
async def test_custom_event_names_are_bounded(store: Aggregates, monkeypatch: pytest.MonkeyPatch) -> None:
    from mpaas.analytics import realtime

    monkeypatch.setattr(realtime, "CUSTOM_EVENT_NAMES", 3)
    for name in ("a", "b", "c", "d", "e", "a"):
        await apply_record(store, record(name))
    figures = await store.day("SHOP/prod", "2026-11-30", "2026-11")
    assert figures["custom_events"] == {"a": 2, "b": 1, "c": 1, "_other": 2}


@pytest.mark.unit
async def test_a_record_that_is_not_an_event_is_skipped() -> None:
    s = MemoryAggregates()
    assert not await apply_record(s, b"not json")
    assert not await apply_record(s, b'{"app": "SHOP"}')


NPE = """java.lang.NullPointerException: Attempt to invoke virtual method on a null object
    at com.shop.cart.CartView.render(CartView.kt:{line})
    at com.shop.cart.CartView$lambda${n}.invoke(CartView.kt:88)
    at android.os.Handler.dispatchMessage(Handler.java:106)"""


@pytest.mark.unit
def test_one_bug_is_one_group_across_builds_and_runs() -> None:
    from mpaas.analytics.crashes import group, of_event

    a, b = group(NPE.format(line=120, n=3)), group(NPE.format(line=131, n=7))
    assert a.fingerprint == b.fingerprint and a.type == "java.lang.NullPointerException"
    other = group(NPE.replace("CartView.render", "CartView.layout").format(line=1, n=1))
    assert other.fingerprint != a.fingerprint
    js1 = group("TypeError: x is undefined\n    at render (/app/main.js:10:5)\n    at /app/main.js:20:1")
    js2 = group("TypeError: x is undefined\n    at render (/app/main.js:11:9)\n    at /app/main.js:25:3")
    assert js1.fingerprint == js2.fingerprint and js1.type == "TypeError"
    ios1 = group("0   MyApp  0x0000000100a3c1f4 -[CartViewController render] + 52")
    ios2 = group("0   MyApp  0x0000000100b4d2e8 -[CartViewController render] + 60")
    assert ios1.fingerprint == ios2.fingerprint
    assert of_event("$crash", {"_error": NPE.format(line=1, n=1)}).fingerprint == a.fingerprint  # Countly
    posthog = of_event(
        "$exception",
        {
            "$exception_list": [
                {
                    "type": "ValueError",
                    "value": "bad",
                    "stacktrace": {"frames": [{"module": "shop.cart", "function": "render"}]},
                }
            ]
        },
    )
    assert posthog is not None and posthog.type == "ValueError"
    assert of_event("crash", {}) is None  # nothing to group by: counted, not grouped
    assert len(group("x" * 100 + "\n" + "y" * 10_000).sample.encode()) <= 4096


@pytest.mark.contract
async def test_top_crashes_per_version_with_devices_and_first_seen(store: Aggregates) -> None:
    def crash(device: str, version: str, line: int, stack: str = NPE) -> bytes:
        rec = json.loads(record("crash", device, stack=stack.format(line=line, n=line)))
        rec["version"] = version
        return json.dumps(rec).encode()

    layout = NPE.replace("CartView.render", "CartView.layout")
    sent = [crash("d1", "1.0", 10), crash("d2", "1.1", 11), crash("d2", "1.1", 12), crash("d3", "1.1", 5, layout)]
    for r in sent:
        assert await apply_record(store, r)
    assert not await apply_record(store, sent[0])  # a replay changes nothing
    everything = await store.crashes("SHOP/prod", None, 10)
    assert [(g["count"], g["affectedDevices"], g["firstVersion"]) for g in everything] == [(3, 2, "1.0"), (1, 1, "1.1")]
    top = everything[0]
    assert top["type"] == "java.lang.NullPointerException" and top["title"].startswith("java.lang.NullPointerException")
    assert top["firstSeen"] == DAY_MS == top["lastSeen"] and "CartView.render" in top["sample"]
    in_11 = await store.crashes("SHOP/prod", "1.1", 10)
    assert [g["count"] for g in in_11] == [2, 1] and await store.crashes("SHOP/prod", "9.9", 10) == []


@pytest.mark.contract
async def test_a_log_record_holds_json_lines_applied_together(store: Aggregates) -> None:
    from mpaas.analytics.realtime import apply_records

    lines = b"\n".join([record("launch", "d1"), record("launch", "d2"), b"not json", record("crash", "d2")])
    assert await apply_records(store, lines) == 3 and await apply_records(store, lines) == 0
    figures = await store.day("SHOP/prod", "2026-11-30", "2026-11")
    assert (figures["launches"], figures["crashes"], figures["active_devices"]) == (2, 1, 2)


@pytest.mark.contract
async def test_launches_and_crashes_per_app_version(store: Aggregates, monkeypatch: pytest.MonkeyPatch) -> None:
    from mpaas.analytics import realtime

    monkeypatch.setattr(realtime, "VERSIONS", 2)

    def versioned(event: str, version: str) -> bytes:
        rec = json.loads(record(event))
        rec["version"] = version
        return json.dumps(rec).encode()

    for event, version in [
        ("launch", "1.0"),
        ("launch", "1.0"),
        ("crash", "1.0"),
        ("launch", "1.1"),
        ("launch", "2.0"),
        ("crash", "2.0"),
        ("buy", "1.0"),
    ]:
        assert await apply_record(store, versioned(event, version))
    figures = await store.day("SHOP/prod", "2026-11-30", "2026-11")
    assert figures["versions"] == {
        "1.0": {"launches": 2, "crashes": 1, "crashes_per_launch": 0.5},
        "1.1": {"launches": 1, "crashes": 0, "crashes_per_launch": 0.0},
        "_other": {"launches": 1, "crashes": 1, "crashes_per_launch": 1.0},  # a third version, over the bound
    }


@pytest.mark.contract
async def test_a_crash_that_keeps_coming_rises_into_a_full_ranking(
    store: Aggregates, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpaas.analytics import realtime

    monkeypatch.setattr(realtime, "CRASH_GROUPS", 2)

    def crash(where: str) -> bytes:
        return record("crash", "d1", stack=NPE.replace("CartView.render", where).format(line=1, n=1))

    for where, times in (("A.a", 3), ("B.b", 2), ("C.c", 5)):
        for _ in range(times):
            assert await apply_record(store, crash(where))
    top = await store.crashes("SHOP/prod", None, 10)
    assert len(top) == 2 and "C.c" in top[0]["sample"] and top[0]["count"] >= 5


@pytest.mark.unit
def test_countly_ids_ignore_what_the_sdk_changes_per_attempt() -> None:
    from mpaas.analytics import events

    directory = {"SHOP": ("SHOP", "prod")}.get
    checker = events.Checker(3600, 86400)
    first = {"app_key": "SHOP", "device_id": "d", "begin_session": "1", "rr": "5"}
    again = {**first, "rr": "3", "checksum256": "ab"}
    ids = [events.countly(p, directory, checker, 10).events[0].id for p in (first, again)]
    assert ids[0] == ids[1]
