"""OPPO Push (HeyTap): an auth token from `POST /server/v1/auth`, then notification unicasts, form-encoded.

Secret keys: `appKey`, `masterSecret` (OPPO push console, Configuration > App configuration; the MasterSecret,
not the AppSecret). Options: `region` (`China`, the default, `api.push.oppomobile.com`; or `International`,
`api-intl.push.oppomobile.com`), `authEndpoint` (base URL of the auth call when not the endpoint's).

From OPPO's Java server SDK (opush-server-sdk 1.1.0, com.oppo.push.server: Auth, Sender, MessageTool, Result,
ReturnCode, Notification.validate) and OPPO's API pages (common parameters and return codes; unicast):
- auth: form `app_key`, `timestamp` (ms), `sign` = hex sha256(app_key + timestamp + master_secret) ->
  `{"code": 0, "data": {"auth_token", "create_time"}}`; a token lives 24 hours.
- `POST /server/v1/message/notification/unicast`: form `auth_token`, `message` = JSON
  `{"target_type": 2, "target_value": regid, "notification": {...}}` -> `{"code": 0, "data": {"messageId"}}`;
  `.../unicast_batch`: form `auth_token`, `messages` = JSON list (at most 1000) -> `{"code": 0, "data":
  [{"messageId", "registrationId", "errorCode"?, "errorMessage"?}]}`.
- notification fields (the SDK's names): `title` (at most 50 characters), `content` (at most 200), both
  required; `app_message_id` (`Notification.message_id`: OPPO pushes a unicast with the same id once),
  `off_line`, `off_line_ttl` (seconds, at most 864000), `channel_id` (`Notification.category`),
  `action_parameters` (`Notification.data` as a JSON object, handed to the app on click). `Notification.extra`
  entries are merged into it (e.g. `click_action_type`, `click_action_activity`, `click_action_url`, `style`,
  `sub_title`, `call_back_url`). The SDK's notification has no collapse, badge, sound or priority field.
- codes: 0 success; 11 invalid auth token (the SDK fetches a new one and retries once); 14-19, 26-30 bad
  credentials or access; 13 and 55 call limits, -2 flow control; 33 daily message quota; -1 unavailable;
  10000 invalid registration id; 40/41 bad arguments.
The 4 KB bound on `action_parameters` (`max_payload`) is this client's: OPPO documents no byte limit for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .auth import TokenCache
from .base import CredentialCheck, CredentialsError, Notification, Outcome, SendResult, VendorClient
from .http import (
    CHINA,
    Answer,
    VendorFailure,
    call,
    check_access,
    new_http,
    retry_after,
    seconds_to_midnight,
    secret_text,
    status_failure,
)

DEFAULT_ENDPOINT = "https://api.push.oppomobile.com"
INTERNATIONAL_ENDPOINT = "https://api-intl.push.oppomobile.com"
AUTH_PATH = "/server/v1/auth"
UNICAST_PATH = "/server/v1/message/notification/unicast"
BATCH_PATH = "/server/v1/message/notification/unicast_batch"
TOKEN_LIFETIME = 86400.0
MAX_TITLE, MAX_CONTENT, MAX_OFFLINE_TTL = 50, 200, 864000

INVALID_AUTH_TOKEN = 11
INVALID_REGISTRATION_ID = 10000
AUTH_CODES = {11, 14, 15, 16, 17, 18, 19, 26, 27, 28, 29, 30}
RATE_CODES = {-2, 13, 55}
QUOTA_CODES = {33}
RETRY_CODES = {-1}


def sign(app_key: str, timestamp_ms: int, master_secret: str) -> str:
    return hashlib.sha256(f"{app_key}{timestamp_ms}{master_secret}".encode()).hexdigest()


def outcome_of_code(code: int) -> Outcome:
    if code == INVALID_REGISTRATION_ID:
        return Outcome.INVALID_TOKEN
    if code in AUTH_CODES:
        return Outcome.AUTH_FAILED
    if code in RATE_CODES:
        return Outcome.RATE_LIMITED
    if code in QUOTA_CODES:
        return Outcome.QUOTA_EXCEEDED
    if code in RETRY_CODES:
        return Outcome.RETRY
    return Outcome.REJECTED


def failure_of(answer: Answer) -> VendorFailure:
    """What a non-success answer means for every token of its request."""
    code = answer.integer("code")
    if answer.status == 429 or code is None:
        return status_failure(answer, "OPPO")
    outcome = outcome_of_code(code)
    if outcome is Outcome.QUOTA_EXCEEDED:
        after: float | None = seconds_to_midnight(CHINA)
    elif outcome in (Outcome.RATE_LIMITED, Outcome.RETRY):
        after = retry_after(answer.headers)
    else:
        after = None
    message = f"{code} {(answer.doc or {}).get('message') or ''}".strip()
    return VendorFailure(outcome, str(code), message, answer.status, after)


def build_notification(n: Notification) -> dict[str, Any]:
    notification: dict[str, Any] = {}
    if n.title is not None:
        notification["title"] = n.title
    if n.body is not None:
        notification["content"] = n.body
    notification["app_message_id"] = n.message_id
    notification["off_line"] = n.ttl_seconds > 0
    if n.ttl_seconds > 0:
        notification["off_line_ttl"] = min(n.ttl_seconds, MAX_OFFLINE_TTL)
    if n.category is not None:
        notification["channel_id"] = n.category
    if n.data:
        notification["action_parameters"] = json.dumps(dict(n.data), separators=(",", ":"), ensure_ascii=False)
    notification.update(n.extra)
    return notification


def too_large(notification: Mapping[str, Any], max_payload: int) -> str | None:
    """Why OPPO would refuse the notification's size, or None."""
    title, content = str(notification.get("title") or ""), str(notification.get("content") or "")
    if len(title) > MAX_TITLE:
        return f"title is {len(title)} characters, over OPPO's {MAX_TITLE}"
    if len(content) > MAX_CONTENT:
        return f"content is {len(content)} characters, over OPPO's {MAX_CONTENT}"
    size = len(str(notification.get("action_parameters") or "").encode())
    if size > max_payload:
        return f"action_parameters is {size} bytes, over {max_payload}"
    return None


def message(notification: Mapping[str, Any], token: str) -> dict[str, Any]:
    return {"target_type": 2, "target_value": token, "notification": notification}


class OppoClient(VendorClient):
    max_payload = 4096
    max_tokens = 1000
    replaces_shown = False  # no field of the notification replaces one shown

    def __init__(
        self,
        app_key: str,
        master_secret: str,
        *,
        endpoint: str,
        auth_endpoint: str,
        http: httpx.AsyncClient | None = None,
    ):
        self._app_key, self._master_secret = app_key, master_secret
        self.endpoint, self.auth_endpoint = endpoint.rstrip("/"), auth_endpoint.rstrip("/")
        self._http = http or new_http(max_connections=50, max_keepalive=10)
        self._own_http = http is None
        self._tokens = TokenCache(self._fetch_token)

    async def _post(self, url: str, form: Mapping[str, str]) -> Answer:
        try:
            return await call(self._http, "POST", url, data=dict(form))
        except httpx.HTTPError as e:
            raise VendorFailure(Outcome.RETRY, type(e).__name__, f"{url}: {type(e).__name__}: {e}") from None

    async def _fetch_token(self) -> tuple[str, float]:
        now = int(time.time() * 1000)
        form = {"app_key": self._app_key, "timestamp": str(now), "sign": sign(self._app_key, now, self._master_secret)}
        answer = await self._post(self.auth_endpoint + AUTH_PATH, form)
        data = (answer.doc or {}).get("data")
        token = data.get("auth_token") if isinstance(data, dict) else None
        if answer.integer("code") == 0 and isinstance(token, str) and token:
            return token, TOKEN_LIFETIME
        failure = failure_of(answer)
        if failure.outcome not in (Outcome.RETRY, Outcome.RATE_LIMITED):
            failure.outcome = Outcome.AUTH_FAILED  # whatever else the auth call refuses, the credentials are to fix
        raise failure

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        if not tokens:
            return []
        body = build_notification(notification)
        why = too_large(body, self.max_payload)
        if why:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, why) for t in tokens]
        results: list[SendResult] = []
        for i in range(0, len(tokens), self.max_tokens):
            results += await self._send(body, tokens[i : i + self.max_tokens])
        return results

    async def _send(self, notification: Mapping[str, Any], tokens: Sequence[str]) -> list[SendResult]:
        if len(tokens) == 1:
            path, field = UNICAST_PATH, json.dumps(message(notification, tokens[0]), ensure_ascii=False)
            key = "message"
        else:
            path, key = BATCH_PATH, "messages"
            field = json.dumps([message(notification, t) for t in tokens], ensure_ascii=False)
        for attempt in range(2):
            try:
                token = await self._tokens.get()
                answer = await self._post(self.endpoint + path, {"auth_token": token, key: field})
            except VendorFailure as f:
                return [f.result(t) for t in tokens]
            if answer.integer("code") == INVALID_AUTH_TOKEN and attempt == 0:
                self._tokens.invalidate(token)  # expired or revoked: one retry with a fresh token
                continue
            if answer.integer("code") == INVALID_AUTH_TOKEN:
                self._tokens.invalidate(token)
            break
        if answer.integer("code") != 0 or answer.status >= 300:
            failure = failure_of(answer)
            return [failure.result(t) for t in tokens]
        data = (answer.doc or {}).get("data")
        if path == UNICAST_PATH:
            message_id = data.get("messageId") if isinstance(data, dict) else None
            return [SendResult(tokens[0], Outcome.SENT, "", answer.status, vendor_id=_str(message_id))]
        return self._batch_results(answer, data, tokens)

    @staticmethod
    def _batch_results(answer: Answer, data: Any, tokens: Sequence[str]) -> list[SendResult]:
        per_token: dict[str, dict[str, Any]] = {}
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("registrationId"), str):
                per_token[entry["registrationId"]] = entry
        results = []
        for t in tokens:
            entry = per_token.get(t)
            if entry is None:  # not in the answer: app_message_id makes a retry safe
                results.append(SendResult(t, Outcome.RETRY, "NotInAnswer", answer.status))
                continue
            code = entry.get("errorCode")
            if isinstance(code, int) and not isinstance(code, bool) and code != 0:
                outcome = outcome_of_code(code)
                after = seconds_to_midnight(CHINA) if outcome is Outcome.QUOTA_EXCEEDED else None
                results.append(SendResult(t, outcome, str(code), answer.status, after))
            else:
                results.append(SendResult(t, Outcome.SENT, "", answer.status, vendor_id=_str(entry.get("messageId"))))
        return results

    async def check_credentials(self) -> CredentialCheck:
        return await check_access(self._tokens, "OPPO issued an auth token", with_reason=False)

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(secret: Mapping[str, bytes], key: str, what: str) -> str:
    return secret_text(
        secret,
        key,
        missing=f"the Secret needs {key}: {what}",
        not_text=f"{key} is not UTF-8 text: paste it as OPPO's push console shows it",
    )


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> OppoClient:
    app_key = _text(secret, "appKey", "the AppKey of the app in OPPO's push console")
    master_secret = _text(secret, "masterSecret", "the MasterSecret (not the AppSecret) in OPPO's push console")
    region = (options.get("region") or "China").strip().lower()
    if region not in ("china", "international"):
        raise CredentialsError(f"region {options.get('region')!r}: China or International")
    base = endpoint or (INTERNATIONAL_ENDPOINT if region == "international" else DEFAULT_ENDPOINT)
    return OppoClient(
        app_key, master_secret, endpoint=base, auth_endpoint=options.get("authEndpoint") or base, http=http
    )
