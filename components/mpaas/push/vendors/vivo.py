"""vivo Push: an authToken from `POST /message/auth`, then `/message/send` (one regId) or `/message/saveListPayload`
and `/message/pushToList` (2 to 1000 regIds), JSON bodies with the token in the `authToken` header.

Secret keys: `appId` (a number), `appKey`, `appSecret` (vivo developer console, Push > app information).
Options: `pushMode` (`0` formal messages, the default; `1` test messages, to the console's test devices only),
`authEndpoint` (base URL of the auth call when not the endpoint's).

From vivo's Java server SDK (com.vivo.push.sdk: server.Sender, common.SignUtils, common.Constants,
server.Validation, common.ExceptionStatusEnum, notofication.Message/TargetMessage/Result) and vivo's server API
document 2.9.x (reproduced at www.yimenapp.com/kb-yimen/12123, www.qro.cn/post/302609.html):
- auth: `{"appId", "appKey", "timestamp" (ms, within 10 minutes of vivo's clock), "sign"}`, sign = lower-case
  hex md5(appId + appKey + timestamp + appSecret) -> `{"result": 0, "authToken"}`, a token lives a day.
- message: `regId` (23 characters), `notifyType` (1 none, 2 sound, 3 vibration, 4 both: 4 when urgent),
  `title` (at most 40, a CJK character counting 2), `content` (at most 100, same count), `timeToLive` (seconds,
  60-604800 for one regId, 900-604800 for a list), `skipType` (1 opens the app), `networkType` -1,
  `clientCustomMap` (`Notification.data`: at most 10 pairs, keys and values joined at most 1024 characters),
  `classification` (1 system message when urgent, 0 operation message), `requestId` (vivo drops a request
  whose requestId it has seen: `Notification.message_id` with the regId, or with a digest of the list's regIds,
  at most 64 characters, a sha256 when longer), `pushMode`, `category` (`Notification.category`).
  `Notification.extra` entries are set on the message as they are (e.g. `skipType`, `skipContent`, `extra`
  with `callback`). vivo has no collapse, badge or sound-file field. The CJK count of `title` and `content`
  follows Validation.caculateCharSize by Unicode East Asian width (wide and fullwidth characters count 2).
- answers: `{"result": 0, "desc", "taskId", "invalidUser": {"status", "userid"}}` (send),
  `{"result": 0, "taskId", "invalidUsers": [...]}` (pushToList); invalid user status 1 unknown regId,
  2 app uninstalled or notifications off, 3 offline 90 days, 4 not a test device (pushMode 1).
- result codes: 10000 authToken refused (fetch a new one, retry once); 10070 daily total exceeded and 10252
  daily list payloads exceeded (both documented: do not call again that day); 10302 regId invalid; 10056/10058
  title/content too long, 10066/10067 clientCustomMap too big; 10094 appId not the token's; auth's own codes
  (10200 and up) mean bad credentials. 10072 as "sending too fast" is not in vivo's SDK: it is what other
  clients read it as (RateLimited here).
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
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

DEFAULT_ENDPOINT = "https://api-push.vivo.com.cn"
AUTH_PATH = "/message/auth"
SEND_PATH = "/message/send"
SAVE_LIST_PATH = "/message/saveListPayload"
PUSH_TO_LIST_PATH = "/message/pushToList"
TOKEN_LIFETIME = 86400.0
MAX_TITLE, MAX_CONTENT, MAX_REQUEST_ID = 40, 100, 64
MAX_CUSTOM_PAIRS, MAX_CUSTOM_CHARS = 10, 1024
MIN_TTL_SINGLE, MIN_TTL_LIST, MAX_TTL = 60, 900, 604800

AUTH_TOKEN_REFUSED = 10000
INVALID_TOKEN_CODES = {10302}
QUOTA_CODES = {10070, 10252}
RATE_CODES = {10072}
TOO_LARGE_CODES = {10056, 10058, 10066, 10067}
AUTH_CODES = {10000, 10094}
DEAD_USER_STATUS = {1, 2, 3}


def sign(app_id: int, app_key: str, timestamp_ms: int, app_secret: str) -> str:
    return hashlib.md5(f"{app_id}{app_key}{timestamp_ms}{app_secret}".encode()).hexdigest()


def char_size(text: str) -> int:
    """vivo's length of a title or content: a CJK (wide) character counts 2 (Validation.caculateCharSize)."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def request_id(message_id: str, *targets: str) -> str:
    """The requestId of one call sending `message_id` to `targets`: the same call again is the same request."""
    if len(targets) == 1:
        rid = f"{message_id}:{targets[0]}"
    else:
        rid = f"{message_id}:{hashlib.sha256(','.join(targets).encode()).hexdigest()[:16]}"
    return rid if len(rid) <= MAX_REQUEST_ID else hashlib.sha256(rid.encode()).hexdigest()


def outcome_of_code(code: int) -> Outcome:
    if code in INVALID_TOKEN_CODES:
        return Outcome.INVALID_TOKEN
    if code in QUOTA_CODES:
        return Outcome.QUOTA_EXCEEDED
    if code in RATE_CODES:
        return Outcome.RATE_LIMITED
    if code in TOO_LARGE_CODES:
        return Outcome.PAYLOAD_TOO_LARGE
    if code in AUTH_CODES:
        return Outcome.AUTH_FAILED
    return Outcome.REJECTED


def failure_of(answer: Answer) -> VendorFailure:
    """What a non-success answer means for every token of its request."""
    code = answer.integer("result")
    if answer.status == 429 or code is None:
        return status_failure(answer, "vivo")
    outcome = outcome_of_code(code)
    if outcome is Outcome.QUOTA_EXCEEDED:
        after: float | None = seconds_to_midnight(CHINA)
    elif outcome is Outcome.RATE_LIMITED:
        after = retry_after(answer.headers)
    else:
        after = None
    message = f"{code} {(answer.doc or {}).get('desc') or ''}".strip()
    return VendorFailure(outcome, str(code), message, answer.status, after)


def user_result(token: str, status: Any, http_status: int) -> SendResult:
    """A regId vivo listed as an invalid user."""
    outcome = Outcome.INVALID_TOKEN if status in DEAD_USER_STATUS else Outcome.REJECTED
    return SendResult(token, outcome, f"invalidUser {status}", http_status)


def build_message(n: Notification, *, push_mode: int) -> dict[str, Any]:
    """The message fields shared by a send and a saved list payload (regId, TTL and requestId are per call)."""
    m: dict[str, Any] = {
        "notifyType": 4 if n.urgent else (2 if n.sound else 1),
        "title": n.title or "",
        "content": n.body or "",
        "skipType": 1,
        "networkType": -1,
        "classification": 1 if n.urgent else 0,
        "pushMode": push_mode,
    }
    if n.data:
        m["clientCustomMap"] = {str(k): str(v) for k, v in n.data.items()}
    if n.category is not None:
        m["category"] = n.category
    m.update(n.extra)
    return m


def too_large(m: Mapping[str, Any]) -> str | None:
    """Why vivo would refuse the message's size, or None (Validation.validatePublicMessage)."""
    title, content = str(m.get("title") or ""), str(m.get("content") or "")
    if char_size(title) > MAX_TITLE:
        return f"title counts {char_size(title)}, over vivo's {MAX_TITLE} (a CJK character counts 2)"
    if char_size(content) > MAX_CONTENT:
        return f"content counts {char_size(content)}, over vivo's {MAX_CONTENT} (a CJK character counts 2)"
    custom = m.get("clientCustomMap") or {}
    if len(custom) > MAX_CUSTOM_PAIRS:
        return f"data has {len(custom)} entries, over vivo's {MAX_CUSTOM_PAIRS}"
    joined = sum(len(k) + len(v) for k, v in custom.items())
    if joined > MAX_CUSTOM_CHARS:
        return f"data keys and values make {joined} characters, over vivo's {MAX_CUSTOM_CHARS}"
    return None


def ttl(seconds: int, minimum: int) -> int:
    return min(max(seconds, minimum), MAX_TTL)


class VivoClient(VendorClient):
    max_payload = MAX_CUSTOM_CHARS  # characters of data's keys and values (clientCustomMap)
    max_tokens = 1000
    replaces_shown = False  # no field of the notification replaces one shown

    def __init__(
        self,
        app_id: int,
        app_key: str,
        app_secret: str,
        *,
        endpoint: str,
        auth_endpoint: str,
        push_mode: int = 0,
        http: httpx.AsyncClient | None = None,
    ):
        self._app_id, self._app_key, self._app_secret = app_id, app_key, app_secret
        self.endpoint, self.auth_endpoint = endpoint.rstrip("/"), auth_endpoint.rstrip("/")
        self.push_mode = push_mode
        self._http = http or new_http(max_connections=50, max_keepalive=10)
        self._own_http = http is None
        self._tokens = TokenCache(self._fetch_token)

    async def _post(self, url: str, body: Mapping[str, Any], token: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json;charset=UTF-8"}
        if token is not None:
            headers["authToken"] = token
        content = json.dumps(body, ensure_ascii=False).encode()
        try:
            return await call(self._http, "POST", url, content=content, headers=headers)
        except httpx.HTTPError as e:
            raise VendorFailure(Outcome.RETRY, type(e).__name__, f"{url}: {type(e).__name__}: {e}") from None

    async def _fetch_token(self) -> tuple[str, float]:
        now = int(time.time() * 1000)
        body = {
            "appId": self._app_id,
            "appKey": self._app_key,
            "timestamp": now,
            "sign": sign(self._app_id, self._app_key, now, self._app_secret),
        }
        answer = await self._post(self.auth_endpoint + AUTH_PATH, body)
        token = (answer.doc or {}).get("authToken")
        if answer.integer("result") == 0 and isinstance(token, str) and token:
            return token, TOKEN_LIFETIME
        failure = failure_of(answer)
        if failure.outcome not in (Outcome.RETRY, Outcome.RATE_LIMITED):
            failure.outcome = Outcome.AUTH_FAILED  # whatever else the auth call refuses, the credentials are to fix
        raise failure

    async def _call(self, path: str, body: Mapping[str, Any]) -> Answer:
        """One authenticated call; a refused token is replaced and the call made once more."""
        token = await self._tokens.get()
        answer = await self._post(self.endpoint + path, body, token)
        if answer.integer("result") == AUTH_TOKEN_REFUSED:
            self._tokens.invalidate(token)
            answer = await self._post(self.endpoint + path, body, await self._tokens.get())
        return answer

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        if not tokens:
            return []
        m = build_message(notification, push_mode=self.push_mode)
        why = too_large(m)
        if why:
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, why) for t in tokens]
        results: list[SendResult] = []
        for i in range(0, len(tokens), self.max_tokens):
            chunk = tokens[i : i + self.max_tokens]
            try:
                if len(chunk) == 1:
                    results.append(await self._send_one(m, notification, chunk[0]))
                else:
                    results += await self._send_list(m, notification, chunk)
            except VendorFailure as f:
                results += [f.result(t) for t in chunk]
        return results

    async def _send_one(self, m: Mapping[str, Any], n: Notification, token: str) -> SendResult:
        body = {
            **m,
            "regId": token,
            "timeToLive": ttl(n.ttl_seconds, MIN_TTL_SINGLE),
            "requestId": request_id(n.message_id, token),
        }
        answer = await self._call(SEND_PATH, body)
        if answer.integer("result") != 0 or answer.status >= 300:
            return failure_of(answer).result(token)
        invalid = (answer.doc or {}).get("invalidUser")
        if isinstance(invalid, dict):
            return user_result(token, invalid.get("status"), answer.status)
        return SendResult(token, Outcome.SENT, "", answer.status, vendor_id=_str((answer.doc or {}).get("taskId")))

    async def _send_list(self, m: Mapping[str, Any], n: Notification, tokens: Sequence[str]) -> list[SendResult]:
        rid = request_id(n.message_id, *tokens)
        payload = {**m, "timeToLive": ttl(n.ttl_seconds, MIN_TTL_LIST), "requestId": "list-" + rid[:59]}
        saved = await self._call(SAVE_LIST_PATH, payload)
        task_id = (saved.doc or {}).get("taskId")
        if saved.integer("result") != 0 or saved.status >= 300 or task_id is None:
            failure = failure_of(saved)
            return [failure.result(t) for t in tokens]
        body = {
            "regIds": list(tokens),
            "taskId": str(task_id),
            "requestId": rid,
            "pushMode": self.push_mode,
        }
        answer = await self._call(PUSH_TO_LIST_PATH, body)
        if answer.integer("result") != 0 or answer.status >= 300:
            failure = failure_of(answer)
            return [failure.result(t) for t in tokens]
        invalid: dict[str, Any] = {}
        for user in (answer.doc or {}).get("invalidUsers") or []:
            if isinstance(user, dict) and isinstance(user.get("userid"), str):
                invalid[user["userid"]] = user.get("status")
        return [
            user_result(t, invalid[t], answer.status)
            if t in invalid
            else SendResult(t, Outcome.SENT, "", answer.status, vendor_id=str(task_id))
            for t in tokens
        ]

    async def check_credentials(self) -> CredentialCheck:
        return await check_access(self._tokens, "vivo issued an authToken", with_reason=False)

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
        not_text=f"{key} is not UTF-8 text: paste it as vivo's developer console shows it",
    )


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> VivoClient:
    app_id_text = _text(secret, "appId", "the AppID of the app in vivo's developer console (a number)")
    if not app_id_text.isdigit():
        raise CredentialsError(f"appId {app_id_text!r} is not a number: vivo's AppID is digits only")
    app_key = _text(secret, "appKey", "the AppKey of the app in vivo's developer console")
    app_secret = _text(secret, "appSecret", "the AppSecret of the app in vivo's developer console")
    push_mode = (options.get("pushMode") or "0").strip()
    if push_mode not in ("0", "1"):
        raise CredentialsError(f"pushMode {push_mode!r}: 0 (formal messages) or 1 (test devices only)")
    base = endpoint or DEFAULT_ENDPOINT
    return VivoClient(
        int(app_id_text),
        app_key,
        app_secret,
        endpoint=base,
        auth_endpoint=options.get("authEndpoint") or base,
        push_mode=int(push_mode),
        http=http,
    )
