"""Huawei Push Kit (HMS Core), server API v1: OAuth 2.0 client credentials, then messages:send with up to 1000
tokens a request.

Secret keys:
- `appId`: the app's OAuth 2.0 client ID (AppGallery Connect "App ID").
- `appSecret`: its client secret.

Options:
- `authEndpoint`: base URL of the OAuth server instead of https://oauth-login.cloud.huawei.com (path kept).
  Without it, an `endpoint` override serves the token path too.
- `badgeClass`: the app's entry Activity (e.g. com.example.MainActivity); Huawei sets a badge only with it.

Protocol, as the sources say it:
- Token: POST /oauth2/v3/token, form grant_type=client_credentials&client_id=&client_secret= ->
  {access_token, expires_in, token_type} (developer.huawei.com "Client Credentials"; appleboy/gorush
  notify/notification_hms.go uses the v3 URL). Refusals: {"error": 1101, "sub_error": 12304,
  "error_description": "invalid client_secret"} (the Account Kit error format).
- Send: POST https://push-api.cloud.huawei.com/v1/{appId}/messages:send, Authorization: Bearer, body
  {"validate_only": false, "message": {...}}; answer {"code", "msg", "requestId"}
  (HMS-Core/hms-push-serverdemo-python src/push_admin/_app.py, HMS-Core/hms-push-serverdemo-go
  src/push/core/message.go).
- Codes (icecream78/go-hms-push constants.go, which copies Huawei's result-code table, and the Chinese table of
  the same codes in a huaweipush Go package): 80000000 success; 80100000 some tokens failed, msg is the JSON
  {"success", "failure", "illegal_tokens"}; 80100001-80100018 request errors; 80200001 OAuth authentication
  error and 80200003 OAuth token expired, on which the HMS SDK demos refresh the token and send again once
  (hms-push-serverdemo-go pushclient.go `isNeedRetry`); 80300002 app not allowed to push; 80300007 all tokens
  invalid; 80300008 body over 4096 bytes; 80300010 too many tokens; 80300011 no right to send high priority;
  80300013 bad receipt URL; 80600003 the OAuth service failed; 81000001 internal error. HTTP 503 is Huawei's
  flow control ("流量控制"), 429 too.

Mapping of Notification: title/body -> message.notification and android.notification (click_action: open the
app, or the `category` action); data -> message.data (a JSON string, as Huawei wants it); message_id ->
android.bi_tag (the id Huawei's receipts carry back); ttl -> android.ttl "Ns" (at most 15 days); urgent ->
android.urgency HIGH/NORMAL; collapse_key -> android.notification.tag, and android.collapse_key when it is an
integer -1..100 (Huawei's offline cache groups); badge -> android.notification.badge.set_num (with badgeClass);
sound -> android.notification.sound. `extra["huawei"]`: a dict merged into the message (dict values one level
deep).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .auth import TokenCache
from .base import CredentialCheck, Notification, Outcome, SendResult, VendorClient
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

AUTH_BASE = "https://oauth-login.cloud.huawei.com"
AUTH_PATH = "/oauth2/v3/token"
SEND_BASE = "https://push-api.cloud.huawei.com"
MAX_PAYLOAD = 4096
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400

SUCCESS = "80000000"
PARTIAL = "80100000"


def build_message(n: Notification, *, badge_class: str | None = None) -> dict[str, Any]:
    """The Push Kit `message` for `n`, without its tokens."""
    android: dict[str, Any] = {
        "urgency": "HIGH" if n.urgent else "NORMAL",
        "ttl": f"{min(max(n.ttl_seconds, 0), MAX_TTL)}s",
        "bi_tag": n.message_id,
    }
    if n.collapse_key and n.collapse_key.lstrip("-").isdigit() and -1 <= int(n.collapse_key) <= 100:
        android["collapse_key"] = int(n.collapse_key)
    message: dict[str, Any] = {"android": android}
    if n.title is not None or n.body is not None:
        message["notification"] = {k: v for k, v in (("title", n.title), ("body", n.body)) if v is not None}
        notification: dict[str, Any] = {
            **message["notification"],
            # type 1 opens the page of an action, type 3 the app
            "click_action": {"type": 1, "action": n.category} if n.category else {"type": 3},
        }
        if n.sound:
            notification |= {"sound": n.sound, "default_sound": False}
        if n.collapse_key:
            notification["tag"] = n.collapse_key
        if n.badge is not None and badge_class:
            notification["badge"] = {"set_num": min(max(n.badge, 0), 99), "class": badge_class}
        android["notification"] = notification
        if n.data:
            message["data"] = json.dumps(dict(n.data), separators=(",", ":"))
    else:
        message["data"] = json.dumps(dict(n.data), separators=(",", ":"))  # a pass-through message
    extra = n.extra.get("huawei")
    if isinstance(extra, Mapping):
        merge(message, extra)
    return message


def illegal_tokens(msg: Any) -> set[str]:
    """The tokens an 80100000 answer names: its msg is a JSON string {"illegal_tokens": [...]}."""
    try:
        doc = json.loads(msg) if isinstance(msg, str) else msg
    except ValueError:
        return set()
    found = doc.get("illegal_tokens") if isinstance(doc, dict) else None
    return {t for t in found if isinstance(t, str)} if isinstance(found, list) else set()


def classify(answer: Answer, tokens: Sequence[str]) -> list[SendResult]:
    """Results for one send answer (other than the token refusal we retry)."""
    doc = answer.json()
    code = str(doc["code"]) if isinstance(doc, dict) and doc.get("code") is not None else None
    request_id = str(doc["requestId"]) if isinstance(doc, dict) and doc.get("requestId") else None
    status = answer.status
    if 200 <= status < 300 and code == SUCCESS:
        return [SendResult(t, Outcome.SENT, status=status, vendor_id=request_id) for t in tokens]
    if 200 <= status < 300 and code == PARTIAL:
        illegal = illegal_tokens(doc.get("msg") if isinstance(doc, dict) else None)
        return [
            SendResult(t, Outcome.INVALID_TOKEN, PARTIAL, status)
            if t in illegal
            else SendResult(t, Outcome.SENT, status=status, vendor_id=request_id)
            for t in tokens
        ]
    return push_kit_failure(answer, code, tokens)


class HuaweiClient(VendorClient):
    max_payload = MAX_PAYLOAD
    max_tokens = MAX_TOKENS

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        send_base: str,
        token_url: str,
        badge_class: str | None,
        http: httpx.AsyncClient | None,
    ):
        self.app_id, self._app_secret, self.badge_class = app_id, app_secret, badge_class
        self.send_url = f"{send_base.rstrip('/')}/v1/{app_id}/messages:send"
        self.token_url = token_url
        self._http, self._own_http = http or new_http(), http is None
        self.tokens = TokenCache(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.app_id, "client_secret": self._app_secret}
        return await fetch_access_token(self._http, self.token_url, form)

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        message = build_message(notification, badge_class=self.badge_class)
        if payload_size(message) > MAX_PAYLOAD:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, "message over 4096 bytes") for t in tokens]
        results: list[SendResult] = []
        for i in range(0, len(tokens), MAX_TOKENS):
            results += await self._send_batch(message, list(tokens[i : i + MAX_TOKENS]))
        return results

    async def _send_batch(self, message: dict[str, Any], tokens: list[str]) -> list[SendResult]:
        body = {"validate_only": False, "message": {**message, "token": tokens}}
        for attempt in (1, 2):
            try:
                access = await self.tokens.get()
            except VendorFailure as e:
                return [e.result(t) for t in tokens]
            try:
                answer = await post(self._http, self.send_url, json=body, headers={"Authorization": f"Bearer {access}"})
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
        return await check_access(self.tokens, f"access token issued for app {self.app_id}")

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> HuaweiClient:
    auth_base = options.get("authEndpoint") or endpoint or AUTH_BASE
    return HuaweiClient(
        secret_text(secret, "appId"),
        secret_text(secret, "appSecret"),
        send_base=endpoint or SEND_BASE,
        token_url=auth_base.rstrip("/") + AUTH_PATH,
        badge_class=options.get("badgeClass") or None,
        http=http,
    )
