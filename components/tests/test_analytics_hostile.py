"""Hostile uploads against the ingestion app itself (ASGI, no server): each gets its documented answer."""

import asyncio
import json
import time
from typing import Any

import pytest

from mpaas.analytics import codes
from mpaas.analytics.ingest import Ingest, Publisher
from mpaas.analytics.realtime import MemoryAggregates, apply_records
from mpaas.analytics.settings import AnalyticsSettings
from mpaas.apps import AppDirectory
from mpaas.stores import MemoryEventLog, MemoryHotStore

pytestmark = pytest.mark.unit


class Live:
    current = AppDirectory({"SHOP": ("SHOP", "prod"), "SHOP/prod": ("SHOP", "prod")})


def ingest(**settings: Any) -> tuple[Ingest, MemoryEventLog]:
    log = MemoryEventLog()
    s = AnalyticsSettings(**settings)
    return Ingest(s, Live(), Publisher(log, "t", 1000, 2.0), MemoryHotStore()), log  # type: ignore[arg-type]


async def call(
    app: Ingest,
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    query: bytes = b"",
    delay: float = 0,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if delay:
            await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method, "query_string": query, "headers": headers or []}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def native(*evs: dict[str, Any]) -> bytes:
    return json.dumps({"appId": "SHOP", "workspaceId": "prod", "deviceId": "d", "events": list(evs)}).encode()


NOW = int(time.time() * 1000)


async def test_a_lone_surrogate_is_stored_escaped_not_a_500() -> None:
    app, log = ingest()
    status, doc = await call(app, "/v1/events", native({"event": "e", "ts": NOW, "props": {"s": "\ud800"}}))
    assert (status, doc["accepted"]) == (200, 1)
    (record,) = [r async for r in log.consume("t", "g", idle_timeout=0.1)]
    assert json.loads(record.value)["props"]["s"] == "\ud800"


@pytest.mark.parametrize(
    "body",
    [
        b'{"appId": "SHOP", "workspaceId": "prod", "deviceId": "d", "events": [{"event": "e", "ts": NaN}]}',
        b'{"appId": "SHOP", "workspaceId": "prod", "deviceId": "d", "events": [], "x": ' + b"9" * 4000 + b"}",
    ],
    ids=["NaN", "a 4000-digit number"],
)
async def test_numbers_other_consumers_could_not_read_are_refused(body: bytes) -> None:
    status, doc = await call(ingest()[0], "/v1/events", body)
    assert (status, doc["code"]) == (400, codes.MALFORMED_BODY.code)


async def test_an_event_over_64_kib_is_refused_alone() -> None:
    big = {"event": "big", "ts": NOW, "props": {"x": "y" * 70_000}}
    status, doc = await call(ingest()[0], "/v1/events", native(big, {"event": "small", "ts": NOW}))
    assert (status, doc["accepted"], doc["refused"][0]["index"]) == (200, 1, 0)


async def test_countly_requests_that_can_never_succeed_are_taken_as_done() -> None:
    app, _ = ingest()
    many = b"&".join(b"k%d=v" % i for i in range(100)) + b"&app_key=SHOP&device_id=d"
    assert await call(app, "/i", method="GET", query=many) == (200, {"result": "Success", "refused": "MalformedBody"})
    huge = b"app_key=SHOP&device_id=d&events=" + b"x" * (2 << 20)
    status, doc = await call(app, "/i", method="GET", query=huge)
    assert (status, doc) == (200, {"result": "Success", "refused": "RequestTooLarge"})


async def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    status, doc = await call(ingest(body_timeout_seconds=0.2)[0], "/v1/events", native(), delay=1)
    assert (status, doc["code"]) == (408, codes.REQUEST_TIMEOUT.code)


async def test_repeated_framing_headers_are_refused() -> None:
    twice = [(b"content-encoding", b"gzip"), (b"content-encoding", b"identity")]
    status, doc = await call(ingest()[0], "/v1/events", native(), headers=twice)
    assert (status, doc["code"]) == (400, codes.MALFORMED_BODY.code)


async def test_a_malformed_crash_never_holds_up_the_real_time_consumer() -> None:
    line = json.dumps(
        {
            "id": "x",
            "app": "SHOP",
            "workspace": "prod",
            "event": "$exception",
            "device": "d",
            "ts": NOW,
            "props": {"$exception_list": [{"stacktrace": "s"}]},
        }
    ).encode()
    assert await apply_records(MemoryAggregates(), line) == 1  # counted as a crash, not grouped, not stuck


async def test_mpaas_log_lines_go_through_v1_logs() -> None:
    row = ["-"] * 48
    stamp = time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime())
    row[0], row[1], row[2], row[15], row[25] = "D-VM", stamp, "SHOP_IOS-prod", "reportActive", "u"
    app, log = ingest()
    status, doc = await call(app, "/v1/logs", ",".join(row).encode(), query=b"tz=0")
    assert (status, doc["accepted"]) == (200, 1)
    (record,) = [r async for r in log.consume("t", "g", idle_timeout=0.1)]
    assert json.loads(record.value)["event"] == "launch" and json.loads(record.value)["source"] == "mpaas"
    for query in (b"tz=9999", b"tz=%D9%A1", b"&".join(b"k%d=v" % i for i in range(20))):
        status, doc = await call(app, "/v1/logs", ",".join(row).encode(), query=query)
        assert (status, doc["code"]) == (400, codes.MALFORMED_BODY.code)
