"""Analytics uploads, format by format: every event checked on its own, the upload's limits enforced."""

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest

from mpaas.analytics import codes, events, upload
from mpaas.apps import compile_apps
from mpaas.config import validate

pytestmark = pytest.mark.unit

NOW = 1_796_000_000.0  # seconds
NOW_MS = int(NOW * 1000)
checker = events.Checker(max_future_seconds=3600, max_age_seconds=86400, clock=lambda: NOW)


def directory():  # type: ignore[no-untyped-def]
    def gateway(name: str, apps: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
        return validate(
            "MpaasGateway",
            {
                "metadata": {"name": name, "namespace": "ns", "generation": 1},
                "spec": {
                    "apps": [{"appId": a, "workspaceId": w} for a, w in apps],
                    "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
                },
            },
        )

    one, two = gateway("a", [("SHOP", "prod"), ("MULTI", "prod")]), gateway("b", [("MULTI", "test")])
    return compile_apps({"MpaasGateway": {("ns", "a"): one, ("ns", "b"): two}})


def test_app_keys_are_the_app_id_or_app_id_and_workspace() -> None:
    d = directory()
    assert d.resolve("SHOP") == ("SHOP", "prod") and d.resolve("SHOP/prod") == ("SHOP", "prod")
    assert d.resolve("MULTI") is None  # in two workspaces: only the full key names it
    assert d.resolve("MULTI/test") == ("MULTI", "test") and d.resolve("NOPE") is None


def native(evs: list[Any], **top: Any) -> bytes:
    return json.dumps({"appId": "SHOP", "workspaceId": "prod", "deviceId": "d1", "events": evs, **top}).encode()


def test_native_bad_events_never_drop_the_good_ones() -> None:
    body = native(
        [
            {"event": "launch", "ts": NOW_MS, "id": "e1"},
            {"event": "", "ts": NOW_MS},
            {"event": "x", "ts": "\uff11\uff12\uff13"},  # full-width digits are not a number here
            {"event": "x", "ts": True},
            {"event": "late", "ts": NOW_MS - 2 * 86400_000},
            {"event": "ahead", "ts": NOW_MS + 7200_000},
            "not an object",
            {"event": "page", "ts": str(NOW_MS), "props": {"page": "home"}},
        ]
    )
    batch = events.native(body, directory().resolve, checker, 100)
    assert [e.name for e in batch.events] == ["launch", "page"] and batch.events[0].id == "e1"
    assert [(r.index, r.code) for r in batch.refused] == [
        (1, codes.INVALID_EVENT),
        (2, codes.INVALID_EVENT),
        (3, codes.INVALID_EVENT),
        (4, codes.TOO_OLD),
        (5, codes.FROM_THE_FUTURE),
        (6, codes.INVALID_EVENT),
    ]
    key, value = batch.events[1].record(NOW_MS + 5)
    assert key == b"SHOP\nprod\nd1"
    assert json.loads(value) | {"id": "?"} == {
        "id": "?",
        "app": "SHOP",
        "workspace": "prod",
        "source": "native",
        "event": "page",
        "device": "d1",
        "user": "",
        "ts": NOW_MS,
        "received": NOW_MS + 5,
        "props": {"page": "home"},
        "platform": "",
        "version": "",
        "channel": "",
    }


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", events.BadUpload),
        (b"[]", events.BadUpload),
        (native([], deviceId=""), events.BadUpload),
        (native([{"event": "e", "ts": NOW_MS}] * 101), OverflowError),
        (b"[" * 100_000, events.BadUpload),  # deeper than the JSON parser goes: refused, not a crash
    ],
)
def test_native_uploads_that_cannot_be_read(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        events.native(body, directory().resolve, checker, 100)


def test_native_unknown_app_takes_nothing() -> None:
    batch = events.native(native([{"event": "e", "ts": NOW_MS}], appId="NOPE"), directory().resolve, checker, 100)
    assert batch.app is None and not batch.events


def test_posthog_batch_as_posthog_node_sends_it() -> None:
    body = {
        "api_key": "SHOP",
        "batch": [
            {
                "event": "app_launch",
                "properties": {"coldStartMs": 812, "$lib": "posthog-node"},
                "timestamp": "2026-11-30T03:46:53.767Z",
                "uuid": "01a22a90-0000-7000-8000-000000000001",
                "distinct_id": "user-1",
            },
            {"event": "no_person", "properties": {}},
            {"event": "other", "distinct_id": "u", "properties": {"token": "MULTI/test"}},
            {"event": "naive_time", "distinct_id": "u", "properties": {}, "timestamp": "2026-11-30T03:46:53"},
        ],
    }
    clock = events.Checker(3600, 86400, clock=lambda: 1_796_010_413.0)
    batch = events.posthog(json.dumps(body).encode(), directory().resolve, clock, 100)
    assert batch.app == ("SHOP", "prod")
    (e,) = batch.events
    assert (e.name, e.user_id, e.device_id, e.id) == ("app_launch", "user-1", "user-1", body["batch"][0]["uuid"])
    assert e.ts_ms == 1_796_010_413_767
    assert [(r.index, r.code) for r in batch.refused] == [
        (1, codes.INVALID_EVENT),
        (2, codes.OTHER_APP),
        (3, codes.INVALID_EVENT),
    ]


def test_posthog_without_a_token_is_refused_as_unknown() -> None:
    with pytest.raises(PermissionError):
        events.posthog(b'{"event": "e", "distinct_id": "u"}', directory().resolve, checker, 100)


def test_countly_session_events_and_crash_in_one_request() -> None:
    query = (
        "app_key=SHOP&device_id=dev-42&begin_session=1&metrics=%7B%22_os%22%3A%22Android%22%7D"
        f"&timestamp={NOW_MS}&events=%5B%7B%22key%22%3A%22page_view%22%2C%22count%22%3A1%2C%22segmentation%22"
        f"%3A%7B%22page%22%3A%22home%22%7D%2C%22timestamp%22%3A{NOW_MS + 1}%7D%2C%7B%22count%22%3A1%7D%5D"
    )
    params = events.countly_params(query.encode(), b"", "", 1 << 20)
    batch = events.countly(params, directory().resolve, checker, 100)
    assert [(e.name, e.ts_ms) for e in batch.events] == [("$session_start", NOW_MS), ("page_view", NOW_MS + 1)]
    assert batch.events[0].props == {"_os": "Android"} and batch.events[1].props["segmentation"] == {"page": "home"}
    assert [(r.index, r.code) for r in batch.refused] == [(2, codes.INVALID_EVENT)]
    again = events.countly(params, directory().resolve, checker, 100)  # the SDK resends until acknowledged
    assert [e.id for e in again.events] == [e.id for e in batch.events]


def test_countly_form_posts_and_missing_keys() -> None:
    params = events.countly_params(
        b"", b"app_key=SHOP&device_id=d&end_session=1&session_duration=30", "application/x-www-form-urlencoded", 1 << 20
    )
    batch = events.countly(params, directory().resolve, checker, 100)
    assert [(e.name, e.props) for e in batch.events] == [("$session_end", {"duration": 30})]
    with pytest.raises(events.BadUpload, match="app_key"):
        events.countly({"device_id": "d"}, directory().resolve, checker, 100)
    with pytest.raises(events.BadUpload):
        events.countly_params(b"", b"app_key=SHOP", "application/json", 1 << 20)


def receiver(body: bytes, chunk: int = 1000):  # type: ignore[no-untyped-def]
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive() -> dict[str, Any]:
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    return receive


def read(body: bytes, headers: dict[str, str] | None = None, **limits: int) -> bytes:
    limits = {"max_body_bytes": 1 << 20, "max_inflated_bytes": 1 << 20, **limits}
    return asyncio.run(upload.read(receiver(body), headers or {}, **limits))


def test_uploads_inflate_gzip_by_header_or_magic_within_limits() -> None:
    data = b'{"a": 1}' * 1000
    assert read(gzip.compress(data), {"content-encoding": "gzip"}) == data
    assert read(gzip.compress(data)) == data  # no header: told by its first bytes
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    with pytest.raises(upload.TooLarge):
        read(bomb, {"content-encoding": "gzip"}, max_inflated_bytes=1 << 20)
    with pytest.raises(upload.TooLarge):
        read(data, max_body_bytes=4000)
    with pytest.raises(upload.TooLarge):
        read(data, {"content-length": "9" * 30})
    with pytest.raises(upload.Malformed):
        read(b"\x1f\x8bnot gzip at all", {"content-encoding": "gzip"})
    with pytest.raises(upload.Malformed):
        read(gzip.compress(data)[:-10], {"content-encoding": "gzip"})  # cut short
    with pytest.raises(upload.Malformed):
        read(gzip.compress(data) + b"junk", {"content-encoding": "gzip"})
    with pytest.raises(upload.Malformed):
        read(zlib.compress(data), {"content-encoding": "deflate"})


def test_an_upload_becomes_one_log_record_per_device_within_the_size_limit() -> None:
    from mpaas.analytics.ingest import pack

    events_ = [(b"a", b"1" * 10), (b"b", b"2" * 10), (b"a", b"3" * 10), (b"a", b"4" * 10)]
    assert pack(events_) == [(b"a", b"1" * 10 + b"\n" + b"3" * 10 + b"\n" + b"4" * 10), (b"b", b"2" * 10)]
    split = pack(events_, max_bytes=25)  # two events of 10 bytes and a newline fit; the third starts a record
    assert split == [(b"a", b"1" * 10 + b"\n" + b"3" * 10), (b"a", b"4" * 10), (b"b", b"2" * 10)]
    assert pack([(b"a", b"x" * 100)], max_bytes=10) == [(b"a", b"x" * 100)]  # one event alone, however big


def mpaas_line(header: str, fields: dict[int, str], size: int) -> str:
    row = ["-"] * size
    row[0], row[1], row[2], row[3] = header, "2026-11-30 08:53:20.000", "SHOP_ANDROID-prod", "1.2.0"
    for i, v in fields.items():
        row[i] = v
    return ",".join(row)


def test_mpaas_log_lines_by_their_published_positions() -> None:
    vm = mpaas_line("D-VM", {6: "s-1", 7: "u-1", 15: "reportActive", 25: "utdid-1", 37: "huawei"}, 48)
    custom = mpaas_line("D-VM", {15: "buy", 22: "sku=42^price=9", 25: "utdid-1"}, 48)
    mm = mpaas_line("D-MM", {11: "performance", 12: "time_startup", 13: "812", 14: "0", 23: "utdid-1"}, 37)
    other_app = vm.replace("SHOP_ANDROID-prod", "MULTI_IOS-test")
    short = "D-VM,2026-11-30 08:53:20.000,SHOP_ANDROID-prod"
    body = "\n".join([vm, custom, mm, other_app, short, "X-YZ" + vm[4:]]).encode()
    local = events.Checker(3600, 86400, clock=lambda: NOW + 8 * 3600)  # the lines' time is UTC+8
    batch = events.mpaas_lines(body, directory().resolve, local, 100, tz_minutes=480)
    assert batch.app == ("SHOP", "prod")
    launch, buy, startup = batch.events
    assert (launch.name, launch.device_id, launch.user_id, launch.dims) == (
        "launch",
        "utdid-1",
        "u-1",
        ("android", "1.2.0", "huawei"),
    )
    assert launch.ts_ms == NOW_MS and launch.props == {"session": "s-1"}  # 08:53:20 at UTC+8
    assert buy.props == {"sku": "42", "price": "9"}
    assert (startup.name, startup.props) == ("startup", {"ms": 812, "cold": True})
    assert [(r.index, r.code) for r in batch.refused] == [
        (3, codes.OTHER_APP),
        (4, codes.INVALID_EVENT),
        (5, codes.INVALID_EVENT),
    ]
    again = events.mpaas_lines(body, directory().resolve, local, 100, tz_minutes=480)
    assert [e.id for e in again.events] == [e.id for e in batch.events]  # a line sent again is the same event
    with pytest.raises(events.BadUpload):
        events.mpaas_lines(b"D-VM,x,nonsense", directory().resolve, local, 100)
