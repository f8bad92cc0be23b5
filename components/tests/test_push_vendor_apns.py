"""The APNs client against a local HTTP/2 APNs (hack/push_vendors/apns.py), and its pure pieces."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mpaas.push.vendors import apns
from mpaas.push.vendors.auth import jwt
from mpaas.push.vendors.base import CredentialsError, Notification, Outcome
from mpaas.push.vendors.http import parse_retry_after
from push_vendors.apns import KEY_ID, TEAM_ID, TOPIC, ApnsServer, new_auth_key

T1, T2, T3 = "a1" * 32, "b2" * 32, "c3" * 32


def _options(server: ApnsServer, **more: str) -> dict[str, str]:
    return {"teamId": TEAM_ID, "keyId": KEY_ID, "topic": TOPIC, "caFile": server.ca_file, **more}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ApnsServer]:
    s = ApnsServer()
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client(server: ApnsServer) -> AsyncIterator[apns.ApnsClient]:
    c = apns.build({"authKey": server.auth_key}, endpoint=server.url, options=_options(server))
    yield c
    await c.close()


def _decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# -- unit: pure pieces


@pytest.mark.unit
def test_alert_payload_and_headers() -> None:
    n = Notification(
        message_id="m-1",
        title="Hello",
        body="World",
        data={"orderId": "42", "aps": "data cannot replace aps", "mpaasMessageId": "nor this"},
        ttl_seconds=600,
        collapse_key="orders",
        badge=3,
        sound="default",
        category="ORDER",
        extra={"aps": {"mutable-content": 1, "thread-id": "orders"}},
    )
    assert json.loads(apns.build_payload(n)) == {
        "orderId": "42",
        "aps": {
            "alert": {"title": "Hello", "body": "World"},
            "badge": 3,
            "sound": "default",
            "category": "ORDER",
            "mutable-content": 1,
            "thread-id": "orders",
        },
        "mpaasMessageId": "m-1",
    }
    assert apns.build_headers(n, "com.example.app", 1_700_000_000.7) == {
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": "1700000600",
        "apns-id": str(uuid.uuid5(apns.APNS_ID_NAMESPACE, "m-1")),
        "apns-collapse-id": "orders",
        "content-type": "application/json",
    }


@pytest.mark.unit
def test_background_payload_and_headers() -> None:
    n = Notification(message_id="m-2", data={"sync": "1"}, ttl_seconds=0, urgent=True)
    assert json.loads(apns.build_payload(n)) == {"sync": "1", "aps": {"content-available": 1}, "mpaasMessageId": "m-2"}
    headers = apns.build_headers(n, "t", 1_700_000_000)
    # Apple refuses priority 10 for a background push, urgent or not.
    assert (headers["apns-push-type"], headers["apns-priority"], headers["apns-expiration"]) == ("background", "5", "0")
    assert "apns-collapse-id" not in headers
    quiet = apns.build_headers(Notification(message_id="m-3", body="b", urgent=False), "t", 0)
    assert (quiet["apns-push-type"], quiet["apns-priority"]) == ("alert", "5")


@pytest.mark.unit
def test_apns_id_is_stable_and_keeps_uuids() -> None:
    assert apns.apns_id("order-7") == apns.apns_id("order-7") != apns.apns_id("order-8")
    assert uuid.UUID(apns.apns_id("order-7")).version == 5
    assert apns.apns_id("123E4567-E89B-12D3-A456-426614174000") == "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, "", Outcome.SENT),
        (400, "BadDeviceToken", Outcome.INVALID_TOKEN),
        (400, "DeviceTokenNotForTopic", Outcome.INVALID_TOKEN),
        (410, "Unregistered", Outcome.INVALID_TOKEN),
        (410, "ExpiredToken", Outcome.INVALID_TOKEN),
        (400, "BadCollapseId", Outcome.REJECTED),
        (400, "BadExpirationDate", Outcome.REJECTED),
        (400, "BadMessageId", Outcome.REJECTED),
        (400, "BadPriority", Outcome.REJECTED),
        (400, "BadTopic", Outcome.REJECTED),
        (400, "DuplicateHeaders", Outcome.REJECTED),
        (400, "InvalidPushType", Outcome.REJECTED),
        (400, "MissingDeviceToken", Outcome.REJECTED),
        (400, "MissingTopic", Outcome.REJECTED),
        (400, "PayloadEmpty", Outcome.REJECTED),
        (400, "TopicDisallowed", Outcome.REJECTED),
        (400, "IdleTimeout", Outcome.RETRY),
        (403, "BadCertificate", Outcome.AUTH_FAILED),
        (403, "BadCertificateEnvironment", Outcome.AUTH_FAILED),
        (403, "ExpiredProviderToken", Outcome.AUTH_FAILED),
        (403, "Forbidden", Outcome.AUTH_FAILED),
        (403, "InvalidProviderToken", Outcome.AUTH_FAILED),
        (403, "MissingProviderToken", Outcome.AUTH_FAILED),
        (404, "BadPath", Outcome.REJECTED),
        (405, "MethodNotAllowed", Outcome.REJECTED),
        (413, "PayloadTooLarge", Outcome.PAYLOAD_TOO_LARGE),
        (429, "TooManyProviderTokenUpdates", Outcome.RATE_LIMITED),
        (429, "TooManyRequests", Outcome.RATE_LIMITED),
        (500, "InternalServerError", Outcome.RETRY),
        (503, "ServiceUnavailable", Outcome.RETRY),
        (503, "Shutdown", Outcome.RETRY),
    ],
)
def test_outcome_of_each_documented_reason(status: int, reason: str, outcome: Outcome) -> None:
    assert apns.outcome_for(status, reason) is outcome


@pytest.mark.unit
async def test_provider_token_is_es256_with_kid_iss_iat() -> None:
    pem = new_auth_key()
    client = apns.build({"authKey": pem}, endpoint=None, options={"teamId": TEAM_ID, "keyId": KEY_ID, "topic": TOPIC})
    try:
        token, lifetime = await client._sign()
    finally:
        await client.close()
    head, claims, signature = token.split(".")
    assert _decode(head) == {"alg": "ES256", "kid": KEY_ID}
    assert _decode(claims)["iss"] == TEAM_ID
    assert abs(_decode(claims)["iat"] - time.time()) < 5
    assert lifetime - apns.TOKEN_MARGIN == 3000  # re-signed after 50 minutes
    raw = base64.urlsafe_b64decode(signature + "==")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key.public_key().verify(
        encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
        f"{head}.{claims}".encode(),
        ec.ECDSA(hashes.SHA256()),
    )


@pytest.mark.unit
def test_endpoints_by_environment() -> None:
    secret = {"authKey": new_auth_key()}
    opts = {"teamId": TEAM_ID, "keyId": KEY_ID, "topic": TOPIC}
    assert apns.build(secret, endpoint=None, options=opts).base_url == "https://api.push.apple.com"
    sandbox = apns.build(secret, endpoint=None, options={**opts, "environment": "Sandbox"})
    assert sandbox.base_url == "https://api.sandbox.push.apple.com"
    assert apns.build(secret, endpoint="https://apns.local:8443/", options=opts).base_url == "https://apns.local:8443"


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "options", "says"),
    [
        ({}, {}, "neither"),
        ({"authKey": b"k", "certificate": b"c", "privateKey": b"p"}, {}, "both"),
        ({"authKey": b"not a key"}, {}, "authKey: not a PEM private key"),
        ({"authKey": "rsa"}, {}, "P-256"),
        ({"authKey": "p8"}, {"teamId": ""}, "teamId and keyId"),
        ({"authKey": "p8"}, {"keyId": "short"}, "teamId and keyId"),
        ({"authKey": "p8"}, {"topic": ""}, "topic"),
        ({"authKey": "p8"}, {"environment": "Development"}, "Production or Sandbox"),
        ({"certificate": b"c"}, {}, "both certificate and privateKey"),
        ({"certificate": b"not pem", "privateKey": b"p"}, {}, "certificate: not a PEM certificate"),
        ({"authKey": "p8"}, {"caFile": "/nonexistent/ca.pem"}, "caFile"),
    ],
)
def test_credentials_errors_say_what_to_fix(secret: dict[str, Any], options: dict[str, str], says: str) -> None:
    values = {"rsa": _rsa_pem(), "p8": new_auth_key()}
    secret = {k: values.get(v, v) if isinstance(v, str) else v for k, v in secret.items()}
    with pytest.raises(CredentialsError, match=says):
        apns.build(secret, endpoint=None, options={"teamId": TEAM_ID, "keyId": KEY_ID, "topic": TOPIC, **options})


@pytest.mark.unit
def test_mismatched_or_expired_certificate_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Apple Push Services: com.example.app")])

    def cert(not_after: float) -> bytes:
        now = time.time()
        c = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(dt.datetime.fromtimestamp(now - 86400, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
            .sign(key, hashes.SHA256())
        )
        return c.public_bytes(serialization.Encoding.PEM)

    def pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    opts = {"topic": TOPIC}
    with pytest.raises(CredentialsError, match="do not go together"):
        apns.build({"certificate": cert(time.time() + 86400), "privateKey": pem(other)}, endpoint=None, options=opts)
    with pytest.raises(CredentialsError, match="expired on"):
        apns.build({"certificate": cert(time.time() - 60), "privateKey": pem(key)}, endpoint=None, options=opts)
    apns.build({"certificate": cert(time.time() + 86400), "privateKey": pem(key)}, endpoint=None, options=opts)


@pytest.mark.unit
def test_retry_after_seconds_or_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < (parse_retry_after(later) or 0) <= 120


# -- against the local APNs


@pytest.mark.component
async def test_send_maps_fields_over_http2(server: ApnsServer, client: apns.ApnsClient) -> None:
    n = Notification(
        message_id="msg-1",
        title="Hi",
        body="There",
        data={"k": "v"},
        ttl_seconds=3600,
        collapse_key="c1",
        badge=1,
        sound="ping.aiff",
        category="CAT",
    )
    before = int(time.time())
    results = await client.send(n, [T1])
    assert [(r.token, r.outcome, r.status) for r in results] == [(T1, Outcome.SENT, 200)]
    assert results[0].vendor_id == apns.apns_id("msg-1")
    [got] = server.accepted
    assert got.http_version == "2"
    assert got.token == T1 and not got.certificate
    assert got.payload == {
        "k": "v",
        "aps": {"alert": {"title": "Hi", "body": "There"}, "badge": 1, "sound": "ping.aiff", "category": "CAT"},
        "mpaasMessageId": "msg-1",
    }
    h = got.headers
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (TOPIC, "alert", "10")
    assert (h["apns-collapse-id"], h["apns-id"]) == ("c1", apns.apns_id("msg-1"))
    assert before + 3600 <= int(h["apns-expiration"]) <= int(time.time()) + 3600
    assert h["authorization"].startswith("bearer ")


@pytest.mark.component
async def test_background_send_arrives_as_background(server: ApnsServer, client: apns.ApnsClient) -> None:
    results = await client.send(Notification(message_id="bg", data={"sync": "now"}, ttl_seconds=0), [T1])
    assert results[0].ok
    [got] = server.accepted
    assert got.payload["aps"] == {"content-available": 1}
    assert (got.headers["apns-push-type"], got.headers["apns-priority"], got.headers["apns-expiration"]) == (
        "background",
        "5",
        "0",
    )


@pytest.mark.component
async def test_one_request_per_token_results_in_order(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.unregister(T2, at=1_700_000_000)
    tokens = [T1, T2, T3, "not-hex/../x"]
    results = await client.send(Notification(message_id="m", body="b"), tokens)
    assert [r.token for r in results] == tokens
    assert [(r.outcome, r.reason, r.status) for r in results] == [
        (Outcome.SENT, "", 200),
        (Outcome.INVALID_TOKEN, "Unregistered", 410),
        (Outcome.SENT, "", 200),
        (Outcome.INVALID_TOKEN, "BadDeviceToken", 0),  # refused here: it is not a path segment of hex
    ]
    assert sorted(a.token for a in server.accepted) == [T1, T3]
    assert server.requests == 3


@pytest.mark.component
async def test_provider_token_reused_across_sends(server: ApnsServer, client: apns.ApnsClient) -> None:
    for i in range(5):
        results = await client.send(Notification(message_id=f"m{i}", body="b"), [T1, T2, T3])
        assert all(r.ok for r in results)
    assert len(server.provider_tokens) == 1  # re-signing each time would be TooManyProviderTokenUpdates


DOCUMENTED_ERRORS = [
    (400, "BadDeviceToken", Outcome.INVALID_TOKEN),
    (400, "DeviceTokenNotForTopic", Outcome.INVALID_TOKEN),
    (410, "ExpiredToken", Outcome.INVALID_TOKEN),
    (400, "BadCollapseId", Outcome.REJECTED),
    (400, "BadExpirationDate", Outcome.REJECTED),
    (400, "BadMessageId", Outcome.REJECTED),
    (400, "BadPriority", Outcome.REJECTED),
    (400, "BadTopic", Outcome.REJECTED),
    (400, "DuplicateHeaders", Outcome.REJECTED),
    (400, "IdleTimeout", Outcome.RETRY),
    (400, "InvalidPushType", Outcome.REJECTED),
    (400, "MissingDeviceToken", Outcome.REJECTED),
    (400, "MissingTopic", Outcome.REJECTED),
    (400, "PayloadEmpty", Outcome.REJECTED),
    (400, "TopicDisallowed", Outcome.REJECTED),
    (403, "BadCertificate", Outcome.AUTH_FAILED),
    (403, "BadCertificateEnvironment", Outcome.AUTH_FAILED),
    (403, "Forbidden", Outcome.AUTH_FAILED),
    (403, "InvalidProviderToken", Outcome.AUTH_FAILED),
    (403, "MissingProviderToken", Outcome.AUTH_FAILED),
    (404, "BadPath", Outcome.REJECTED),
    (405, "MethodNotAllowed", Outcome.REJECTED),
    (413, "PayloadTooLarge", Outcome.PAYLOAD_TOO_LARGE),
    (429, "TooManyProviderTokenUpdates", Outcome.RATE_LIMITED),
    (429, "TooManyRequests", Outcome.RATE_LIMITED),
    (500, "InternalServerError", Outcome.RETRY),
    (503, "ServiceUnavailable", Outcome.RETRY),
    (503, "Shutdown", Outcome.RETRY),
]


@pytest.mark.component
async def test_each_documented_error_answer(server: ApnsServer, client: apns.ApnsClient) -> None:
    tokens = [f"{i:064x}" for i in range(1, len(DOCUMENTED_ERRORS) + 1)]
    for token, (status, reason, _) in zip(tokens, DOCUMENTED_ERRORS, strict=True):
        server.token_answers[token] = (status, reason)
    results = await client.send(Notification(message_id="e", body="b"), tokens)
    got = [(r.status, r.reason, r.outcome) for r in results]
    assert got == DOCUMENTED_ERRORS
    assert server.accepted == []


@pytest.mark.component
async def test_token_states_bad_and_wrong_topic(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.bad.add(T1)
    server.not_for_topic.add(T2)
    results = await client.send(Notification(message_id="s", body="b"), [T1, T2])
    assert [(r.outcome, r.reason, r.status) for r in results] == [
        (Outcome.INVALID_TOKEN, "BadDeviceToken", 400),
        (Outcome.INVALID_TOKEN, "DeviceTokenNotForTopic", 400),
    ]


@pytest.mark.component
async def test_payload_too_large_never_sent(server: ApnsServer, client: apns.ApnsClient) -> None:
    n = Notification(message_id="big", body="x" * 4096)
    results = await client.send(n, [T1, T2])
    assert [(r.outcome, r.reason, r.status) for r in results] == [(Outcome.PAYLOAD_TOO_LARGE, "PayloadTooLarge", 0)] * 2
    assert server.requests == 0
    # multi-byte characters count as bytes, not characters
    wide = Notification(message_id="wide", body="é" * 2040)
    assert len(apns.build_payload(wide)) > 4096
    assert (await client.send(wide, [T1]))[0].outcome is Outcome.PAYLOAD_TOO_LARGE
    assert server.requests == 0


@pytest.mark.component
async def test_server_refuses_too_large_payload(server: ApnsServer, client: apns.ApnsClient) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, verify=apns._ssl_context({"caFile": server.ca_file})) as http:
        bearer, _ = await client._sign()
        r = await http.post(
            f"{server.url}/3/device/{T1}",
            content=json.dumps({"aps": {"alert": "x" * 5000}}),
            headers={"authorization": f"bearer {bearer}", "apns-topic": TOPIC},
        )
    assert (r.status_code, r.json()) == (413, {"reason": "PayloadTooLarge"})


@pytest.mark.component
async def test_long_collapse_id_refused_before_sending(server: ApnsServer, client: apns.ApnsClient) -> None:
    results = await client.send(Notification(message_id="c", body="b", collapse_key="k" * 65), [T1])
    assert (results[0].outcome, results[0].reason) == (Outcome.REJECTED, "BadCollapseId")
    assert server.requests == 0


@pytest.mark.component
async def test_expired_provider_token_resigned_and_retried_once(server: ApnsServer, client: apns.ApnsClient) -> None:
    assert (await client.send(Notification(message_id="1", body="b"), [T1]))[0].ok
    server.expire_tokens()
    results = await client.send(Notification(message_id="2", body="b"), [T2])
    assert results[0].ok
    assert len(server.provider_tokens) == 2
    assert server.requests == 3  # the first send, the refused one, the retry
    assert server.accepted[-1].headers["authorization"] == f"bearer {server.provider_tokens[1]}"


@pytest.mark.component
async def test_concurrent_senders_share_one_refresh(server: ApnsServer, client: apns.ApnsClient) -> None:
    assert (await client.send(Notification(message_id="1", body="b"), [T1]))[0].ok
    server.expire_tokens()
    tokens = [f"{i:064x}" for i in range(1, 41)]
    results = await client.send(Notification(message_id="2", body="b"), tokens)
    assert all(r.ok for r in results)
    assert len(server.provider_tokens) == 2  # one re-sign for all forty, not forty


@pytest.mark.component
async def test_many_tokens_multiplexed_on_one_connection(server: ApnsServer, client: apns.ApnsClient) -> None:
    tokens = [f"{i:064x}" for i in range(1, 301)]
    results = await client.send(Notification(message_id="many", body="b"), tokens)
    assert [r.token for r in results] == tokens and all(r.ok for r in results)
    assert len({a.peer for a in server.accepted}) == 1
    assert {a.token for a in server.accepted} == set(tokens)


@pytest.mark.component
async def test_expired_twice_is_auth_failed_not_a_loop(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.fail_next(3, 403, "ExpiredProviderToken")
    results = await client.send(Notification(message_id="x", body="b"), [T1])
    assert (results[0].outcome, results[0].reason, results[0].status) == (
        Outcome.AUTH_FAILED,
        "ExpiredProviderToken",
        403,
    )
    assert server.requests == 2


@pytest.mark.component
async def test_revoked_credentials(server: ApnsServer, client: apns.ApnsClient) -> None:
    assert (await client.check_credentials()).ok
    server.revoke()
    results = await client.send(Notification(message_id="r", body="b"), [T1, T2])
    assert [(r.outcome, r.reason, r.status) for r in results] == [
        (Outcome.AUTH_FAILED, "InvalidProviderToken", 403)
    ] * 2
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (False, "AuthFailed")
    assert "InvalidProviderToken" in check.message


@pytest.mark.component
async def test_check_credentials_good(server: ApnsServer, client: apns.ApnsClient) -> None:
    check = await client.check_credentials()
    assert (check.ok, check.reason) == (True, "Valid")
    assert server.accepted == []  # the probe token is no device's
    assert server.requests == 1


@pytest.mark.component
async def test_wrong_key_team_or_topic(server: ApnsServer) -> None:
    cases = [
        ({"authKey": new_auth_key()}, _options(server), "InvalidProviderToken"),  # another key under this kid
        ({"authKey": server.auth_key}, _options(server, teamId="OTHERTEAM1"), "InvalidProviderToken"),
        ({"authKey": server.auth_key}, _options(server, keyId="OTHERKEY12"), "InvalidProviderToken"),
        ({"authKey": server.auth_key}, _options(server, topic="com.other.app"), "TopicDisallowed"),
    ]
    for secret, options, reason in cases:
        c = apns.build(secret, endpoint=server.url, options=options)
        try:
            check = await c.check_credentials()
            assert (check.ok, check.reason) == (False, "AuthFailed")
            assert reason in check.message
        finally:
            await c.close()


@pytest.mark.component
async def test_certificate_authentication(server: ApnsServer) -> None:
    cert, key = server.issue_certificate()
    c = apns.build(
        {"certificate": cert, "privateKey": key},
        endpoint=server.cert_url,
        options={"topic": TOPIC, "caFile": server.ca_file},
    )
    try:
        assert (await c.check_credentials()).ok
        assert (await c.send(Notification(message_id="c", body="b"), [T1]))[0].ok
        [got] = server.accepted
        assert got.certificate and "authorization" not in got.headers
        server.revoke()
        results = await c.send(Notification(message_id="c2", body="b"), [T1])
        assert (results[0].outcome, results[0].reason) == (Outcome.AUTH_FAILED, "BadCertificate")
    finally:
        await c.close()


@pytest.mark.component
async def test_certificate_listener_refuses_a_connection_without_one(server: ApnsServer) -> None:
    c = apns.build({"authKey": server.auth_key}, endpoint=server.cert_url, options=_options(server))
    try:
        results = await c.send(Notification(message_id="n", body="b"), [T1])
        assert results[0].outcome is Outcome.RETRY and results[0].status == 0
        assert server.accepted == []
    finally:
        await c.close()


@pytest.mark.component
async def test_rate_limited_with_retry_after(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.rate_limit(1, retry_after=7)
    results = await client.send(Notification(message_id="rl", body="b"), [T1])
    assert (results[0].outcome, results[0].reason, results[0].status, results[0].retry_after) == (
        Outcome.RATE_LIMITED,
        "TooManyRequests",
        429,
        7.0,
    )


@pytest.mark.component
async def test_too_many_requests_to_one_device() -> None:
    s = ApnsServer(per_token_limit=2)
    await s.start()
    c = apns.build({"authKey": s.auth_key}, endpoint=s.url, options=_options(s))
    try:
        outcomes = [(await c.send(Notification(message_id=str(i), body="b"), [T1]))[0] for i in range(3)]
        assert [(r.outcome, r.reason) for r in outcomes] == [
            (Outcome.SENT, ""),
            (Outcome.SENT, ""),
            (Outcome.RATE_LIMITED, "TooManyRequests"),
        ]
    finally:
        await c.close()
        await s.stop()


@pytest.mark.component
async def test_server_errors_retry(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.fail_next(1, 503, "ServiceUnavailable", retry_after=30)
    server.fail_next(1, 500, "InternalServerError")
    a = (await client.send(Notification(message_id="1", body="b"), [T1]))[0]
    b = (await client.send(Notification(message_id="2", body="b"), [T1]))[0]
    assert (a.outcome, a.reason, a.status, a.retry_after) == (Outcome.RETRY, "ServiceUnavailable", 503, 30.0)
    assert (b.outcome, b.reason, b.status) == (Outcome.RETRY, "InternalServerError", 500)
    assert (await client.send(Notification(message_id="3", body="b"), [T1]))[0].ok


@pytest.mark.component
async def test_hostile_answers(server: ApnsServer, client: apns.ApnsClient) -> None:
    server.fail_next(1, 500, body=b"<html>" + b"x" * (8 << 20))  # 8 MiB, not JSON
    server.fail_next(1, 400, body=b"not json")
    server.fail_next(1, 400, body=b'{"reason": ' + b'"' + b"A" * (200 << 10) + b'"}')  # JSON cut at 64 KiB
    server.fail_next(1, 403, body=b'["reason"]')
    n = Notification(message_id="h", body="b")
    got = [(await client.send(n, [T1]))[0] for _ in range(4)]
    assert [(r.outcome, r.reason, r.status) for r in got] == [
        (Outcome.RETRY, "HTTP 500", 500),
        (Outcome.REJECTED, "HTTP 400", 400),
        (Outcome.REJECTED, "HTTP 400", 400),
        (Outcome.REJECTED, "HTTP 403", 403),
    ]
    assert (await client.send(n, [T1]))[0].ok  # the connection is still good


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.component
async def test_server_down_is_retry_and_unreachable() -> None:
    s = ApnsServer()
    c = apns.build({"authKey": s.auth_key}, endpoint=f"https://127.0.0.1:{_free_port()}", options=_options(s))
    try:
        results = await c.send(Notification(message_id="d", body="b"), [T1, T2])
        assert [(r.outcome, r.reason, r.status) for r in results] == [(Outcome.RETRY, "ConnectError", 0)] * 2
        check = await c.check_credentials()
        assert (check.ok, check.reason) == (False, "Unreachable")
    finally:
        await c.close()
        await s.stop()


@pytest.mark.component
async def test_server_checks_the_provider_token_itself(server: ApnsServer) -> None:
    """The local APNs verifies what Apple does: freshness, signature, and how often a connection re-signs."""
    key = serialization.load_pem_private_key(server.auth_key, password=None)
    now = int(time.time())

    def token(iat: int) -> str:
        return jwt(key, {"alg": "ES256", "kid": KEY_ID}, {"iss": TEAM_ID, "iat": iat})

    async with httpx.AsyncClient(http1=False, http2=True, verify=apns._ssl_context({"caFile": server.ca_file})) as http:

        async def post(bearer: str | None) -> tuple[int, str]:
            headers = {"apns-topic": TOPIC, **({"authorization": f"bearer {bearer}"} if bearer else {})}
            r = await http.post(f"{server.url}/3/device/{T1}", content=b'{"aps":{"alert":"a"}}', headers=headers)
            return r.status_code, r.json()["reason"] if r.content else ""

        assert await post(None) == (403, "MissingProviderToken")
        assert await post(token(now - 3700)) == (403, "ExpiredProviderToken")
        assert await post(token(now + 3600)) == (403, "InvalidProviderToken")
        good = token(now)
        assert await post(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")) == (
            403,
            "InvalidProviderToken",
        )
        assert await post(good) == (200, "")
        # the same connection with a fresh token a second later: Apple allows one change per 20 minutes
        assert await post(token(now - 1)) == (429, "TooManyProviderTokenUpdates")
        assert await post(good) == (200, "")
