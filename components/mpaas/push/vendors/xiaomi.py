"""Xiaomi MiPush: `POST /v3/message/regid`, form-encoded, `Authorization: key=<AppSecret>` (no access token).

Secret keys: `appSecret` (the app's AppSecret in Xiaomi's push console).
Options: `packageName` (required: the Android package, sent as `restricted_package_name`; `restrictedPackageName`
is read too), `region` (`China`, the default, `api.xmpush.xiaomi.com`; or `Global`, `api.xmpush.global.xiaomi.com`).

Request (fields as MiPush server SDK users send them: Rookiejin/Xmpush `Builder` in PHP, Go and Node clients):
`registration_id` (up to 1000, comma-separated), `restricted_package_name`, `title`, `description`, `payload`
(`Notification.data` as a JSON object), `pass_through` (0 notification, 1 data only: no title and no body),
`notify_type` (-1 sound+vibration+lights when urgent, 4 lights only), `time_to_live` (ms), `notify_id`
(the collapse key, as a non-negative int: same id replaces the shown notification), `extra.channel_id`
(`Notification.category`), `extra.sound_uri` (`Notification.sound` under the app's res/raw), `extra.message_id`
(`Notification.message_id`, delivered to the app with the other extras). `Notification.extra` entries are added as
they are (MiPush parameter names, e.g. `extra.notify_effect`, `extra.intent_uri`, `time_to_send`). No badge field.

Answer: `{"result": "ok"|"error", "code": 0, "data": {"id": ..., "bad_regids": "a,b"}, "description", "reason"}`.
`data.bad_regids` lists the regids of a batch Xiaomi refused (as other MiPush clients, PHP, Node and Java,
read it); the rest were accepted. Codes (com.xiaomi.push.sdk.ErrorCode of the Java server SDK, and
Xiaomi's server error table, dev.mi.com/xiaomihyperos/documentation/detail?pId=1560): 21301/21302 auth failed,
22000-22008 bad or revoked app, 10027/10022-10024/10028 too frequent, 10034 (Xiaomi's table) and 200001 (the
code clients see for the day's quota) daily quota, 20301 "send failed" (read by clients as every regid of
the request refused: InvalidToken), 65009 and 10018 too long, 10001-10011/-1 server side. The 4 KB limit on
`payload` is the figure MiPush's guides give; `GET /v1/stats/message/counts` (what check_credentials asks) is
the Java SDK's Stats call as this client knows it, not seen in a stored source.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from .base import CredentialCheck, CredentialsError, Notification, Outcome, SendResult, VendorClient
from .http import CHINA, Answer, call, new_http, outcome_of_status, retry_after, seconds_to_midnight, secret_text

DEFAULT_ENDPOINT = "https://api.xmpush.xiaomi.com"
GLOBAL_ENDPOINT = "https://api.xmpush.global.xiaomi.com"
SEND_PATH = "/v3/message/regid"
STATS_PATH = "/v1/stats/message/counts"  # read-only and authenticated: what check_credentials asks

AUTH_CODES = {10005, 10006, 10013, 10014, 21301, 21302, 22000, 22001, 22002, 22006, 22007, 22008}
RATE_CODES = {10022, 10023, 10024, 10027, 10028, 26004}
QUOTA_CODES = {10034, 200001}
TOO_LARGE_CODES = {10018, 65009}
INVALID_TOKEN_CODES = {20301}
RETRY_CODES = {-1, 1, 10001, 10002, 10003, 10009, 10010, 10011, 26003, 65029}


def build_form(n: Notification, package: str) -> dict[str, str]:
    """The message fields of a send, without `registration_id`."""
    form = {"restricted_package_name": package}
    if n.title is not None:
        form["title"] = n.title
    if n.body is not None:
        form["description"] = n.body
    form["pass_through"] = "0" if (n.title is not None or n.body is not None) else "1"
    if n.data:
        form["payload"] = json.dumps(dict(n.data), separators=(",", ":"), ensure_ascii=False)
    form["notify_type"] = "-1" if n.urgent else "4"
    form["time_to_live"] = str(max(n.ttl_seconds, 1) * 1000)  # 0 is not a TTL to MiPush: one second is
    if n.collapse_key is not None:
        form["notify_id"] = str(zlib.crc32(n.collapse_key.encode()) & 0x7FFFFFFF)
    if n.category is not None:
        form["extra.channel_id"] = n.category
    if n.sound is not None:
        form["extra.sound_uri"] = f"android.resource://{package}/raw/{n.sound}"
    form["extra.message_id"] = n.message_id
    for key, value in n.extra.items():
        form[str(key)] = str(value)
    return form


def payload_size(form: Mapping[str, str]) -> int:
    return len(form.get("payload", "").encode())


def outcome_of_code(code: int) -> Outcome:
    if code in AUTH_CODES:
        return Outcome.AUTH_FAILED
    if code in RATE_CODES:
        return Outcome.RATE_LIMITED
    if code in QUOTA_CODES:
        return Outcome.QUOTA_EXCEEDED
    if code in TOO_LARGE_CODES:
        return Outcome.PAYLOAD_TOO_LARGE
    if code in INVALID_TOKEN_CODES:
        return Outcome.INVALID_TOKEN
    if code in RETRY_CODES:
        return Outcome.RETRY
    return Outcome.REJECTED


def _code(doc: Mapping[str, Any]) -> int | None:
    code = doc.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.lstrip("-").isdigit():
        return int(code)
    return None


def results_of(answer: Answer, tokens: Sequence[str]) -> list[SendResult]:
    """Each token's result from MiPush's answer to one request carrying `tokens`."""
    status, doc = answer.status, answer.doc
    code = _code(doc) if doc is not None else None
    if status == 429 or code is None:
        outcome = outcome_of_status(status) if status != 200 else Outcome.REJECTED
        wait = retry_after(answer.headers) if outcome is Outcome.RATE_LIMITED else None
        reason = f"HTTP {status}" if doc is None else str(doc.get("reason") or doc.get("result") or f"HTTP {status}")
        return [SendResult(t, outcome, reason, status, wait) for t in tokens]
    if code == 0 and status < 300:
        data = doc.get("data") if isinstance(doc, dict) else None
        data = data if isinstance(data, dict) else {}
        message_id = str(data["id"]) if data.get("id") is not None else None
        bad = {b.strip() for b in str(data.get("bad_regids") or "").split(",") if b.strip()}
        return [
            SendResult(t, Outcome.INVALID_TOKEN, "bad_regids", status)
            if t in bad
            else SendResult(t, Outcome.SENT, "", status, vendor_id=message_id)
            for t in tokens
        ]
    outcome = outcome_of_code(code)
    if code == 0:  # code 0 with an HTTP error: trust the status
        outcome = outcome_of_status(status)
    after: float | None = None
    if outcome is Outcome.QUOTA_EXCEEDED:
        after = seconds_to_midnight(CHINA)
    elif outcome in (Outcome.RATE_LIMITED, Outcome.RETRY):
        after = retry_after(answer.headers)
    return [SendResult(t, outcome, str(code), status, after) for t in tokens]


class XiaomiClient(VendorClient):
    max_payload = 4096
    max_tokens = 1000

    def __init__(self, app_secret: str, package: str, *, endpoint: str, http: httpx.AsyncClient | None = None):
        self._secret, self.package = app_secret, package
        self.endpoint = endpoint.rstrip("/")
        self._http = http or new_http(max_connections=50, max_keepalive=10)
        self._own_http = http is None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"key={self._secret}"}

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        if not tokens:
            return []
        form = build_form(notification, self.package)
        size = payload_size(form)
        if size > self.max_payload:
            reason = f"payload is {size} bytes, over MiPush's {self.max_payload}"
            return [SendResult(t, Outcome.PAYLOAD_TOO_LARGE, reason) for t in tokens]
        results: list[SendResult] = []
        for i in range(0, len(tokens), self.max_tokens):
            results += await self._send(form, tokens[i : i + self.max_tokens])
        return results

    async def _send(self, form: Mapping[str, str], tokens: Sequence[str]) -> list[SendResult]:
        body = {**form, "registration_id": ",".join(tokens)}
        try:
            answer = await call(self._http, "POST", self.endpoint + SEND_PATH, data=body, headers=self._headers())
        except httpx.HTTPError as e:
            return [SendResult(t, Outcome.RETRY, type(e).__name__) for t in tokens]
        return results_of(answer, tokens)

    async def check_credentials(self) -> CredentialCheck:
        today = datetime.now(CHINA).strftime("%Y%m%d")
        params = {"start_date": today, "end_date": today, "restricted_package_name": self.package}
        try:
            answer = await call(self._http, "GET", self.endpoint + STATS_PATH, params=params, headers=self._headers())
        except httpx.HTTPError as e:
            return CredentialCheck(False, "Unreachable", f"{self.endpoint}: {type(e).__name__}: {e}")
        doc = answer.doc
        code = _code(doc) if doc is not None else None
        if doc is None or code is None:
            if answer.status >= 500 or answer.status == 429:
                return CredentialCheck(False, "Unreachable", f"MiPush answered HTTP {answer.status}")
            outcome = outcome_of_status(answer.status)
            reason = "AuthFailed" if outcome is Outcome.AUTH_FAILED else "InvalidCredentials"
            return CredentialCheck(False, reason, f"MiPush answered HTTP {answer.status}")
        said = f"{code} {doc.get('description') or ''} {doc.get('reason') or ''}".strip()
        if code == 0:
            return CredentialCheck(True, "Valid", "MiPush accepted the AppSecret")
        if code in AUTH_CODES:
            return CredentialCheck(False, "AuthFailed", said)
        if code in RETRY_CODES or answer.status >= 500:
            return CredentialCheck(False, "Unreachable", said)
        return CredentialCheck(False, "InvalidCredentials", said)

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def build(
    secret: Mapping[str, bytes],
    *,
    endpoint: str | None,
    options: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> XiaomiClient:
    app_secret = secret_text(
        secret,
        "appSecret",
        missing="the Secret needs appSecret: the AppSecret of the app in Xiaomi's push console",
        not_text="appSecret is not UTF-8 text: paste the AppSecret as Xiaomi shows it",
    )
    package = (options.get("packageName") or options.get("restrictedPackageName") or "").strip()
    if not package:
        raise CredentialsError("Xiaomi needs the option packageName: the Android package registered with MiPush")
    region = (options.get("region") or "China").strip().lower()
    if region not in ("china", "global"):
        raise CredentialsError(f"region {options.get('region')!r}: China or Global")
    default = GLOBAL_ENDPOINT if region == "global" else DEFAULT_ENDPOINT
    return XiaomiClient(app_secret, package, endpoint=endpoint or default, http=http)
