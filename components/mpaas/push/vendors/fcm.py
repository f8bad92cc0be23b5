"""Firebase Cloud Messaging, HTTP v1 API: one message per device token, OAuth 2.0 access tokens from a
Google service account.

Secret keys:
- `serviceAccount`: the service-account JSON Firebase gives (client_email, private_key, private_key_id,
  token_uri, project_id).

Options:
- `projectId`: the Firebase project to send through (default: the service account's project_id).
- `authEndpoint`: base URL of the token endpoint instead of the service account's token_uri host (the path of
  token_uri is kept). Without it, an `endpoint` override serves the token path too.
- `concurrency`: requests in flight at once for one `send` (default 16).

Protocol, as the sources say it:
- Access token: an RS256 JWT assertion {iss: client_email, scope: .../auth/firebase.messaging, aud: token_uri,
  iat, exp <= iat+3600} posted as grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer to token_uri; the answer
  carries access_token and expires_in (RFC 7523; google-auth `service_account.Credentials`, gorush
  notify/notification_fcm_v1.go uses the same scope).
- Send: POST /v1/projects/{projectId}/messages:send {"message": {...}}; 200 answers {"name": ".../messages/ID"}.
- Errors are google.rpc.Status {"error": {code, message, status, details}}; FCM puts its own code in the detail
  of @type type.googleapis.com/google.firebase.fcm.v1.FcmError (errorCode), as firebase/firebase-admin-python
  messaging.py `_build_fcm_error` reads it. UNREGISTERED and SENDER_ID_MISMATCH mean the token is dead;
  INVALID_ARGUMENT means a dead token only when it names the token (a google.rpc.BadRequest field violation on
  `message.token`, or Google's "registration token is not a valid FCM registration token" text, which is what
  clients such as firebase-admin-node users key on); firebase-admin itself leaves INVALID_ARGUMENT generic.
- Payload limit: 4096 bytes of the message (the JSON of everything but the token).

Mapping of Notification: title/body -> notification; data (+ "messageId": the platform's id) -> data; ttl ->
android.ttl "Ns" and apns-expiration; urgent -> android.priority HIGH/NORMAL and apns-priority 10/5;
collapse_key -> android.collapse_key, android.notification.tag (of a shown notification: a newer one with the
tag replaces it) and apns-collapse-id; badge/sound/category -> aps badge/sound/category and
android.notification sound/click_action. `extra["fcm"]`: a dict merged into the message (dict values one level
deep), for fields this mapping does not cover.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from .auth import TokenCache, jwt, load_private_key
from .base import CredentialCheck, CredentialsError, Notification, Outcome, SendResult, VendorClient
from .http import (
    Answer,
    VendorFailure,
    check_access,
    fetch_access_token,
    merge,
    new_http,
    payload_size,
    post,
    retry_after,
    snippet,
)

SEND_BASE = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_PAYLOAD = 4096
DATA_MESSAGE_ID = "messageId"

DEAD_TOKEN = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
RETRY = {"UNAVAILABLE", "INTERNAL"}
AUTH_FAILED = {"THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED"}


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key: Any
    private_key_id: str
    token_uri: str
    project_id: str

    @classmethod
    def parse(cls, raw: bytes) -> ServiceAccount:
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CredentialsError(f"serviceAccount: not JSON ({e}); put the service-account key file there") from None
        if not isinstance(doc, dict):
            raise CredentialsError("serviceAccount: not a JSON object; put the service-account key file there")
        missing = [k for k in ("client_email", "private_key") if not isinstance(doc.get(k), str) or not doc[k]]
        if missing:
            raise CredentialsError(f"serviceAccount: missing {', '.join(missing)}; use the key file Firebase gives")
        return cls(
            client_email=doc["client_email"],
            private_key=load_private_key(doc["private_key"].encode(), "serviceAccount private_key"),
            private_key_id=str(doc.get("private_key_id") or ""),
            token_uri=str(doc.get("token_uri") or DEFAULT_TOKEN_URI),
            project_id=str(doc.get("project_id") or ""),
        )

    def assertion(self, now: float | None = None) -> str:
        iat = int(time.time() if now is None else now)
        header = {"alg": "RS256", "typ": "JWT"}
        if self.private_key_id:
            header["kid"] = self.private_key_id
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": iat, "exp": iat + 3600}
        return jwt(self.private_key, header, claims)


def build_message(n: Notification, *, now: float | None = None) -> dict[str, Any]:
    """The FCM v1 `message` for `n`, without its token."""
    message: dict[str, Any] = {}
    if n.title is not None or n.body is not None:
        message["notification"] = {k: v for k, v in (("title", n.title), ("body", n.body)) if v is not None}
    message["data"] = {**n.data, DATA_MESSAGE_ID: n.message_id}
    android: dict[str, Any] = {"ttl": f"{max(n.ttl_seconds, 0)}s", "priority": "HIGH" if n.urgent else "NORMAL"}
    if n.collapse_key:
        android["collapse_key"] = n.collapse_key
    android_notification = {k: v for k, v in (("sound", n.sound), ("click_action", n.category)) if v}
    if n.collapse_key and "notification" in message:  # shown: the one shown with this tag is replaced
        android_notification["tag"] = n.collapse_key
    if android_notification:
        android["notification"] = android_notification
    message["android"] = android

    visible = "notification" in message or n.badge is not None or n.sound
    aps: dict[str, Any] = {}
    if n.badge is not None:
        aps["badge"] = n.badge
    if n.sound:
        aps["sound"] = n.sound
    if n.category:
        aps["category"] = n.category
    if not visible:
        aps["content-available"] = 1  # a data-only message is a background push for APNs
    issued = int(time.time() if now is None else now)
    headers = {
        # APNs refuses priority 10 for background pushes
        "apns-priority": "10" if n.urgent and visible else "5",
        "apns-expiration": str(issued + n.ttl_seconds) if n.ttl_seconds > 0 else "0",
    }
    if not visible:
        headers["apns-push-type"] = "background"
    if n.collapse_key:
        headers["apns-collapse-id"] = n.collapse_key[:64]
    message["apns"] = {"headers": headers, "payload": {"aps": aps}}
    extra = n.extra.get("fcm")
    if isinstance(extra, Mapping):
        merge(message, extra)
    return message


@dataclass(frozen=True)
class FcmError:
    code: str  # FcmError errorCode, else the google.rpc status
    status: str
    message: str
    token_field: bool  # a BadRequest field violation names message.token


def parse_error(doc: Any) -> FcmError | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return None
    error = doc["error"]
    status = str(error.get("status") or "")
    code, token_field = "", False
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE and not code:
            code = str(detail.get("errorCode") or "")
        elif detail.get("@type") == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations")
            for v in violations if isinstance(violations, list) else []:
                if isinstance(v, dict) and v.get("field") == "message.token":
                    token_field = True
    return FcmError(code or status, status, str(error.get("message") or ""), token_field)


# the google.rpc status an HTTP status stands for, when the answer names none (as firebase-admin-python reads it)
HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def classify(answer: Answer, token: str) -> SendResult:
    """One send answer (not 2xx, not the 401 we retry) -> its SendResult."""
    after = retry_after(answer.headers)
    err = parse_error(answer.json())
    if err is None:
        outcome = Outcome.RETRY if answer.status >= 500 else Outcome.REJECTED
        if answer.status == 429:
            outcome = Outcome.RATE_LIMITED
        elif answer.status == 413:
            outcome = Outcome.PAYLOAD_TOO_LARGE
        return SendResult(token, outcome, f"HTTP {answer.status}: {snippet(answer.body)}", answer.status, after)
    status = answer.status
    code = err.code or HTTP_STATUS.get(status, f"HTTP {status}")
    if code in DEAD_TOKEN or (err.token_field and status == 400):
        outcome = Outcome.INVALID_TOKEN
    elif code == "INVALID_ARGUMENT":
        lowered = err.message.lower()
        if err.token_field or "registration token" in lowered:
            outcome = Outcome.INVALID_TOKEN
        elif "too big" in lowered or "too large" in lowered:
            outcome = Outcome.PAYLOAD_TOO_LARGE
        else:
            outcome = Outcome.REJECTED
    elif code in ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED") or status == 429:
        outcome = Outcome.RATE_LIMITED
    elif code in RETRY or status >= 500:
        outcome = Outcome.RETRY
    elif code in AUTH_FAILED or code == "UNAUTHENTICATED" or status in (401, 403):
        outcome = Outcome.AUTH_FAILED
    else:
        outcome = Outcome.REJECTED
    return SendResult(token, outcome, code, status, after)


class FcmClient(VendorClient):
    max_payload = MAX_PAYLOAD
    max_tokens = 1

    def __init__(
        self,
        account: ServiceAccount,
        *,
        project_id: str,
        send_base: str,
        token_url: str,
        concurrency: int,
        http: httpx.AsyncClient | None,
    ):
        self.account, self.project_id = account, project_id
        self.send_url = f"{send_base.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.token_url = token_url
        self._http, self._own_http = http or new_http(), http is None
        self._limit = asyncio.Semaphore(max(concurrency, 1))
        self.tokens = TokenCache(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        form = {"grant_type": JWT_BEARER, "assertion": self.account.assertion()}
        return await fetch_access_token(self._http, self.token_url, form)

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        if not tokens:
            return []
        message = build_message(notification)
        if payload_size(message) > MAX_PAYLOAD:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, "message over 4096 bytes") for t in tokens]
        return list(await asyncio.gather(*(self._send_one(message, t) for t in tokens)))

    async def _send_one(self, message: dict[str, Any], token: str) -> SendResult:
        async with self._limit:
            body = {"message": {**message, "token": token}}
            for attempt in (1, 2):
                try:
                    access = await self.tokens.get()
                except VendorFailure as e:
                    return e.result(token)
                try:
                    answer = await post(
                        self._http, self.send_url, json=body, headers={"Authorization": f"Bearer {access}"}
                    )
                except httpx.HTTPError as e:
                    return SendResult(token, Outcome.RETRY, type(e).__name__)
                if 200 <= answer.status < 300:
                    doc = answer.json()
                    name = doc.get("name") if isinstance(doc, dict) else None
                    return SendResult(token, Outcome.SENT, status=answer.status, vendor_id=name)
                err = parse_error(answer.json())
                if answer.status == 401 and (err is None or err.code == "UNAUTHENTICATED"):
                    # an access token Google no longer takes: fetch a new one and try once more
                    self.tokens.invalidate(access)
                    if attempt == 1:
                        continue
                return classify(answer, token)
        raise AssertionError("unreachable")

    async def check_credentials(self) -> CredentialCheck:
        return await check_access(self.tokens, f"access token issued for {self.account.client_email}")

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> FcmClient:
    raw = secret.get("serviceAccount")
    if not raw:
        raise CredentialsError("serviceAccount: missing; put the service-account JSON key file under this key")
    account = ServiceAccount.parse(raw)
    project_id = options.get("projectId") or account.project_id
    if not project_id:
        raise CredentialsError("no project: set option projectId or project_id in the service-account JSON")
    token_path = urlsplit(account.token_uri).path or "/token"
    auth_base = options.get("authEndpoint") or endpoint
    token_url = auth_base.rstrip("/") + token_path if auth_base else account.token_uri
    try:
        concurrency = int(options.get("concurrency", "16"))
    except ValueError:
        raise CredentialsError("option concurrency: not a number") from None
    return FcmClient(
        account,
        project_id=project_id,
        send_base=endpoint or SEND_BASE,
        token_url=token_url,
        concurrency=concurrency,
        http=http,
    )
