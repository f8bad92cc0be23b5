"""APNs: Apple's HTTP/2 provider API, one `POST /3/device/<token>` per device token.

Protocol facts and where they come from:
- hosts api.push.apple.com (Production) and api.sandbox.push.apple.com (Sandbox); HTTP/2 over TLS only
  (Apple's "Sending notification requests to APNs"; sideshow/apns2 client.go keeps one HTTP/2 client).
- request headers authorization (`bearer <jwt>`), apns-topic, apns-push-type, apns-priority (10 or 5),
  apns-expiration (epoch seconds, 0: deliver now or never), apns-collapse-id (at most 64 bytes), apns-id
  (a canonical UUID) — sideshow/apns2 notification.go and client.go `setHeaders`.
- provider token: ES256 JWT, header {alg ES256, kid keyId}, claims {iss teamId, iat}; Apple refuses one issued
  more than an hour ago, so it is re-signed before that (apns2 token/token.go `TokenTimeout = 3000`, 50
  minutes), and not more often than every 20 minutes (TooManyProviderTokenUpdates).
- answers: 200 with an apns-id header, or a JSON body `{"reason": ...}` (plus `timestamp`, milliseconds, on
  410); the reasons and their statuses are sideshow/apns2 response.go (Apple's "Handling notification
  responses from APNs", table 4), with 410 ExpiredToken from Apple's current table.
- the payload limit is 4096 bytes (apns2 response.go, PayloadTooLarge); VoIP's 5120 is not used here.

Secret keys (exactly one way to authenticate):
- `authKey`: the .p8 signing key (PKCS#8 PEM, P-256), for token authentication;
- `certificate` and `privateKey`: a provider TLS client certificate and its key (PEM), for certificate
  authentication: the connection proves the sender, no authorization header is sent.

Options: `topic` (the app's bundle id, required), `teamId` and `keyId` (required with authKey),
`environment` (Production, the default, or Sandbox), `caFile` (a PEM bundle of the CAs that sign the server's
certificate, instead of the public ones: for a private or local APNs endpoint).
When an `http` client is passed to `build` it is used as it is: it must speak HTTP/2 and carry the TLS client
certificate itself for certificate authentication.

Notification mapping: title/body -> aps.alert, badge, sound, category -> aps; `extra["aps"]` (a mapping) is
merged into aps (mutable-content, thread-id, interruption-level...); data keys at the top level, then
`mpaasMessageId`. A notification with an alert, badge or sound is push type alert (priority 10 when urgent,
5 otherwise); anything else is background with content-available 1 and priority 5 (Apple refuses 10 for
background pushes). apns-id is the message id when it is a UUID, else a UUID derived from it, so a resend
carries the same id.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .auth import TokenCache, jwt, load_private_key
from .base import CredentialCheck, CredentialsError, Notification, Outcome, SendResult, VendorClient
from .http import Answer, call, new_http, parse_retry_after

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
MAX_PAYLOAD = 4096
MAX_COLLAPSE_ID = 64  # bytes
TOKEN_LIFETIME = 3600.0  # Apple refuses a provider token issued more than an hour ago
TOKEN_MARGIN = 600.0  # so a token is re-signed after 50 minutes
STREAMS = 100  # requests one client keeps in flight as HTTP/2 streams; more only lengthen httpcore's queues
PROBE_TOKEN = "0" * 64  # no device has it: Apple answers BadDeviceToken once the credentials pass
APNS_ID_NAMESPACE = uuid.UUID("5f0f7a8e-2c57-4f8e-9a54-3c1b0d6f7a11")

CONNECTIONS = 4  # HTTP/2 connections a client keeps; each carries STREAMS streams

_DEVICE_TOKEN = re.compile(r"(?:[0-9A-Fa-f]{2}){1,100}")  # hex; also keeps the token a single path segment
_APPLE_ID = re.compile(r"[A-Z0-9]{10}")

INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
# IdleTimeout is a 400 about the connection, not the request: sending again works.
RETRY_REASONS = frozenset({"IdleTimeout", "InternalServerError", "ServiceUnavailable", "Shutdown"})


def outcome_for(status: int, reason: str) -> Outcome:
    """What an APNs answer means for the token (status and Apple's reason)."""
    if status == 200:
        return Outcome.SENT
    if status == 410 or reason in INVALID_TOKEN_REASONS:
        return Outcome.INVALID_TOKEN
    if status == 403:
        return Outcome.AUTH_FAILED
    if status == 413 or reason == "PayloadTooLarge":
        return Outcome.PAYLOAD_TOO_LARGE
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500 or reason in RETRY_REASONS:
        return Outcome.RETRY
    return Outcome.REJECTED


def apns_id(message_id: str) -> str:
    """The message id when it is a canonical UUID, else a UUID derived from it: the same on every resend."""
    try:
        if len(message_id) == 36:
            return str(uuid.UUID(message_id))
    except ValueError:
        pass
    return str(uuid.uuid5(APNS_ID_NAMESPACE, message_id))


def _visible(n: Notification) -> bool:
    return bool(n.title or n.body or n.sound) or n.badge is not None


def build_payload(n: Notification) -> bytes:
    """The JSON body: data keys at the top level, then aps and mpaasMessageId (which data cannot replace)."""
    aps: dict[str, Any] = {}
    alert = {k: v for k, v in (("title", n.title), ("body", n.body)) if v}
    if alert:
        aps["alert"] = alert
    if n.badge is not None:
        aps["badge"] = n.badge
    if n.sound:
        aps["sound"] = n.sound
    if n.category:
        aps["category"] = n.category
    extra_aps = n.extra.get("aps")
    if isinstance(extra_aps, Mapping):
        aps.update(extra_aps)
    if not _visible(n):
        aps["content-available"] = 1
    doc: dict[str, Any] = {**n.data, "aps": aps, "mpaasMessageId": n.message_id}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def build_headers(n: Notification, topic: str, now: float) -> dict[str, str]:
    visible = _visible(n)
    headers = {
        "apns-topic": topic,
        "apns-push-type": "alert" if visible else "background",
        "apns-priority": "10" if visible and n.urgent else "5",
        "apns-expiration": "0" if n.ttl_seconds <= 0 else str(int(now) + n.ttl_seconds),
        "apns-id": apns_id(n.message_id),
        "content-type": "application/json",
    }
    if n.collapse_key:
        headers["apns-collapse-id"] = n.collapse_key
    return headers


def _reason(answer: Answer) -> str | None:
    """Apple's reason from an error answer; None when the body is not Apple's JSON."""
    reason = (answer.doc or {}).get("reason")
    return reason if isinstance(reason, str) else None


class ApnsClient(VendorClient):
    max_payload = MAX_PAYLOAD
    max_tokens = 1  # APNs takes one device token per request; HTTP/2 streams carry them in parallel

    def __init__(
        self,
        *,
        base_url: str,
        topic: str,
        http: httpx.AsyncClient,
        owns_http: bool,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        team_id: str = "",
        key_id: str = "",
    ) -> None:
        self.base_url, self.topic = base_url, topic
        self._http, self._owns_http = http, owns_http
        self._key, self._team_id, self._key_id = signing_key, team_id, key_id
        # Certificate authentication has no provider token.
        self._tokens = TokenCache(self._sign, margin=TOKEN_MARGIN) if signing_key is not None else None
        self._streams = asyncio.Semaphore(STREAMS)

    async def _sign(self) -> tuple[str, float]:
        token = jwt(self._key, {"alg": "ES256", "kid": self._key_id}, {"iss": self._team_id, "iat": int(time.time())})
        return token, TOKEN_LIFETIME

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        payload = build_payload(notification)
        if len(payload) > MAX_PAYLOAD:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, "PayloadTooLarge") for t in tokens]
        if notification.collapse_key and len(notification.collapse_key.encode()) > MAX_COLLAPSE_ID:
            return [SendResult(t, Outcome.REJECTED, "BadCollapseId") for t in tokens]
        headers = build_headers(notification, self.topic, time.time())
        return list(await asyncio.gather(*(self._send_one(t, payload, headers) for t in tokens)))

    async def _send_one(self, token: str, payload: bytes, headers: Mapping[str, str]) -> SendResult:
        if not _DEVICE_TOKEN.fullmatch(token):
            return SendResult(token, Outcome.INVALID_TOKEN, "BadDeviceToken")
        async with self._streams:
            result, bearer = await self._post(token, payload, headers)
            if result.reason == "ExpiredProviderToken" and self._tokens is not None:
                # Re-sign once (only if no other sender has already), and send again.
                self._tokens.invalidate(bearer)
                result, _ = await self._post(token, payload, headers)
            return result

    async def _post(self, token: str, payload: bytes, headers: Mapping[str, str]) -> tuple[SendResult, str | None]:
        """The result, and the provider token it was sent with (None with certificate authentication)."""
        request_headers = dict(headers)
        bearer = None
        if self._tokens is not None:
            bearer = await self._tokens.get()
            request_headers["authorization"] = f"bearer {bearer}"
        try:
            answer = await call(
                self._http, "POST", f"{self.base_url}/3/device/{token}", content=payload, headers=request_headers
            )
        except httpx.HTTPError as e:
            return SendResult(token, Outcome.RETRY, type(e).__name__), bearer
        status = answer.status
        if status == 200:
            return SendResult(token, Outcome.SENT, status=200, vendor_id=answer.headers.get("apns-id")), bearer
        retry_after = parse_retry_after(answer.headers.get("retry-after"))
        reason = _reason(answer)
        if reason is None:  # not Apple's answer (a proxy, a broken server)
            outcome = Outcome.RETRY if status >= 500 else Outcome.REJECTED
            return SendResult(token, outcome, f"HTTP {status}", status, retry_after), bearer
        return SendResult(token, outcome_for(status, reason), reason, status, retry_after), bearer

    async def check_credentials(self) -> CredentialCheck:
        """A background push to an all-zero token: Apple checks the credentials and the topic before the token."""
        probe = Notification(message_id=str(uuid.uuid4()), ttl_seconds=0, urgent=False)
        headers = build_headers(probe, self.topic, time.time())
        result = await self._send_one(PROBE_TOKEN, build_payload(probe), headers)
        if result.outcome in (Outcome.SENT, Outcome.INVALID_TOKEN):
            return CredentialCheck(True, "Valid", f"APNs accepted the credentials for topic {self.topic}")
        if result.outcome is Outcome.RETRY:
            where = f"answered {result.status} {result.reason}" if result.status else f"unreachable ({result.reason})"
            return CredentialCheck(False, "Unreachable", f"APNs at {self.base_url} {where}")
        if result.outcome is Outcome.RATE_LIMITED:
            return CredentialCheck(False, "Unreachable", f"APNs answered {result.status} {result.reason}: try later")
        return CredentialCheck(
            False, "AuthFailed", f"APNs refused the credentials for topic {self.topic}: {result.status} {result.reason}"
        )

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def _ssl_context(options: Mapping[str, str]) -> ssl.SSLContext:
    ca_file = options.get("caFile")
    try:
        return ssl.create_default_context(cafile=ca_file or certifi.where())
    except (OSError, ssl.SSLError) as e:
        raise CredentialsError(f"caFile {ca_file}: not a readable PEM bundle ({e})") from None


def _load_client_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise CredentialsError(f"certificate: not a PEM certificate ({e})") from None
    if cert.not_valid_after_utc < datetime.now(UTC):
        raise CredentialsError(f"certificate: expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it")
    key = load_private_key(key_pem, "privateKey")
    # ssl loads a chain only from files: a private directory that is gone once the context holds them.
    with tempfile.TemporaryDirectory(prefix="apns-") as d:
        cert_file, key_file = Path(d, "cert.pem"), Path(d, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as e:
            raise CredentialsError(f"certificate and privateKey do not go together ({e.reason})") from None


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> ApnsClient:
    topic = options.get("topic", "")
    if not topic:
        raise CredentialsError("APNs needs a topic (the app's bundle id) in spec.apns.topic")
    environment = options.get("environment", "Production")
    if environment not in ("Production", "Sandbox"):
        raise CredentialsError(f"APNs environment must be Production or Sandbox, not {environment!r}")
    base_url = (endpoint or (PRODUCTION_URL if environment == "Production" else SANDBOX_URL)).rstrip("/")

    has_key = "authKey" in secret
    has_cert = "certificate" in secret or "privateKey" in secret
    if has_key == has_cert:
        raise CredentialsError(
            "APNs credentials: the Secret needs either authKey (a .p8 signing key) or certificate and privateKey "
            + ("(it has both)" if has_key else "(it has neither)")
        )

    context = _ssl_context(options)
    if has_key:
        team_id, key_id = options.get("teamId", ""), options.get("keyId", "")
        if not _APPLE_ID.fullmatch(team_id) or not _APPLE_ID.fullmatch(key_id):
            raise CredentialsError("APNs token authentication needs teamId and keyId (10 upper-case letters or digits)")
        key = load_private_key(secret["authKey"], "authKey")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CredentialsError("authKey: an APNs signing key is a P-256 EC key (the .p8 file Apple gives)")
    else:
        if "certificate" not in secret or "privateKey" not in secret:
            raise CredentialsError("APNs certificate authentication needs both certificate and privateKey (PEM)")
        _load_client_certificate(context, secret["certificate"], secret["privateKey"])

    owns_http = http is None
    if http is None:
        http = new_http(max_connections=CONNECTIONS, max_keepalive=CONNECTIONS, http1=False, http2=True, verify=context)
    if has_key:
        return ApnsClient(
            base_url=base_url,
            topic=topic,
            http=http,
            owns_http=owns_http,
            signing_key=key,
            team_id=team_id,
            key_id=key_id,
        )
    return ApnsClient(base_url=base_url, topic=topic, http=http, owns_http=owns_http)
