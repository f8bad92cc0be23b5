"""vivo Push client against the local vivo server (component), and its pure pieces (unit)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.push.vendors import vivo
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import CHINA, seconds_to_midnight
from push_vendors.vivo import VivoServer

APP_ID = 10004
APP_KEY = "25509283-3767-4b9e-83fe-b6e55ac6243e"
APP_SECRET = "f5c7d33e-1a3b-4a3c-8a3d-4ad5f4a1a2b3"
AUTH, SEND, SAVE, PUSH = "/message/auth", "/message/send", "/message/saveListPayload", "/message/pushToList"


def regid(i: int) -> str:
    return f"v{i:022d}"  # vivo regIds are 23 characters


def secret() -> dict[str, bytes]:
    return {"appId": str(APP_ID).encode(), "appKey": APP_KEY.encode(), "appSecret": APP_SECRET.encode()}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[VivoServer]:
    s = VivoServer(APP_ID, APP_KEY, APP_SECRET)
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: VivoServer) -> AsyncIterator[vivo.VivoClient]:
    c = vivo.build(secret(), endpoint=server.url, options={})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **{"title": "Hi", "body": "there", **kw})


# --- component: against the local server ----------------------------------------------


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: vivo.VivoClient, server: VivoServer) -> None:
    n = note(data={"order": "42"}, ttl_seconds=3600, category="IM", extra={"skipType": 4, "skipContent": "x://o"})
    [result] = await client.send(n, [regid(1)])
    assert result.outcome is Outcome.SENT, result
    assert result.vendor_id
    assert server.requests == [AUTH, SEND]
    [arrived] = server.accepted
    assert arrived.token == regid(1)
    assert arrived.message == {
        "notifyType": 4,
        "title": "Hi",
        "content": "there",
        "skipType": 4,
        "skipContent": "x://o",
        "networkType": -1,
        "classification": 1,
        "requestId": f"m-1:{regid(1)}",
        "pushMode": 0,
        "clientCustomMap": {"order": "42"},
        "category": "IM",
        "timeToLive": 3600,
    }


@pytest.mark.component
async def test_a_message_goes_once_to_each_regid(client: vivo.VivoClient, server: VivoServer) -> None:
    first = await client.send(note(), [regid(1)])
    again = await client.send(note(), [regid(1)])  # same requestId: vivo drops it
    other = await client.send(note(), [regid(2)])
    assert [r.outcome for r in first + again + other] == [Outcome.SENT] * 3
    assert first[0].vendor_id == again[0].vendor_id
    assert [a.token for a in server.accepted] == [regid(1), regid(2)]


@pytest.mark.component
async def test_lists_split_into_requests_of_max_tokens(client: vivo.VivoClient, server: VivoServer) -> None:
    client.max_tokens = 2
    tokens = [regid(i) for i in range(5)]
    results = await client.send(note(ttl_seconds=60), tokens)
    assert [r.token for r in results] == tokens
    assert all(r.outcome is Outcome.SENT and r.vendor_id for r in results)
    assert server.requests == [AUTH, SAVE, PUSH, SAVE, PUSH, SEND]  # pushToList takes 2 to 1000 regIds
    assert [a.token for a in server.accepted] == tokens
    assert server.accepted[0].message["timeToLive"] == 900  # a list payload lives at least 900 s
    assert server.accepted[4].message["timeToLive"] == 60


@pytest.mark.component
async def test_invalid_users_and_regids(client: vivo.VivoClient, server: VivoServer) -> None:
    server.unregister(regid(2), status=2)
    server.unregister(regid(3), status=4)
    results = await client.send(note(), [regid(1), regid(2), regid(3)])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "invalidUser 2"),
        (Outcome.REJECTED, "invalidUser 4"),
    ]
    [single] = await client.send(note(message_id="m-2"), [regid(2)])
    assert (single.outcome, single.reason) == (Outcome.INVALID_TOKEN, "invalidUser 2")
    [short] = await client.send(note(message_id="m-3"), ["too-short"])
    assert (short.outcome, short.reason) == (Outcome.INVALID_TOKEN, "10302")


@pytest.mark.component
async def test_daily_quota_is_quota_exceeded_until_china_midnight(client: vivo.VivoClient, server: VivoServer) -> None:
    server.quota = 5
    server.set_sent_today(5)
    results = await client.send(note(), [regid(1), regid(2)])
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.QUOTA_EXCEEDED, "10070")] * 2
    assert results[0].retry_after is not None
    assert abs(results[0].retry_after - seconds_to_midnight(CHINA)) < 5
    [single] = await client.send(note(), [regid(1)])
    assert (single.outcome, single.reason) == (Outcome.QUOTA_EXCEEDED, "10070")


@pytest.mark.component
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (10252, Outcome.QUOTA_EXCEEDED),
        (10072, Outcome.RATE_LIMITED),
        (10058, Outcome.PAYLOAD_TOO_LARGE),
        (10094, Outcome.AUTH_FAILED),
        (10054, Outcome.REJECTED),
    ],
)
async def test_vendor_codes_map_to_outcomes(
    client: vivo.VivoClient, server: VivoServer, code: int, outcome: Outcome
) -> None:
    assert (await client.check_credentials()).ok
    server.answer_next(json.dumps({"result": code, "desc": "x"}).encode())
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (outcome, str(code))


@pytest.mark.component
@pytest.mark.parametrize(
    "n",
    [
        note(title="标题" * 11),  # 22 CJK characters count 44
        note(body="b" * 101),
        note(data={f"k{i}": "v" for i in range(11)}),
        note(data={"blob": "x" * 1100}),
    ],
)
async def test_too_large_is_refused_before_sending(
    client: vivo.VivoClient, server: VivoServer, n: Notification
) -> None:
    results = await client.send(n, [regid(1), regid(2)])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert server.requests == []


@pytest.mark.component
async def test_twenty_cjk_characters_fit_the_title(client: vivo.VivoClient, server: VivoServer) -> None:
    [result] = await client.send(note(title="标题" * 10), [regid(1)])
    assert result.outcome is Outcome.SENT


@pytest.mark.component
async def test_missing_content_is_rejected_by_vivo(client: vivo.VivoClient) -> None:
    [result] = await client.send(Notification(message_id="m-1", title="only a title"), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.REJECTED, "10057")


@pytest.mark.component
async def test_expired_token_is_refreshed_and_the_send_retried_once(
    client: vivo.VivoClient, server: VivoServer
) -> None:
    await client.send(note(), [regid(1)])
    server.expire_tokens()
    [result] = await client.send(note(message_id="m-2"), [regid(1)])
    assert result.outcome is Outcome.SENT
    assert server.requests == [AUTH, SEND, SEND, AUTH, SEND]
    assert len(server.accepted) == 2


@pytest.mark.component
async def test_revoked_credentials_are_auth_failed(client: vivo.VivoClient, server: VivoServer) -> None:
    await client.send(note(), [regid(1)])
    server.revoke()
    [result] = await client.send(note(message_id="m-2"), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.AUTH_FAILED, "10205")  # token refused, new one refused
    check = await client.check_credentials()
    assert (check.ok, check.reason, check.message) == (False, "AuthFailed", "10205 sign 不正确")


@pytest.mark.component
async def test_good_credentials_check(client: vivo.VivoClient, server: VivoServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert server.requests == [AUTH]


@pytest.mark.component
async def test_wrong_app_id_fails_the_check(server: VivoServer) -> None:
    c = vivo.build({**secret(), "appId": b"99"}, endpoint=server.url, options={})
    try:
        check = await c.check_credentials()
    finally:
        await c.close()
    assert (check.ok, check.reason, check.message) == (False, "AuthFailed", "10202 appId 不存在")


@pytest.mark.component
async def test_429_is_rate_limited_with_retry_after(client: vivo.VivoClient, server: VivoServer) -> None:
    assert (await client.check_credentials()).ok
    server.rate_limit_next(retry_after=7)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


@pytest.mark.component
async def test_5xx_is_retry(client: vivo.VivoClient, server: VivoServer) -> None:
    assert (await client.check_credentials()).ok
    server.fail_next(status=500)
    results = await client.send(note(), [regid(1), regid(2)])
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.RETRY, "HTTP 500")] * 2


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    c = vivo.build(secret(), endpoint=closed_url(), options={})
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
        (b"{" + b" " * (2 * 1024 * 1024), 200, Outcome.REJECTED),
        (b"Internet server error!", 500, Outcome.RETRY),
        (b"not json", 200, Outcome.REJECTED),
        (b'{"result": "0"}', 200, Outcome.REJECTED),
    ],
)
async def test_hostile_answers(
    client: vivo.VivoClient, server: VivoServer, body: bytes, status: int, outcome: Outcome
) -> None:
    assert (await client.check_credentials()).ok
    server.answer_next(body, status, "text/plain")
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status) == (outcome, status)


# --- unit: pure pieces -----------------------------------------------------------------


@pytest.mark.unit
def test_sign_is_lower_hex_md5_of_id_key_timestamp_secret() -> None:
    # appId, appKey and timestamp are the example of vivo's auth page (its secret is not published); the
    # vector was computed apart from the code, with
    # printf '%s' "10004$APP_KEY""1501484120000$APP_SECRET" | md5sum
    assert vivo.sign(APP_ID, APP_KEY, 1501484120000, APP_SECRET) == "e5a59ff95787d39eda24b0fd939dbec0"


@pytest.mark.unit
def test_char_size_counts_cjk_twice() -> None:
    assert vivo.char_size("abc") == 3
    assert vivo.char_size("标题a") == 5


@pytest.mark.unit
def test_request_id_names_the_message_and_its_targets() -> None:
    assert vivo.request_id("m-1", "r1") == "m-1:r1"
    digest = hashlib.sha256(b"r1,r2").hexdigest()[:16]
    assert vivo.request_id("m-1", "r1", "r2") == f"m-1:{digest}"
    long = "x" * 80
    assert vivo.request_id(long, "r1") == hashlib.sha256(f"{long}:r1".encode()).hexdigest()


@pytest.mark.unit
def test_message_of_a_quiet_notification() -> None:
    m = vivo.build_message(Notification(message_id="m-5", title="T", body="B", urgent=False), push_mode=1)
    assert m == {
        "notifyType": 1,
        "title": "T",
        "content": "B",
        "skipType": 1,
        "networkType": -1,
        "classification": 0,
        "pushMode": 1,
    }
    assert vivo.ttl(0, vivo.MIN_TTL_SINGLE) == 60
    assert vivo.ttl(30 * 86400, vivo.MIN_TTL_LIST) == 604800


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "options", "what"),
    [
        ({"appKey": b"k", "appSecret": b"s"}, {}, "appId"),
        ({"appId": b"abc", "appKey": b"k", "appSecret": b"s"}, {}, "not a number"),
        ({"appId": b"1", "appSecret": b"s"}, {}, "appKey"),
        ({"appId": b"1", "appKey": b"k"}, {}, "appSecret"),
        ({"appId": b"1", "appKey": b"k", "appSecret": b"s"}, {"pushMode": "2"}, "pushMode"),
    ],
)
def test_build_says_what_to_fix(secret: dict[str, bytes], options: dict[str, str], what: str) -> None:
    with pytest.raises(CredentialsError, match=what):
        vivo.build(secret, endpoint=None, options=options)
