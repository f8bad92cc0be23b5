"""Xiaomi MiPush client against the local MiPush server (component), and its pure pieces (unit)."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.push.vendors import xiaomi
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import CHINA, Answer, seconds_to_midnight
from push_vendors.xiaomi import XiaomiServer

SECRET = "mi-app-secret=="
PACKAGE = "com.example.shop"


def regid(i: int) -> str:
    return f"regid{i:040d}"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[XiaomiServer]:
    s = XiaomiServer(SECRET, PACKAGE)
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: XiaomiServer) -> AsyncIterator[xiaomi.XiaomiClient]:
    c = xiaomi.build({"appSecret": SECRET.encode()}, endpoint=server.url, options={"packageName": PACKAGE})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **{"title": "Hi", "body": "there", **kw})


# --- component: against the local server ----------------------------------------------


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    n = note(
        data={"order": "42"},
        ttl_seconds=120,
        collapse_key="orders",
        category="shipping",
        sound="ding",
        extra={"extra.notify_effect": "1"},
    )
    [result] = await client.send(n, [regid(1)])
    assert result.outcome is Outcome.SENT, result
    assert result.vendor_id and result.vendor_id.startswith("slm")
    [arrived] = server.accepted
    assert arrived.token == regid(1)
    m = arrived.message
    assert m["restricted_package_name"] == PACKAGE
    assert (m["title"], m["description"], m["pass_through"]) == ("Hi", "there", "0")
    assert json.loads(m["payload"]) == {"order": "42"}
    assert m["time_to_live"] == "120000"
    assert m["notify_id"] == str(zlib.crc32(b"orders") & 0x7FFFFFFF)
    assert m["notify_type"] == "-1"
    assert m["extra.channel_id"] == "shipping"
    assert m["extra.sound_uri"] == f"android.resource://{PACKAGE}/raw/ding"
    assert m["extra.message_id"] == "m-1"
    assert m["extra.notify_effect"] == "1"


@pytest.mark.component
async def test_tokens_split_into_requests_of_max_tokens(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    client.max_tokens = 2
    tokens = [regid(i) for i in range(5)]
    results = await client.send(note(), tokens)
    assert [r.token for r in results] == tokens
    assert all(r.outcome is Outcome.SENT for r in results)
    assert server.requests == ["/v3/message/regid"] * 3
    assert [a.token for a in server.accepted] == tokens


@pytest.mark.component
async def test_bad_regids_of_a_batch_are_invalid_the_rest_sent(
    client: xiaomi.XiaomiClient, server: XiaomiServer
) -> None:
    server.unregister(regid(2))
    results = await client.send(note(), [regid(1), regid(2), regid(3)])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "bad_regids"),
        (Outcome.SENT, ""),
    ]
    assert [a.token for a in server.accepted] == [regid(1), regid(3)]


@pytest.mark.component
async def test_no_valid_target_is_invalid_token(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    server.unregister(regid(1))
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.INVALID_TOKEN, "20301")


@pytest.mark.component
async def test_daily_quota_is_quota_exceeded_until_china_midnight(
    client: xiaomi.XiaomiClient, server: XiaomiServer
) -> None:
    server.quota = 3
    server.set_sent_today(3)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.QUOTA_EXCEEDED, "10034")
    assert result.retry_after is not None
    assert abs(result.retry_after - seconds_to_midnight(CHINA)) < 5
    assert server.accepted == []


@pytest.mark.component
async def test_other_package_is_rejected(server: XiaomiServer) -> None:
    c = xiaomi.build({"appSecret": SECRET.encode()}, endpoint=server.url, options={"packageName": "com.other"})
    try:
        [result] = await c.send(note(), [regid(1)])
    finally:
        await c.close()
    assert (result.outcome, result.reason) == (Outcome.REJECTED, "22022")


@pytest.mark.component
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (200001, Outcome.QUOTA_EXCEEDED),
        (10027, Outcome.RATE_LIMITED),
        (10002, Outcome.RETRY),
        (65009, Outcome.PAYLOAD_TOO_LARGE),
        (21302, Outcome.AUTH_FAILED),
        (10017, Outcome.REJECTED),
    ],
)
async def test_vendor_codes_map_to_outcomes(
    client: xiaomi.XiaomiClient, server: XiaomiServer, code: int, outcome: Outcome
) -> None:
    server.answer_next(json.dumps({"result": "error", "code": code, "reason": "x"}).encode())
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason, result.status) == (outcome, str(code), 200)


@pytest.mark.component
async def test_payload_too_large_is_refused_before_sending(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    results = await client.send(note(data={"blob": "x" * 5000}), [regid(1), regid(2)])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert server.requests == []


@pytest.mark.component
async def test_revoked_secret_is_auth_failed(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    server.revoke()
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.AUTH_FAILED, "21301")
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (False, "AuthFailed")
    assert "21301" in check.message and "Authentication failed" in check.message


@pytest.mark.component
async def test_wrong_secret_fails_the_credentials_check(server: XiaomiServer) -> None:
    c = xiaomi.build({"appSecret": b"wrong"}, endpoint=server.url, options={"packageName": PACKAGE})
    try:
        check = await c.check_credentials()
    finally:
        await c.close()
    assert (check.ok, check.reason) == (False, "AuthFailed")


@pytest.mark.component
async def test_good_credentials_check_without_sending(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert server.requests == ["/v1/stats/message/counts"]
    assert server.accepted == []


@pytest.mark.component
async def test_429_is_rate_limited_with_retry_after(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    server.rate_limit_next(retry_after=7)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


@pytest.mark.component
async def test_5xx_is_retry(client: xiaomi.XiaomiClient, server: XiaomiServer) -> None:
    server.fail_next(status=503)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "HTTP 503", 503)


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    c = xiaomi.build({"appSecret": SECRET.encode()}, endpoint=closed_url(), options={"packageName": PACKAGE})
    try:
        [result] = await c.send(note(), [regid(1)])
        check = await c.check_credentials()
    finally:
        await c.close()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "ConnectError")
    assert (check.ok, check.reason) == (False, "Unreachable")


@pytest.mark.component
@pytest.mark.parametrize(
    ("body", "status", "outcome"),
    [
        (b"{" + b" " * (2 * 1024 * 1024), 200, Outcome.REJECTED),  # huge: read no further than 64 KiB
        (b"<html>bad gateway</html>", 502, Outcome.RETRY),
        (b"not json", 200, Outcome.REJECTED),
        (b"[1, 2]", 200, Outcome.REJECTED),
    ],
)
async def test_hostile_answers(
    client: xiaomi.XiaomiClient, server: XiaomiServer, body: bytes, status: int, outcome: Outcome
) -> None:
    server.answer_next(body, status, "text/html")
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status) == (outcome, status)


# --- unit: pure pieces -----------------------------------------------------------------


@pytest.mark.unit
def test_form_of_a_data_only_message() -> None:
    form = xiaomi.build_form(
        Notification(message_id="m-9", data={"k": "v"}, ttl_seconds=0, urgent=False), "com.example.shop"
    )
    assert form == {
        "restricted_package_name": "com.example.shop",
        "pass_through": "1",
        "payload": '{"k":"v"}',
        "notify_type": "4",
        "time_to_live": "1000",
        "extra.message_id": "m-9",
    }


@pytest.mark.unit
def test_answer_with_bad_regids() -> None:
    doc = {"result": "ok", "code": 0, "data": {"id": "slm1", "bad_regids": "b"}}
    answer = Answer(200, httpx.Headers(), json.dumps(doc).encode())
    results = xiaomi.results_of(answer, ["a", "b"])
    assert [(r.token, r.outcome, r.vendor_id) for r in results] == [
        ("a", Outcome.SENT, "slm1"),
        ("b", Outcome.INVALID_TOKEN, None),
    ]


@pytest.mark.unit
def test_retry_after_header_forms() -> None:
    assert xiaomi.retry_after(httpx.Headers({"Retry-After": "12"})) == 12.0
    assert xiaomi.retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert xiaomi.retry_after(httpx.Headers({"Retry-After": "soon"})) is None


@pytest.mark.unit
def test_quota_resets_at_china_midnight() -> None:
    # 2024-05-01 15:00 UTC is 23:00 in China: one hour to go
    now = datetime.fromisoformat("2024-05-01T15:00:00+00:00").timestamp()
    assert seconds_to_midnight(CHINA, now) == 3600.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "options", "what"),
    [
        ({}, {"packageName": PACKAGE}, "appSecret"),
        ({"appSecret": b"\xff"}, {"packageName": PACKAGE}, "UTF-8"),
        ({"appSecret": b"s"}, {}, "packageName"),
        ({"appSecret": b"s"}, {"packageName": PACKAGE, "region": "Mars"}, "region"),
    ],
)
def test_build_says_what_to_fix(secret: dict[str, bytes], options: dict[str, str], what: str) -> None:
    with pytest.raises(CredentialsError, match=what):
        xiaomi.build(secret, endpoint=None, options=options)


@pytest.mark.unit
async def test_region_picks_the_endpoint() -> None:
    c = xiaomi.build({"appSecret": b"s"}, endpoint=None, options={"packageName": PACKAGE, "region": "Global"})
    await c.close()
    assert c.endpoint == "https://api.xmpush.global.xiaomi.com"
