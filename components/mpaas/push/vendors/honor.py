"""Honor Push (荣耀推送), server API v1: OAuth 2.0 client credentials from Honor's IAM, then sendMessage with a
token list. Honor's push grew out of Huawei Push Kit and keeps its shape, with its own URLs, camelCase fields
and answer format.

Secret keys:
- `clientId`, `clientSecret`: the push service's OAuth client (Honor developer console, push service page).
- `appId` (optional here; else option `appId`): the app's App ID, part of the send URL.

Options:
- `appId`: the App ID when the Secret has none.
- `authEndpoint`: base URL of the IAM server instead of https://iam.developer.hihonor.com (path kept). Without
  it, an `endpoint` override serves the token path too.
- `badgeClass`: the app's entry Activity; Honor sets a badge only with it.

Protocol, as the sources say it:
- Token: POST https://iam.developer.hihonor.com/auth/realms/developer/protocol/openid-connect/token, form
  grant_type=client_credentials&client_id=&client_secret= -> {access_token, expires_in} (Honor's "发送下行消息"
  guide as republished on my.oschina.net/u/5873522/blog/10140231 and xie.infoq.cn; wildfirechat's HonorPush.java
  uses the same URL; cossim/hipush pkg/client/push/honor.go uses the shorter /auth/token on the same host).
  It is a Keycloak realm, so refusals are RFC 6749 {"error": "invalid_client", "error_description"}.
- Send: POST https://push-api.cloud.hihonor.com/api/v1/{appId}/sendMessage with Authorization: Bearer and a
  `timestamp` header (Unix milliseconds), body {"data", "notification", "android", "token": [...]} with no
  "message" wrapper (same guide; cossim/hipush honor.go SendMessageRequest).
- Answer: {"code": 200, "message", "data": {"sendResult", "requestId", "failTokens", "expireTokens"}}; code 200
  is success (cossim/hipush pkg/push/honor_push.go). expireTokens are dead -> InvalidToken; failTokens failed
  for a reason the answer does not give -> Rejected, not pruned.
- Error codes: no Honor source with its result-code table was found. The mapping below is the closest
  documented contract, Huawei Push Kit's (see huawei.py), labelled as such: 80200001/80200003 (or HTTP 401)
  refresh the access token and send once more, then AuthFailed; 80300002 AuthFailed; 80300007 InvalidToken;
  80300008 PayloadTooLarge; 80600003/81000001 Retry; HTTP 429/503 RateLimited; other 5xx Retry; the rest
  Rejected. The 4096-byte body limit and 1000 tokens a request are Huawei's too.

Mapping of Notification: title/body -> notification and android.notification (clickAction: open the app, or the
`category` action); data -> data (a JSON string); message_id -> android.biTag; ttl -> android.ttl "Ns" (at
most 15 days); collapse_key -> android.notification.tag; badge -> android.notification.badge.setNum (with
badgeClass). Honor's message has no priority or sound field, so `urgent` and `sound` are not sent.
`extra["honor"]`: a dict merged into the request body (dict values one level deep).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .auth import TokenCache
from .base import CredentialCheck, CredentialsError, Notification, Outcome, SendResult, VendorClient
from .http import (
    PUSH_KIT_TOKEN_REFUSED,
    Answer,
    VendorFailure,
    check_access,
    fetch_access_token,
    merge,
    new_http,
    payload_size,
    post,
    push_kit_failure,
    secret_text,
)

AUTH_BASE = "https://iam.developer.hihonor.com"
AUTH_PATH = "/auth/realms/developer/protocol/openid-connect/token"
SEND_BASE = "https://push-api.cloud.hihonor.com"
MAX_PAYLOAD = 4096
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400
SUCCESS = "200"


def build_body(n: Notification, *, badge_class: str | None = None) -> dict[str, Any]:
    """The sendMessage body for `n`, without its tokens."""
    android: dict[str, Any] = {"ttl": f"{min(max(n.ttl_seconds, 0), MAX_TTL)}s", "biTag": n.message_id}
    body: dict[str, Any] = {}
    if n.title is not None or n.body is not None:
        body["notification"] = {k: v for k, v in (("title", n.title), ("body", n.body)) if v is not None}
        notification: dict[str, Any] = {
            **body["notification"],
            # type 1 opens the page of an action, type 3 the app
            "clickAction": {"type": 1, "action": n.category} if n.category else {"type": 3},
        }
        if n.collapse_key:
            notification["tag"] = n.collapse_key
        if n.badge is not None and badge_class:
            notification["badge"] = {"setNum": min(max(n.badge, 0), 99), "badgeClass": badge_class}
        android["notification"] = notification
        if n.data:
            body["data"] = json.dumps(dict(n.data), separators=(",", ":"))
    else:
        body["data"] = json.dumps(dict(n.data), separators=(",", ":"))
    body["android"] = android
    extra = n.extra.get("honor")
    if isinstance(extra, Mapping):
        merge(body, extra)
    return body


def _token_set(data: Any, key: str) -> set[str]:
    found = data.get(key) if isinstance(data, dict) else None
    return {t for t in found if isinstance(t, str)} if isinstance(found, list) else set()


def classify(answer: Answer, tokens: Sequence[str]) -> list[SendResult]:
    """Results for one sendMessage answer (other than the token refusal we retry)."""
    doc = answer.json()
    code = str(doc["code"]) if isinstance(doc, dict) and doc.get("code") is not None else None
    status = answer.status
    if 200 <= status < 300 and code == SUCCESS:
        data = doc.get("data")
        request_id = str(data["requestId"]) if isinstance(data, dict) and data.get("requestId") else None
        expired, failed = _token_set(data, "expireTokens"), _token_set(data, "failTokens")
        results = []
        for t in tokens:
            if t in expired:
                results.append(SendResult(t, Outcome.INVALID_TOKEN, "expireTokens", status))
            elif t in failed:
                results.append(SendResult(t, Outcome.REJECTED, "failTokens", status))
            else:
                results.append(SendResult(t, Outcome.SENT, status=status, vendor_id=request_id))
        return results
    return push_kit_failure(answer, code, tokens)


class HonorClient(VendorClient):
    max_payload = MAX_PAYLOAD
    max_tokens = MAX_TOKENS

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        app_id: str,
        *,
        send_base: str,
        token_url: str,
        badge_class: str | None,
        http: httpx.AsyncClient | None,
    ):
        self.client_id, self._client_secret, self.app_id = client_id, client_secret, app_id
        self.badge_class = badge_class
        self.send_url = f"{send_base.rstrip('/')}/api/v1/{app_id}/sendMessage"
        self.token_url = token_url
        self._http, self._own_http = http or new_http(), http is None
        self.tokens = TokenCache(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._client_secret}
        return await fetch_access_token(self._http, self.token_url, form)

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        body = build_body(notification, badge_class=self.badge_class)
        if payload_size(body) > MAX_PAYLOAD:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, "message over 4096 bytes") for t in tokens]
        results: list[SendResult] = []
        for i in range(0, len(tokens), MAX_TOKENS):
            results += await self._send_batch(body, list(tokens[i : i + MAX_TOKENS]))
        return results

    async def _send_batch(self, body: dict[str, Any], tokens: list[str]) -> list[SendResult]:
        request = {**body, "token": tokens}
        for attempt in (1, 2):
            try:
                access = await self.tokens.get()
            except VendorFailure as e:
                return [e.result(t) for t in tokens]
            headers = {"Authorization": f"Bearer {access}", "timestamp": str(int(time.time() * 1000))}
            try:
                answer = await post(self._http, self.send_url, json=request, headers=headers)
            except httpx.HTTPError as e:
                return [SendResult(t, Outcome.RETRY, type(e).__name__) for t in tokens]
            doc = answer.json()
            code = str(doc.get("code")) if isinstance(doc, dict) else None
            if code in PUSH_KIT_TOKEN_REFUSED or (answer.status == 401 and code is None):
                self.tokens.invalidate(access)
                if attempt == 1:
                    continue
            return classify(answer, tokens)
        raise AssertionError("unreachable")

    async def check_credentials(self) -> CredentialCheck:
        return await check_access(self.tokens, f"access token issued for client {self.client_id}")

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> HonorClient:
    app_id = secret_text(secret, "appId") if secret.get("appId") else (options.get("appId") or "").strip()
    if not app_id:
        raise CredentialsError("appId: missing; put the App ID in the Secret (key appId) or in option appId")
    auth_base = options.get("authEndpoint") or endpoint or AUTH_BASE
    return HonorClient(
        secret_text(secret, "clientId"),
        secret_text(secret, "clientSecret"),
        app_id,
        send_base=endpoint or SEND_BASE,
        token_url=auth_base.rstrip("/") + AUTH_PATH,
        badge_class=options.get("badgeClass") or None,
        http=http,
    )
