"""OPPO Push client against the local OPPO server (component), and its pure pieces (unit)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conftest import closed_url
from mpaas.push.vendors import oppo
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import CHINA, Answer, seconds_to_midnight
from push_vendors.oppo import OppoServer

APP_KEY = "2c5fb1c1a5f04d3b9ee1c29c6e2d44ab"
MASTER_SECRET = "e4b7a0d7a3f34a18a1b9a6b5c0b2f1c3"
AUTH = "/server/v1/auth"
UNICAST = "/server/v1/message/notification/unicast"
BATCH = "/server/v1/message/notification/unicast_batch"


def regid(i: int) -> str:
    return f"CN_{i:032x}"


def secret() -> dict[str, bytes]:
    return {"appKey": APP_KEY.encode(), "masterSecret": MASTER_SECRET.encode()}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[OppoServer]:
    s = OppoServer(APP_KEY, MASTER_SECRET)
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: OppoServer) -> AsyncIterator[oppo.OppoClient]:
    c = oppo.build(secret(), endpoint=server.url, options={})
    yield c
    await c.close()


def note(**kw: Any) -> Notification:
    return Notification(message_id=kw.pop("message_id", "m-1"), **{"title": "Hi", "body": "there", **kw})


# --- component: against the local server ----------------------------------------------


@pytest.mark.component
async def test_send_arrives_with_fields_mapped(client: oppo.OppoClient, server: OppoServer) -> None:
    n = note(data={"order": "42"}, ttl_seconds=3600, category="orders", extra={"click_action_type": 0})
    [result] = await client.send(n, [regid(1)])
    assert result.outcome is Outcome.SENT, result
    assert result.vendor_id and result.vendor_id.startswith(APP_KEY)
    assert server.requests == [AUTH, UNICAST]
    [arrived] = server.accepted
    assert arrived.token == regid(1)
    assert arrived.message == {
        "title": "Hi",
        "content": "there",
        "app_message_id": "m-1",
        "off_line": True,
        "off_line_ttl": 3600,
        "channel_id": "orders",
        "action_parameters": '{"order":"42"}',
        "click_action_type": 0,
    }


@pytest.mark.component
async def test_same_message_id_is_pushed_once(client: oppo.OppoClient, server: OppoServer) -> None:
    first = await client.send(note(), [regid(1)])
    again = await client.send(note(), [regid(1)])
    assert [r.outcome for r in first + again] == [Outcome.SENT, Outcome.SENT]
    assert len(server.accepted) == 1


@pytest.mark.component
async def test_tokens_split_into_batches_of_max_tokens(client: oppo.OppoClient, server: OppoServer) -> None:
    client.max_tokens = 2
    tokens = [regid(i) for i in range(5)]
    results = await client.send(note(), tokens)
    assert [r.token for r in results] == tokens
    assert all(r.outcome is Outcome.SENT and r.vendor_id for r in results)
    assert server.requests == [AUTH, BATCH, BATCH, UNICAST]  # one auth token for all; a lone token is a unicast
    assert [a.token for a in server.accepted] == tokens


@pytest.mark.component
async def test_invalid_registration_ids(client: oppo.OppoClient, server: OppoServer) -> None:
    server.unregister(regid(2))
    results = await client.send(note(), [regid(1), regid(2), "not-a-regid"])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.INVALID_TOKEN, "10000"),
        (Outcome.INVALID_TOKEN, "10000"),
    ]
    [single] = await client.send(note(message_id="m-2"), [regid(2)])
    assert (single.outcome, single.reason) == (Outcome.INVALID_TOKEN, "10000")


@pytest.mark.component
async def test_daily_quota_is_quota_exceeded_until_china_midnight(client: oppo.OppoClient, server: OppoServer) -> None:
    server.quota = 10
    server.set_sent_today(10)
    results = await client.send(note(), [regid(1), regid(2)])
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.QUOTA_EXCEEDED, "33")] * 2
    assert results[0].retry_after is not None
    assert abs(results[0].retry_after - seconds_to_midnight(CHINA)) < 5


@pytest.mark.component
@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (13, Outcome.RATE_LIMITED),
        (-2, Outcome.RATE_LIMITED),
        (-1, Outcome.RETRY),
        (28, Outcome.AUTH_FAILED),
        (41, Outcome.REJECTED),
    ],
)
async def test_vendor_codes_map_to_outcomes(
    client: oppo.OppoClient, server: OppoServer, code: int, outcome: Outcome
) -> None:
    assert (await client.check_credentials()).ok  # the token first: the injected answer goes to the send
    server.answer_next(json.dumps({"code": code, "message": "x"}).encode())
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (outcome, str(code))


@pytest.mark.component
async def test_batch_entry_errors_map_per_token(client: oppo.OppoClient, server: OppoServer) -> None:
    assert (await client.check_credentials()).ok
    data = [
        {"messageId": "a", "registrationId": regid(1)},
        {"registrationId": regid(2), "errorCode": 33, "errorMessage": "limit"},
    ]
    server.answer_next(json.dumps({"code": 0, "message": "Success", "data": data}).encode())
    results = await client.send(note(), [regid(1), regid(2), regid(3)])
    assert [(r.outcome, r.reason) for r in results] == [
        (Outcome.SENT, ""),
        (Outcome.QUOTA_EXCEEDED, "33"),
        (Outcome.RETRY, "NotInAnswer"),
    ]


@pytest.mark.component
@pytest.mark.parametrize(
    "n",
    [
        note(title="t" * 51),
        note(body="b" * 201),
        note(data={"blob": "x" * 5000}),
    ],
)
async def test_too_large_is_refused_before_sending(
    client: oppo.OppoClient, server: OppoServer, n: Notification
) -> None:
    results = await client.send(n, [regid(1), regid(2)])
    assert [r.outcome for r in results] == [Outcome.PAYLOAD_TOO_LARGE] * 2
    assert server.requests == []


@pytest.mark.component
async def test_missing_content_is_rejected_by_oppo(client: oppo.OppoClient) -> None:
    [result] = await client.send(Notification(message_id="m-1", title="only a title"), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.REJECTED, "40")


@pytest.mark.component
async def test_expired_token_is_refreshed_and_the_send_retried_once(
    client: oppo.OppoClient, server: OppoServer
) -> None:
    await client.send(note(), [regid(1)])
    server.expire_tokens()
    [result] = await client.send(note(message_id="m-2"), [regid(1)])
    assert result.outcome is Outcome.SENT
    assert server.requests == [AUTH, UNICAST, UNICAST, AUTH, UNICAST]
    assert len(server.accepted) == 2


@pytest.mark.component
async def test_revoked_credentials_are_auth_failed(client: oppo.OppoClient, server: OppoServer) -> None:
    await client.send(note(), [regid(1)])
    server.revoke()
    [result] = await client.send(note(message_id="m-2"), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.AUTH_FAILED, "16")  # token refused (11), new one refused
    check = await client.check_credentials()
    assert (check.ok, check.reason, check.message) == (False, "AuthFailed", "16 Invalid Signature")


@pytest.mark.component
async def test_good_credentials_check(client: oppo.OppoClient, server: OppoServer) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert server.requests == [AUTH]


@pytest.mark.component
async def test_wrong_app_key_fails_the_check(server: OppoServer) -> None:
    c = oppo.build({"appKey": b"other", "masterSecret": MASTER_SECRET.encode()}, endpoint=server.url, options={})
    try:
        check = await c.check_credentials()
    finally:
        await c.close()
    assert (check.ok, check.reason, check.message) == (False, "AuthFailed", "14 Invalid App Key")


@pytest.mark.component
async def test_429_is_rate_limited_with_retry_after(client: oppo.OppoClient, server: OppoServer) -> None:
    assert (await client.check_credentials()).ok
    server.rate_limit_next(retry_after=7)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RATE_LIMITED, 429, 7.0)


@pytest.mark.component
async def test_5xx_is_retry(client: oppo.OppoClient, server: OppoServer) -> None:
    assert (await client.check_credentials()).ok
    server.fail_next(status=502)
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.reason) == (Outcome.RETRY, "HTTP 502")


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    c = oppo.build(secret(), endpoint=closed_url(), options={})
    try:
        [result] = await c.send(note(), [regid(1)])
        check = await c.check_credentials()
    finally:
        await c.close()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "ConnectError")
    assert (check.ok, check.reason) == (False, "Unreachable")


@pytest.mark.component
async def test_auth_endpoint_option_splits_the_hosts(server: OppoServer) -> None:
    c = oppo.build(secret(), endpoint=closed_url(), options={"authEndpoint": server.url})
    try:
        assert (await c.check_credentials()).ok
        [result] = await c.send(note(), [regid(1)])
    finally:
        await c.close()
    assert result.outcome is Outcome.RETRY
    assert server.requests == [AUTH]


@pytest.mark.component
@pytest.mark.parametrize(
    ("body", "status", "outcome"),
    [
        (b"{" + b" " * (2 * 1024 * 1024), 200, Outcome.REJECTED),
        (b"<html>oops</html>", 500, Outcome.RETRY),
        (b"not json", 200, Outcome.REJECTED),
        (b'{"code": "0"}', 200, Outcome.REJECTED),
    ],
)
async def test_hostile_answers(
    client: oppo.OppoClient, server: OppoServer, body: bytes, status: int, outcome: Outcome
) -> None:
    assert (await client.check_credentials()).ok
    server.answer_next(body, status, "text/html")
    [result] = await client.send(note(), [regid(1)])
    assert (result.outcome, result.status) == (outcome, status)


# --- unit: pure pieces -----------------------------------------------------------------


@pytest.mark.unit
def test_sign_is_sha256_of_key_timestamp_secret() -> None:
    # OPPO publishes no vector: this one was computed apart from the code, with
    # printf '%s' "$APP_KEY""1700000000000""$MASTER_SECRET" | sha256sum
    assert oppo.sign(APP_KEY, 1700000000000, MASTER_SECRET) == (
        "ab5e783dca7591831ecfa210c914b31eeeca7d59a90b22e19fc0eeeb60c64232"
    )


@pytest.mark.unit
def test_notification_without_ttl_or_data() -> None:
    n = Notification(message_id="m-3", title="T", body="B", ttl_seconds=0, urgent=False)
    assert oppo.build_notification(n) == {"title": "T", "content": "B", "app_message_id": "m-3", "off_line": False}
    long_ttl = oppo.build_notification(Notification(message_id="m", ttl_seconds=30 * 86400))
    assert long_ttl["off_line_ttl"] == 864000


@pytest.mark.unit
def test_answer_code_must_be_an_int() -> None:
    assert Answer(200, httpx.Headers(), b'{"code": true}').integer("code") is None
    assert Answer(200, httpx.Headers(), b'{"code": 11}').integer("code") == 11


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "options", "what"),
    [
        ({"masterSecret": b"s"}, {}, "appKey"),
        ({"appKey": b"k"}, {}, "masterSecret"),
        ({"appKey": b"k", "masterSecret": b"\xfe"}, {}, "UTF-8"),
        ({"appKey": b"k", "masterSecret": b"s"}, {"region": "Moon"}, "region"),
    ],
)
def test_build_says_what_to_fix(secret: dict[str, bytes], options: dict[str, str], what: str) -> None:
    with pytest.raises(CredentialsError, match=what):
        oppo.build(secret, endpoint=None, options=options)


@pytest.mark.unit
async def test_region_picks_the_endpoint() -> None:
    c = oppo.build(secret(), endpoint=None, options={"region": "International"})
    await c.close()
    assert (c.endpoint, c.auth_endpoint) == ("https://api-intl.push.oppomobile.com",) * 2
