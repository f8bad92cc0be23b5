"""FCM HTTP v1 client against the local FCM server (component), and its pure pieces (unit)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import closed_url
from mpaas.push.vendors import fcm
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from push_vendors.fcm import FcmServer, make_service_account

PROJECT = "mpaas-test"


@pytest.fixture(scope="module")
def account() -> dict[str, str]:
    return make_service_account(PROJECT)


def secret_of(account: dict[str, str]) -> dict[str, bytes]:
    return {"serviceAccount": json.dumps(account).encode()}


@pytest_asyncio.fixture
async def server(account: dict[str, str]) -> AsyncIterator[FcmServer]:
    s = FcmServer([account])
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: FcmServer, account: dict[str, str]) -> AsyncIterator[fcm.FcmClient]:
    c = fcm.build(secret_of(account), endpoint=server.url, options={})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **kw)


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: fcm.FcmClient, server: FcmServer) -> None:
    n = note(
        title="Hi",
        body="there",
        data={"order": "42"},
        ttl_seconds=60,
        urgent=True,
        collapse_key="orders",
        badge=3,
        sound="ding.caf",
        category="OPEN_ORDER",
    )
    [result] = await client.send(n, ["tok-a"])
    assert result.outcome is Outcome.SENT
    assert result.status == 200
    assert result.vendor_id is not None and result.vendor_id.startswith(f"projects/{PROJECT}/messages/")
    [got] = server.accepted
    assert got.token == "tok-a"
    assert got.authorization.startswith("Bearer ya29.")
    m = got.message
    assert m["notification"] == {"title": "Hi", "body": "there"}
    assert m["data"] == {"order": "42", "messageId": "m-1"}
    assert m["android"] == {
        "ttl": "60s",
        "priority": "HIGH",
        "collapse_key": "orders",
        "notification": {"sound": "ding.caf", "click_action": "OPEN_ORDER", "tag": "orders"},  # replaces a shown one
    }
    headers = m["apns"]["headers"]
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "orders"
    assert abs(int(headers["apns-expiration"]) - (time.time() + 60)) < 5
    assert m["apns"]["payload"] == {"aps": {"badge": 3, "sound": "ding.caf", "category": "OPEN_ORDER"}}


@pytest.mark.component
async def test_data_only_message_is_a_background_push(client: fcm.FcmClient, server: FcmServer) -> None:
    [result] = await client.send(note(data={"k": "v"}, urgent=False, ttl_seconds=0), ["tok-a"])
    assert result.ok
    m = server.accepted[0].message
    assert "notification" not in m
    assert m["android"]["priority"] == "NORMAL" and m["android"]["ttl"] == "0s"
    assert m["apns"]["headers"] == {"apns-priority": "5", "apns-expiration": "0", "apns-push-type": "background"}
    assert m["apns"]["payload"] == {"aps": {"content-available": 1}}


@pytest.mark.component
async def test_each_token_is_its_own_request_with_one_access_token(client: fcm.FcmClient, server: FcmServer) -> None:
    tokens = [f"tok-{i}" for i in range(7)]
    results = await client.send(note(title="t"), tokens)
    assert [r.token for r in results] == tokens
    assert all(r.ok for r in results)
    assert server.send_requests == 7
    assert sorted(a.token for a in server.accepted) == sorted(tokens)
    assert server.token_requests == 1


@pytest.mark.component
async def test_sends_run_concurrently_within_the_bound(account: dict[str, str], server: FcmServer) -> None:
    server.send_delay = 0.05
    c = fcm.build(secret_of(account), endpoint=server.url, options={"concurrency": "3"})
    try:
        results = await c.send(note(title="t"), [f"tok-{i}" for i in range(12)])
        assert all(r.ok for r in results)
        assert server.max_in_flight == 3
    finally:
        await c.close()


@pytest.mark.component
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("UNREGISTERED", Outcome.INVALID_TOKEN),
        ("SENDER_ID_MISMATCH", Outcome.INVALID_TOKEN),
        ("INVALID_ARGUMENT", Outcome.INVALID_TOKEN),  # the server's answer names message.token
        ("THIRD_PARTY_AUTH_ERROR", Outcome.AUTH_FAILED),
        ("INTERNAL", Outcome.RETRY),
        ("UNAVAILABLE", Outcome.RETRY),
        ("QUOTA_EXCEEDED", Outcome.RATE_LIMITED),
    ],
)
async def test_error_answers_map_to_outcomes(
    client: fcm.FcmClient, server: FcmServer, code: str, outcome: Outcome
) -> None:
    server.fail_token("bad", code)
    good, bad = await client.send(note(title="t"), ["good", "bad"])
    assert good.ok
    assert (bad.outcome, bad.reason, bad.status) == (outcome, code, fcm_status(code))
    assert [a.token for a in server.accepted] == ["good"]
    assert server.token_requests == 1  # THIRD_PARTY_AUTH_ERROR's 401 is not an access-token problem


def fcm_status(code: str) -> int:
    from push_vendors.fcm import ERRORS

    return ERRORS[code][0]


@pytest.mark.component
async def test_invalid_message_is_rejected_not_the_token(client: fcm.FcmClient, server: FcmServer) -> None:
    n = note(title="t", extra={"fcm": {"android": {"ttl": "ten minutes"}}})
    [result] = await client.send(n, ["tok-a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.REJECTED, "INVALID_ARGUMENT", 400)
    assert server.accepted == []


@pytest.mark.component
async def test_payload_too_large_is_refused_before_sending(client: fcm.FcmClient, server: FcmServer) -> None:
    results = await client.send(note(data={"blob": "x" * 4000}), ["a", "b"])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert server.send_requests == 0 and server.token_requests == 0


@pytest.mark.component
async def test_server_also_refuses_too_large(account: dict[str, str], server: FcmServer) -> None:
    # extra fields bypass nothing: the client counts them too, so go around it with a raw request
    c = fcm.build(secret_of(account), endpoint=server.url, options={})
    try:
        access = await c.tokens.get()
        async with httpx.AsyncClient() as h:
            r = await h.post(
                f"{server.url}/v1/projects/{PROJECT}/messages:send",
                json={"message": {"token": "t", "data": {"blob": "x" * 5000}}},
                headers={"Authorization": f"Bearer {access}"},
            )
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "Android message is too big"
        assert fcm.classify(fcm.Answer(400, r.headers, r.content), "t").outcome is Outcome.PAYLOAD_TOO_LARGE
    finally:
        await c.close()


@pytest.mark.component
async def test_expired_access_token_is_refreshed_and_send_retried_once(
    client: fcm.FcmClient, server: FcmServer
) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.expire_tokens()
    [result] = await client.send(note(title="2"), ["a"])
    assert result.ok
    assert server.token_requests == 2
    assert server.send_requests == 3  # 1, then 2 refused with 401 and sent again
    assert [a.message["notification"]["title"] for a in server.accepted] == ["1", "2"]


@pytest.mark.component
async def test_revoked_credentials_fail_auth(client: fcm.FcmClient, server: FcmServer) -> None:
    assert (await client.send(note(title="1"), ["a"]))[0].ok
    server.revoke()
    [result] = await client.send(note(title="2"), ["a"])
    assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "invalid_grant", 400)
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (False, "AuthFailed")
    assert "Invalid JWT Signature." in check.message
    assert len(server.accepted) == 1


@pytest.mark.component
async def test_check_credentials_on_good_credentials(client: fcm.FcmClient, server: FcmServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert server.token_requests == 1 and server.send_requests == 0


@pytest.mark.component
async def test_a_key_the_server_does_not_know_fails_auth(server: FcmServer) -> None:
    other = make_service_account(PROJECT)
    c = fcm.build(secret_of(other), endpoint=server.url, options={})
    try:
        check = await c.check_credentials()
        assert (check.ok, check.reason) == (False, "AuthFailed")
        [result] = await c.send(note(title="t"), ["a"])
        assert result.outcome is Outcome.AUTH_FAILED
    finally:
        await c.close()


@pytest.mark.component
async def test_rate_limit_carries_retry_after(client: fcm.FcmClient, server: FcmServer) -> None:
    server.fail_next(1, 429, retry_after=7)
    [limited] = await client.send(note(title="t"), ["a"])
    assert (limited.outcome, limited.reason, limited.status, limited.retry_after) == (
        Outcome.RATE_LIMITED,
        "QUOTA_EXCEEDED",
        429,
        7.0,
    )
    assert (await client.send(note(title="t"), ["a"]))[0].ok


@pytest.mark.component
async def test_5xx_is_retry(client: fcm.FcmClient, server: FcmServer) -> None:
    server.fail_next(2, 503, retry_after=3)
    results = await client.send(note(title="t"), ["a", "b"])
    assert [(r.outcome, r.reason, r.status, r.retry_after) for r in results] == [
        (Outcome.RETRY, "UNAVAILABLE", 503, 3.0)
    ] * 2


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable(account: dict[str, str]) -> None:
    c = fcm.build(secret_of(account), endpoint=closed_url(), options={})
    try:
        [result] = await c.send(note(title="t"), ["a"])
        assert (result.outcome, result.status) == (Outcome.RETRY, 0)
        assert result.reason == "ConnectError"
        check = await c.check_credentials()
        assert (check.ok, check.reason) == (False, "Unreachable")
    finally:
        await c.close()


@pytest.mark.component
async def test_hostile_answers(client: fcm.FcmClient, server: FcmServer) -> None:
    server.answer_next(502, b"<html>bad gateway</html>")
    server.answer_next(400, b"{" + b'"x":' * 3_000_000)  # 12 MB of broken JSON
    server.answer_next(418, b"\xff\xfe not json")
    a = await client.send(note(title="t"), ["a"])
    b = await client.send(note(title="t"), ["b"])
    c = await client.send(note(title="t"), ["c"])
    assert (a[0].outcome, a[0].status) == (Outcome.RETRY, 502)
    assert a[0].reason.startswith("HTTP 502: <html>")
    assert (b[0].outcome, b[0].status) == (Outcome.REJECTED, 400)
    assert len(b[0].reason) < 300
    assert (c[0].outcome, c[0].status) == (Outcome.REJECTED, 418)


@pytest.mark.component
async def test_auth_endpoint_and_project_options(account: dict[str, str], server: FcmServer) -> None:
    c = fcm.build(secret_of(account), endpoint=closed_url(), options={"authEndpoint": server.url})
    try:
        assert (await c.check_credentials()).ok  # the token came from authEndpoint, not the (dead) endpoint
        assert server.token_requests == 1
    finally:
        await c.close()
    c = fcm.build(secret_of(account), endpoint=server.url, options={"projectId": "someone-else"})
    try:
        [result] = await c.send(note(title="t"), ["a"])
        assert (result.outcome, result.reason, result.status) == (Outcome.AUTH_FAILED, "PERMISSION_DENIED", 403)
    finally:
        await c.close()


# unit: pure pieces


@pytest.mark.unit
def test_assertion_is_an_rs256_jwt_google_accepts(account: dict[str, str]) -> None:
    sa = fcm.ServiceAccount.parse(json.dumps(account).encode())
    token = sa.assertion(now=1_700_000_000)
    head, claims, sig = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(head)) == {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    assert json.loads(decode(claims)) == {
        "iss": account["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    public = serialization.load_pem_private_key(account["private_key"].encode(), None).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(decode(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.unit
def test_bad_service_accounts_say_what_to_fix(account: dict[str, str]) -> None:
    cases = {
        b"": "missing",
        b"not json": "not JSON",
        b"[]": "not a JSON object",
        json.dumps({"private_key": account["private_key"]}).encode(): "missing client_email",
        json.dumps({**account, "private_key": "garbage"}).encode(): "not a PEM private key",
    }
    for raw, expected in cases.items():
        with pytest.raises(CredentialsError, match=expected):
            fcm.build({"serviceAccount": raw}, endpoint=None, options={})
    no_project = {k: v for k, v in account.items() if k != "project_id"}
    with pytest.raises(CredentialsError, match="projectId"):
        fcm.build(secret_of(no_project), endpoint=None, options={})


@pytest.mark.unit
async def test_urls_follow_endpoint_and_options(account: dict[str, str]) -> None:
    real = fcm.build(secret_of(account), endpoint=None, options={})
    assert real.send_url == f"https://fcm.googleapis.com/v1/projects/{PROJECT}/messages:send"
    assert real.token_url == "https://oauth2.googleapis.com/token"
    local = fcm.build(secret_of(account), endpoint="http://127.0.0.1:9/", options={"projectId": "p2"})
    assert local.send_url == "http://127.0.0.1:9/v1/projects/p2/messages:send"
    assert local.token_url == "http://127.0.0.1:9/token"
    split = fcm.build(secret_of(account), endpoint="http://a:1", options={"authEndpoint": "http://b:2"})
    assert split.token_url == "http://b:2/token"
    for c in (real, local, split):
        await c.close()


@pytest.mark.unit
def test_classify_reads_google_rpc_status() -> None:
    def answer(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> fcm.Answer:
        return fcm.Answer(status, httpx.Headers(headers or {}), json.dumps({"error": error}).encode())

    fcm_detail = {"@type": fcm.FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"}
    generic = answer(400, {"code": 400, "message": "Invalid value at 'message.data[0].value'", "details": [fcm_detail]})
    assert fcm.classify(generic, "t").outcome is Outcome.REJECTED
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
    }
    named = answer(400, {"code": 400, "message": "Request contains an invalid argument.", "details": [violation]})
    assert fcm.classify(named, "t").outcome is Outcome.INVALID_TOKEN
    plain_404 = answer(404, {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"})
    assert (fcm.classify(plain_404, "t").outcome, fcm.classify(plain_404, "t").reason) == (
        Outcome.REJECTED,
        "NOT_FOUND",
    )
    dated = answer(429, {"code": 429, "status": "RESOURCE_EXHAUSTED"}, {"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"})
    limited = fcm.classify(dated, "t")
    assert limited.outcome is Outcome.RATE_LIMITED and limited.retry_after is not None and limited.retry_after > 1e8


@pytest.mark.unit
def test_extra_fields_merge_into_the_message() -> None:
    n = note(
        title="t",
        extra={"fcm": {"android": {"restricted_package_name": "com.x"}, "fcm_options": {"analytics_label": "l"}}},
    )
    m = fcm.build_message(n, now=0)
    assert m["android"]["restricted_package_name"] == "com.x" and m["android"]["priority"] == "HIGH"
    assert m["fcm_options"] == {"analytics_label": "l"}
    assert fcm.payload_size({**m, "token": "x" * 10_000}) == fcm.payload_size(m)
