"""Huawei Push Kit client against the local Push Kit server (component), and its pure pieces (unit)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.push.vendors import huawei
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import Answer
from push_vendors.huawei import HuaweiServer

APP_ID, APP_SECRET = "104513725", "c0ffee5ecret"
SECRET = {"appId": APP_ID.encode(), "appSecret": APP_SECRET.encode()}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HuaweiServer]:
    s = HuaweiServer({APP_ID: APP_SECRET})
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: HuaweiServer) -> AsyncIterator[huawei.HuaweiClient]:
    c = huawei.build(SECRET, endpoint=server.url, options={"badgeClass": "com.example.MainActivity"})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **kw)


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    n = note(
        title="Hi",
        body="there",
        data={"order": "42"},
        ttl_seconds=600,
        urgent=False,
        collapse_key="7",
        badge=3,
        sound="/raw/ding",
        category="com.example.OPEN_ORDER",
    )
    results = await client.send(n, ["tok-a", "tok-b"])
    assert [(r.token, r.outcome, r.status) for r in results] == [
        ("tok-a", Outcome.SENT, 200),
        ("tok-b", Outcome.SENT, 200),
    ]
    assert results[0].vendor_id and results[0].vendor_id == results[1].vendor_id
    [got] = server.accepted
    assert got.tokens == ["tok-a", "tok-b"] and got.validate_only is False
    m = got.message
    assert m["token"] == ["tok-a", "tok-b"]
    assert m["notification"] == {"title": "Hi", "body": "there"}
    assert json.loads(m["data"]) == {"order": "42"}
    assert m["android"] == {
        "urgency": "NORMAL",
        "ttl": "600s",
        "bi_tag": "m-1",
        "collapse_key": 7,
        "notification": {
            "title": "Hi",
            "body": "there",
            "click_action": {"type": 1, "action": "com.example.OPEN_ORDER"},
            "sound": "/raw/ding",
            "default_sound": False,
            "tag": "7",
            "badge": {"set_num": 3, "class": "com.example.MainActivity"},
        },
    }


@pytest.mark.component
async def test_data_message(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    [result] = await client.send(note(data={"k": "v"}, collapse_key="chat-9"), ["tok-a"])
    assert result.ok
    m = server.accepted[0].message
    assert "notification" not in m and json.loads(m["data"]) == {"k": "v"}
    assert m["android"] == {"urgency": "HIGH", "ttl": "86400s", "bi_tag": "m-1"}  # chat-9 is no cache group


@pytest.mark.component
async def test_tokens_split_into_requests_of_1000(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    tokens = [f"tok-{i}" for i in range(2500)]
    results = await client.send(note(title="t"), tokens)
    assert [r.token for r in results] == tokens and all(r.ok for r in results)
    assert [len(a.tokens) for a in server.accepted] == [1000, 1000, 500]
    assert server.send_requests == 3 and server.token_requests == 1


@pytest.mark.component
async def test_partial_success_marks_the_illegal_tokens(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    server.unregister("gone-1")
    server.unregister("gone-2")
    results = await client.send(note(title="t"), ["a", "gone-1", "b", "gone-2"])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "80100000"),
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "80100000"),
    ]
    assert server.accepted[0].tokens == ["a", "b"]


@pytest.mark.component
async def test_all_tokens_invalid(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    server.unregister("gone")
    [result] = await client.send(note(title="t"), ["gone"])
    assert (result.outcome, result.reason, result.status) == (Outcome.INVALID_TOKEN, "80300007", 400)
    assert server.accepted == []


@pytest.mark.component
async def test_bad_message_is_rejected_with_the_code(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    cases = [
        ({"huawei": {"android": {"ttl": "a day"}}}, "80100001"),
        ({"huawei": {"android": {"collapse_key": 500}}}, "80100013"),
        ({"huawei": {"data": {"not": "a string"}}}, "80100003"),
    ]
    for extra, code in cases:
        [result] = await client.send(note(title="t", extra=extra), ["a"])
        assert (result.outcome, result.reason, result.status) == (Outcome.REJECTED, code, 400)
    assert server.accepted == []


@pytest.mark.component
async def test_payload_too_large_is_refused_before_sending(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    results = await client.send(note(title="t", data={"blob": "x" * 4000}), ["a", "b"])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert server.send_requests == 0 and server.token_requests == 0


@pytest.mark.component
async def test_server_answers_80300008_for_too_large(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    access = await client.tokens.get()
    async with httpx.AsyncClient() as h:
        body = {"message": {"token": ["a"], "data": "x" * 5000}}
        r = await h.post(client.send_url, json=body, headers={"Authorization": f"Bearer {access}"})
    assert (r.status_code, r.json()["code"]) == (400, "80300008")
    [result] = huawei.classify(Answer(r.status_code, r.headers, r.content), ["a"])
    assert result.outcome is Outcome.PAYLOAD_TOO_LARGE


@pytest.mark.component
async def test_expired_access_token_is_refreshed_and_send_retried_once(
    client: huawei.HuaweiClient, server: HuaweiServer
) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.expire_tokens()
    [result] = await client.send(note(title="2"), ["a"])
    assert result.ok
    assert (server.token_requests, server.send_requests) == (2, 3)
    assert [a.message["notification"]["title"] for a in server.accepted] == ["1", "2"]


@pytest.mark.component
async def test_revoked_credentials_fail_auth(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.revoke()
    [result] = await client.send(note(title="2"), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "1101", 400)
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (False, "AuthFailed")
    assert check.message == "1101: invalid client_secret (sub_error 12304)"
    assert len(server.accepted) == 1


@pytest.mark.component
async def test_refused_access_token_twice_is_auth_failed(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    refused = json.dumps({"code": "80200001", "msg": "Oauth authentication error", "requestId": "1"}).encode()
    server.answer_next(401, refused)
    server.answer_next(401, refused)
    [result] = await client.send(note(title="t"), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "80200001", 401)
    assert (server.token_requests, server.send_requests) == (2, 2)


@pytest.mark.component
async def test_check_credentials_on_good_credentials(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert (server.token_requests, server.send_requests) == (1, 0)


@pytest.mark.component
@pytest.mark.parametrize("status", [429, 503])
async def test_flow_control_carries_retry_after(client: huawei.HuaweiClient, server: HuaweiServer, status: int) -> None:
    server.fail_next(1, status, retry_after=9)
    [result] = await client.send(note(title="t"), ["a"])
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, status, 9.0)
    assert (await client.send(note(title="t"), ["a"]))[0].ok


@pytest.mark.component
async def test_internal_error_is_retry(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    server.fail_next(1, 500)
    results = await client.send(note(title="t"), ["a", "b"])
    assert [(r.outcome, r.reason, r.status) for r in results] == [(Outcome.RETRY, "81000001", 500)] * 2


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    c = huawei.build(SECRET, endpoint=closed_url(), options={})
    try:
        [result] = await c.send(note(title="t"), ["a"])
        assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, 0, "ConnectError")
        check = await c.check_credentials()
        assert (check.ok, check.reason) == (False, "Unreachable")
    finally:
        await c.close()


@pytest.mark.component
async def test_hostile_answers(client: huawei.HuaweiClient, server: HuaweiServer) -> None:
    server.answer_next(502, b"<html>bad gateway</html>")
    server.answer_next(200, b'{"code": "80000000", "msg": "' + b"x" * 5_000_000)  # cut off: not JSON
    server.answer_next(200, b"[1, 2, 3]")
    first = await client.send(note(title="t"), ["a"])
    second = await client.send(note(title="t"), ["a"])
    third = await client.send(note(title="t"), ["a"])
    assert (first[0].outcome, first[0].status) == (Outcome.RETRY, 502)
    assert (second[0].outcome, second[0].status) == (Outcome.REJECTED, 200)
    assert len(second[0].reason) < 300
    assert (third[0].outcome, third[0].status) == (Outcome.REJECTED, 200)


@pytest.mark.component
async def test_auth_endpoint_option(server: HuaweiServer) -> None:
    c = huawei.build(SECRET, endpoint=closed_url(), options={"authEndpoint": server.url})
    try:
        assert (await c.check_credentials()).ok
        assert server.token_requests == 1
    finally:
        await c.close()


# unit: pure pieces


@pytest.mark.unit
def test_partial_answer_msg_names_the_illegal_tokens() -> None:
    msg = '{"success":1,"failure":2,"illegal_tokens":["t2","t3"]}'
    answer = Answer(200, httpx.Headers(), json.dumps({"code": "80100000", "msg": msg, "requestId": "r1"}).encode())
    results = huawei.classify(answer, ["t1", "t2", "t3"])
    assert [(r.outcome, r.vendor_id) for r in results] == [
        (Outcome.SENT, "r1"),
        (Outcome.INVALID_TOKEN, None),
        (Outcome.INVALID_TOKEN, None),
    ]
    assert huawei.illegal_tokens("not json") == set()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("80300002", Outcome.AUTH_FAILED),
        ("80300007", Outcome.INVALID_TOKEN),
        ("80300008", Outcome.PAYLOAD_TOO_LARGE),
        ("80300010", Outcome.REJECTED),
        ("80300011", Outcome.REJECTED),
        ("80100003", Outcome.REJECTED),
        ("80600003", Outcome.RETRY),
        ("81000001", Outcome.RETRY),
    ],
)
def test_result_codes(code: str, outcome: Outcome) -> None:
    answer = Answer(400, httpx.Headers(), json.dumps({"code": code, "msg": "m"}).encode())
    assert [(r.outcome, r.reason) for r in huawei.classify(answer, ["t"])] == [(outcome, code)]


@pytest.mark.unit
def test_message_ttl_is_capped_and_badge_needs_a_class() -> None:
    m = huawei.build_message(note(title="t", ttl_seconds=10**8, badge=500))
    assert m["android"]["ttl"] == "1296000s"
    assert "badge" not in m["android"]["notification"]
    m = huawei.build_message(note(title="t", badge=500), badge_class="a.B")
    assert m["android"]["notification"]["badge"] == {"set_num": 99, "class": "a.B"}
    assert huawei.payload_size({**m, "token": ["x" * 100] * 1000}) == huawei.payload_size(m)


@pytest.mark.unit
async def test_credentials_and_urls() -> None:
    with pytest.raises(CredentialsError, match="appSecret: missing"):
        huawei.build({"appId": b"1"}, endpoint=None, options={})
    with pytest.raises(CredentialsError, match="appId: not UTF-8"):
        huawei.build({"appId": b"\xff", "appSecret": b"s"}, endpoint=None, options={})
    c = huawei.build(SECRET, endpoint=None, options={})
    assert c.send_url == f"https://push-api.cloud.huawei.com/v1/{APP_ID}/messages:send"
    assert c.token_url == "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    await c.close()
    c = huawei.build(SECRET, endpoint="http://127.0.0.1:9/", options={})
    assert (c.send_url, c.token_url) == (
        f"http://127.0.0.1:9/v1/{APP_ID}/messages:send",
        "http://127.0.0.1:9/oauth2/v3/token",
    )
    await c.close()
