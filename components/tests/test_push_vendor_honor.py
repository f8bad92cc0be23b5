"""Honor Push client against the local Honor server (component), and its pure pieces (unit)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.push.vendors import honor
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import Answer
from push_vendors.honor import Client, HonorServer

CLIENT_ID, CLIENT_SECRET, APP_ID = "108000123", "h0n0r-secret", "104400001"
SECRET = {"clientId": CLIENT_ID.encode(), "clientSecret": CLIENT_SECRET.encode(), "appId": APP_ID.encode()}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HonorServer]:
    s = HonorServer({CLIENT_ID: Client(CLIENT_SECRET, APP_ID)})
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: HonorServer) -> AsyncIterator[honor.HonorClient]:
    c = honor.build(SECRET, endpoint=server.url, options={"badgeClass": "com.example.MainActivity"})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **kw)


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: honor.HonorClient, server: HonorServer) -> None:
    n = note(
        title="Hi",
        body="there",
        data={"order": "42"},
        ttl_seconds=600,
        collapse_key="orders",
        badge=4,
        category="com.example.OPEN_ORDER",
    )
    results = await client.send(n, ["tok-a", "tok-b"])
    assert [(r.outcome, r.status) for r in results] == [(Outcome.SENT, 200)] * 2
    assert results[0].vendor_id and results[0].vendor_id == results[1].vendor_id
    [got] = server.accepted
    assert got.tokens == ["tok-a", "tok-b"]
    assert abs(int(got.timestamp) - time.time() * 1000) < 5000  # milliseconds
    b = got.body
    assert set(b) == {"notification", "data", "android", "token"}  # no "message" wrapper
    assert b["notification"] == {"title": "Hi", "body": "there"}
    assert json.loads(b["data"]) == {"order": "42"}
    assert b["android"] == {
        "ttl": "600s",
        "biTag": "m-1",
        "notification": {
            "title": "Hi",
            "body": "there",
            "clickAction": {"type": 1, "action": "com.example.OPEN_ORDER"},
            "tag": "orders",
            "badge": {"setNum": 4, "badgeClass": "com.example.MainActivity"},
        },
    }


@pytest.mark.component
async def test_data_message(client: honor.HonorClient, server: HonorServer) -> None:
    [result] = await client.send(note(data={"k": "v"}, ttl_seconds=10**7), ["a"])
    assert result.ok
    b = server.accepted[0].body
    assert "notification" not in b and json.loads(b["data"]) == {"k": "v"}
    assert b["android"] == {"ttl": "1296000s", "biTag": "m-1"}


@pytest.mark.component
async def test_tokens_split_into_requests_of_1000(client: honor.HonorClient, server: HonorServer) -> None:
    tokens = [f"tok-{i}" for i in range(1001)]
    results = await client.send(note(title="t"), tokens)
    assert [r.token for r in results] == tokens and all(r.ok for r in results)
    assert [len(a.tokens) for a in server.accepted] == [1000, 1]
    assert (server.send_requests, server.token_requests) == (2, 1)


@pytest.mark.component
async def test_expired_and_failed_tokens_in_a_success(client: honor.HonorClient, server: HonorServer) -> None:
    server.unregister("gone")
    server.failing.add("flaky")
    results = await client.send(note(title="t"), ["a", "gone", "flaky"])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "expireTokens"),
        (Outcome.REJECTED, "failTokens"),
    ]
    assert server.accepted[0].tokens == ["a"]


@pytest.mark.component
async def test_all_tokens_invalid(client: honor.HonorClient, server: HonorServer) -> None:
    server.unregister("gone")
    [result] = await client.send(note(title="t"), ["gone"])
    assert (result.outcome, result.reason, result.status) == (Outcome.INVALID_TOKEN, "80300007", 400)


@pytest.mark.component
async def test_bad_request_is_rejected_with_the_code(client: honor.HonorClient, server: HonorServer) -> None:
    [result] = await client.send(note(title="t", extra={"honor": {"android": {"ttl": "soon"}}}), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.REJECTED, "80100001", 400)
    assert server.accepted == []


@pytest.mark.component
async def test_payload_too_large_is_refused_before_sending(client: honor.HonorClient, server: HonorServer) -> None:
    results = await client.send(note(title="t", data={"blob": "x" * 4000}), ["a", "b"])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert (server.send_requests, server.token_requests) == (0, 0)


@pytest.mark.component
async def test_server_refuses_too_large_and_a_missing_timestamp(client: honor.HonorClient, server: HonorServer) -> None:
    access = await client.tokens.get()
    async with httpx.AsyncClient() as h:
        auth = {"Authorization": f"Bearer {access}"}
        big = await h.post(
            client.send_url, json={"token": ["a"], "data": "x" * 5000}, headers={**auth, "timestamp": "1"}
        )
        untimed = await h.post(client.send_url, json={"token": ["a"], "data": "{}"}, headers=auth)
    assert (big.status_code, big.json()["code"]) == (400, 80300008)
    [result] = honor.classify(Answer(big.status_code, big.headers, big.content), ["a"])
    assert result.outcome is Outcome.PAYLOAD_TOO_LARGE
    assert (untimed.status_code, untimed.json()["code"]) == (400, 80100001)


@pytest.mark.component
async def test_expired_access_token_is_refreshed_and_send_retried_once(
    client: honor.HonorClient, server: HonorServer
) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.expire_tokens()
    [result] = await client.send(note(title="2"), ["a"])
    assert result.ok
    assert (server.token_requests, server.send_requests) == (2, 3)
    assert [a.body["notification"]["title"] for a in server.accepted] == ["1", "2"]


@pytest.mark.component
async def test_revoked_credentials_fail_auth(client: honor.HonorClient, server: HonorServer) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.revoke()
    [result] = await client.send(note(title="2"), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "invalid_client", 401)
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (False, "AuthFailed")
    assert check.message == "invalid_client: Invalid client or Invalid client credentials"


@pytest.mark.component
async def test_token_of_another_app_is_auth_failed_after_one_refresh(server: HonorServer) -> None:
    c = honor.build(SECRET, endpoint=server.url, options={})
    c.send_url = c.send_url.replace(APP_ID, "999")  # an app this client is not for
    try:
        [result] = await c.send(note(title="t"), ["a"])
        assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "80200001", 401)
        assert (server.token_requests, server.send_requests) == (2, 2)
    finally:
        await c.close()


@pytest.mark.component
async def test_check_credentials_on_good_credentials(client: honor.HonorClient, server: HonorServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert (server.token_requests, server.send_requests) == (1, 0)


@pytest.mark.component
@pytest.mark.parametrize("status", [429, 503])
async def test_flow_control_carries_retry_after(client: honor.HonorClient, server: HonorServer, status: int) -> None:
    server.fail_next(1, status, retry_after=11)
    [result] = await client.send(note(title="t"), ["a"])
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, status, 11.0)


@pytest.mark.component
async def test_internal_error_is_retry(client: honor.HonorClient, server: HonorServer) -> None:
    server.fail_next(1, 500)
    [result] = await client.send(note(title="t"), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "81000001", 500)


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    c = honor.build(SECRET, endpoint=closed_url(), options={})
    try:
        [result] = await c.send(note(title="t"), ["a"])
        assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, 0, "ConnectError")
        check = await c.check_credentials()
        assert (check.ok, check.reason) == (False, "Unreachable")
    finally:
        await c.close()


@pytest.mark.component
async def test_hostile_answers(client: honor.HonorClient, server: HonorServer) -> None:
    server.answer_next(504, b"gateway timeout")
    server.answer_next(200, b'{"code": 200, "data": {"failTokens": ["' + b"x" * 3_000_000)
    server.answer_next(200, json.dumps({"code": 200, "data": "not an object"}).encode())
    first = await client.send(note(title="t"), ["a"])
    second = await client.send(note(title="t"), ["a"])
    third = await client.send(note(title="t"), ["a"])
    assert (first[0].outcome, first[0].status) == (Outcome.RETRY, 504)
    assert (second[0].outcome, second[0].status) == (Outcome.REJECTED, 200)
    assert len(second[0].reason) < 300
    assert (third[0].outcome, third[0].vendor_id) == (Outcome.SENT, None)


@pytest.mark.component
async def test_short_token_path_and_auth_endpoint(server: HonorServer) -> None:
    c = honor.build(SECRET, endpoint=closed_url(), options={"authEndpoint": server.url})
    try:
        assert (await c.check_credentials()).ok
    finally:
        await c.close()
    async with httpx.AsyncClient() as h:
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        r = await h.post(f"{server.url}/auth/token", data=form)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"


# unit: pure pieces


@pytest.mark.unit
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (80300007, Outcome.INVALID_TOKEN),
        (80300008, Outcome.PAYLOAD_TOO_LARGE),
        (80300002, Outcome.AUTH_FAILED),
        (80100003, Outcome.REJECTED),
        (81000001, Outcome.RETRY),
    ],
)
def test_result_codes(code: int, outcome: Outcome) -> None:
    answer = Answer(400, httpx.Headers(), json.dumps({"code": code, "message": "m", "data": None}).encode())
    assert [(r.outcome, r.reason) for r in honor.classify(answer, ["t"])] == [(outcome, str(code))]


@pytest.mark.unit
async def test_credentials_and_urls() -> None:
    with pytest.raises(CredentialsError, match="appId: missing"):
        honor.build({"clientId": b"c", "clientSecret": b"s"}, endpoint=None, options={})
    with pytest.raises(CredentialsError, match="clientSecret: missing"):
        honor.build({"clientId": b"c", "appId": b"a"}, endpoint=None, options={})
    c = honor.build({"clientId": b"c", "clientSecret": b"s"}, endpoint=None, options={"appId": "777"})
    assert c.send_url == "https://push-api.cloud.hihonor.com/api/v1/777/sendMessage"
    assert c.token_url == "https://iam.developer.hihonor.com/auth/realms/developer/protocol/openid-connect/token"
    await c.close()
    c = honor.build(SECRET, endpoint="http://127.0.0.1:9", options={"authEndpoint": "http://127.0.0.1:8/"})
    assert c.send_url == f"http://127.0.0.1:9/api/v1/{APP_ID}/sendMessage"
    assert c.token_url == "http://127.0.0.1:8/auth/realms/developer/protocol/openid-connect/token"
    await c.close()


@pytest.mark.unit
def test_body_has_no_priority_or_sound_and_measures_without_tokens() -> None:
    b = honor.build_body(note(title="t", urgent=True, sound="ding", badge=3))
    assert "badge" not in b["android"]["notification"]  # no badgeClass
    assert "sound" not in json.dumps(b) and "urgency" not in json.dumps(b)
    assert honor.payload_size({**b, "token": ["x" * 100] * 1000}) == honor.payload_size(b)
